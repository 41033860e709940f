"""A storage node across the network, behind the same ``StorageNode`` seam as a local one.

The client library cannot tell the difference: the wire errors of
``apollo.storage.service`` come back as the exceptions ``LocalStorageNode`` raises, and
every network failure (refused, reset, timed out) is an ``OSError``, which readers
treat as a missing shard (decode from parity) and writers as a lost one (the write
goes on while a quorum of shards is left).

A node that hangs rather than dies (SIGSTOP, a stuck disk) is the case timeouts are
for: every request and every step of a streamed write has one (``Timeouts``).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import crc32c

from apollo import limits, tokens
from apollo.client.fetch import Reply, ShardFetcher
from apollo.errors import ChecksumMismatch, DriveError
from apollo.proto.layout import SegmentLayout, ShardRef
from apollo.proto.routes import REBUILD, SHARDS_PREFIX
from apollo.proto.storage_api import (
    EPOCH_HEADER,
    ERRNO_HEADER,
    ERROR_HEADER,
    SIZE_HEADER,
    TOKEN_HEADER,
    unframe_reads,
)
from apollo.storage.node import (
    LIST_LIMIT_MAX,
    ReadOutcome,
    ShardRead,
    ShardSink,
    StorageNode,
    StoredShard,
    check_listing,
)

TokenSource = Callable[[str, str], str]  # (operation, segment id) -> capability token
READ_S = 0.01  # what a batch read's timeout allows per read beyond a request's: one seek of a cold disk
log = logging.getLogger("apollo.client")
_WIRE_ERRORS: dict[str, Callable[[str], Exception]] = {
    "TokenError": tokens.TokenError,
    "FileNotFoundError": FileNotFoundError,
    "DriveError": DriveError,
    "BadRequest": ChecksumMismatch,
}


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 3.0
    request_s: float = 10.0  # a whole read, or one step (append, finish) of a write
    queue_chunks: int = 4  # appended buffers in flight per shard write: bounds memory per stream
    # After a node failed to connect or answer in time, requests to it fail at once for this long:
    # a hung node costs one timeout, not one per stripe, and reads go straight to parity meanwhile.
    suspect_s: float = 5.0


REBUILD_TIMEOUT_S = 600.0  # a whole segment read from k nodes and written: far longer than one request


def _os_error(exc: BaseException) -> OSError:
    if isinstance(exc, TimeoutError):
        return TimeoutError(errno.ETIMEDOUT, "storage node did not answer in time")
    if isinstance(exc, OSError):
        return exc
    return ConnectionError(errno.ECONNRESET, f"storage node connection failed: {exc!r}")


def _wire_error(status: int, headers: Mapping[str, str], message: str) -> Exception:
    """The exception a node's error answer stands for (``apollo.storage.service._error``, read back)."""
    name = headers.get(ERROR_HEADER, "")
    if name == "OSError":
        return OSError(getattr(errno, headers.get(ERRNO_HEADER, "EIO"), errno.EIO), message)
    return _WIRE_ERRORS.get(name, lambda text: OSError(errno.EIO, text))(message)


def _reply_error(reply: Reply) -> Exception:
    """The exception an error answer of the shard fetcher's stands for."""
    headers = {name: reply.headers[name.lower()] for name in (ERROR_HEADER, ERRNO_HEADER)
               if name.lower() in reply.headers}  # fmt: skip
    return _wire_error(reply.status, headers, _message(reply.body, reply.status))


