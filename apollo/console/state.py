"""What the console's handlers share: the object engine, the status source, sessions and the key lookup.

The console is a front door (docs/architecture.md): it reaches objects only through the
``ObjectEngine`` the S3 handlers use, and cluster state only through the ``status`` callable its host
hands it. The all-in-one server passes ``apollo.cluster.admin.status`` bound to a read-only store,
the very function ``apollo admin status`` calls, so the page and the command cannot disagree and no
SQL is written twice; the console itself imports neither ``cluster`` nor ``meta``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from apollo import errors
from apollo.client.engine import ObjectEngine
from apollo.console.activity import Activity
from apollo.console.render import PREFIX
from apollo.console.sessions import LoginThrottle, Session, Sessions
from apollo.keycache import SecretCache
from apollo.proto.bucket_access import AccessDecider, Caller, request_context
from apollo.proto.records import Bucket, KeyRights
from apollo.proto.s3_actions import required

if TYPE_CHECKING:
    from apollo.cluster.admin import Status
    from apollo.meta.sql_users import KeyInfo
    from apollo.proto.cluster_map import ClusterMap

SESSION_COOKIE = "apollo_console"
CALLER = "console_caller"  # the request's Caller (its key and policies), set with its live session
LOGIN_COOKIE = "apollo_console_login"  # the login form's CSRF token, before there is a session
STATUS_TTL_S = 1.0  # many open overview tabs cost one status read a second, not one each
StatusSource = Callable[[], "Status"]  # blocking: runs on the console's own thread


@dataclass(frozen=True)
class Directory:
    """The keys page's data: every access key and every identity policy (never a secret)."""

    keys: list[KeyInfo]
    policies: list[tuple[str, bool, tuple[str, ...], str]]  # name, built in, keys it is attached to, document


DirectorySource = Callable[[], Directory]  # blocking, as ``StatusSource``


class Controls(Protocol):
    """What the overview's forms change of the background work (``apollo.cluster.admin.ConsoleControls``,
    bound by the host to its store); blocking, run on the console's own thread.

    :raises InvalidRequest: a rate that does not parse, a pass that does not exist.
    """

    passes: tuple[str, ...]  # the background passes ``start_pass`` takes

    def tune(self, repair_rate: str, scrub_rate: str, repair_paused: bool) -> object: ...

    def start_pass(self, name: str) -> None: ...


@dataclass
class Snapshot:
    """What the overview shows, read on the console's thread: the status and what its methods compute
    from the drives' paths (``capacity`` stats each drive's filesystem, which a hung disk could stall)."""

    status: Status
    capacity: tuple[int, int, int, int]  # used, total bytes, online drives, filesystems (Status.capacity)
    next_steps: list[str]


