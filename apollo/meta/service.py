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
import functools
import time
import uuid
from concurrent.futures import Executor, ThreadPoolExecutor

from apollo import limits
from apollo.errors import InsufficientStorage
from apollo.meta.groupcommit import GroupCommitExecutor
from apollo.meta.placement import Candidate, pg_of, rank
from apollo.meta.store import SqlStore
from apollo.storage.ec import Scheme
from apollo.types import NO_DRIVE, SegmentLayout

PENDING_WRITE_TTL_S = 24 * 3600.0  # a live process's unfinished write is only collected after this


def _on_thread(target: str, executor: str):
    """Expose a blocking method of ``self.<target>`` as a coroutine run by ``self.<executor>``.

    The call runs under ``Engine.run``: on PostgreSQL, a call that lost a race to another
    transaction, or met a database restart, runs again from the start. The coroutine carries the
    store method's signature, which the RPC service binds a remote caller's arguments to.
    ``owned``: the call takes an ``owner`` (whose pending writes it may touch); an in-process
    caller that names none is this process.
    """

    def expose(name: str, owned: bool = False):
        async def method(self: MetaService, *args, **kwargs):
            if owned:
                kwargs.setdefault("owner", self.owner)
            store = getattr(self, target)
            call = functools.partial(store.engine.run, functools.partial(getattr(store, name), *args, **kwargs))
            return await asyncio.get_running_loop().run_in_executor(getattr(self, executor), call)

        return functools.wraps(getattr(SqlStore, name))(method)

    return expose


# Writes: the metadata thread (SQLite, with group commit) or the pool's threads (PostgreSQL).
_threaded = _on_thread("store", "_executor")
# Reads of background work: the background reader's own thread, so a long scan never delays a commit.
_background = _on_thread("_background_reader", "_background_pool")
_lookup = _on_thread("reader", "_executor")


def _inline(name: str):
    """Expose a point lookup: on SQLite at once on the read-only connection, else on a pool thread.

    A SQLite lookup costs tens of microseconds, less than the two GIL hand-offs of a thread
    hop; a PostgreSQL lookup is a network round trip the event loop must not wait for.
    """
    on_thread = _lookup(name)

    async def method(self: MetaService, *args, **kwargs):
        if self.store.engine.embedded:
            return getattr(self.reader, name)(*args, **kwargs)
        return await on_thread(self, *args, **kwargs)

    return functools.wraps(getattr(SqlStore, name))(method)


