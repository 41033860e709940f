"""Transactions over many objects: puts and deletes staged under one id, visible all at once at its commit.

A checkpoint of N ranks is many objects that must appear together or not at all. A put staged into a
transaction stores its data as any put does (``_store_data``: the writer's pending segments are claimed,
out of the pending-write expiry, into ``segments`` under a new data id) but writes no version row: the
staged item (``txn_items``) holds what the version will be. Readers look at ``versions`` only, so none of
them sees a staged item. The commit turns every staged item into a version (or a delete) in one SQL
transaction, with the same per-key rules as ``commit_version`` and ``delete_object``.

Call sequence (every call names the transaction by id and bucket; ``owner`` is the calling key, imposed
by the service)::

    txn = store.begin_txn(bucket, now, owner, ttl_s, if_prefix_absent)   # the service clamps the TTL
    store.stage_put(txn.txn_id, bucket, key, size=, etag=, attrs=, data=, now=, owner=)  # any process of
    store.stage_delete(txn.txn_id, bucket, key, now, owner)                              # the same key
    store.commit_txn(txn.txn_id, bucket, now, owner)   # all or nothing (two steps: open -> committing ->
    #   committed); PreconditionFailed: nothing applied, left committing (commit again or abort)
    #   or store.abort_txn(...): staged data to GC after the grace
    store.expire_txns(now, limit)   # the garbage collector: open ones past their TTL are aborted

The same key staged twice: the last staging wins (the earlier data goes to GC at once). Only the key that
began a transaction may stage into it, commit it or abort it. A committed or aborted transaction's row
stays until its TTL ends, so a commit whose answer was lost can be sent again and answers the same.

Concurrency on PostgreSQL: every call on a transaction first updates its row, so they run one after
another. Stagings (and aborts) run at READ COMMITTED: they queue on the row and none reruns, however many
ranks stage at once. The commit has two steps: the first (also queued) waits for the stagings under way
and marks the transaction ``committing``, so that every later staging fails with ``TransactionClosed``;
the second, at REPEATABLE READ as every other write, begins after it and so sees every staging that was
acknowledged, and applies them. A commit that fails there (PreconditionFailed) leaves the transaction
``committing``: it may be committed again or aborted, not staged into. A conditioned commit writes
the row of its (bucket, prefix) in ``txn_prefixes``: of two commits on one prefix, one reruns and finds
the other's objects. A plain put under the prefix racing a conditioned commit is not held off (a
different key: no row in common); a staged put with ``if_none_match`` is checked against its own key.
"""

from __future__ import annotations

import uuid

from apollo import errors, ids, limits
from apollo.meta.sql_objects import ObjectOps, check_conditions
from apollo.meta.sql_snapshots import key_range
from apollo.meta.sqlbase import Conn, Row, dumps
from apollo.meta.version_rows import VERSION_COLUMNS, attrs_from_row, headers_json
from apollo.proto.layout import ObjectData
from apollo.proto.records import NULL_VERSION, Conditions, ObjectAttrs, TxnInfo, checked_tags

TXN_COLUMNS = "txn_id, bucket, owner, created, expires, state, if_prefix_absent, items"
OPEN, COMMITTING, COMMITTED, ABORTED = "open", "committing", "committed", "aborted"
LIVE = (OPEN, COMMITTING)  # what an abort or the expiry still has to drop


def _txn(row: Row) -> TxnInfo:
    return TxnInfo(row["txn_id"], row["bucket"], row["owner"], row["created"], row["expires"], row["state"],
                   row["if_prefix_absent"], row["items"])  # fmt: skip


def raise_unless_open(txn_id: str, state: str, expires: float, now: float, states: tuple[str, ...] = (OPEN,)) -> None:
    """:raises TransactionClosed: the transaction is not in one of ``states``, or its TTL has ended."""
    if state not in states or expires <= now:
        raise errors.TransactionClosed(f"transaction {txn_id} is {'expired' if state in states else state}")


