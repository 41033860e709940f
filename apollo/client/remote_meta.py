"""``MetaService`` across the network: what gateways and native clients hold in cluster mode.

It offers the coroutine methods the client library and the S3 gateway call on an
in-process ``MetaService``, so neither can tell the difference, plus the cluster map:
the placement view writers consult (``placement``) and a
``RemoteStorageNode`` per drive in ``nodes``, refreshed every ``MAP_REFRESH_S``, and at
once when a storage node answers with a newer map epoch than the one held.

Capability tokens that come back with results are kept per segment and handed to the
storage nodes (``token_for``); a root key (a gateway) also holds service tokens that
cover every segment.

Retries: a call that could not reach the metadata service at all (connection refused:
it is restarting, or fails over) is retried for up to ``RETRY_FOR_S``. A call whose
connection broke after it was sent is retried only if ``apollo.proto.meta_api`` says a
retry is safe (a read, an idempotent write); another write then raises
``MetadataUnavailable``, because it may have committed (S3 clients retry it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable

import aiohttp

from apollo import errors, limits, tokens
from apollo.client.commits import SEGMENTS_SHARED_MAX, SharedCommits
from apollo.client.directory import NodeDirectory
from apollo.client.lookups import LatestLookups
from apollo.client.remote_storage import Timeouts
from apollo.client.tls import CERTS_ENV, refuses_us, tls_failure
from apollo.eventloop import every
from apollo.proto import codec, meta_api, read_after, routes, signing
from apollo.proto.cluster_map import ClusterMap
from apollo.proto.placement import Placement

log = logging.getLogger("apollo.meta.remote")
ACCEPT = f"{codec.FRAMED_COLUMNS}, {codec.FRAMED}"  # a service of an older version answers framed, or JSON
RETRY_FOR_S = 30.0
MAP_REFRESH_S = limits.cluster_map_refresh_s
# A call waits this long for its answer: more than a metadata call takes while the database is away
# (the service retries for 45 s: a failover of its database) before its outcome is unknown.
CALL_TIMEOUT = aiohttp.ClientTimeout(total=60.0, connect=3.0)
# The map refresh (every MAP_REFRESH_S) is the services' health check: it tries each once within this.
# When none answers, an outage starts: calls fail at once, instead of hanging a minute each, until one does.
OUTAGE_TIMEOUT = aiohttp.ClientTimeout(total=3.0, connect=1.0)
UNAVAILABLE = "the metadata service is unavailable; retry later"  # what callers see: no URL, no traceback
TOKENS_KEPT = 100_000


def _retry_safe(method: str) -> bool:
    declared = meta_api.REMOTE.get(method)
    return declared is not None and declared.retry_safe


def _remote(name: str):
    """The stub of a remote call: the service binds the arguments to its own signature."""

    async def method(self: RemoteMeta, *args, **kwargs):
        return await self.call(name, *args, **kwargs)

    method.__name__ = name
    return method


class RemoteMeta:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, session: aiohttp.ClientSession,
                 storage_timeouts: Timeouts | None = None, *,
                 ssl_context: ssl.SSLContext | None = None) -> None:  # fmt: skip
        """``ssl_context``: the TLS context of every call to an ``https://`` metadata service or storage node
        (``apollo.client.tls``: the cluster CA and, under mutual TLS, this process's client certificate);
        None: aiohttp's defaults."""
        # Several metadata services (comma-separated): a call that cannot connect moves on to the next. Each
        # process starts at one picked at random, so the clients, gateways and nodes of a cluster spread their
        # calls over the services instead of all calling the first one listed.
        self.endpoints = [e.strip().rstrip("/") for e in endpoint.split(",") if e.strip()]
        self._current = random.randrange(len(self.endpoints)) if self.endpoints else 0
        self.access_key = access_key
        self.secret_key = secret_key
        self.session = session
        self.ssl: ssl.SSLContext | bool = ssl_context or True  # aiohttp's per-request ``ssl``: True is its default
        self.storage_timeouts = storage_timeouts or Timeouts()
        self.map = ClusterMap(epoch=-1)
        self.placement = Placement()  # follows the cluster map; writers leave out drives they find full
        self.directory = NodeDirectory(session, self.token_for, self.storage_timeouts, self._saw_epoch, ssl_context)
        self.nodes = self.directory.nodes  # drive id -> its node; updated in place
        self._tokens: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._service_tokens: tuple[float, dict[str, str]] = (0.0, {})
        self._refresher: asyncio.Task | None = None
        self._service = False
        self._catching_up: asyncio.Task | None = None
        self.outage_since: float | None = None  # monotonic; set while no metadata service answers
        # The highest WAL position our writes reached, sent with every call: a service that reads from standbys
        # answers our reads from one that has replayed that far (``apollo.proto.read_after``).
        self.written_at: str | None = None
        self.on_availability: Callable[[bool], None] = lambda available: None  # told as an outage starts, ends
        self._latest = LatestLookups(self.call)
        self._commits = SharedCommits(self.call)

    # calls -----------------------------------------------------------------------------------

    async def call(self, method: str, *args, **kwargs):
        """:raises MetadataUnavailable: at once during an outage (the map refresh probes the services every
        ``MAP_REFRESH_S`` and ends it), after ``RETRY_FOR_S`` of retries when no service answers, or when a
        write was cut off after it was sent (its outcome unknown); the message names no internals."""
        if self.outage_since is not None:
            raise errors.MetadataUnavailable(UNAVAILABLE)
        return await self._send(method, args, kwargs, patient=True)

    async def call_briefly(self, method: str, *args, **kwargs):
        """``call``, but each service is tried once, within ``OUTAGE_TIMEOUT``: for a call repeated on a timer
        (a storage node's heartbeat), where the next one is worth more than waiting on this one. A patient call
        on a connection whose peer went silent waits its whole ``CALL_TIMEOUT``, and TCP's retransmission
        backoff delays it further after the link heals: a node's heartbeats stopped for a minute and came back
        20 s after its rack's link did.

        :raises MetadataUnavailable: no service answered in time."""
        return await self._send(method, args, kwargs, patient=False)

    async def _send(self, method: str, args: tuple, kwargs: dict, *, patient: bool):
        """``patient``: retry unreachable services for ``RETRY_FOR_S``; else try each once, briefly."""
        path = routes.RPC_PREFIX + method
        body = codec.dumps({"args": list(args), "kwargs": kwargs})
        outage = not patient
        deadline = time.monotonic() + (0.0 if outage else RETRY_FOR_S)
        tries_left = len(self.endpoints) if outage else None
        tls_refused = 0  # services in a row whose TLS handshake failed
        delay = 0.05
        while True:
            headers = {**signing.sign("POST", path, body, self.access_key, self.secret_key), "Accept": ACCEPT}
            if self.written_at is not None:
                headers[read_after.READ_AFTER] = self.written_at
            try:
                timeout = OUTAGE_TIMEOUT if outage else CALL_TIMEOUT
                async with self.session.post(self.endpoint + path, data=body, headers=headers, timeout=timeout,
                                             ssl=self.ssl) as response:  # fmt: skip
                    answer = await response.read()
                    self._saw_position(response.headers.get(read_after.WRITTEN_AT))
                    framed = response.content_type in (codec.FRAMED, codec.FRAMED_COLUMNS)
                    reply = codec.loads_framed(answer) if framed else codec.loads(answer)
                break
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                failure = exc
                # A connection never made is always safe to retry; one cut off after the call went out is
                # safe only for the calls the API declares so.
                safe = isinstance(exc, aiohttp.ClientConnectorError) or _retry_safe(method)
                refusal = await self._tls_refusal(exc)
                if refusal is not None:  # the next service may take the call, when it is safe to send again
                    tls_refused += 1
                    self._tls_refused(method, refusal, give_up=tls_refused >= len(self.endpoints) or not safe)
                elif not safe:
                    log.warning("metadata call %s to %s cut off, outcome unknown: %r", method, self.endpoint, exc)
                    raise errors.MetadataUnavailable(UNAVAILABLE) from exc
                self._current = (self._current + 1) % len(self.endpoints)
            if tries_left is not None:
                tries_left -= 1
            if time.monotonic() > deadline and not tries_left:
                log.debug("metadata call %s failed: services %s unreachable: %r", method, self.endpoints, failure)
                raise errors.MetadataUnavailable(UNAVAILABLE) from failure
            await asyncio.sleep(0 if outage else delay)
            delay = min(delay * 2, 1.0)
        if "error" in reply:
            raise codec.error_from_wire(reply["error"])
        for segment_id, by_op in reply.get("tokens", {}).items():
            for op, token in by_op.items():
                self._tokens[(segment_id, op)] = token
                self._tokens.move_to_end((segment_id, op))
        while len(self._tokens) > TOKENS_KEPT:
            self._tokens.popitem(last=False)
        return reply["result"]

    def _saw_position(self, written_at: str | None) -> None:
        """Keep the highest WAL position our writes reached. A header that does not parse is ignored: sent
        back, it would only get our calls refused."""
        if written_at is None:
            return
        with contextlib.suppress(errors.InvalidRequest):
            if self.written_at is None or read_after.parse(written_at) > read_after.parse(self.written_at):
                self.written_at = written_at

    async def _tls_refusal(self, failure: Exception) -> str | None:
        """What went wrong with TLS, when a call failed over it: a certificate refused either way (ours by
        the service, or the service's by us), or a peer that speaks no TLS; None for any other failure."""
        refusal = tls_failure(failure)
        if refusal is not None:
            return getattr(refusal, "verify_message", None) or refusal.reason or str(refusal)
        # A role under mutual TLS refuses our certificate by hanging up, with no alert (``refuses_us``).
        hung_up = isinstance(failure, aiohttp.ServerDisconnectedError) and self.endpoint.startswith("https://")
        if hung_up and await refuses_us(self.endpoint, self.ssl if isinstance(self.ssl, ssl.SSLContext) else None):
            return "it ends our connections after the TLS handshake: no client certificate, or one it does not trust"
        return None

    def _tls_refused(self, method: str, detail: str, give_up: bool) -> None:
        """A certificate refused, ours by the service or the service's by us. When every service refuses,
        waiting will not mend it (a configuration error), and a write that may have gone out is not sent
        again: then raise at once, saying what failed.

        :raises MetadataUnavailable: ``give_up``.
        """
        log.warning("metadata call %s: TLS with %s failed: %s", method, self.endpoint, detail)
        if give_up:
            raise errors.MetadataUnavailable(f"TLS with the metadata service failed ({detail}): check the "
                                             f"certificates (certs= or {CERTS_ENV} of a client, --certs DIR of a "
                                             f"role) against the cluster CA")  # fmt: skip

    def token_for(self, op: str, segment_id: str) -> str:
        token = self._tokens.get((segment_id, op))
        if token is not None:
            return token
        expires, service = self._service_tokens
        if op in service and expires > time.time():
            return service[op]
        raise errors.TokenError(f"no {op} token for segment {segment_id}: look the object up again")

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    # the cluster map -------------------------------------------------------------------------

    async def start(self, service: bool = False) -> RemoteMeta:
        """Fetch the map (and, for a root key, service tokens), then keep both fresh."""
        self._service = service
        await self.refresh(service, patient=True)
        self._refresher = asyncio.create_task(every(MAP_REFRESH_S, self._check, "cluster map refresh"))
        return self

    async def _check(self) -> None:
        """The periodic refresh: an outage is logged once by ``refresh``, not at every failed check."""
        with contextlib.suppress(errors.MetadataUnavailable):
            await self.refresh(self._service)

    def _saw_epoch(self, epoch: int) -> None:
        """A storage node knows a newer map than ours: fetch it now rather than at the next refresh."""
        if epoch > self.map.epoch and (self._catching_up is None or self._catching_up.done()):
            self._catching_up = asyncio.ensure_future(self._check())

    async def refresh(self, service: bool = False, patient: bool = False) -> None:
        """Fetch the map (and service tokens when due). It doubles as the health check of the metadata
        services, so it tries each once unless ``patient`` (at start): within seconds of losing every
        service, requests fail fast and readiness says so; one log line when none answers any more, one
        when one does again.

        :raises MetadataUnavailable:
        """
        try:
            cluster = await self._send("cluster_map", (), {}, patient=patient)
            if service and self._service_tokens[0] - time.time() < tokens.SERVICE_TOKEN_TTL_S / 2:
                self._service_tokens = (time.time() + tokens.SERVICE_TOKEN_TTL_S - 5, await self.service_tokens())
        except errors.MetadataUnavailable:
            if self.outage_since is None:
                self.outage_since = time.monotonic()
                log.error("metadata services %s unreachable: requests fail at once until one answers",
                          ", ".join(self.endpoints))  # fmt: skip
                self.on_availability(False)
            raise
        if self.outage_since is not None:
            log.warning("metadata service %s answers again after %.0f s", self.endpoint,
                        time.monotonic() - self.outage_since)  # fmt: skip
            self.outage_since = None
            self.on_availability(True)
        self.set_map(cluster)

    def set_map(self, cluster: ClusterMap) -> None:
        self.map = cluster
        self.placement.update(cluster.candidates(), cluster.writable())
        self.directory.update(cluster)

    async def close(self) -> None:
        tasks = [t for t in (self._refresher, self._catching_up) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.directory.close()

    # what the client library and the gateway call --------------------------------------------

    async def get_version(self, bucket: str, key: str, version_id: str | None = None, with_data: bool = True):
        """The lookup of every GET: concurrent ones of a latest version share calls (``apollo.client.lookups``)."""
        if version_id is None and with_data is True:
            return await self._latest.get(bucket, key)
        return await self.call("get_version", bucket, key, version_id, with_data=with_data)

    async def commit_version(self, bucket: str, key: str, *, size: int, etag: str, attrs, data, now=None,
                             conditions=None, members=None, **kwargs):  # fmt: skip
        """The commit of every PUT: concurrent unconditional ones share calls (``apollo.client.commits``).
        ``now`` is the service's to decide: not sent."""
        if conditions is not None or members is not None or kwargs or len(data.segments) > SEGMENTS_SHARED_MAX:
            return await self.call("commit_version", bucket, key, size=size, etag=etag, attrs=attrs, data=data,
                                   conditions=conditions, members=members, **kwargs)  # fmt: skip
        return await self._commits.commit({"bucket": bucket, "key": key, "size": size, "etag": etag, "attrs": attrs,
                                           "data": data})  # fmt: skip

    async def complete_upload(self, bucket: str, key: str, upload_id: str, requested: list[tuple[int, str]], *,
                              checksum_of=None, **kwargs):  # fmt: skip
        """``checksum_of`` runs here, on the parts as listed now: the commit names each part by its ETag,
        so it publishes exactly the parts the checksum was combined from."""
        checksums = None
        if checksum_of is not None:
            upload = await self.get_upload(bucket, key, upload_id)
            stored = {part.part_number: part for part in await self._all_parts(upload_id)}
            chosen = [stored[n] for n, _ in requested if n in stored]
            if len(chosen) == len(requested):  # else the commit raises InvalidPart for us
                checksums = checksum_of(upload, chosen)
        return await self.call("complete_upload", bucket, key, upload_id, requested, checksums=checksums, **kwargs)

    async def _all_parts(self, upload_id: str) -> list:
        parts: list = []
        while True:
            page, truncated = await self.list_parts(upload_id, parts[-1].part_number if parts else 0, 1000)
            parts += page
            if not truncated:
                return parts


for _name in meta_api.REMOTE:
    if not hasattr(RemoteMeta, _name):  # get_version, commit_version and complete_upload are written out above
        setattr(RemoteMeta, _name, _remote(_name))
