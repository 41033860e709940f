"""The storage node's HTTP face: shards of its drives, to whoever shows a capability token.

One URL per shard: ``/_apollo/shards/{drive}/{pg}/{segment}/{index}``.

- ``PUT``: the whole shard file streamed in one request (chunked): the fixed-size header,
  the cell records, the footer. The footer ends in its own length and magic, so the node
  finds it at the end of the stream; only a complete, well-formed stream becomes a shard
  (fsync, rename). A client that disconnects mid-stream leaves nothing: the temp file
  is removed.
- ``GET ?offset=&length=`` (positional read), ``GET ?tail=N`` (the last N bytes),
  ``HEAD`` (size in ``X-Apollo-Size``), ``DELETE``.

``POST /_apollo/shards`` is many positional reads of any shards of the node's drives in one request, each
with its own segment's token and its own outcome (wire format: ``apollo.proto.storage_api``).

Listing, for the orphan sweep, pages through a drive (``?after=&limit=``, at most
``LIST_LIMIT_MAX`` groups or segments a page): ``GET /_apollo/shards/{drive}`` answers ``{"groups": [pg, ...]}``,
``GET /_apollo/shards/{drive}/{pg}`` answers ``{"shards": [[segment, index, age s, size], ...]}``.
It takes a service token (``list`` on every segment): a segment's token lists nothing.

Every response carries ``X-Apollo-Epoch``, the newest cluster map epoch the node has heard
of, so a client holding an older map refreshes it. Every request carries
``X-Apollo-Token``, checked against the keyring without calling the metadata service
(``apollo.tokens``). Errors have one table (``_STATUS``): a status, an ``X-Apollo-Error``
header naming the error, and a JSON body with its message, which ``RemoteStorageNode``
turns back into the same exceptions a local node raises.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import crc32c
from aiohttp import web

from apollo import ids, limits, metrics, tokens
from apollo.errors import ChecksumMismatch, DriveError
from apollo.eventloop import ByteBudget, StallGuard
from apollo.proto import routes
from apollo.proto.layout import SegmentLayout, ShardRef
from apollo.proto.storage_api import (
    EPOCH_HEADER,
    ERRNO_HEADER,
    ERROR_HEADER,
    SIZE_HEADER,
    TOKEN_HEADER,
    frame_head,
)
from apollo.storage.node import LIST_LIMIT_MAX, LocalStorageNode, ShardRead
from apollo.storage.shardfile import CRC_BYTES, HEADER_BYTES, decode_footer, footer_start

log = logging.getLogger("apollo.storage")
FOOTER_BYTES_MAX = 1 << 20
WRITE_CHUNK_BYTES = 4 << 20  # records reach the drive in writes of about this size
SENDFILE_BYTES = 64 << 10  # reads this large go from the file to the socket by sendfile, not through Python
SHARD_BYTES_MAX = 1 << 40  # no shard file is near this: an offset or length past it is malformed, not a read
RECORD_BYTES_MAX = limits.cell_size_bytes_max + 4096  # a cell record: the largest cell, a codec header, a CRC32C
NODE = web.AppKey("node", LocalStorageNode)
KEYRING = web.AppKey("keyring", tokens.Keyring)
BATCH_BUDGET = web.AppKey("batch_budget", ByteBudget)  # of limits.shard_batch_inflight_bytes_max


@dataclass
class NodeState:
    epoch: int = 0  # from the last heartbeat answer


STATE = web.AppKey("state", NodeState)


class NodeBusy(Exception):
    """The node holds all the batch reads it has memory for: this one is refused, and read shard by shard."""


# Exception -> (HTTP status, wire name). The first match wins: subclasses first.
_STATUS: list[tuple[type[BaseException], int, str]] = [
    (NodeBusy, 503, "Busy"),
    (tokens.TokenError, 403, "TokenError"),
    (FileNotFoundError, 404, "FileNotFoundError"),
    (DriveError, 503, "DriveError"),
    (ChecksumMismatch, 400, "BadRequest"),
    (ValueError, 400, "BadRequest"),
    (asyncio.IncompleteReadError, 400, "BadRequest"),  # a body shorter than its Content-Length
]


def _classified(exc: BaseException) -> tuple[int, str, str | None]:
    """(HTTP status, wire name, errno name of a drive's ``OSError``) of an exception, by the table."""
    for exc_type, code, wire_name in _STATUS:
        if isinstance(exc, exc_type):
            return code, wire_name, None
    if isinstance(exc, OSError):  # the drive failed; the errno tells a full disk from an I/O error
        status = 507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 500
        return status, "OSError", errno.errorcode.get(exc.errno or errno.EIO, "EIO")
    log.error("storage request failed", exc_info=exc)
    return 500, "InternalError", None


def _error(exc: BaseException) -> web.Response:
    """The error as a status, ``X-Apollo-Error`` (name, also on HEAD) and a JSON body with the message."""
    status, name, errno_name = _classified(exc)
    extra = {ERRNO_HEADER: errno_name} if errno_name else {}
    return web.json_response({"message": str(exc) or repr(exc)}, status=status,
                             headers={ERROR_HEADER: name, **extra})  # fmt: skip


def _shard(request: web.Request) -> tuple[str, ShardRef]:
    """The drive and shard a URL names, each part held to Apollo's own format (``apollo.ids``) before
    it reaches a file path: aiohttp has already decoded ``%2F``, so a part may hold any text at all."""
    info = request.match_info
    try:
        return ids.drive_id(info["drive"]), ShardRef(_number(info["pg"], "placement group"), info["segment"],
                                                     _number(info["index"], "shard index"))  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"bad shard path: {exc}") from None


