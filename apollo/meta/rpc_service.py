"""The metadata service's network face: ``MetaService`` calls over HTTP, signed with access keys.

``POST /v1/rpc/<method>`` with body ``{"args": [...], "kwargs": {...}}`` (``apollo.rpc.codec``)
answers ``{"result": ..., "tokens": {segment id: token}}`` or ``{"error": {type, message}}``.

Who may call what: any access key may call ``CLIENT_METHODS`` (what a native client or a
gateway needs to read and write objects); root keys also ``SERVICE_METHODS`` (storage
nodes registering and heartbeating, gateways fetching S3 secrets and service tokens).

Capability tokens ride along with the results that name segments: a write token for a
segment ``allocate_segment`` hands out, read tokens for the segments of a version
``get_version`` returns. Storage nodes check them without calling back here.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from apollo import errors, metrics, tokens
from apollo.cluster.map import ClusterMap
from apollo.meta.service import MetaService
from apollo.rpc import codec, signing
from apollo.rpc.keycache import SecretCache
from apollo.types import SegmentLayout

log = logging.getLogger("apollo.meta.rpc")
RPC_PREFIX = "/v1/rpc/"
NODE_TIMEOUT_S = 6.0  # a node that missed this many seconds of heartbeats is dead: not writable
MAP_TTL_S = 1.0

CLIENT_METHODS = frozenset({
    "create_bucket", "get_bucket", "list_buckets", "delete_bucket", "set_versioning", "commit_version",
    "get_version", "delete_object", "set_tags", "list_objects", "list_versions", "create_upload", "get_upload",
    "commit_part", "list_parts", "list_uploads", "abort_upload", "complete_upload", "report_damage",
    "allocate_segment", "repoint_segment", "abandon_segments", "cluster_map",
})  # fmt: skip
OWNED_METHODS = frozenset({"allocate_segment", "repoint_segment", "abandon_segments"})
SERVICE_METHODS = CLIENT_METHODS | {"get_secret", "register_node", "node_heartbeat", "service_tokens"}


@dataclass
class MetaRpc:
    """The state behind the RPC app: the in-process service, the keyring and a short-lived map cache."""

    meta: MetaService
    keyring: tokens.Keyring
    reserve_bytes: int
    _map: tuple[float, ClusterMap] | None = field(default=None, repr=False)

    async def cluster_map(self) -> ClusterMap:
        now = time.monotonic()
        if self._map is None or now - self._map[0] > MAP_TTL_S:
            fresh = await self.meta.cluster_map(time.time(), NODE_TIMEOUT_S, self.reserve_bytes)
            self.meta.set_drives(fresh.candidates(), fresh.writable())
            for alive in (True, False):
                metrics.nodes_alive.labels(str(alive).lower()).set(sum(n.alive == alive for n in fresh.nodes))
            self._map = (now, fresh)
        return self._map[1]

    async def register_node(self, name: str, endpoint: str, rack: str, drives: list[tuple[str, str]]) -> dict:
        epoch = await self.meta.register_node(name, endpoint, rack, drives, time.time())
        self._map = None
        known = {r.path: r.drive_id for r in await self.meta.list_drives() if r.node == name and r.state != "retired"}
        return {"epoch": epoch, "deployment_id": await self.meta.get_setting("deployment_id"), "drives": known}

    async def node_heartbeat(self, name: str, drives: dict[str, tuple[str, int, int]]) -> dict:
        epoch = await self.meta.node_heartbeat(name, drives, time.time())
        keys = [{"key_id": k.key_id, "secret": k.secret.hex(), "created": k.created} for k in self.keyring.by_age()]
        return {"epoch": epoch, "keys": keys}

    async def service_tokens(self) -> dict[str, str]:
        return {op: self.keyring.issue(op, tokens.ANY_SEGMENT, tokens.SERVICE_TOKEN_TTL_S) for op in tokens.OPS}

    async def complete_upload(self, *args, checksums: dict[str, str] | None = None, **kwargs):
        """The caller combined the parts' checksums itself (it named each part by ETag, so they are the same)."""
        return await self.meta.complete_upload(*args, checksum_of=lambda upload, chosen: checksums or {}, **kwargs)

    async def allocate_segment(self, scheme, cell_size: int, offset: int, *, caller: str):
        await self.cluster_map()  # placement follows the map of the last second
        return await self.meta.allocate_segment(scheme, cell_size, offset, owner=caller)

    async def repoint_segment(self, layout: SegmentLayout, *, caller: str) -> None:
        await self.meta.repoint_segment(layout, owner=caller)

    async def abandon_segments(self, segment_ids: list[str], now: float, *, caller: str) -> None:
        """Only the caller's own pending writes: no key can make another's write in flight collectable."""
        await self.meta.abandon_segments(segment_ids, now, owner=caller)

    def tokens_for(self, method: str, result: object) -> dict[str, dict[str, str]]:
        """{segment id: {operation: token}} for the segments ``result`` hands to the caller."""
        if isinstance(result, SegmentLayout):
            return {result.segment_id: {tokens.WRITE: self.keyring.issue(tokens.WRITE, result.segment_id,
                                                                          tokens.TOKEN_TTL_S)}}  # fmt: skip
        data = getattr(result, "data", None)
        if method == "get_version" and data is not None:
            return {s.segment_id: {tokens.READ: self.keyring.issue(tokens.READ, s.segment_id, tokens.TOKEN_TTL_S)}
                    for s in data.segments}  # fmt: skip
        return {}


