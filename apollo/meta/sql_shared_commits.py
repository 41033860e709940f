"""Commits that share one call and one transaction (``commit_versions``): group commit through the service.

Every small-object write ends in a commit, and through ``apollo meta`` each commit was a signed HTTP call,
a hop to a pool thread and a transaction of its own (BEGIN, four statements, COMMIT: each a round trip to
PostgreSQL). A client with many writes under way (a gateway serving many PUTs, a job writing many small
files) sends the commits that queue up behind the ones in flight together (``apollo.client.commits``), and
the service makes them in one transaction with no savepoint per commit. If any of them raises, the
transaction is rolled back whole and each is made again on its own, so each caller gets exactly what its
own ``commit_version`` answers: its version, or the error that call alone raises.

The commonest batch, small objects written inline into one plain, never-versioned bucket under distinct
keys, is made with a statement per table for the whole batch (``_commit_together``): the rows they replace
read, removed and the new ones inserted at once: six round trips to PostgreSQL for 16 commits, where one by
one takes 66.
"""

from __future__ import annotations

import functools
import time

from apollo import errors, limits
from apollo.meta.plans import run_plan
from apollo.meta.sql_objects import ObjectOps
from apollo.meta.sqlbase import Conn, Plan
from apollo.meta.version_rows import MEMBERS_FLAG, NEW_VERSION_COLUMNS, NEW_VERSION_SLOTS, new_version_values
from apollo.proto.layout import ObjectData
from apollo.proto.records import NULL_VERSION, Conditions, Lookup, ObjectAttrs, Version, checked_tags

DECLINED_HELD_S = 10.0  # how long a bucket whose row declined a batch is not asked again (a snapshot may go)

# What one commit of a batch may name: ``commit_version``'s arguments but those the service imposes (``owner``,
# ``now``), which the batch takes once for every commit.
COMMIT_FIELDS = frozenset({"bucket", "key", "size", "etag", "attrs", "data", "conditions", "members"})


def checked_commits(commits: object) -> list[dict]:
    """``commits`` if it is a batch ``commit_versions`` takes: checked before any policy or SQL work.

    :raises InvalidRequest: not a list of at most ``limits.commits_per_call_max`` dicts of ``COMMIT_FIELDS``,
        each naming a bucket and a key.
    """
    if not isinstance(commits, list) or len(commits) > limits.commits_per_call_max:
        raise errors.InvalidRequest(f"a batch of commits is a list of at most {limits.commits_per_call_max}")
    for commit in commits:
        if not (isinstance(commit, dict) and commit.keys() <= COMMIT_FIELDS and {"bucket", "key"} <= commit.keys()):
            raise errors.InvalidRequest(f"a commit of a batch names a bucket, a key and at most "
                                        f"{', '.join(sorted(COMMIT_FIELDS - {'bucket', 'key'}))}")  # fmt: skip
    return commits