def _checked_key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key.encode("utf-8", "replace")) > limits.key_length_bytes_max:
        raise errors.InvalidRequest(f"a key is 1 to {limits.key_length_bytes_max} bytes")
    return key


class TxnOps(ObjectOps):
    txn_ttl_s_min: float = limits.txn_ttl_s_min  # a test's server may grant shorter ones (``--txn-ttl-min``)

    def begin_txn(self, bucket: str, now: float, owner: str = "", ttl_s: float | None = None,
                  if_prefix_absent: str | None = None) -> TxnInfo:  # fmt: skip
        """A new open transaction in ``bucket``. ``ttl_s``: the lifetime asked for, clamped to
        ``txn_ttl_s_min``..``limits.txn_ttl_s_max``. ``if_prefix_absent``: the commit fails with
        PreconditionFailed if any object exists under this prefix then.

        :raises BucketNotFound:
        :raises InvalidRequest: a malformed TTL or prefix.
            Also (its message starts ``SlowDown:``): ``owner`` has ``limits.txns_open_per_key_max`` open.
        """
        if ttl_s is None:
            ttl_s = limits.txn_ttl_s_default
        if type(ttl_s) not in (int, float) or ttl_s != ttl_s:  # NaN
            raise errors.InvalidRequest(f"a transaction's TTL is a number of seconds, not {ttl_s!r:.40}")
        granted = min(max(float(ttl_s), self.txn_ttl_s_min), limits.txn_ttl_s_max)
        prefix, bound = if_prefix_absent, limits.key_length_bytes_max
        if prefix is not None and not (isinstance(prefix, str) and 0 < len(prefix.encode()) <= bound):
            raise errors.InvalidRequest(f"if_prefix_absent is a key prefix of 1 to {limits.key_length_bytes_max} "
                                        "bytes")  # fmt: skip
        txn = TxnInfo(uuid.uuid4().hex, bucket, owner, now, now + granted, OPEN, if_prefix_absent, 0)
        with self.tx() as db:
            self._bucket_row(db, bucket)
            held = db.execute("SELECT COUNT(*) AS n FROM txns WHERE owner = ? AND state IN (?, ?) AND expires > ?",
                              (owner, *LIVE, now)).fetchone()["n"]  # fmt: skip
            if held >= limits.txns_open_per_key_max:
                raise errors.InvalidRequest(f"SlowDown: this key has {held} open transactions, the most it may "
                                            "hold: commit or abort some first")  # fmt: skip
            db.execute(f"INSERT INTO txns ({TXN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (txn.txn_id, bucket, owner, now, txn.expires, OPEN, if_prefix_absent, 0))  # fmt: skip
        return txn

    def get_txn(self, txn_id: str, bucket: str, owner: str = "") -> TxnInfo:
        """:raises TransactionNotFound, AccessDenied: (another key's)"""
        ids.txn_id(txn_id)
        row = self.one(f"SELECT {TXN_COLUMNS} FROM txns WHERE txn_id = ?", (txn_id,))
        return _txn(self._owned(row, txn_id, bucket, owner))

    def stage_put(self, txn_id: str, bucket: str, key: str, *, size: int, etag: str, attrs: ObjectAttrs,
                  data: ObjectData, now: float, owner: str, if_none_match: bool = False) -> TxnInfo:  # fmt: skip
        """Stage a put of data ``owner`` wrote (its pending segments: ``_store_data``), invisible until the
        commit; a key staged before is replaced (its earlier data goes to GC). ``if_none_match``: the commit
        fails with PreconditionFailed if the key exists then.

        :raises TransactionNotFound, TransactionClosed, AccessDenied, InvalidRequest: (also: the transaction
            holds ``limits.txn_items_max`` keys)
        """
        ids.txn_id(txn_id)
        _checked_key(key)
        checked_tags(attrs.tags, limits.tags_per_object_max)
        with self.tx(queued=True) as db:
            self._open_txn(db, txn_id, bucket, owner, now)
            data_id = self._store_data(db, data, size, etag, owner, now)
            self._stage(db, txn_id, key, now, delete_marker=False, size=size, etag=etag, attrs=attrs,
                        inline=data.inline, data_id=data_id, if_none_match=bool(if_none_match))  # fmt: skip
            return _txn(db.execute(f"SELECT {TXN_COLUMNS} FROM txns WHERE txn_id = ?", (txn_id,)).fetchone())

    def stage_delete(self, txn_id: str, bucket: str, key: str, now: float, owner: str = "") -> TxnInfo:
        """Stage a delete of ``key`` (as ``delete_object`` without a version id: a marker on a versioned
        bucket), replacing anything staged for it before. :raises: as :meth:`stage_put`"""
        ids.txn_id(txn_id)
        _checked_key(key)
        with self.tx(queued=True) as db:
            self._open_txn(db, txn_id, bucket, owner, now)
            self._stage(db, txn_id, key, now, delete_marker=True, size=0, etag="", attrs=ObjectAttrs(content_type=""),
                        inline=None, data_id=None, if_none_match=False)  # fmt: skip
            return _txn(db.execute(f"SELECT {TXN_COLUMNS} FROM txns WHERE txn_id = ?", (txn_id,)).fetchone())

    def commit_txn(self, txn_id: str, bucket: str, now: float, owner: str = "") -> TxnInfo:
        """Make every staged item visible in one SQL transaction, in key order, after a first one that
        closes the transaction to stagings (the module's docstring); a commit sent again after it succeeded
        answers the same.

        :raises TransactionNotFound, AccessDenied, BucketNotFound:
        :raises TransactionClosed: aborted or expired.
        :raises PreconditionFailed: an object under ``if_prefix_absent``, or a key staged with
            ``if_none_match`` exists: nothing is applied; the transaction takes no more stagings (abort it).
        :raises EntityTooLarge: in a KV namespace (``sql_kv``), a staged value larger than its whole budget: the
            same (nothing applied, abort it). Values the commit adds may evict each other, as puts would.
        """
        ids.txn_id(txn_id)
        with self.tx(queued=True) as db:  # 1) closed to stagings: those under way finish first, later ones fail
            row = self._locked(db, txn_id, bucket, owner)
            if row["state"] == COMMITTED:
                return _txn(row)
            self._still_open(row, now, LIVE)
            db.execute("UPDATE txns SET state = ? WHERE txn_id = ?", (COMMITTING, txn_id))
        with self.tx() as db:  # 2) a snapshot taken after every staging that got in
            row = self._locked(db, txn_id, bucket, owner)
            if row["state"] == COMMITTED:
                return _txn(row)
            self._still_open(row, now, (COMMITTING,))
            bucket_row = self._bucket_row(db, bucket)
            prefix = row["if_prefix_absent"]
            if prefix is not None:
                db.execute("INSERT INTO txn_prefixes (bucket, prefix, txn_id) VALUES (?, ?, ?) "
                           "ON CONFLICT (bucket, prefix) DO UPDATE SET txn_id = excluded.txn_id",
                           (bucket, prefix, txn_id))  # fmt: skip
                in_range, range_args = key_range(prefix)
                if db.execute(f"SELECT 1 FROM versions WHERE bucket = ? AND is_latest = 1 AND delete_marker = 0 "
                              f"AND {in_range} LIMIT 1", (bucket, *range_args)).fetchone():  # fmt: skip
                    raise errors.PreconditionFailed(f"objects exist under {prefix!r}: transaction {txn_id} was to "
                                                    "create that prefix")  # fmt: skip
            for item in db.execute("SELECT * FROM txn_items WHERE txn_id = ? ORDER BY key", (txn_id,)).fetchall():
                self._apply(db, bucket_row, item, now)
            db.execute("DELETE FROM txn_items WHERE txn_id = ?", (txn_id,))
            db.execute("UPDATE txns SET state = ? WHERE txn_id = ?", (COMMITTED, txn_id))
            return _txn(db.execute(f"SELECT {TXN_COLUMNS} FROM txns WHERE txn_id = ?", (txn_id,)).fetchone())

    def abort_txn(self, txn_id: str, bucket: str, now: float, owner: str = "") -> None:
        """Drop every staged item; their data goes to GC after the grace. Aborting again is no error.

        :raises TransactionNotFound, AccessDenied: :raises TransactionClosed: committed already.
        """
        ids.txn_id(txn_id)
        with self.tx(queued=True) as db:
            row = self._locked(db, txn_id, bucket, owner)
            if row["state"] == COMMITTED:
                raise errors.TransactionClosed(f"transaction {txn_id} is committed: delete its objects instead")
            if row["state"] in LIVE:
                self._drop_txn(db, txn_id, now)

    def list_txns(self, bucket: str | None = None, *, finished: bool = False,
                  limit: int = 1000) -> list[tuple[TxnInfo, int]]:  # fmt: skip
        """Transactions oldest first, each with the bytes its staged puts hold: open and committing ones, and
        with ``finished`` the committed and aborted ones not yet forgotten. For an operator (``apollo admin
        txn list``): a crashed job's transaction holds its data until its TTL ends."""
        states = (*LIVE, COMMITTED, ABORTED) if finished else LIVE
        marks = ", ".join("?" * len(states))
        where, args = f"state IN ({marks})", list(states)
        if bucket is not None:
            where, args = f"{where} AND bucket = ?", [*args, bucket]
        rows = self.all(f"SELECT {TXN_COLUMNS}, (SELECT COALESCE(SUM(size), 0) FROM txn_items i "
                        f"WHERE i.txn_id = t.txn_id) AS staged_bytes FROM txns t WHERE {where} "
                        "ORDER BY created, txn_id LIMIT ?", (*args, limit))  # fmt: skip
        return [(_txn(row), row["staged_bytes"]) for row in rows]

    def expire_txns(self, now: float, limit: int) -> list[TxnInfo]:
        """Abort up to ``limit`` open transactions past their TTL, and forget finished ones past it, oldest
        first; one SQL transaction each, re-checked inside it. Returns the ones aborted."""
        rows = self.all("SELECT txn_id FROM txns WHERE expires <= ? ORDER BY expires LIMIT ?", (now, limit))
        aborted = []
        for found in rows:
            with self.tx() as db:
                row = db.execute(f"SELECT {TXN_COLUMNS} FROM txns WHERE txn_id = ? AND expires <= ?",
                                 (found["txn_id"], now)).fetchone()  # fmt: skip
                if row is None:
                    continue
                if row["state"] in LIVE:
                    self._drop_txn(db, row["txn_id"], now)
                    aborted.append(_txn(row))
                db.execute("DELETE FROM txns WHERE txn_id = ?", (row["txn_id"],))
        return aborted

    # helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _owned(row: Row | None, txn_id: str, bucket: str, owner: str) -> Row:
        if row is None or row["bucket"] != bucket:
            raise errors.TransactionNotFound(f"bucket {bucket} has no transaction {txn_id}")
        if owner and row["owner"] != owner:
            raise errors.AccessDenied(f"transaction {txn_id} was begun by another key: only it may use it")
        return row

    def _locked(self, db: Conn, txn_id: str, bucket: str, owner: str) -> Row:
        """The transaction's row, updated (not only read), as the call's first statement: on PostgreSQL
        every call on the transaction then waits for the one before it (the module's docstring)."""
        db.execute("UPDATE txns SET items = items WHERE txn_id = ?", (txn_id,))
        row = db.execute(f"SELECT {TXN_COLUMNS} FROM txns WHERE txn_id = ?", (txn_id,)).fetchone()
        return self._owned(row, txn_id, bucket, owner)

    @staticmethod
    def _still_open(row: Row, now: float, states: tuple[str, ...] = (OPEN,)) -> None:
        raise_unless_open(row["txn_id"], row["state"], row["expires"], now, states)

    def _open_txn(self, db: Conn, txn_id: str, bucket: str, owner: str, now: float) -> Row:
        row = self._locked(db, txn_id, bucket, owner)
        self._still_open(row, now)
        return row

    def _stage(self, db: Conn, txn_id: str, key: str, now: float, *, delete_marker: bool, size: int, etag: str,
               attrs: ObjectAttrs, inline: bytes | None, data_id: str | None, if_none_match: bool) -> None:  # fmt: skip
        """Record the staged item; an earlier staging of the key goes (its data to GC)."""
        earlier = db.execute("SELECT data_id FROM txn_items WHERE txn_id = ? AND key = ?", (txn_id, key)).fetchone()
        if earlier is not None:
            self._discard_data(db, earlier["data_id"], now)
            db.execute("DELETE FROM txn_items WHERE txn_id = ? AND key = ?", (txn_id, key))
        else:
            staged = db.execute("UPDATE txns SET items = items + 1 WHERE txn_id = ? AND items < ?",
                                (txn_id, limits.txn_items_max)).rowcount  # fmt: skip
            if staged == 0:
                raise errors.InvalidRequest(f"transaction {txn_id} holds {limits.txn_items_max} keys, the most "
                                            "one may: commit it and stage the rest into another")  # fmt: skip
        db.execute(
            "INSERT INTO txn_items (txn_id, key, delete_marker, size, etag, content_type, headers, checksums, tags, "
            "inline_data, data_id, if_none_match, staged) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (txn_id, key, int(delete_marker), size, etag, attrs.content_type, headers_json(attrs),
             dumps(attrs.checksums), dumps(attrs.tags), inline, data_id, int(if_none_match), now),
        )  # fmt: skip

    def _apply(self, db: Conn, bucket_row: Row, item: Row, now: float) -> None:
        """One staged item made visible, as ``commit_version`` or ``delete_object`` would."""
        bucket, key = bucket_row["name"], item["key"]
        if item["delete_marker"]:
            if bucket_row["versioning"] == "":
                self._delete_exact(db, bucket_row, key, NULL_VERSION, now)
            else:
                self._insert_version(db, bucket_row, key, now, size=0, etag="",
                                     attrs=ObjectAttrs(content_type=""), parts=[], inline=None, data_id=None,
                                     delete_marker=True)  # fmt: skip
            return
        if item["if_none_match"]:
            latest = db.execute(f"SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ? AND key = ? AND "
                                "is_latest = 1", (bucket, key)).fetchone()  # fmt: skip
            check_conditions(latest, Conditions(if_none_match_star=True))
        attrs = attrs_from_row(item)
        inline = item["inline_data"]
        self._insert_version(db, bucket_row, key, now, size=item["size"], etag=item["etag"], attrs=attrs,
                             parts=[], inline=bytes(inline) if inline is not None else None,
                             data_id=item["data_id"])  # fmt: skip

    def _drop_txn(self, db: Conn, txn_id: str, now: float) -> None:
        """Abort: staged data to GC after the grace, staged items gone, the row kept (aborted) until its TTL."""
        rows = db.execute("SELECT data_id FROM txn_items WHERE txn_id = ? AND data_id IS NOT NULL", (txn_id,))
        data_ids = [row["data_id"] for row in rows.fetchall()]
        self._discard_all(db, data_ids, now)
        db.execute("DELETE FROM txn_items WHERE txn_id = ?", (txn_id,))
        db.execute("UPDATE txns SET state = ? WHERE txn_id = ?", (ABORTED, txn_id))