class Console:
    """One per server process; its handlers are bound to it (``apollo.console.app``)."""

    def __init__(self, engine: ObjectEngine, status: StatusSource | None, shared_dir: Path | None = None,
                 controls: Controls | None = None, directory: DirectorySource | None = None,
                 cluster_map: Callable[[], ClusterMap] | None = None) -> None:  # fmt: skip
        """``status``: the overview's figures (the all-in-one server's); None on a gateway, whose overview is
        ``cluster_map()``, the map it routes by.
        ``shared_dir``: where all ``--workers`` count failed logins (``apollo.console.sessions``); None: this
        process counts its own. Sessions are the metadata store's, through ``engine``, whatever the host.
        ``controls``: the background work's rates and passes; None: the overview only shows them.
        ``directory``: the access keys and policies (the keys page); None: no such page."""
        self.engine = engine
        self._status = status
        self.cluster_map = cluster_map
        self.controls = controls
        self._directory = directory
        self.activity = Activity()
        self.sessions = Sessions(engine)
        self.throttle = LoginThrottle(shared_dir)
        self.keys = SecretCache(engine.key_rights)  # the lookup S3 signatures use, with its own cache
        self._decider = AccessDecider(engine.get_bucket, engine.head)
        # One thread: the status source's store connection is used by one thread at a time, and a slow
        # status read (it counts segments) never takes the event loop or the metadata writer with it.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="console-status")
        self._status_lock = asyncio.Lock()
        self._status_cache: tuple[float, Snapshot] | None = None

    def _snapshot(self) -> Snapshot:
        status = self._status()
        return Snapshot(status, status.capacity(), status.next_steps())

    async def status(self) -> Snapshot:
        async with self._status_lock:
            now = time.monotonic()
            if self._status_cache is None or now - self._status_cache[0] >= STATUS_TTL_S:
                snapshot = await asyncio.get_running_loop().run_in_executor(self._executor, self._snapshot)
                self._status_cache = (time.monotonic(), snapshot)
            return self._status_cache[1]

    async def directory(self) -> Directory | None:
        """The keys and policies, read on the console's thread."""
        if self._directory is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._directory)

    async def control(self, change: Callable[..., object], *args: object) -> None:
        """Run a ``controls`` call on the console's thread; the next overview reads fresh figures."""
        await asyncio.get_running_loop().run_in_executor(self._executor, change, *args)
        self._status_cache = None

    async def check_pair(self, access_key: str, secret_key: str) -> tuple[bytes, KeyRights] | None:
        """(the digest of the secret, the key's rights) when ``secret_key`` is ``access_key``'s, else None
        (either part wrong)."""
        known = await self.keys.get(access_key) if access_key else None
        digest = _digest(secret_key)
        if not isinstance(known, KeyRights) or not hmac.compare_digest(_digest(known.secret), digest):
            return None
        return digest, known

    async def session(self, request: web.Request) -> Session | None:
        """The request's live session: its cookie names one in the metadata store, it has not expired or
        been logged out (at any gateway or worker), and its key still has the secret it logged in with (a
        deleted or rotated key ends every console session within the key cache's 10 s, as it ends S3 access).

        :raises MetadataUnavailable:
        """
        session = await self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None
        known = await self.keys.get(session.access_key)
        if not isinstance(known, KeyRights) or not session.holds(_digest(known.secret)):
            await self.sessions.close(session)
            return None
        request[CALLER] = Caller.of(session.access_key, known)  # its policies as they are now (10 s cache)
        return session

    async def authorize(self, request: web.Request, op: str, bucket: str, key: str = "",
                        context: dict[str, str] | None = None, version_id: str | None = None) -> None:  # fmt: skip
        """What the S3 door decides for the same operation (``apollo.proto.bucket_access``): the console
        works through the object engine, beside the gateway's checks, so it makes them itself.

        :raises AccessDenied:
        """
        caller: Caller = request[CALLER]
        every = {**request_context(request.remote or "", request.secure, time.time()), **(context or {})}
        if version_id is not None:
            every["s3:VersionId"] = version_id
        refused = await self._decider.first_denial(caller, required(op, bucket or None, key or None, version_id),
                                                   every, {(bucket, key): version_id})  # fmt: skip
        if refused is not None:
            check, _ = refused
            raise errors.AccessDenied(f"{caller.principal} may not {check.action} on {check.resource}")

    async def visible(self, request: web.Request, buckets: list[Bucket]) -> list[Bucket]:
        """The buckets the session's key sees in ListBuckets."""
        context = request_context(request.remote or "", request.secure, time.time())
        return await self._decider.visible(request[CALLER], buckets, context)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _digest(secret: str) -> bytes:
    """Compared instead of the secret: at a fixed length, whatever the secrets' lengths; a session keeps only
    a fingerprint of it (``apollo.console.sessions.fingerprint``)."""
    return hashlib.sha256(secret.encode()).digest()


def cookie_flags(request: web.Request, max_age_s: float) -> dict[str, Any]:
    """HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), Secure over HTTPS,
    scoped to the console's path."""
    return {"path": PREFIX, "httponly": True, "samesite": "Strict", "secure": request.secure,
            "max_age": int(max_age_s)}  # fmt: skip
