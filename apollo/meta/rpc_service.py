"""The metadata service's network face: ``MetaService`` calls over HTTP, signed with access keys.

``POST /_apollo/rpc/<method>`` with body ``{"args": [...], "kwargs": {...}}`` (``apollo.proto.codec``)
answers ``{"result": ..., "tokens": {segment id: token}}`` or ``{"error": {type, message}}``.

Who may call what is declared once, in ``apollo.proto.meta_api``: any access key may make the
calls a native client or a gateway needs to read and write objects (on pending writes: only
its own); root keys also the service calls (storage nodes registering and heartbeating,
gateways fetching S3 secrets and service tokens). What is the service's to decide (its clock,
its limits, who the caller is) it fills in itself (``SERVER_OWNED``).

Capability tokens ride along with the results that name segments: a write token for a
segment ``allocate_segment`` hands out, read tokens for the segments of a version
``get_version`` returns. Storage nodes check them without calling back here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from apollo import errors, ids, limits, metrics, tokens
from apollo.keycache import SecretCache
from apollo.meta.call_policy import CallPolicy, bind, signature_of
from apollo.meta.service import MetaService
from apollo.meta.standby import READ_AFTER, WRITTEN_AT
from apollo.proto import codec, meta_api, read_after, routes, signing
from apollo.proto.bucket_access import Caller
from apollo.proto.cluster_map import ClusterMap
from apollo.proto.layout import Scheme, SegmentLayout
from apollo.proto.records import Conditions, Lookup, Version

log = logging.getLogger("apollo.meta.rpc")
MAP_TTL_S = 1.0
# A map that took longer waited for an unreachable database (calls retry): beats went unrecorded meanwhile.
UNRECORDED_AFTER_S = limits.node_dead_after_s / 2
DAMAGE_REASON_CHARS_MAX = 500


def _page_size(given: object, caller: str) -> int:
    """A listing's page size: the caller's wish, at most S3's 1000."""
    if given is None:
        return limits.list_keys_max
    if type(given) is not int or given < 0:
        raise errors.InvalidRequest(f"bad page size {given!r}")
    return min(given, limits.list_keys_max)


# Arguments that are the service's to give, whatever a caller sends: its clock (a client that picks
# ``now`` picks last_modified and skips the garbage collector's grace), its limits, and who the caller
# is (``owner``: whose pending writes a call may commit, move or abandon; ``bucket_owner``: who owns a
# new bucket, which a gateway, a service key, says for the S3 client it serves; a temporary key's bucket
# is its parent's). Imposed by parameter name on every call whose method takes one:
# (given, caller, caller is a service key, principal) -> the value.
SERVER_OWNED: dict[str, Callable[[object, str, bool, str], object]] = {
    "now": lambda given, caller, service, principal: time.time(),
    "owner": lambda given, caller, service, principal: caller,
    "bucket_owner": lambda given, caller, service, principal: (
        given if service and isinstance(given, str) else principal),
    "part_size_min": lambda given, caller, service, principal: limits.part_size_bytes_min,
    "max_keys": lambda given, caller, service, principal: _page_size(given, caller),
    "max_parts": lambda given, caller, service, principal: _page_size(given, caller),
    "max_uploads": lambda given, caller, service, principal: _page_size(given, caller),
}


def impose(target: Callable, args: list, kwargs: dict, caller: str, service: bool = False,
           principal: str | None = None) -> tuple[tuple, dict]:  # fmt: skip
    """A remote call's arguments, bound to ``target``'s signature, with ``SERVER_OWNED`` ones replaced. A method
    that takes none of them gets its arguments as they came, once checked against its parameters (a lookup:
    binding them cost 3% of the service's time on lookups).

    :raises TypeError: arguments the method does not take.
    """
    parameters = _parameters_of(target)
    if not parameters.owned:
        parameters.check(args, kwargs)
        return tuple(args), kwargs
    bound = signature_of(target).bind_partial(*args, **kwargs)
    for name in parameters.owned:
        bound.arguments[name] = SERVER_OWNED[name](bound.arguments.get(name), caller, service,
                                                   principal or caller.removeprefix("key:"))  # fmt: skip
    return bound.args, bound.kwargs


