"""The metadata API, declared once: every call, what it does, who may make it, where it runs.

Everything that used to write these lists out by hand is derived from ``CALLS``:

- ``MetaService`` (the in-process service) exposes each ``Runs.INLINE``/``THREAD``/``BACKGROUND``
  call as a coroutine running the store method of that name where the table says;
  ``Runs.SERVICE`` calls are written out in the service (they do more than one store call),
  ``Runs.RPC`` ones in the RPC service (they need what only it holds, e.g. the token keyring);
- the RPC service (``apollo.meta.rpc_service``) accepts a call only if ``who`` allows the
  caller's key (``remote`` is False: never over the network);
- ``RemoteMeta`` (the client's stub) has a method per remote call, and retries a call whose
  connection broke after it was sent only when ``retry_safe`` (else the outcome is unknown and
  the caller gets ``MetadataUnavailable``).

``tests/unit/meta/test_meta_api.py`` checks that the service, the RPC allow-list and the stub
each cover exactly this table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    READ = "read"
    WRITE = "write"


class Who(enum.Enum):
    """Who may make a call over the network."""

    LOCAL = "local"  # nobody: in-process only (background duties, admin commands on the database)
    KEY = "key"  # any access key: native clients, gateways
    OWNER = "owner"  # any access key, on its own pending writes only (``owner`` is the calling key)
    SERVICE = "service"  # the deployment's own roles (root keys): storage nodes, gateways


class Runs(enum.Enum):
    """Where the in-process service runs the store method (``apollo.meta.service``)."""

    INLINE = "inline"  # a point lookup: on the event loop (SQLite) or a pool thread (PostgreSQL)
    THREAD = "thread"  # the writer thread (SQLite, group commit) or a pool thread (PostgreSQL)
    BACKGROUND = "background"  # the background reader's own thread: long scans never delay a commit
    SERVICE = "service"  # written out in ``MetaService``: more than one store call
    RPC = "rpc"  # answered by the RPC service itself, from what only it holds (the token keyring)


@dataclass(frozen=True)
class Call:
    name: str
    kind: Kind
    who: Who
    runs: Runs
    idempotent: bool = False  # a write that may run twice with the same outcome
    standby: bool = False  # a read a PostgreSQL standby may answer (``apollo.meta.standby``)
    # A call the store also writes as a plan (``<name>_plan``), which the service runs on its event loop on
    # PostgreSQL (``apollo.meta.async_sql``); on SQLite it runs as ``runs`` says, and so does a write whose
    # plan answers None (it makes only the commonest kind of the call).
    planned: bool = False

    @property
    def remote(self) -> bool:
        return self.who is not Who.LOCAL

    @property
    def retry_safe(self) -> bool:
        """Whether a call cut off after it was sent may be sent again."""
        return self.kind is Kind.READ or self.idempotent


R, W = Kind.READ, Kind.WRITE
_KEY, _OWNER, _SERVICE, _LOCAL = Who.KEY, Who.OWNER, Who.SERVICE, Who.LOCAL
_INLINE, _THREAD, _BACKGROUND, _CUSTOM = Runs.INLINE, Runs.THREAD, Runs.BACKGROUND, Runs.SERVICE

CALLS: dict[str, Call] = {call.name: call for call in (
    # buckets
    Call("create_bucket", W, _KEY, _THREAD),
    Call("get_bucket", R, _KEY, _INLINE, standby=True),
    Call("list_buckets", R, _KEY, _THREAD),
    Call("delete_bucket", W, _KEY, _THREAD),
    Call("set_bucket_policy", W, _KEY, _THREAD, idempotent=True),
    Call("set_versioning", W, _KEY, _THREAD, idempotent=True),
    Call("set_bucket_tags", W, _KEY, _THREAD, idempotent=True),
    # objects
    Call("allocate_segment", W, _OWNER, _CUSTOM),
    Call("repoint_segment", W, _OWNER, _CUSTOM, idempotent=True),
    Call("abandon_segments", W, _OWNER, _THREAD, idempotent=True),
    Call("commit_version", W, _OWNER, _THREAD, planned=True),
    Call("commit_versions", W, _OWNER, _THREAD, planned=True),  # commits made together by a client, one transaction
    Call("get_version", R, _KEY, _INLINE, standby=True, planned=True),
    # a batch of lookups: many point reads, off the event loop on SQLite
    Call("get_versions", R, _KEY, _BACKGROUND, standby=True, planned=True),
    Call("delete_object", W, _KEY, _THREAD),
    Call("rename_object", W, _KEY, _THREAD),
    Call("get_tar_members", R, _KEY, _BACKGROUND, standby=True),  # member ranges of tar archives, a batch's at once
    Call("list_tar_members", R, _KEY, _THREAD, standby=True),
    Call("set_tags", W, _KEY, _THREAD, idempotent=True),
    Call("list_objects", R, _KEY, _THREAD, standby=True),
    Call("list_versions", R, _KEY, _THREAD, standby=True),
    # snapshots: the versions under a prefix at one instant, pinned (``apollo.meta.sql_snapshots``)
    Call("create_snapshot", W, _KEY, _THREAD),
    Call("get_snapshot", R, _KEY, _INLINE),
    Call("list_snapshots", R, _KEY, _THREAD),
    Call("list_snapshot", R, _KEY, _THREAD),
    Call("get_snapshot_versions", R, _KEY, _BACKGROUND),  # a batch of lookups, as get_versions
    Call("delete_snapshot", W, _KEY, _THREAD),
    # transactions over many objects: staged puts and deletes, visible at one commit (``apollo.meta.sql_txns``)
    Call("begin_txn", W, _OWNER, _THREAD),
    Call("get_txn", R, _OWNER, _INLINE),
    Call("stage_put", W, _OWNER, _THREAD),
    Call("stage_delete", W, _OWNER, _THREAD, idempotent=True),
    Call("commit_txn", W, _OWNER, _THREAD, idempotent=True),  # a commit sent again answers the same
    Call("abort_txn", W, _OWNER, _THREAD, idempotent=True),
    Call("expire_txns", W, _LOCAL, _THREAD),
    # KV namespaces: a bucket with a byte budget, a TTL and LRU eviction (``apollo.meta.sql_kv``)
    Call("create_kv_namespace", W, _KEY, _THREAD),
    Call("set_kv_namespace", W, _KEY, _THREAD, idempotent=True),
    Call("get_kv_namespace", R, _KEY, _INLINE),
    Call("kv_lookup", R, _KEY, _CUSTOM),  # a batch of lookups, off the event loop, whose reads are recorded
    Call("kv_prefix_hits", R, _KEY, _INLINE),
    Call("apply_kv_touches", W, _LOCAL, _THREAD),
    Call("expire_kv", W, _LOCAL, _THREAD),
    # multipart uploads
    Call("create_upload", W, _KEY, _THREAD),
    Call("get_upload", R, _KEY, _INLINE),
    Call("commit_part", W, _OWNER, _THREAD),
    Call("list_parts", R, _KEY, _THREAD),
    Call("list_uploads", R, _KEY, _THREAD),
    Call("abort_upload", W, _KEY, _THREAD),
    Call("complete_upload", W, _KEY, _THREAD),
    Call("expire_uploads", W, _LOCAL, _THREAD),
    # damage found by readers and writers; the repair queue and its walks
    Call("report_damage", W, _KEY, _THREAD, idempotent=True),
    Call("repair_backlog", R, _LOCAL, _BACKGROUND),
    Call("degraded_groups", R, _LOCAL, _BACKGROUND),
    Call("due_repairs", R, _LOCAL, _BACKGROUND),
    Call("segment_layout", R, _LOCAL, _BACKGROUND),
    Call("commit_repair", W, _LOCAL, _THREAD),
    Call("defer_repairs", W, _LOCAL, _THREAD),
    Call("drop_repairs", W, _LOCAL, _THREAD),
    Call("retry_repairs_now", W, _LOCAL, _THREAD),
    Call("queue_moves", W, _LOCAL, _THREAD),
    Call("queued_moves", R, _LOCAL, _BACKGROUND),
    Call("segments_after", R, _LOCAL, _BACKGROUND),
    Call("reconcile_drive_index", W, _LOCAL, _THREAD),
    Call("segment_count", R, _LOCAL, _BACKGROUND),
    Call("shard_references", R, _LOCAL, _BACKGROUND),
    Call("pending_repairs_on", R, _LOCAL, _BACKGROUND),
    Call("garbage_on", R, _LOCAL, _BACKGROUND),
    # drives and drive jobs
    Call("list_drives", R, _LOCAL, _BACKGROUND),
    Call("removed_drive_ids", R, _LOCAL, _BACKGROUND),
    Call("set_drive_state", W, _LOCAL, _THREAD),
    Call("set_drive_usage", W, _LOCAL, _THREAD),
    Call("drive_jobs", R, _LOCAL, _BACKGROUND),
    Call("start_drive_job", W, _LOCAL, _THREAD),
    Call("advance_drive_job", W, _LOCAL, _THREAD),
    Call("finish_drive_job", W, _LOCAL, _THREAD),
    # the garbage queue: pending writes and discarded data
    Call("add_pending", W, _LOCAL, _THREAD),
    Call("repoint_pending", W, _LOCAL, _THREAD),
    Call("due_garbage", R, _LOCAL, _THREAD),
    Call("forget_garbage", W, _LOCAL, _THREAD),
    Call("release_orphans", W, _LOCAL, _THREAD),
    # settings, keys, the cluster map, token keys, leases
    Call("get_setting", R, _LOCAL, _INLINE),
    Call("set_setting", W, _LOCAL, _THREAD),
    Call("settings_like", R, _LOCAL, _BACKGROUND),
    Call("key_rights", R, _SERVICE, _INLINE),  # (secret, is root): gateways check signatures and root rights
    Call("get_secret", R, _SERVICE, _INLINE),
    Call("put_session", W, _SERVICE, _THREAD),  # a gateway's AssumeRole: a temporary key for its caller
    # web-console logins (``apollo.meta.sql_console``): a front door's, on every gateway and worker alike
    Call("open_console_session", W, _SERVICE, _THREAD),
    Call("console_session", R, _SERVICE, _INLINE),
    Call("close_console_session", W, _SERVICE, _THREAD, idempotent=True),
    Call("cluster_map", R, _KEY, _THREAD),
    Call("register_node", W, _SERVICE, _THREAD, idempotent=True),
    Call("node_heartbeat", W, _SERVICE, _THREAD, idempotent=True),
    Call("service_tokens", R, _SERVICE, Runs.RPC),
    Call("token_keys", R, _LOCAL, _BACKGROUND),
    Call("add_token_key", W, _LOCAL, _THREAD),
    Call("drop_token_keys", W, _LOCAL, _THREAD),
    Call("acquire_lease", W, _LOCAL, _THREAD),
    Call("release_lease", W, _LOCAL, _THREAD),
    Call("leases", R, _LOCAL, _BACKGROUND),
)}  # fmt: skip

REMOTE: dict[str, Call] = {name: call for name, call in CALLS.items() if call.remote}


def allowed(call_name: str, service_key: bool) -> Call | None:
    """The call, if a key with (``service_key``) or without service rights may make it over the network."""
    call = REMOTE.get(call_name)
    if call is None or (call.who is Who.SERVICE and not service_key):
        return None
    return call