class MetaService:
    def __init__(
        self, store: SqlStore, pg_count: int = limits.placement_groups_default, owner: str | None = None
    ) -> None:
        self.store = store
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
        self.candidates: list[Candidate] = []
        self.writable: set[str] = set()

    def set_drives(self, candidates: list[Candidate], writable: set[str]) -> None:
        """Called by the node manager whenever drive health or free space changes."""
        self.candidates = candidates
        self.writable = writable

    def place(self, segment_id: str, scheme: Scheme) -> tuple[int, tuple[str, ...]]:
        """Pick the group's drives, writable ones first; a write needs k+1 writable (k for replicas)."""
        pg = pg_of(segment_id, self.pg_count)
        ranked = rank(pg, self.candidates)
        usable = [c.drive_id for c in ranked if c.drive_id in self.writable]
        quorum = min(scheme.width, scheme.k + 1) if scheme.kind == "ec" else 1
        if len(usable) < quorum:
            raise InsufficientStorage(
                f"{len(usable)} writable drives, a {scheme} write needs at least {quorum}; free space or add drives"
            )
        fillers = [c.drive_id for c in ranked if c.drive_id not in self.writable]
        chosen = (usable + fillers)[: scheme.width]
        # Too few drives in service: the missing shards get no drive; the write reports them for repair.
        return pg, tuple(chosen + [NO_DRIVE] * (scheme.width - len(chosen)))

    async def allocate_segment(self, scheme: Scheme, cell_size: int, offset: int, owner: str | None = None
                               ) -> SegmentLayout:  # fmt: skip
        """Choose drives for a new segment and record it as pending (GC'd unless committed).

        ``owner``: whose pending write it is (default this process): only the owner may abandon it.
        """
        segment_id = uuid.uuid4().hex
        pg, drives = self.place(segment_id, scheme)
        layout = SegmentLayout(segment_id, offset, 0, scheme, cell_size, pg, drives)
        await self.add_pending(layout, owner or self.owner, time.time() + PENDING_WRITE_TTL_S)
        return layout

    async def repoint_segment(self, layout: SegmentLayout, owner: str | None = None) -> None:
        """The writer placed a shard of this pending segment on a spare drive (``layout`` is the new one).

        :raises AccessDenied, InvalidRequest: (``SqlStore.repoint_pending``)
        """
        await self.repoint_pending(layout, owner=owner or self.owner)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._background_pool.shutdown(wait=True)
        self._background_reader.close()
        self.reader.close()
        self.store.close()

    add_pending = _threaded("add_pending")
    repoint_pending = _threaded("repoint_pending", owned=True)
    create_bucket = _threaded("create_bucket")
    get_bucket = _inline("get_bucket")
    list_buckets = _threaded("list_buckets")
    delete_bucket = _threaded("delete_bucket")
    set_versioning = _threaded("set_versioning")
    commit_version = _threaded("commit_version", owned=True)
    get_version = _inline("get_version")
    delete_object = _threaded("delete_object")
    set_tags = _threaded("set_tags")
    list_objects = _threaded("list_objects")
    list_versions = _threaded("list_versions")
    create_upload = _threaded("create_upload")
    get_upload = _inline("get_upload")
    commit_part = _threaded("commit_part", owned=True)
    list_parts = _threaded("list_parts")
    list_uploads = _threaded("list_uploads")
    abort_upload = _threaded("abort_upload")
    expire_uploads = _threaded("expire_uploads")
    complete_upload = _threaded("complete_upload")
    get_secret = _inline("get_secret")
    get_setting = _inline("get_setting")
    set_setting = _threaded("set_setting")
    settings_like = _background("settings_like")
    report_damage = _threaded("report_damage")
    # drives and self-healing (apollo.cluster)
    list_drives = _background("list_drives")
    set_drive_state = _threaded("set_drive_state")
    set_drive_usage = _threaded("set_drive_usage")
    repair_backlog = _background("repair_backlog")
    degraded_groups = _background("degraded_groups")
    due_repairs = _background("due_repairs")
    segment_layout = _background("segment_layout")
    commit_repair = _threaded("commit_repair")
    defer_repairs = _threaded("defer_repairs")
    drop_repairs = _threaded("drop_repairs")
    retry_repairs_now = _threaded("retry_repairs_now")
    queue_moves = _threaded("queue_moves")
    queued_moves = _background("queued_moves")
    segments_after = _background("segments_after")
    segment_count = _background("segment_count")
    shard_references = _background("shard_references")
    drive_jobs = _background("drive_jobs")
    start_drive_job = _threaded("start_drive_job")
    advance_drive_job = _threaded("advance_drive_job")
    finish_drive_job = _threaded("finish_drive_job")
    pending_repairs_on = _background("pending_repairs_on")
    due_garbage = _threaded("due_garbage")
    forget_garbage = _threaded("forget_garbage")
    release_orphans = _threaded("release_orphans")
    abandon_segments = _threaded("abandon_segments")
    # cluster mode (apollo.meta.rpc_service)
    key_rights = _inline("key_rights")
    cluster_map = _threaded("cluster_map")
    register_node = _threaded("register_node")
    node_heartbeat = _threaded("node_heartbeat")
    token_keys = _background("token_keys")
    add_token_key = _threaded("add_token_key")
    drop_token_keys = _threaded("drop_token_keys")
    # the manager lease (apollo.cluster.lease)
    acquire_lease = _threaded("acquire_lease")
    release_lease = _threaded("release_lease")
    leases = _background("leases")
