"""Commits that share one call and one transaction (``commit_versions``): group commit through the service.

Every small-object write ends in a commit, and through ``apollo meta`` each commit was a signed HTTP call,
a hop to a pool thread and a transaction of its own (BEGIN, four statements, COMMIT: each a round trip to
PostgreSQL). A client with many writes under way (a gateway serving many PUTs, a job writing many small
files) sends the commits that queue up behind the ones in flight together (``apollo.client.commits``), and
the service makes them in one transaction with no savepoint per commit. If any of them raises, the
transaction is rolled back whole and each is made again on its own, so each caller gets exactly what its
own ``commit_version`` answers: its version, or the error that call alone raises.
"""

from __future__ import annotations

from apollo import errors, limits
from apollo.meta.sql_objects import ObjectOps
from apollo.proto.records import Lookup

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
            with self.all_or_nothing():
                return [Lookup(self.commit_version(**commit, owner=owner, now=now)) for commit in commits]
        except errors.MetadataUnavailable:
            raise
        except Exception:  # rolled back whole: nothing of it is visible; each alone says what went wrong
            pass
        return [self._alone(commit, owner, now) for commit in commits]

    def _alone(self, commit: dict, owner: str, now: float) -> Lookup:
        try:
            return Lookup(self.engine.run(lambda: self.commit_version(**commit, owner=owner, now=now)))
        except errors.MetadataUnavailable:
            raise
        except errors.ApolloError as exc:
            return Lookup(error=type(exc).__name__, message=str(exc))
        except (TypeError, ValueError, KeyError) as exc:  # arguments commit_version does not take, or of a bad form
            return Lookup(error="InvalidRequest", message=f"bad commit: {exc}")