RPC = web.AppKey("rpc", MetaRpc)
KEYS = web.AppKey("keys", SecretCache)


def _reply(payload: dict, status: int = 200) -> web.Response:
    return web.Response(body=codec.dumps(payload), status=status, content_type="application/json")


async def _call(request: web.Request) -> web.Response:
    method = request.path[len(RPC_PREFIX) :]
    started = time.perf_counter()
    response = await _answer(request, method)
    if method in SERVICE_METHODS:  # not a label per made-up method name
        outcome = "ok" if response.status == 200 else request.get("error_type", str(response.status))
        metrics.rpc_total.labels(method, outcome).inc()
        metrics.rpc_seconds.labels(method).observe(time.perf_counter() - started)
    return response


async def _answer(request: web.Request, method: str) -> web.Response:
    body = await request.read()
    try:
        access_key = signing.claimed_key(request.headers)
        rights = await request.app[KEYS].get(access_key)
        signing.verify("POST", request.path, request.headers, body, rights[0] if rights else None)
        allowed = SERVICE_METHODS if rights[1] else CLIENT_METHODS
        if method not in allowed:
            raise errors.AccessDenied(f"{method} is not a metadata call this key may make")
        call = codec.loads(body)
        rpc = request.app[RPC]
        kwargs = call.get("kwargs", {})
        if method in OWNED_METHODS:  # pending writes belong to the access key that began them
            kwargs["caller"] = f"key:{access_key}"
        target = getattr(rpc, method, None) or getattr(rpc.meta, method)
        result = await target(*call.get("args", []), **kwargs)
    except errors.ApolloError as exc:
        request["error_type"] = type(exc).__name__
        status = 403 if isinstance(exc, errors.AccessDenied) else 409
        return _reply({"error": codec.error_to_wire(exc)}, status)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        return _reply({"error": {"type": "InvalidRequest", "message": f"bad {method} call: {exc}"}}, 400)
    except Exception as exc:
        log.exception("metadata call %s failed", method)
        return _reply({"error": codec.error_to_wire(exc)}, 500)
    return _reply({"result": result, "tokens": request.app[RPC].tokens_for(method, result)})


def build_meta_app(rpc: MetaRpc) -> web.Application:
    app = web.Application(client_max_size=64 * 1024**2)
    app[RPC] = rpc
    app[KEYS] = SecretCache(rpc.meta.key_rights)
    app.router.add_post(RPC_PREFIX + "{method}", _call)
    app.router.add_get("/health/live", lambda request: web.Response(text="ok\n"))
    app.router.add_get("/metrics", lambda request: metrics.response())
    return app
