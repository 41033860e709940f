"""The shard fetcher against a scripted node: raw HTTP replies, written in pieces, over a real socket.

Each test runs on the default asyncio loop and on uvloop (which Apollo's processes run): the two serve
``asyncio.BufferedProtocol`` with different transports.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import random
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from apollo.client.fetch import ERROR_BODY_LIMIT, HEAD_LIMIT, Reply, ShardFetcher
from apollo.client.remote_storage import RemoteStorageNode
from apollo.proto.layout import ShardRef

TARGET = "/_apollo/shards/d1/7/seg/0?offset=0&length=5"
HANG_UP = object()  # in a script's writes: the node closes the connection there


def head(status: str, *headers: str) -> bytes:
    return "".join([f"HTTP/1.1 {status}\r\n", *(f"{line}\r\n" for line in headers), "\r\n"]).encode()


def ok(body: bytes, *headers: str) -> bytes:
    """A whole 200 reply, as a node sends a shard."""
    return head("200 OK", f"Content-Length: {len(body)}", *headers) + body


def split(data: bytes, sizes: tuple[int, ...]) -> list[bytes]:
    """``data`` cut into pieces of ``sizes``, cycled."""
    pieces, at, cycled = [], 0, itertools.cycle(sizes)
    while at < len(data):
        pieces.append(data[at : at + (size := next(cycled))])
        at += size
    return pieces


class Node:
    """A storage node stand-in: its n-th accepted connection plays ``scripts[n]``.

    A script holds the replies to successive requests, each a list of writes (each its own segment);
    ``HANG_UP`` among them closes the connection there. A connection whose script runs out waits for the
    fetcher to close it, and counts that in ``client_closed``, unless a request comes instead.
    """

    def __init__(self, scripts: list[list[list]]) -> None:
        self.scripts = scripts
        self.accepted = 0
        self.replies_written = 0
        self.hung_up = 0
        self.client_closed = 0
        self.requests: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.scripts[self.accepted]
        self.accepted += 1
        try:
            for writes in script:
                self.requests.append(await reader.readuntil(b"\r\n\r\n"))
                for piece in writes:
                    if piece is HANG_UP:
                        self.hung_up += 1
                        return
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.001)
                self.replies_written += 1
            leftover = await reader.read()
        except (ConnectionError, asyncio.IncompleteReadError):  # the fetcher closed with bytes unread
            leftover = b""
        finally:
            writer.close()
        self.client_closed += leftover == b""

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(2):
            while not condition():
                await asyncio.sleep(0.005)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request) -> Callable[..., None]:
    """``run(scenario, *scripts)``: ``scenario(node, fetcher)`` against a node playing the scripts, on this loop."""
    loop_factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(scenario: Callable[[Node, ShardFetcher], Awaitable[None]], *scripts: list[list]) -> None:
        async def main() -> None:
            node = Node(list(scripts))
            server = await asyncio.start_server(node.serve, "127.0.0.1", 0)
            fetcher = ShardFetcher(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", 1.0)
            try:
                await scenario(node, fetcher)
            finally:
                fetcher.close()
                server.close()

        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())

    return run


async def get(fetcher: ShardFetcher, body_limit: int = 1 << 10, timeout_s: float = 5.0) -> Reply:
    return await fetcher.get(TARGET, {"X-Apollo-Token": "t0k"}, timeout_s, body_limit)


def test_body_written_in_ragged_pieces_lands_byte_exact(run, seed):
    body = random.Random(seed).randbytes(3 << 20)
    reply_head = head("200 OK", f"Content-Length: {len(body)}", "X-Apollo-Epoch:  7 ")
    whole, blank_line_ends, body_starts = reply_head + body, len(reply_head), len(reply_head) + 100
    head_writes = [whole[:1], whole[1:8], whole[8 : blank_line_ends - 1], whole[blank_line_ends - 1 : body_starts]]
    writes = [*head_writes, *split(whole[body_starts:], (1, 7, 65537, 4096, 300001))]  # body bytes ride with the head

    async def scenario(node: Node, fetcher: ShardFetcher) -> None:
        reply = await get(fetcher, body_limit=len(body))
        assert (reply.status, reply.headers) == (200, {"content-length": str(len(body)), "x-apollo-epoch": "7"})
        assert reply.body == body
        reply.body.append(0)  # the caller owns the buffer: no view of it is left behind to pin its size
        request = node.requests[0].decode()
        assert request.startswith(f"GET {TARGET} HTTP/1.1\r\nHost: 127.0.0.1:")
        assert request.endswith("\r\nX-Apollo-Token: t0k\r\n\r\n")

    run(scenario, [writes])


def test_connection_is_kept_alive_until_a_reply_says_close(run):
    async def scenario(node: Node, fetcher: ShardFetcher) -> None:
        assert [bytes((await get(fetcher)).body) for _ in range(3)] == [b"one", b"two", b"bye"]
        assert node.accepted == 1
        await node.until(lambda: node.client_closed == 1)
        assert (await get(fetcher)).body == b"new"
        assert node.accepted == 2

    run(scenario, [[ok(b"one")], [ok(b"two")], [ok(b"bye", "Connection: close")]], [[ok(b"new")]])


@pytest.mark.parametrize("when", ["while idle", "on the next request"])
def test_connection_the_node_closed_is_replaced_transparently(run, when):
    first = [[ok(b"one"), HANG_UP]] if when == "while idle" else [[ok(b"one")], [HANG_UP]]

    async def scenario(node: Node, fetcher: ShardFetcher) -> None:
        assert (await get(fetcher)).body == b"one"
        if when == "while idle":
            await node.until(lambda: node.hung_up == 1)
            await asyncio.sleep(0.05)  # the fetcher sees the close before it asks again
        assert (await get(fetcher)).body == b"two"
        assert node.accepted == 2
        assert len(fetcher._open) == 1  # the dead connection is forgotten, not kept (with its last body)

    run(scenario, first, [[ok(b"two")]])


REFUSED = {
    "no content-length": head("200 OK") + b"shard",
    "chunked": head("200 OK", "Transfer-Encoding: chunked", "Content-Length: 15") + b"5\r\nshard\r\n0\r\n\r\n",
    "over body_limit": ok(b"x" * 17),
    "error over its limit": head("403 Forbidden", f"Content-Length: {ERROR_BODY_LIMIT + 1}"),
    "bytes past the body": ok(b"shard") + b"HTTP/1.1 200 OK\r\n",
    "garbage status line": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "not HTTP": b"ICY 200 OK\r\nContent-Length: 5\r\n\r\nshard",
    "malformed header": b"HTTP/1.1 200 OK\r\nno colon\r\nContent-Length: 5\r\n\r\nshard",
    "head without an end": b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * HEAD_LIMIT,
}


@pytest.mark.parametrize("reply", REFUSED.values(), ids=REFUSED.keys())
def test_reply_not_spoken_is_refused_and_its_connection_dropped(run, reply):
    async def scenario(node: Node, fetcher: ShardFetcher) -> None:
        with pytest.raises(ConnectionError) as refused:
            await get(fetcher, body_limit=16)
        assert refused.value.errno == errno.EPROTO  # turned down, not a crash on what it could not parse
        await node.until(lambda: node.client_closed == 1)
        assert (await get(fetcher)).body == b"fine"
        assert node.accepted == 2

    run(scenario, [[reply]], [[ok(b"fine")]])


def test_bytes_after_a_whole_reply_drop_the_connection(run):
    async def scenario(node: Node, fetcher: ShardFetcher) -> None:
        assert (await get(fetcher)).body == b"one"
        await node.until(lambda: node.client_closed == 1)
        assert (await get(fetcher)).body == b"two"
        assert node.accepted == 2

    run(scenario, [[ok(b"one"), ok(b"stale")]], [[ok(b"two")]])


def test_node_closing_mid_body_fails_the_read_instead_of_retrying(run):
    async def scenario(node: Node, fetcher: ShardFetcher) -> None:
        assert (await get(fetcher)).body == b"one"
        with pytest.raises(ConnectionError):
            await get(fetcher)
        assert node.accepted == 1
        assert (await get(fetcher)).body == b"next"

    cut_short = [head("200 OK", "Content-Length: 1000") + b"x" * 100, HANG_UP]
    run(scenario, [[ok(b"one")], cut_short], [[ok(b"next")]])


def test_error_status_is_returned_with_its_body(run):
    body = json.dumps({"error": "TokenRejected", "message": "token expired " + "." * 60}).encode()

    async def scenario(node: Node, fetcher: ShardFetcher) -> None:
        reply = await get(fetcher, body_limit=10)
        assert (reply.status, reply.body) == (403, body)

    run(scenario, [[head("403 Forbidden", f"Content-Length: {len(body)}") + body]])


def test_stalled_reply_times_out_and_drops_its_connection(run):
    async def scenario(node: Node, fetcher: ShardFetcher) -> None:
        started = time.monotonic()
        read = asyncio.create_task(get(fetcher, timeout_s=0.5))
        await asyncio.wait([read], timeout=2.5)
        assert isinstance(read.exception(), TimeoutError)
        assert time.monotonic() - started > 0.4
        await node.until(lambda: node.client_closed == 1)

    run(scenario, [[head("200 OK", "Content-Length: 1000") + b"x" * 100]])


def test_cancelled_read_drops_its_connection(run):
    async def scenario(node: Node, fetcher: ShardFetcher) -> None:
        read = asyncio.create_task(get(fetcher))
        await node.until(lambda: node.replies_written == 1)
        await asyncio.sleep(0.05)  # the fetcher is inside the body
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        await node.until(lambda: node.client_closed == 1)
        assert (await get(fetcher)).body == b"fresh"
        assert node.accepted == 2

    run(scenario, [[head("200 OK", "Content-Length: 1000") + b"x" * 100]], [[ok(b"fresh")]])


def test_closed_port_is_refused_promptly(run):
    async def scenario(node: Node, fetcher: ShardFetcher) -> None:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await get(ShardFetcher(f"http://127.0.0.1:{port}", 1.0))
        assert time.monotonic() - started < 1

    run(scenario)


@pytest.mark.parametrize("endpoint", ["ftp://x:1", "http://:1", "https://:1"])
def test_only_http_and_https_endpoints_are_accepted(endpoint):
    """https is an ``apollo server --certs`` (tests/s3/test_tls.py reads shards through it)."""
    with pytest.raises(ValueError):
        ShardFetcher(endpoint, 1.0)
    assert ShardFetcher("https://x:1", 1.0).ssl is not None


def test_close_closes_idle_connections(run):
    async def scenario(node: Node, fetcher: ShardFetcher) -> None:
        assert [bytes(r.body) for r in await asyncio.gather(get(fetcher), get(fetcher))] == [b"a", b"a"]
        assert node.accepted == 2
        fetcher.close()
        await node.until(lambda: node.client_closed == 2)

    run(scenario, [[ok(b"a")]], [[ok(b"a")]])


def test_a_reply_not_spoken_does_not_make_the_node_look_down(run):
    """A node that answered with a reply the client refuses (EPROTO) is up: the connection is dropped, but the
    next read goes out at once. Suspecting the node failed every read of an ``apollo server``, whose one
    endpoint serves every drive, for seconds after one bad reply."""

    async def scenario(node: Node, fetcher: ShardFetcher) -> None:
        # Shard reads go through the fetcher alone: no aiohttp session.
        remote = RemoteStorageNode(f"http://{fetcher.host}:{fetcher.port}", ["d1"], lambda op, segment: "t0k",
                                   session=None)  # fmt: skip
        remote.fetcher = fetcher
        shard = ShardRef(pg=7, segment_id="0" * 32, index=0)
        with pytest.raises(ConnectionError) as refused:
            await remote.read("d1", shard, 0, 5)
        assert refused.value.errno == errno.EPROTO
        assert await remote.read("d1", shard, 0, 5) == b"fine"

    run(scenario, [[REFUSED["head without an end"]]], [[ok(b"fine")]])