def _outcomes(body: bytearray, reads: list[ShardRead]) -> list[ReadOutcome]:
    """Each read's bytes (a view of ``body``) or its error, from a batch read's framed answer.

    :raises ValueError: an answer that does not match the reads asked for."""
    outcomes, data = unframe_reads(body)
    if len(outcomes) != len(reads):
        raise ValueError(f"answered {len(outcomes)} outcomes for {len(reads)} reads")
    results: list[ReadOutcome] = []
    position = 0
    for outcome, read in zip(outcomes, reads, strict=True):
        if isinstance(outcome, dict):
            headers = {ERROR_HEADER: str(outcome.get("error")), ERRNO_HEADER: str(outcome.get("errno"))}
            results.append(_wire_error(0, headers, str(outcome.get("message"))))
            continue
        length, crc = outcome if read.part is not None and isinstance(outcome, list) and len(outcome) == 2 else (
            outcome, None)  # fmt: skip
        if (type(length) is not int or not 0 <= length <= read.answer_bytes or position + length > len(data)
                or (read.part is not None and type(crc) is not int)):  # fmt: skip
            raise ValueError(f"a read's outcome {str(outcome)[:40]!r} does not fit the answer")
        piece = data[position : position + length]
        position += length
        if crc is not None and crc32c.crc32c(piece) != crc:
            results.append(ChecksumMismatch("a part of a cell record changed on its way from the storage node"))
            continue
        results.append(piece)
    if position != len(data):
        raise ValueError("bytes past the last read of the answer")
    return results


def _message(body: bytes | bytearray, status: int) -> str:
    try:
        return json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        return f"storage node answered HTTP {status}"


async def _raise_for(response: aiohttp.ClientResponse) -> None:
    if response.status < 300:
        return
    body = b"" if response.method == "HEAD" else await response.read()
    raise _wire_error(response.status, response.headers, _message(body, response.status))


