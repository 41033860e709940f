"""Transactions over many objects on the native client: puts and deletes that all appear at one commit.

A checkpoint of N ranks: the coordinator begins a transaction and shares its id; every rank (each its own
process and client, with the same access key) joins it and writes its files straight to the storage
nodes; no reader sees any of them until the coordinator commits, and then every one at once (one
metadata transaction, ``apollo.meta.sql_txns``)::

    async with client.transaction("ckpt", if_prefix_absent="step-100/") as txn:   # coordinator
        share(txn.id)
        await txn.put("step-100/rank0.bin", data)
        wait_for_the_other_ranks()
    # left normally: committed; on an exception: aborted, and the staged data goes to GC

    async with client.join_transaction("ckpt", txn_id) as txn:                      # every other rank
        await txn.put(f"step-100/rank{rank}.bin", data)
    # a joiner never commits or aborts on leaving: the creator does (or an explicit commit()/abort())

A crashed coordinator's transaction ends at its TTL (the service grants ``limits.txn_ttl_s_min`` to
``txn_ttl_s_max``, whatever is asked): the garbage collector aborts it and reclaims the data after the
grace. See ``docs/transactions.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apollo import errors
from apollo.client.engine import ObjectEngine
from apollo.proto.records import ObjectAttrs, TxnInfo


@dataclass(frozen=True)
class StagedObject:
    """A put staged into a transaction: not visible before its commit, and without a version id until then."""

    key: str
    size: int
    etag: str


class Transaction:
    """One transaction, begun (``AsyncClient.transaction``) or joined (``AsyncClient.join_transaction``).

    Call sequence: ``begin()`` (``async with`` calls it) -> ``put``/``delete``, from any process that joined
    -> ``commit()`` or ``abort()`` (the creator's ``async with`` calls one of them on leaving). The same key
    staged twice: the last staging wins.
    """

    def __init__(self, engine: ObjectEngine, chunks: Callable[[Any], Any], bucket: str, *, txn_id: str | None = None,
                 ttl_s: float | None = None, if_prefix_absent: str | None = None) -> None:  # fmt: skip
        self._engine = engine
        self._chunks = chunks
        self.bucket = bucket
        self.creator = txn_id is None  # only the creator commits or aborts on leaving ``async with``
        self._id = txn_id
        self._ttl_s = ttl_s
        self._if_prefix_absent = if_prefix_absent
        self.info: TxnInfo | None = None  # as the service last answered
        self._finished = False

    @property
    def id(self) -> str:
        """The id other processes join with (32 hex digits). :raises InvalidRequest: not begun yet."""
        if self._id is None:
            raise errors.InvalidRequest("the transaction has not begun: use async with, or await begin()")
        return self._id

    async def begin(self) -> Transaction:
        """Begin it (creator), or check that it exists, is this key's and is open (joiner).

        :raises BucketNotFound, TransactionNotFound, TransactionClosed, AccessDenied, InvalidRequest:
        """
        if self.info is not None:
            return self
        if self._id is None:
            self.info = await self._engine.begin_txn(self.bucket, ttl_s=self._ttl_s,
                                                     if_prefix_absent=self._if_prefix_absent)  # fmt: skip
            self._id = self.info.txn_id
        else:
            self.info = await self._engine.get_txn(self.bucket, self._id)
            if self.info.state != "open":
                raise errors.TransactionClosed(f"transaction {self._id} is {self.info.state}")
        return self

    async def put(self, key: str, body: Any, *, content_type: str = "application/octet-stream",
                  metadata: dict[str, str] | None = None, if_none_match: bool = False,
                  md5: bool = False) -> StagedObject:  # fmt: skip
        """Write ``body`` (as ``AsyncClient.put`` takes it) to the storage nodes and stage it.
        ``if_none_match``: the commit fails (PreconditionFailed) if ``key`` exists then.

        :raises TransactionClosed, TransactionNotFound, AccessDenied, InsufficientStorage:
        """
        attrs = ObjectAttrs(content_type=content_type, user_meta=dict(metadata or {}))
        result = await self._engine.stage_put(self.id, self.bucket, key, self._chunks(body), attrs,
                                              if_none_match=if_none_match, md5=md5)  # fmt: skip
        return StagedObject(key, result.size, result.etag)

    async def delete(self, key: str) -> None:
        """Stage a delete of ``key`` (a delete marker on a versioned bucket; a missing key is no error)."""
        self.info = await self._engine.stage_delete(self.id, self.bucket, key)

    async def commit(self) -> TxnInfo:
        """Make everything staged (by every process) visible at once; sent again, the same answer.

        :raises PreconditionFailed: ``if_prefix_absent`` or a put's ``if_none_match`` failed: nothing is
            applied, and the transaction takes no more stagings (commit it again, or abort it, as
            ``async with`` does).
        :raises TransactionClosed: aborted, or expired.
        """
        self.info = await self._engine.commit_txn(self.id, self.bucket)
        self._finished = True
        return self.info

    async def abort(self) -> None:
        """Nothing staged becomes visible; the data goes to GC after the grace. :raises TransactionClosed:
        committed already."""
        await self._engine.abort_txn(self.id, self.bucket)
        self._finished = True

    async def __aenter__(self) -> Transaction:
        return await self.begin()

    async def __aexit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if self._finished or not self.creator or self.info is None:
            return
        if exc_type is None:
            try:
                await self.commit()
            except BaseException:
                await self._abort_quietly()
                raise
            return
        await self._abort_quietly()

    async def _abort_quietly(self) -> None:
        """On the way out of a failure, which is what the caller sees: an abort that fails too leaves the
        transaction to its TTL."""
        with contextlib.suppress(errors.ApolloError, OSError):
            await self.abort()


class SyncTransaction:
    """``Transaction`` for ``Client``: the same calls, blocking, and ``with`` instead of ``async with``."""

    def __init__(self, run: Callable[[Any], Any], txn: Transaction) -> None:
        self._run = run
        self._txn = txn

    @property
    def id(self) -> str:
        return self._txn.id

    @property
    def info(self) -> TxnInfo | None:
        return self._txn.info

    def begin(self) -> SyncTransaction:
        self._run(self._txn.begin())
        return self

    def put(self, key: str, body: Any, **options: Any) -> StagedObject:
        return self._run(self._txn.put(key, body, **options))

    def delete(self, key: str) -> None:
        self._run(self._txn.delete(key))

    def commit(self) -> TxnInfo:
        return self._run(self._txn.commit())

    def abort(self) -> None:
        self._run(self._txn.abort())

    def __enter__(self) -> SyncTransaction:
        return self.begin()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        self._run(self._txn.__aexit__(exc_type, exc, tb))