@dataclass(frozen=True)
class _Parameters:
    """What ``impose`` needs of a service method's signature, read once per method (as ``signature_of``)."""

    positional: tuple[str, ...]  # the names arguments given by position take, in order
    named: frozenset[str]  # the names it takes by keyword
    owned: frozenset[str]  # its ``SERVER_OWNED`` parameters

    def check(self, args: list, kwargs: dict) -> None:
        """What ``Signature.bind_partial`` refuses: arguments not a list and a dict, too many positional ones, an
        unknown or repeated name. :raises TypeError:"""
        if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            raise TypeError("a call's arguments are a list and its named ones a dict")
        if len(args) > len(self.positional):
            raise TypeError(f"too many positional arguments ({len(args)})")
        if unknown := kwargs.keys() - self.named:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
        if repeated := kwargs.keys() & set(self.positional[: len(args)]):
            raise TypeError(f"multiple values for {sorted(repeated)}")


@functools.cache
def _parameters_of(target: Callable) -> _Parameters:
    parameters = signature_of(target).parameters.values()
    positional = tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    named = frozenset(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return _Parameters(positional, named, frozenset(named & SERVER_OWNED.keys()))


@dataclass
class MetaRpc:
    """The state behind the RPC app: the in-process service, the keyring and a short-lived map cache."""

    meta: MetaService
    keyring: tokens.Keyring
    reserve_bytes: int
    # Whether placement (``MetaService.placement``) follows this map: in a cluster it does; the all-in-one
    # server places by its own drive probes, where every drive is a failure domain of its own.
    places: bool = True
    _map: tuple[float, ClusterMap] | None = field(default=None, repr=False)
    # Wall-clock span in which this service could not reach its database, so no heartbeat was recorded:
    # (first failure or slow answer, its end); ``_blind_since`` while it lasts.
    _unrecorded: tuple[float, float] | None = field(default=None, repr=False)
    _blind_since: float | None = field(default=None, repr=False)

    def liveness_clock(self, now: float) -> float:
        """The time node heartbeats are judged against: ``now``, less the span of a database outage that ended
        less than a heartbeat timeout ago. No beat could be recorded then; judged against ``now``, every node
        would look dead at once when the database came back (a failover), and no write could be placed until
        each had beaten again. A node that died during the outage is found a heartbeat timeout later."""
        if self._unrecorded is None:
            return now
        began, ended = self._unrecorded
        if now > ended + limits.node_dead_after_s:
            self._unrecorded = None
            return now
        return now - (ended - began)

    async def cluster_map(self) -> ClusterMap:
        now = time.monotonic()
        if self._map is None or now - self._map[0] > MAP_TTL_S:
            asked = time.time()
            try:
                fresh = await self.meta.cluster_map(self.liveness_clock(asked), limits.node_dead_after_s,
                                                    self.reserve_bytes)  # fmt: skip
            except errors.MetadataUnavailable:
                self._blind_since = self._blind_since or asked
                raise
            answered = time.time()
            if self._blind_since is not None or answered - asked > UNRECORDED_AFTER_S:  # it waited for the database
                self._unrecorded = (self._blind_since or asked, answered)
                self._blind_since = None
            if self.places:
                self.meta.placement.update(fresh.candidates(), fresh.writable())
            for alive in (True, False):
                metrics.nodes_alive.labels(str(alive).lower()).set(sum(n.alive == alive for n in fresh.nodes))
            self._map = (now, fresh)
        return self._map[1]

    async def register_node(self, name: str, endpoint: str, rack: str, drives: list[tuple[str, str]]) -> dict:
        epoch = await self.meta.register_node(name, endpoint, rack, drives, time.time())
        self._map = None
        known = {r.path: r.drive_id for r in await self.meta.list_drives() if r.node == name and r.state != "retired"}
        return {"epoch": epoch, "deployment_id": await self.meta.get_setting("deployment_id"), "drives": known,
                "removed": sorted(await self.meta.removed_drive_ids())}  # fmt: skip

    async def node_heartbeat(self, name: str, drives: dict[str, tuple[str, int, int]]) -> dict:
        epoch = await self.meta.node_heartbeat(name, drives, time.time())
        return {"epoch": epoch, "keys": self.keyring.to_json()}

    async def service_tokens(self) -> dict[str, str]:
        return {op: self.keyring.issue(op, tokens.ANY_SEGMENT, tokens.SERVICE_TOKEN_TTL_S) for op in tokens.OPS}

    async def complete_upload(self, bucket: str, key: str, upload_id: str, requested: list[tuple[int, str]], *,
                              part_size_min: int, now: float, conditions: Conditions | None = None,
                              checksums: dict[str, str] | None = None) -> Version:  # fmt: skip
        """The caller combined the parts' checksums itself (it named each part by ETag, so they are the same)."""
        return await self.meta.complete_upload(
            bucket, key, upload_id, requested, part_size_min=part_size_min, now=now, conditions=conditions,
            checksum_of=lambda upload, chosen: checksums or {},
        )  # fmt: skip

    async def allocate_segment(self, scheme: Scheme, cell_size: int, offset: int, *, owner: str,
                               txn: list[str] | None = None) -> SegmentLayout:  # fmt: skip
        """``txn``: [bucket, transaction id], for a put staged into the caller's own open transaction.
        :raises InvalidRequest: a malformed ``txn``."""
        if txn is not None:
            if not isinstance(txn, list | tuple) or len(txn) != 2:
                raise errors.InvalidRequest("txn is [bucket, transaction id]")
            txn = (ids.bucket_name(txn[0]), ids.txn_id(txn[1]))
        await self.cluster_map()  # placement follows the map of the last second
        return await self.meta.allocate_segment(scheme, cell_size, offset, owner=owner, txn=txn)

    async def report_damage(self, segment_id: str, shard_index: int, drive_id: str, reason: str, now: float) -> None:
        """A reader or writer found a bad shard. Queued only for a segment that exists (committed, with that
        shard on that drive, or still being written): a client cannot fill the repair queue with made-up work.

        :raises InvalidRequest:
        """
        ids.shard_index(shard_index)
        layout, pending = await self.meta.segment_layout(ids.segment_id(segment_id))
        placed = layout is not None and shard_index < len(layout.drives) and layout.drives[shard_index] == drive_id
        if not (placed or pending):
            raise errors.InvalidRequest(f"no shard {shard_index} of segment {segment_id} on drive {drive_id!r}")
        await self.meta.report_damage(segment_id, shard_index, drive_id, str(reason)[:DAMAGE_REASON_CHARS_MAX], now)

    def tokens_for(self, method: str, result: object) -> dict[str, dict[str, str]]:
        """{segment id: {operation: token}} for the segments ``result`` hands to the caller."""
        if isinstance(result, SegmentLayout):  # just allocated: to write, and to read back to rebuild a lost shard
            return {result.segment_id: {op: self.keyring.issue(op, result.segment_id, tokens.TOKEN_TTL_S)
                                        for op in (tokens.WRITE, tokens.READ)}}  # fmt: skip
        if method in ("get_versions", "get_snapshot_versions", "kv_lookup") and isinstance(result, list):
            versions = [lookup.version for lookup in result if isinstance(lookup, Lookup) and lookup.version]
        elif method == "get_version" and isinstance(result, Version):
            versions = [result]
        else:
            return {}
        return {s.segment_id: {tokens.READ: self.keyring.issue(tokens.READ, s.segment_id, tokens.TOKEN_TTL_S)}
                for version in versions if version.data is not None for s in version.data.segments}  # fmt: skip


RPC = web.AppKey("rpc", MetaRpc)
KEYS = web.AppKey("keys", SecretCache)
CALL_POLICY = web.AppKey("call_policy", CallPolicy)


def _reply(payload: dict, status: int = 200, accept: str = "") -> web.Response:
    """JSON, or ``codec.FRAMED`` (bytes raw after the document; with ``FRAMED_COLUMNS``, lists of records as
    columns) for a caller whose ``Accept`` names it."""
    accepted = {kind.strip() for kind in accept.split(",")}
    if codec.FRAMED_COLUMNS in accepted:
        return web.Response(body=codec.dumps_framed(payload, columns=True), status=status,
                            content_type=codec.FRAMED_COLUMNS)  # fmt: skip
    if codec.FRAMED in accepted:
        return web.Response(body=codec.dumps_framed(payload), status=status, content_type=codec.FRAMED)
    return web.Response(body=codec.dumps(payload), status=status, content_type="application/json")


async def _call(request: web.Request) -> web.Response:
    method = request.match_info["method"]
    started = time.perf_counter()
    WRITTEN_AT.set(None)  # a connection's requests may share one context: nothing carries over
    response = await _answer(request, method)
    written = WRITTEN_AT.get()
    if written is not None:
        response.headers[read_after.WRITTEN_AT] = read_after.format_lsn(written)
    if method in meta_api.REMOTE:  # not a label per made-up method name
        outcome = "ok" if response.status == 200 else request.get("error_type", str(response.status))
        metrics.rpc_total.labels(method, outcome).inc()
        metrics.rpc_seconds.labels(method).observe(time.perf_counter() - started)
    return response


async def _read_body(request: web.Request, secret: str | None) -> bytes:
    """The body of a call whose headers name a known key and a fresh date, read with a size cap and a
    deadline: nobody may make the service hold a large or stalled body before it is authenticated, nor
    any key a large one after (``limits.rpc_body_bytes_max``, ``limits.rpc_body_read_s``).

    :raises AccessDenied, EntityTooLarge, IncompleteBody:
    """
    signing.check_headers(request.headers, secret)
    size = request.content_length
    if size is None or size > limits.rpc_body_bytes_max:
        raise errors.EntityTooLarge(f"a metadata call's Content-Length must be at most {limits.rpc_body_bytes_max}")
    try:
        return await asyncio.wait_for(request.content.readexactly(size), limits.rpc_body_read_s)
    except (TimeoutError, asyncio.IncompleteReadError) as exc:
        raise errors.IncompleteBody(f"the call's body did not arrive in {limits.rpc_body_read_s:.0f} s") from exc


async def _answer(request: web.Request, method: str) -> web.Response:
    try:
        access_key = signing.claimed_key(request.headers)
        rights = await request.app[KEYS].get(access_key)
        body = await _read_body(request, rights.secret if rights else None)
        signing.verify("POST", request.path, request.headers, body, rights.secret if rights else None)
        if meta_api.allowed(method, service_key=rights.is_root) is None:
            raise errors.AccessDenied(f"{method} is not a metadata call this key may make")
        after = request.headers.get(read_after.READ_AFTER)
        READ_AFTER.set(read_after.parse(after) if after else None)
        call = codec.loads(body)
        if not (isinstance(call, dict) and isinstance(call.get("args", []), list)
                and isinstance(call.get("kwargs", {}), dict)):  # else a 500 (AttributeError) below
            raise TypeError("a call is {args: [...], kwargs: {...}}")
        rpc = request.app[RPC]
        target = getattr(rpc, method, None) or getattr(rpc.meta, method)
        # Pending writes belong to the access key that began them.
        if rights.expires and time.time() >= rights.expires:
            raise errors.AccessDenied(f"the temporary key {access_key} has expired")
        args, kwargs = impose(target, call.get("args", []), call.get("kwargs", {}), f"key:{access_key}",
                              rights.is_root, rights.parent or access_key)  # fmt: skip
        if not rights.is_root:  # policies bind native clients' keys (apollo.meta.call_policy)
            caller = Caller.of(access_key, rights)
            policy = request.app[CALL_POLICY]
            await policy.check(method, target, args, kwargs, caller, request.remote or "", request.secure)
            result = await policy.filter(method, await target(*args, **kwargs), caller, request.remote or "",
                                         request.secure, bind(target, args, kwargs))  # fmt: skip
        else:
            result = await target(*args, **kwargs)
    except errors.ApolloError as exc:
        request["error_type"] = type(exc).__name__
        status = 403 if isinstance(exc, errors.AccessDenied) else 400 if isinstance(exc, errors.InvalidRequest) else 409
        return _reply({"error": codec.error_to_wire(exc)}, status)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        return _reply({"error": {"type": "InvalidRequest", "message": f"bad {method} call: {exc}"}}, 400)
    except Exception as exc:
        log.exception("metadata call %s failed", method)
        return _reply({"error": codec.error_to_wire(exc)}, 500)
    return _reply({"result": result, "tokens": request.app[RPC].tokens_for(method, result)},
                  accept=request.headers.get("Accept", ""))


def add_rpc_routes(app: web.Application, rpc: MetaRpc, wrap: routes.Wrap = routes.unwrapped) -> None:
    """Serve the metadata API in ``app``, each handler inside ``wrap``."""
    app[RPC] = rpc
    app[KEYS] = SecretCache(rpc.meta.key_rights)
    app[CALL_POLICY] = CallPolicy(rpc.meta)
    app.router.add_post(routes.RPC_PREFIX + "{method}", wrap(_call))


def build_meta_app(rpc: MetaRpc) -> web.Application:
    """``apollo meta``'s app: the metadata API, health and metrics."""
    app = routes.role_app(client_max_size=limits.rpc_body_bytes_max)
    add_rpc_routes(app, rpc)
    return app