class SharedCommitOps(ObjectOps):
    @functools.cached_property
    def _declined_buckets(self) -> dict[str, float]:
        """Buckets whose row declined a batch (versioned, a KV namespace, snapshotted), until when
        (``time.monotonic``): their commits go one by one at once. On the service's event loop a decline cost a
        transaction of its own (BEGIN, the bucket's row, ROLLBACK) before the commit was made on a thread:
        small commits into a versioned bucket ran at 1,759–1,940/s against 3,195–3,280 without it. Only buckets
        that exist are held, and a held one only loses the shortcut for ``DECLINED_HELD_S``."""
        return {}

    def commit_versions(self, commits: list[dict], *, owner: str, now: float) -> list[Lookup]:
        """``commit_version(**commit, owner=owner, now=now)`` of each, in order, in one transaction when none
        raises; else each on its own. A commit's outcome is its ``Lookup``: the version, or the error (type
        and message) that commit alone raised.

        :raises InvalidRequest: more than ``limits.commits_per_call_max`` commits, or one not a dict of
            ``COMMIT_FIELDS`` naming a bucket and a key.
        :raises MetadataUnavailable: the shared transaction's COMMIT was cut off: whether it committed is
            unknown, and making the commits again could make them twice.
        """
        checked_commits(commits)
        try:
            with self.all_or_nothing() as db:
                if (together := self._commit_together(db, commits, owner, now)) is not None:
                    return [Lookup(version) for version in together]
                return [Lookup(self.commit_version(**commit, owner=owner, now=now)) for commit in commits]
        except errors.MetadataUnavailable:
            raise
        except Exception:  # rolled back whole: nothing of it is visible; each alone says what went wrong
            pass
        return [self._alone(commit, owner, now) for commit in commits]

    def commit_versions_plan(self, commits: list[dict], *, owner: str, now: float) -> Plan[list[Lookup] | None]:
        """``commit_versions`` of a batch ``_commit_together_plan`` makes, as a plan the service runs in a
        transaction of its own on its event loop (``apollo.meta.async_sql``); None, having changed nothing, for
        any other batch, and anything raised rolls it back: the service then makes the call on a thread.
        :raises InvalidRequest: as ``commit_versions``."""
        together = yield from self._commit_together_plan(checked_commits(commits), owner, now)
        return None if together is None else [Lookup(version) for version in together]

    def commit_version_plan(self, bucket: str, key: str, *, size: int, etag: str, attrs: ObjectAttrs,
                            data: ObjectData, now: float, owner: str, conditions: Conditions | None = None,
                            members: list | None = None) -> Plan[Version | None]:  # fmt: skip
        """``commit_version`` of the kind ``_commit_together_plan`` makes (a lone small PUT), as a plan for the
        service's event loop as ``commit_versions_plan``; None for any other."""
        commit = {"bucket": bucket, "key": key, "size": size, "etag": etag, "attrs": attrs, "data": data,
                  "conditions": conditions, "members": members}  # fmt: skip
        together = yield from self._commit_together_plan([commit], owner, now)
        return None if together is None else together[0]

    def _commit_together(self, db: Conn, commits: list[dict], owner: str, now: float) -> list[Version] | None:
        """``_commit_together_plan`` on the open transaction."""
        return run_plan(db, self._commit_together_plan(commits, owner, now))

    def _commit_together_plan(self, commits: list[dict], owner: str, now: float) -> Plan[list[Version] | None]:
        """The versions of ``commits`` made with a statement per table for them all, when every one is
        unconditional inline data into the same plain bucket that was never versioned and has no snapshot,
        each under a key of its own; None, having changed nothing, for any other batch.

        Each commit is checked as ``commit_version`` checks it and ends as it would: the key's null version (its
        only version in such a bucket) removed with its data, the new one inserted as the latest, row ids in
        the batch's order. Anything raised rolls the batch back, and the caller makes each commit alone.
        """
        if not commits:
            return []
        bucket, keys = commits[0]["bucket"], [commit["key"] for commit in commits]
        if len(set(keys)) != len(keys) or not all(
            commit["bucket"] == bucket and commit.get("conditions") is None and not commit.get("members")
            and isinstance(commit.get("data"), ObjectData) and commit["data"].inline is not None
            for commit in commits
        ):  # fmt: skip
            return None
        if self._declined_buckets.get(bucket, 0.0) > time.monotonic():
            return None
        bucket_row = yield from self._bucket_row_plan(bucket)
        if bucket_row["versioning"] or bucket_row["kv_budget"] is not None or bucket_row["snapshots"]:
            self._declined_buckets[bucket] = time.monotonic() + DECLINED_HELD_S
            return None
        replaced = yield self.engine.versions_of_keys(f"id, key, version_id, is_latest, data_id, {MEMBERS_FLAG}",
                                                      bucket, keys, "is_latest = 1 OR version_id = ?",
                                                      (NULL_VERSION,))  # fmt: skip
        if not all(row["version_id"] == NULL_VERSION and row["is_latest"] for row in replaced):
            return None  # a history a never-versioned bucket cannot have: left to commit_version to handle
        for commit in commits:
            checked_tags(commit["attrs"].tags, limits.tags_per_object_max)
            self._store_data(None, commit["data"], commit["size"], commit["etag"], owner, now)  # inline: no statement
        yield from self._remove_unpinned_plan(replaced, now)
        rows = [new_version_values(bucket, commit["key"], NULL_VERSION, now, size=commit["size"], etag=commit["etag"],
                                   attrs=commit["attrs"], parts=[], part_checksums=None,
                                   inline=commit["data"].inline, data_id=None, delete_marker=False, upload_id="")
                for commit in commits]  # fmt: skip
        slots = ", ".join([f"({NEW_VERSION_SLOTS})"] * len(rows))
        inserted = yield (f"INSERT INTO versions ({NEW_VERSION_COLUMNS}) VALUES {slots} RETURNING id, key",
                          tuple(value for row in rows for value in row))  # fmt: skip
        row_ids = {row["key"]: row["id"] for row in inserted}
        return [Version(bucket, commit["key"], NULL_VERSION, True, False, commit["size"], commit["etag"], now,
                        commit["attrs"], [], None, row_ids[commit["key"]], []) for commit in commits]  # fmt: skip

    def _alone(self, commit: dict, owner: str, now: float) -> Lookup:
        try:
            return Lookup(self.engine.run(lambda: self.commit_version(**commit, owner=owner, now=now)))
        except errors.MetadataUnavailable:
            raise
        except errors.ApolloError as exc:
            return Lookup(error=type(exc).__name__, message=str(exc))
        except (TypeError, ValueError, KeyError) as exc:  # arguments commit_version does not take, or of a bad form
            return Lookup(error="InvalidRequest", message=f"bad commit: {exc}")