class _RemoteSink(ShardSink):
    """One shard's streamed PUT: appends feed a bounded queue that the request body drains."""

    def __init__(self, node: RemoteStorageNode, url: str, token: str, header: bytes) -> None:
        self._node = node
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(node.timeouts.queue_chunks)
        self._queue.put_nowait(header)
        self._connected = asyncio.Event()
        self._request = asyncio.create_task(self._send(url, token))

    async def _body(self) -> AsyncIterator[bytes]:
        self._connected.set()  # aiohttp asks for the body once connected and the headers are sent
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    async def opened(self) -> None:
        """Wait until the node has the request: a refused or hung node fails the open, not the first write,
        so the writer can still put this shard on another drive."""
        connected = asyncio.ensure_future(self._connected.wait())
        done, _ = await asyncio.wait({connected, self._request}, timeout=self._node.timeouts.connect_s,
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if connected in done:
            return
        connected.cancel()
        if self._request in done:
            await self._outcome()
        self._request.cancel()
        raise self._suspect(TimeoutError(errno.ETIMEDOUT, "storage node did not take the connection in time"))

    async def _send(self, url: str, token: str) -> None:
        async with self._node.session.put(
            url,
            data=self._body(),
            headers={TOKEN_HEADER: token},
            timeout=aiohttp.ClientTimeout(connect=self._node.timeouts.connect_s),
            ssl=self._node.ssl,
        ) as r:
            self._node.saw(r.headers.get(EPOCH_HEADER))
            await _raise_for(r)

    async def _feed(self, item: bytes | None) -> None:
        """Queue ``item``, unless the request fails first or the node stops reading for too long."""
        put = asyncio.ensure_future(self._queue.put(item))
        done, _ = await asyncio.wait({put, self._request}, timeout=self._node.timeouts.request_s,
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if put not in done:
            put.cancel()
            if self._request in done:
                await self._outcome()
            raise self._suspect(TimeoutError(errno.ETIMEDOUT, "storage node stopped taking shard data"))

    async def _outcome(self) -> None:
        try:
            await self._request
        except (OSError, tokens.TokenError, FileNotFoundError, DriveError, ChecksumMismatch):
            raise
        except Exception as exc:
            raise self._suspect(_os_error(exc)) from exc

    def _suspect(self, exc: OSError) -> OSError:
        self._node.suspect(exc)
        return exc

    async def append(self, records: list[bytes]) -> None:
        # One chunk per call: a batch of cells and their CRCs as separate chunks would cost a chunk
        # header, a queue hop and a write per 4-byte CRC; one copy into a joined buffer costs less.
        await self._feed(records[0] if len(records) == 1 else b"".join(records))

    async def finish(self, footer: bytes) -> None:
        await self._feed(footer)
        await self._feed(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._request), self._node.timeouts.request_s)
        except TimeoutError:
            self._request.cancel()
            raise self._suspect(
                TimeoutError(errno.ETIMEDOUT, "storage node did not confirm the shard in time")
            ) from None
        await self._outcome()

    async def abort(self) -> None:
        self._request.cancel()  # the node sees the stream cut short and removes its temp file
        await asyncio.gather(self._request, return_exceptions=True)


class RemoteStorageNode(StorageNode):
    def __init__(self, endpoint: str, drive_ids: list[str], token_for: TokenSource,
                 session: aiohttp.ClientSession, timeouts: Timeouts = Timeouts(),
                 on_epoch: Callable[[int], None] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:  # fmt: skip
        """``on_epoch(epoch)``: called with the map epoch of every answer (the owner refreshes a stale map).
        ``ssl_context``: for an ``https://`` node, what verifies it and shows it our client certificate
        (``apollo.client.tls``), on every request of both paths; None: the defaults of an HTTPS client."""
        self.endpoint = endpoint.rstrip("/")
        self._drive_ids = list(drive_ids)
        self.token_for = token_for
        self.session = session
        self.timeouts = timeouts
        self.suspect_until = 0.0  # monotonic
        self.on_epoch = on_epoch
        self.ssl: ssl.SSLContext | bool = ssl_context or True  # aiohttp's per-request ``ssl``: True is its default
        self.fetcher = ShardFetcher(self.endpoint, timeouts.connect_s, ssl_context)  # shard reads, copied once

    def saw(self, epoch: str | None) -> None:
        """An answer's ``X-Apollo-Epoch``: the owner refreshes its map when it is behind."""
        if self.on_epoch is not None and epoch is not None and epoch.isdigit():
            self.on_epoch(int(epoch))

    def check_reachable(self) -> None:
        if time.monotonic() < self.suspect_until:
            raise ConnectionError(
                errno.EHOSTDOWN, f"storage node {self.endpoint} failed moments ago; not waiting again"
            )

    def suspect(self, exc: BaseException) -> None:
        """Fail reads of this node at once for a while after it failed to answer. Not after a reply this client
        could not parse (EPROTO): the node answered, and the connection is dropped; on ``apollo server`` one
        endpoint serves every drive, so suspecting it for one bad reply failed every read for seconds."""
        if isinstance(exc, OSError) and exc.errno == errno.EPROTO:
            return
        if isinstance(exc, TimeoutError | ConnectionError | aiohttp.ClientConnectorError):
            self.suspect_until = time.monotonic() + self.timeouts.suspect_s

    def drive_ids(self) -> list[str]:
        return list(self._drive_ids)

    def _url(self, drive_id: str, shard: ShardRef) -> str:
        return f"{self.endpoint}{self._path(drive_id, shard)}"

    @staticmethod
    def _path(drive_id: str, shard: ShardRef) -> str:
        parts = (drive_id, str(shard.pg), shard.segment_id, str(shard.index))
        return SHARDS_PREFIX + "/" + "/".join(quote(part, safe="") for part in parts)

    async def _call(self, method: str, drive_id: str, shard: ShardRef, op: str, params: dict | None = None,
                    want: str = "body") -> bytes | str | int:  # fmt: skip
        token = self.token_for(op, shard.segment_id)
        return await self._request(method, self._url(drive_id, shard), token, params, want)

    async def _request(self, method: str, url: str, token: str, params: dict | None, want: str,
                       data: bytes | None = None, total_s: float | None = None
                       ) -> bytes | str | int | dict:  # fmt: skip
        """``total_s``: the whole request's limit, when it is not one step's (``Timeouts.request_s``)."""
        timeout = aiohttp.ClientTimeout(total=total_s or self.timeouts.request_s, connect=self.timeouts.connect_s)
        self.check_reachable()
        try:
            async with self.session.request(method, url, params=params, data=data, headers={TOKEN_HEADER: token},
                                            timeout=timeout, ssl=self.ssl) as response:  # fmt: skip
                self.saw(response.headers.get(EPOCH_HEADER))
                if method == "DELETE" and response.status == 404:
                    return 0
                await _raise_for(response)
                if want == "size":
                    return int(response.headers[SIZE_HEADER])
                if want == "json":
                    return await response.json()
                return await response.read() if want == "body" else 1
        except (TimeoutError, aiohttp.ClientError) as exc:
            failure = _os_error(exc)
            self.suspect(failure)
            raise failure from exc

    async def open_shard(self, drive_id: str, shard: ShardRef, header: bytes) -> ShardSink:
        self.check_reachable()
        sink = _RemoteSink(self, self._url(drive_id, shard), self.token_for(tokens.WRITE, shard.segment_id), header)
        await sink.opened()
        return sink

    async def read(self, drive_id: str, shard: ShardRef, offset: int, length: int) -> bytearray:
        return await self._fetch(drive_id, shard, f"offset={offset}&length={length}", length)

    async def read_tail(self, drive_id: str, shard: ShardRef, length: int) -> bytearray:
        return await self._fetch(drive_id, shard, f"tail={length}", length)

    async def read_many(self, reads: list[ShardRead]) -> list[ReadOutcome]:
        """The reads in as few requests as the node's limits allow (``POST /_apollo/shards``), sent at once.
        Each outcome is a view of the buffer its request's answer was received into; a request that fails
        whole (the node unreachable, a timeout) is the failure of each of its reads."""
        requests, current, size, disk = [], [], 0, 0
        for read in reads:
            if current and (len(current) == limits.shard_batch_reads_max
                            or size + read.answer_bytes > limits.shard_batch_bytes_max
                            or disk + read.length > limits.shard_batch_disk_bytes_max):  # fmt: skip
                requests.append(current)
                current, size, disk = [], 0, 0
            current.append(read)
            size, disk = size + read.answer_bytes, disk + read.length
        if current:
            requests.append(current)
        answers = await asyncio.gather(*(self._read_batch(batch) for batch in requests))
        return [outcome for answer in answers for outcome in answer]

    async def _read_batch(self, reads: list[ShardRead]) -> list[ReadOutcome]:
        """One request; a read this client holds no token for is refused here, the others still go."""
        token_numbers: dict[str, int] = {}
        wire, sent, unsent = [], [], {}
        for number, (drive_id, shard, offset, length, part) in enumerate(reads):
            try:
                token = self.token_for(tokens.READ, shard.segment_id)
            except tokens.TokenError as exc:
                unsent[number] = exc
                continue
            wire.append([token_numbers.setdefault(token, len(token_numbers)), drive_id, shard.pg, shard.segment_id,
                         shard.index, offset, length, *(part or ())])  # fmt: skip
            sent.append(reads[number])
        answered = iter(await self._post_reads(sent, token_numbers, wire) if sent else [])
        return [unsent[number] if number in unsent else next(answered) for number in range(len(reads))]

    async def _post_reads(self, reads: list[ShardRead], token_numbers: dict[str, int], wire: list[list]
                          ) -> list[ReadOutcome]:  # fmt: skip
        """The reads in one request. A node unreachable or not answering fails each read (the reader decodes
        from parity); a node that answers but not with outcomes (busy: 503, or of a version without batches:
        404) is read shard by shard, since nothing says its shards are bad."""
        body = json.dumps({"tokens": list(token_numbers), "reads": wire}, separators=(",", ":")).encode()
        # The answer: the outcomes (an error's message is at most a few hundred bytes) and the bytes read.
        body_limit = sum(read.answer_bytes for read in reads) + 512 * len(reads) + 64
        timeout_s = self.timeouts.request_s + READ_S * len(reads)  # a batch of cold reads on a disk
        self.check_reachable()
        try:
            reply = await self.fetcher.request("POST", SHARDS_PREFIX, {"Content-Type": "application/json"},
                                               timeout_s, body_limit, body)  # fmt: skip
        except OSError as exc:  # TimeoutError included
            failure = _os_error(exc)
            self.suspect(failure)
            return [failure] * len(reads)
        self.saw(reply.headers.get(EPOCH_HEADER.lower()))
        try:
            if reply.status >= 300:
                raise _reply_error(reply)
            return _outcomes(reply.body, reads)
        except (ValueError, OSError, DriveError, ChecksumMismatch, tokens.TokenError) as exc:
            log.info("storage node %s answered a batch of %d reads with %r: reading them one by one",
                     self.endpoint, len(reads), exc)  # fmt: skip
            return await StorageNode.read_many(self, reads)

    async def _fetch(self, drive_id: str, shard: ShardRef, query: str, length: int) -> bytearray:
        token = self.token_for(tokens.READ, shard.segment_id)
        self.check_reachable()
        target = f"{self._path(drive_id, shard)}?{query}"
        try:
            reply = await self.fetcher.get(target, {TOKEN_HEADER: token}, self.timeouts.request_s, length)
        except OSError as exc:  # TimeoutError included
            failure = _os_error(exc)
            self.suspect(failure)
            raise failure from exc
        self.saw(reply.headers.get(EPOCH_HEADER.lower()))
        if reply.status >= 300:
            raise _reply_error(reply)
        return reply.body

    def close(self) -> None:
        self.fetcher.close()

    async def size(self, drive_id: str, shard: ShardRef) -> int:
        return await self._call("HEAD", drive_id, shard, tokens.READ, want="size")

    async def delete(self, drive_id: str, shard: ShardRef) -> bool:
        return bool(await self._call("DELETE", drive_id, shard, tokens.DELETE, want="status"))

    async def rebuild(self, layout: SegmentLayout, targets: dict[int, str], copy_from: dict[int, str]) -> int:
        """Have this node rebuild shards ``targets`` (index -> drive) of ``layout`` from the surviving ones
        (``copy_from``: moving shards it may copy as they are), write and verify them; the bytes written.
        The manager's call (a ``repair`` token): the rebuild reads k shards over the node's own link, so a
        failed drive's rebuild is spread over the nodes that take its shards.

        :raises ApolloError: as the node's rebuild raised it. :raises OSError: the node did not answer in time.
        """
        body = json.dumps({"layout": layout.to_json(), "targets": targets, "copy_from": copy_from}).encode()
        token = self.token_for(tokens.REPAIR, layout.segment_id)
        reply = await self._request("POST", self.endpoint + REBUILD, token, None, "json", body, REBUILD_TIMEOUT_S)
        return int(reply["written"])

    async def _listing(self, path: str, params: dict) -> dict:
        token = self.token_for(tokens.LIST, tokens.ANY_SEGMENT)
        return await self._request("GET", f"{self.endpoint}{SHARDS_PREFIX}/{path}", token, params, "json")

    async def list_groups(self, drive_id: str, after: int = -1, limit: int = LIST_LIMIT_MAX) -> list[int]:
        check_listing(after, limit, lowest_pg=-1)
        return (await self._listing(quote(drive_id, safe=""), {"after": after, "limit": limit}))["groups"]

    async def list_shards(self, drive_id: str, pg: int, after: str = "", limit: int = LIST_LIMIT_MAX
                          ) -> list[StoredShard]:  # fmt: skip
        check_listing(pg, limit)
        reply = await self._listing(f"{quote(drive_id, safe='')}/{pg}", {"after": after, "limit": limit})
        return [StoredShard(*entry) for entry in reply["shards"]]