def _authorize(request: web.Request, op: str, shard: ShardRef) -> None:
    request.app[KEYRING].check(request.headers.get(TOKEN_HEADER), op, shard.segment_id)


def _answered(route: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Every route's edge: any exception becomes its entry in the error table, and every answer is counted."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            response = await route(request)
        except Exception as exc:
            response = _error(exc)
        metrics.shard_requests.labels(request.method, str(response.status)).inc()
        return response

    return handle


def _handler(op: str, serve: Callable):
    """A shard route: a token for ``op`` on the shard's segment opens it."""

    async def route(request: web.Request) -> web.StreamResponse:
        drive_id, shard = _shard(request)
        _authorize(request, op, shard)
        return await serve(request, request.app[NODE], drive_id, shard)

    return _answered(route)


async def _put(request: web.Request, node: LocalStorageNode, drive_id: str, shard: ShardRef) -> web.Response:
    with StallGuard(request.transport, limits.shard_client_stall_s, "receive") as guard:
        header = await guard.wait(request.content.readexactly(HEADER_BYTES))
        sink = await node.open_shard(drive_id, shard, header)
        try:
            # Chunks go to the drive as they came off the socket (one writev, no joining): the bulk of
            # a node's CPU is moving bytes, so it copies them once. The last FOOTER_BYTES_MAX are held
            # back, since the footer can only be found once the stream has ended.
            held: deque[bytes] = deque()
            held_bytes = 0
            async for chunk in guard.each(request.content.iter_any()):
                held.append(chunk)
                held_bytes += len(chunk)
                if held_bytes >= WRITE_CHUNK_BYTES + FOOTER_BYTES_MAX:
                    ready = []
                    while held_bytes - len(held[0]) >= FOOTER_BYTES_MAX:
                        ready.append(held.popleft())
                        held_bytes -= len(ready[-1])
                    await sink.append(ready)
            tail = b"".join(held)
            start = footer_start(tail)
            if start < 0:
                raise ValueError("shard stream does not end in a footer (a truncated upload?)")
            decode_footer(tail[start:])  # its CRC: a damaged stream never becomes a shard
            await sink.append([tail[:start]])
            await sink.finish(tail[start:])
            metrics.shard_bytes.labels("written").inc(request.content.total_bytes)
        except BaseException:
            await sink.abort()  # a client gone or stalled mid-stream, a bad footer, a drive error: no shard
            raise
    return web.Response(status=201)


async def _get(request: web.Request, node: LocalStorageNode, drive_id: str, shard: ShardRef) -> web.StreamResponse:
    query = request.query
    if "tail" in query:
        data = await node.read_tail(drive_id, shard, int(query["tail"]))
    else:
        offset, length = int(query.get("offset", 0)), int(query["length"])
        # Never sendfile under TLS (``apollo server --certs``): the kernel would put the file's bytes on the
        # socket beside OpenSSL, in clear, and break the stream; the body then goes through the TLS transport.
        plain = request.transport is not None and request.transport.get_extra_info("sslcontext") is None
        if length >= SENDFILE_BYTES and offset >= 0 and plain:
            return await _send(request, node, drive_id, shard, offset, length)
        data = await node.read(drive_id, shard, offset, length)
    metrics.shard_bytes.labels("read").inc(len(data))
    return web.Response(body=data, content_type="application/octet-stream")


async def _send(request: web.Request, node: LocalStorageNode, drive_id: str, shard: ShardRef, offset: int,
                length: int) -> web.StreamResponse:  # fmt: skip
    """A large read, sent from the file by ``sendfile`` (``apollo.storage.sendfile``) after the headers.

    Like ``pread``, a range past the end of the file comes back short; the reader checks lengths.
    """
    async with node.opened(drive_id, shard) as (fd, size):
        count = max(0, min(length, size - offset))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = count
        writer = await response.prepare(request)
        writer.send_headers()
        transport = request.transport
        if transport.get_write_buffer_size():  # the headers are still queued: the body must follow them
            await response.write(await node.read(drive_id, shard, offset, count))
        else:
            try:
                sock_fd = transport.get_extra_info("socket").fileno()
                await node.send(drive_id, fd, offset, count, sock_fd, limits.shard_client_stall_s)
            except OSError as exc:  # headers are out: all that is left is to drop the connection
                # Mostly a reader that stopped early (a cancelled read-ahead, a client gone): not the node's fault.
                log.info("sending %s bytes of shard %s to %s failed: %r", count, shard, request.remote, exc)
                transport.close()
                raise ConnectionResetError(errno.ECONNRESET, "shard send failed mid-body") from exc
    metrics.shard_bytes.labels("read").inc(count)
    return response


async def _head(request: web.Request, node: LocalStorageNode, drive_id: str, shard: ShardRef) -> web.Response:
    return web.Response(headers={SIZE_HEADER: str(await node.size(drive_id, shard))})


async def _delete(request: web.Request, node: LocalStorageNode, drive_id: str, shard: ShardRef) -> web.Response:
    return web.Response(status=204 if await node.delete(drive_id, shard) else 404)


async def _read_batch(request: web.Request) -> web.StreamResponse:
    """Many positional reads, each opened by its own segment's token; one read refused or failed is that read's
    outcome, not the request's. A body that is not a well-formed batch within the limits is refused whole; a
    batch the node has no memory for now is refused whole with 503 ``Busy`` (the client reads shard by shard).

    Each distinct token is verified once (signature, expiry, operation), then each read's segment is compared
    with what it covers: a batch of 4,096 reads costs a few HMACs, not 4,096. The answer is written piece by
    piece as the reads came off the drives, no joined copy, and a client that stops reading it is cut off."""
    length = request.content_length
    if length is None or length > limits.shard_batch_body_bytes_max:
        raise ValueError(f"a batch of reads needs a Content-Length of at most {limits.shard_batch_body_bytes_max}")
    with StallGuard(request.transport, limits.shard_client_stall_s, "receive") as guard:
        body = await guard.wait(request.content.readexactly(length))
    batch = _batch_reads(body)
    budget = request.app[BATCH_BUDGET]
    held = sum(read.answer_bytes for _, read in batch)  # a part's record is let go on its drive's thread
    if not budget.take(held):
        raise NodeBusy(f"batch reads in progress hold {budget.held} of {budget.bytes_max} bytes; read shard by shard")
    try:
        outcomes, data = await _read_allowed(request.app[KEYRING], request.app[NODE], batch)
        head = frame_head(outcomes)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(head) + sum(len(piece) for piece in data)
        with StallGuard(request.transport, limits.shard_client_stall_s, "send") as guard:
            await guard.wait(response.prepare(request))
            for piece in (head, *data):
                await guard.wait(response.write(piece))
        metrics.shard_bytes.labels("read").inc(response.content_length - len(head))
        return response
    finally:
        budget.give_back(held)


async def _read_allowed(keyring: tokens.Keyring, node: LocalStorageNode, batch: list[tuple[str, ShardRead]]
                        ) -> tuple[list[int | dict], list[bytes]]:  # fmt: skip
    """Each read's outcome (its length, or its error) and the bytes of those that succeeded, in order."""
    covered: dict[str, str | tokens.TokenError] = {}
    allowed: list[ShardRead] = []
    refused: dict[int, Exception] = {}
    for number, (token, read) in enumerate(batch):
        if token not in covered:
            try:
                covered[token] = keyring.segments_of(token, tokens.READ)
            except tokens.TokenError as exc:
                covered[token] = exc
        segments = covered[token]
        try:
            if isinstance(segments, tokens.TokenError):
                raise segments
            tokens.covers(segments, read.shard.segment_id)
        except tokens.TokenError as exc:
            refused[number] = exc
            continue
        allowed.append(read)
    done = iter(await node.read_many(allowed) if allowed else [])
    outcomes: list[int | dict] = []
    data: list[bytes] = []
    for number, (_, read) in enumerate(batch):
        outcome = refused[number] if number in refused else next(done)
        if isinstance(outcome, Exception):
            _, name, errno_name = _classified(outcome)
            outcomes.append({"error": name, "errno": errno_name, "message": str(outcome) or repr(outcome)})
        elif read.part is not None:  # its CRC32C: the record's was checked here, this one covers the way back
            outcomes.append([len(outcome), crc32c.crc32c(outcome)])
            data.append(outcome)
        else:
            outcomes.append(len(outcome))
            data.append(outcome)
    return outcomes, data


def _batch_reads(body: bytes) -> list[tuple[str, ShardRead]]:
    """(token, read) of each read a batch's JSON body names, every field held to its format.

    :raises ValueError: anything else, or more reads or bytes than ``limits.shard_batch_*`` allow."""
    try:
        document = json.loads(body)
        given_tokens, reads = document["tokens"], document["reads"]
    except (ValueError, TypeError, KeyError, RecursionError):
        raise ValueError("a batch of reads is a JSON object with a list of tokens and a list of reads") from None
    if not isinstance(given_tokens, list) or not isinstance(reads, list):
        raise ValueError("a batch of reads is a JSON object with a list of tokens and a list of reads")
    if len(reads) > limits.shard_batch_reads_max:
        raise ValueError(f"{len(reads)} reads in one batch: at most {limits.shard_batch_reads_max}")
    batch, answer, disk = [], 0, 0
    for entry in reads:
        if not isinstance(entry, list) or len(entry) not in (7, 9):
            raise ValueError("a read is [token number, drive, pg, segment, index, offset, length(, lo, hi)]")
        token_number, drive, pg, segment, index, offset, length, *part = entry
        for value in (token_number, offset, length, *part):
            if type(value) is not int or not 0 <= value <= SHARD_BYTES_MAX:
                raise ValueError(f"bad number in a read: {str(value)[:40]!r}")
        if token_number >= len(given_tokens) or not isinstance(given_tokens[token_number], str):
            raise ValueError(f"a read names token {token_number}, which the batch does not carry")
        if part and not (part[0] < part[1] <= length - CRC_BYTES and length <= RECORD_BYTES_MAX):
            raise ValueError(f"a part {part} of a read of {length} bytes is not inside one cell record")
        read = ShardRead(ids.drive_id(drive), ShardRef(pg, segment, index), offset, length, tuple(part) or None)
        answer, disk = answer + read.answer_bytes, disk + length
        if answer > limits.shard_batch_bytes_max or disk > limits.shard_batch_disk_bytes_max:
            raise ValueError(f"a batch of reads asks for more than {limits.shard_batch_bytes_max} bytes, or reads "
                             f"more than {limits.shard_batch_disk_bytes_max} off the drives")  # fmt: skip
        batch.append((given_tokens[token_number], read))
    return batch


def _number(text: str, what: str) -> int:
    """A decimal number as Apollo writes one: no sign, spaces or underscores that ``int()`` would let by."""
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise ValueError(f"bad {what} {text[:40]!r}")
    return int(text)


def _listing(serve: Callable):
    """A listing route: it names no segment, so only a service token (``list``, every segment) opens it."""

    async def route(request: web.Request) -> web.Response:
        request.app[KEYRING].check(request.headers.get(TOKEN_HEADER), tokens.LIST, tokens.ANY_SEGMENT)
        limit = _number(request.query.get("limit", str(LIST_LIMIT_MAX)), "listing limit")
        drive_id = ids.drive_id(request.match_info["drive"])
        return web.json_response(await serve(request, request.app[NODE], drive_id, limit))

    return _answered(route)


async def _list_groups(request: web.Request, node: LocalStorageNode, drive_id: str, limit: int) -> dict:
    given = request.query.get("after", "-1")
    after = -1 if given == "-1" else _number(given, "placement group cursor")  # -1: before the first group
    return {"groups": await node.list_groups(drive_id, after, limit)}


async def _list_shards(request: web.Request, node: LocalStorageNode, drive_id: str, limit: int) -> dict:
    pg = _number(request.match_info["pg"], "placement group")
    return {"shards": await node.list_shards(drive_id, pg, request.query.get("after", ""), limit)}


async def _stamp_epoch(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith(routes.SHARDS_PREFIX):  # not on health, metrics, or an S3 server's own answers
        response.headers[EPOCH_HEADER] = str(request.app[STATE].epoch)


def add_shard_routes(app: web.Application, node: LocalStorageNode, keyring: tokens.Keyring,
                     state: NodeState | None = None, wrap: routes.Wrap = routes.unwrapped) -> None:  # fmt: skip
    """Serve ``node``'s shards in ``app``, each handler inside ``wrap``."""
    app[NODE] = node
    app[KEYRING] = keyring
    app[BATCH_BUDGET] = ByteBudget(limits.shard_batch_inflight_bytes_max)
    app[STATE] = state or NodeState()
    app.on_response_prepare.append(_stamp_epoch)
    shard = routes.SHARDS_PREFIX + "/{drive}/{pg}/{segment}/{index}"
    app.router.add_put(shard, wrap(_handler(tokens.WRITE, _put)))
    app.router.add_get(shard, wrap(_handler(tokens.READ, _get)), allow_head=False)
    app.router.add_head(shard, wrap(_handler(tokens.READ, _head)))
    app.router.add_delete(shard, wrap(_handler(tokens.DELETE, _delete)))
    app.router.add_post(routes.SHARDS_PREFIX, wrap(_answered(_read_batch)))
    app.router.add_get(routes.SHARDS_PREFIX + "/{drive}", wrap(_listing(_list_groups)), allow_head=False)
    app.router.add_get(routes.SHARDS_PREFIX + "/{drive}/{pg}", wrap(_listing(_list_shards)), allow_head=False)


Rebuild = Callable[[SegmentLayout, dict[int, str], dict[int, str]], Awaitable[int]]


def _drive_map(raw: object, width: int) -> dict[int, str]:
    """{shard index: drive id} from the wire, every part held to its format."""
    if not isinstance(raw, dict) or len(raw) > width:
        raise ValueError("a rebuild names at most a drive per shard")
    out = {}
    for index, drive in raw.items():
        number = _number(str(index), "shard index")
        if number >= width or not isinstance(drive, str):
            raise ValueError(f"bad shard {index!r} of a {width}-wide segment")
        out[number] = ids.drive_id(drive)
    return out


def add_rebuild_route(app: web.Application, rebuild: Rebuild) -> None:
    """``POST /_apollo/rebuild``: rebuild shards of one segment (``rebuild``, the role's) and answer the bytes
    written. Only a ``repair`` token for the segment opens it: the metadata service holding the manager lease
    sends the job, having chosen the targets; the node reads the survivors and writes the new shards."""

    async def route(request: web.Request) -> web.Response:
        size = request.content_length
        if size is None or size > routes.REBUILD_BODY_BYTES_MAX:
            raise ValueError(f"a rebuild job is a JSON body of at most {routes.REBUILD_BODY_BYTES_MAX} bytes")
        job = json.loads(await request.content.readexactly(size))
        if not isinstance(job, dict):
            raise ValueError("a rebuild job is {layout, targets, copy_from}")
        try:
            layout = SegmentLayout.from_json(job["layout"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"a rebuild job's layout is malformed: {exc!r}") from None
        request.app[KEYRING].check(request.headers.get(TOKEN_HEADER), tokens.REPAIR, layout.segment_id)
        targets = _drive_map(job.get("targets"), layout.scheme.width)
        copy_from = _drive_map(job.get("copy_from", {}), layout.scheme.width)
        if not targets:
            raise ValueError("a rebuild names at least one target")
        return web.json_response({"written": await rebuild(layout, targets, copy_from)})

    app.router.add_post(routes.REBUILD, _answered(route))


def build_storage_app(node: LocalStorageNode, keyring: tokens.Keyring, state: NodeState | None = None
                      ) -> web.Application:  # fmt: skip
    """``apollo storage``'s app: the shards of its drives, health and metrics. Shard writes stream
    (``request.content``): no body is read whole, so the app bounds none."""
    app = routes.role_app(client_max_size=0)
    add_shard_routes(app, node, keyring, state)
    return app
