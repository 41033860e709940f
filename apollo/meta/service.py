"""The in-process metadata service: the store on its own thread, plus placement.

The client library talks to this object (``MetaService``); in cluster mode a
remote stub with the same methods takes its place. Store calls run on a
single dedicated thread: SQLite wants one writer, the event loop must never
wait on a disk flush, and calls that queue up share one commit
(``groupcommit``). Point lookups (one indexed row) are the exception: they run
inline on a read-only connection, because the thread hop costs more than the
query. Reads of background work (scrub and drive walks, the repair queue) run
on a third connection and thread, so a long scan never delays a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
import uuid
from concurrent.futures import Executor, ThreadPoolExecutor

from apollo import limits
from apollo.errors import InsufficientStorage
from apollo.meta.async_sql import AsyncSql
from apollo.meta.groupcommit import GroupCommitExecutor
from apollo.meta.sql_txns import raise_unless_open
from apollo.meta.standby import WRITTEN_AT, StandbyReads, written_position
from apollo.meta.store import SqlStore
from apollo.proto import meta_api
from apollo.proto.layout import NO_DRIVE, Scheme, SegmentLayout
from apollo.proto.meta_api import Runs, Who
from apollo.proto.placement import Placement, pg_of
from apollo.proto.records import Lookup

PENDING_WRITE_TTL_S = 24 * 3600.0  # a live process's unfinished write is only collected after this
log = logging.getLogger("apollo.meta.service")
KV_TOUCHES_HELD_S = 1.0  # reads of KV values are written within this (``apollo.meta.sql_kv``)


def _on_thread(call: meta_api.Call, target: str, executor: str):
    """A coroutine that runs the store method ``call.name`` of ``self.<target>`` on ``self.<executor>``.

    The call runs under ``Engine.run``: on PostgreSQL, a call that lost a race to another
    transaction, or met a database restart, runs again from the start.
    """

    async def method(self: MetaService, *args, **kwargs):
        store = getattr(self, target)
        run = functools.partial(store.engine.run, functools.partial(getattr(store, call.name), *args, **kwargs))
        return await asyncio.get_running_loop().run_in_executor(getattr(self, executor), run)

    return method


def _inline(call: meta_api.Call):
    """A point lookup: on SQLite at once on the read-only connection, else on a pool thread.

    A SQLite lookup costs tens of microseconds, less than the two GIL hand-offs of a thread
    hop; a PostgreSQL lookup is a network round trip the event loop must not wait for.
    """
    on_thread = _on_thread(call, "reader", "_executor")

    async def method(self: MetaService, *args, **kwargs):
        if self.store.engine.embedded:
            return getattr(self.reader, call.name)(*args, **kwargs)
        return await on_thread(self, *args, **kwargs)

    return method


def _planned(call: meta_api.Call, run):
    """A call written as a plan: on the service's event loop when it has ``async_sql`` (PostgreSQL), else as
    ``run``. A write's plan makes the commonest kind of the call, in a transaction of its own; any other
    (its plan answers None), or one that failed there before its COMMIT, is made as ``run``."""
    plan = getattr(SqlStore, f"{call.name}_plan")

    async def read(self: MetaService, *args, **kwargs):
        if self.async_sql is not None:
            return await self.async_sql.run(lambda: plan(self.reader, *args, **kwargs))
        return await run(self, *args, **kwargs)

    async def write(self: MetaService, *args, **kwargs):
        if self.async_sql is not None:
            made = await self.async_sql.write(plan(self.store, *args, **kwargs))
            if made is not None:
                return made
        return await run(self, *args, **kwargs)

    return read if call.kind is meta_api.Kind.READ else write


def _standby_first(call: meta_api.Call, run):
    """A read offered to a standby first, when the service has them (``apollo.meta.standby``)."""

    async def method(self: MetaService, *args, **kwargs):
        if self.standby is not None:
            answered, result = await self.standby.answer(call.name, args, kwargs)
            if answered:
                return result
        return await run(self, *args, **kwargs)

    return method


def _noting_position(run):
    """A write whose caller is told the primary's WAL position after it, when standbys answer reads: its
    next reads wait for a standby that has replayed that far (``apollo.proto.read_after``)."""

    async def method(self: MetaService, *args, **kwargs):
        result = await run(self, *args, **kwargs)
        if self.standby is not None:
            engine = self.store.engine
            with contextlib.suppress(Exception):  # committed: a failed look at the position fails no write
                at = await asyncio.get_running_loop().run_in_executor(self._executor, written_position, engine)
                WRITTEN_AT.set(max(at, WRITTEN_AT.get() or 0))
        return result

    return method


def _expose(call: meta_api.Call):
    """The service's coroutine for a table call, carrying the store method's signature (the RPC service
    binds a remote caller's arguments to it). A call on the caller's own pending writes that names no
    ``owner`` is this process's."""
    if call.runs is Runs.INLINE:
        run = _inline(call)
    elif call.runs is Runs.THREAD:  # the metadata thread (SQLite, group commit) or the pool (PostgreSQL)
        run = _on_thread(call, "store", "_executor")
    else:  # long scans on the background reader's own thread never delay a commit
        run = _on_thread(call, "_background_reader", "_background_pool")
    if call.planned:
        run = _planned(call, run)
    if call.standby:
        run = _standby_first(call, run)
    elif call.kind is meta_api.Kind.WRITE and call.who in (Who.KEY, Who.OWNER):  # what clients write
        run = _noting_position(run)
    store_method = getattr(SqlStore, call.name)
    if call.who is not Who.OWNER:
        return functools.wraps(store_method)(run)
    position = list(inspect.signature(store_method).parameters).index("owner") - 1  # after ``self``

    async def owned(self: MetaService, *args, **kwargs):
        if len(args) <= position:  # not given positionally
            kwargs.setdefault("owner", self.owner)
        return await run(self, *args, **kwargs)

    return functools.wraps(store_method)(owned)


class MetaService:
    def __init__(
        self, store: SqlStore, pg_count: int = limits.placement_groups_default, owner: str | None = None,
        placement: Placement | None = None, standby: StandbyReads | None = None,
        async_sql: AsyncSql | None = None,
    ) -> None:  # fmt: skip
        """``standby``: reads the API marks so are offered to PostgreSQL standbys first (``--standby-reads``).
        ``async_sql``: where the calls the API marks ``planned`` run, on the event loop (PostgreSQL; closed by
        ``aclose``)."""
        self.store = store
        self.standby = standby
        self.async_sql = async_sql
        self.reader = store.open_reader()  # used only from the event loop thread
        self.pg_count = pg_count
        self.owner = owner or uuid.uuid4().hex[:12]  # this process's identity for pending-write GC rows
        # SQLite has one writer: one thread, whose queued calls share a commit. PostgreSQL takes
        # concurrent transactions (and groups their WAL flushes itself): a thread per pooled connection.
        self._executor: Executor = (
            GroupCommitExecutor(store) if store.engine.embedded
            else ThreadPoolExecutor(store.engine.pool_size, thread_name_prefix="meta")
        )  # fmt: skip
        self._background_reader = store.open_reader()
        self._background_pool = ThreadPoolExecutor(1, thread_name_prefix="meta-scan")
        self.placement = placement or Placement()  # kept up to date by the drive probe or the cluster map
        self._touches_written: asyncio.Task | None = None

    _kv_find = _on_thread(meta_api.Call("kv_lookup", meta_api.Kind.READ, Who.LOCAL, Runs.BACKGROUND),
                          "_background_reader", "_background_pool")  # fmt: skip

    async def kv_lookup(self, bucket: str, keys: list[str], now: float) -> list[Lookup]:
        """``SqlStore.kv_lookup``, off the event loop (a batch of point reads, as ``get_versions``), recording
        each value found as read now; the reads are written by the next put's eviction, and by a transaction
        of their own ``KV_TOUCHES_HELD_S`` later (``apollo.meta.sql_kv``). :raises BucketNotFound,
        InvalidRequest:"""
        lookups = await self._kv_find(bucket, keys, now)
        found = [lookup.version.seq for lookup in lookups if lookup.version is not None]
        if found:
            self.store.kv_touches.record(found, now)
            if self._touches_written is None or self._touches_written.done():
                self._touches_written = asyncio.get_running_loop().create_task(self._write_touches())
        return lookups

    async def _write_touches(self) -> None:
        await asyncio.sleep(KV_TOUCHES_HELD_S)  # the reads of the next second join these
        try:
            await self.apply_kv_touches()
        except Exception:  # they stay gathered for the next try; a lookup must not fail for it
            log.exception("writing the reads of KV values failed")

    def place(self, segment_id: str, scheme: Scheme) -> tuple[int, tuple[str, ...]]:
        """Pick the group's drives, writable ones first; a write needs k+1 writable (k for replicas)."""
        pg = pg_of(segment_id, self.pg_count)
        usable = self.placement.usable
        quorum = min(scheme.width, scheme.k + 1) if scheme.kind == "ec" else 1
        if usable < quorum:
            raise InsufficientStorage(
                f"{usable} writable drives, a {scheme} write needs at least {quorum}; free space or add drives"
            )
        chosen = list(self.placement.drives_for(pg, scheme.width))
        # Too few drives in service: the missing shards get no drive; the write reports them for repair.
        return pg, tuple(chosen + [NO_DRIVE] * (scheme.width - len(chosen)))

    async def allocate_segment(self, scheme: Scheme, cell_size: int, offset: int, owner: str | None = None,
                               txn: tuple[str, str] | None = None) -> SegmentLayout:  # fmt: skip
        """Choose drives for a new segment and record it as pending (GC'd unless committed).

        ``owner``: whose pending write it is (default this process): only the owner may abandon it.
        ``txn``: (bucket, transaction id) of the owner's open transaction the segment is written for: it is then
        due for GC when the transaction expires, not after ``PENDING_WRITE_TTL_S``, so the segments a killed
        client was writing into a transaction go with the rest of it. :raises TransactionNotFound,
        TransactionClosed, AccessDenied: (the transaction)
        """
        owner = owner or self.owner
        due = time.time() + PENDING_WRITE_TTL_S
        if txn is not None:
            info = await self.get_txn(txn[1], txn[0], owner=owner)  # checks the id's format
            raise_unless_open(info.txn_id, info.state, info.expires, time.time())
            due = info.expires
        segment_id = uuid.uuid4().hex
        pg, drives = self.place(segment_id, scheme)
        layout = SegmentLayout(segment_id, offset, 0, scheme, cell_size, pg, drives)
        await self.add_pending(layout, owner, due)
        return layout

    async def repoint_segment(self, layout: SegmentLayout, owner: str | None = None) -> None:
        """The writer placed a shard of this pending segment on a spare drive (``layout`` is the new one).

        :raises AccessDenied, InvalidRequest: (``SqlStore.repoint_pending``)
        """
        await self.repoint_pending(layout, owner=owner or self.owner)

    async def aclose(self) -> None:
        """``close``, and the event loop's connections first."""
        if self.async_sql is not None:
            await self.async_sql.close()
        self.close()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._background_pool.shutdown(wait=True)
        if self.standby is not None:
            self.standby.close()
        self._background_reader.close()
        self.reader.close()
        self.store.close()


for _call in meta_api.CALLS.values():
    if _call.runs in (Runs.INLINE, Runs.THREAD, Runs.BACKGROUND):
        setattr(MetaService, _call.name, _expose(_call))
