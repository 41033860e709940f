"""Shard reads off the wire straight into the buffer the reader keeps.

aiohttp hands a response body over as ``bytes``: the event loop copies every socket read
into one, its HTTP parser copies the body out of that, and reading a whole body joins the
pieces. That is three copies of every byte a reader fetches: with ``perf``, a third of a
native reader's CPU on 1 GiB reads from six nodes. ``ShardFetcher`` speaks just the
HTTP/1.1 a storage node answers a shard GET with (a status, headers, a ``Content-Length``
body) and has the event loop read the body into a preallocated ``bytearray``
(``asyncio.BufferedProtocol``): the kernel's copy is the only one. Writes, listings and
every other call stay on aiohttp, where bodies are small or flow the other way.

One request at a time per connection, connections kept alive and reused; a reused
connection the node closed while idle is retried once on a fresh one (a GET, or a batch of
reads, is idempotent).
Anything that is not a plain HTTP/1.1 reply with a length is refused as ``ConnectionError``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from typing import NamedTuple
from urllib.parse import urlsplit

HEAD_LIMIT = 16 << 10  # status line and headers; a node's are a few hundred bytes
ERROR_BODY_LIMIT = 64 << 10  # an error's JSON body
IDLE_CONNECTIONS_MAX = 64  # kept per node; more at once are closed after their reply


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytearray


class _StaleConnection(ConnectionError):
    """A kept-alive connection failed before any byte of the reply came: safe to retry on a new one."""


class _Exchange(asyncio.BufferedProtocol):
    """One connection: sends a request, reads the reply's head, then its body in place."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._head = bytearray(HEAD_LIMIT)
        self._head_len = 0
        self._body: bytearray | None = None
        self._filled = 0
        self._reply: asyncio.Future[Reply] | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body_limit = 0
        self.got_bytes = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._reply is not None and not self._reply.done():
            kind = ConnectionError if self.got_bytes else _StaleConnection
            self._reply.set_exception(kind(errno.ECONNRESET, f"storage node closed the connection mid-reply: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost reports a reply cut short

    def send(self, request: bytes, body_limit: int) -> asyncio.Future[Reply]:
        self._head_len, self._body, self._filled = 0, None, 0
        self._status, self._headers, self._body_limit = 0, {}, body_limit
        self.got_bytes = False
        self._reply = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._reply

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._reply is None or self._reply.done():
            return memoryview(self._head)  # bytes nobody asked for: buffer_updated drops the connection
        if self._body is not None:
            return memoryview(self._body)[self._filled :]
        return memoryview(self._head)[self._head_len :]

    def buffer_updated(self, nbytes: int) -> None:
        self.got_bytes = True
        if self._reply is None or self._reply.done():
            self._fail("storage node sent bytes past the end of its reply")
        elif self._body is not None:
            self._filled += nbytes
            self._finish_if_complete()
        else:
            searched_from = max(0, self._head_len - 3)
            self._head_len += nbytes
            end = self._head.find(b"\r\n\r\n", searched_from, self._head_len)
            if end >= 0:
                self._parse_head(end)
            elif self._head_len == len(self._head):
                self._fail(f"storage node reply head over {HEAD_LIMIT} bytes")

    def _parse_head(self, end: int) -> None:
        lines = self._head[:end].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit():
            return self._fail(f"storage node sent no HTTP/1.1 status line: {lines[0][:80]!r}")
        self._status = int(code)
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                return self._fail(f"storage node sent a malformed header line: {line[:80]!r}")
            self._headers[name.strip().lower()] = value.strip()
        length = self._headers.get("content-length", "")
        limit = self._body_limit if self._status < 300 else ERROR_BODY_LIMIT
        if "transfer-encoding" in self._headers or not length.isdigit():
            return self._fail("storage node reply has no Content-Length")
        if int(length) > limit:
            return self._fail(f"storage node reply of {length} bytes, more than the {limit} asked for")
        self.keep_alive = version == "HTTP/1.1" and self._headers.get("connection", "").lower() != "close"
        self._body = bytearray(int(length))
        early = self._head_len - (end + 4)  # body bytes that came in with the head
        if early > len(self._body):
            return self._fail("storage node sent bytes past the end of its reply")
        self._body[:early] = self._head[end + 4 : self._head_len]
        self._filled = early
        self._finish_if_complete()

    def _finish_if_complete(self) -> None:
        if self._filled == len(self._body) and not self._reply.done():
            # An idle connection must not keep the caller's buffer alive (nor the future holding it).
            body, self._body, reply, self._reply = self._body, None, self._reply, None
            reply.set_result(Reply(self._status, self._headers, body))

    def _fail(self, reason: str) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(ConnectionError(errno.EPROTO, reason))
        self.close()


class ShardFetcher:
    """Keep-alive connections to one storage node, for its shard GETs and batches of reads."""

    def __init__(self, endpoint: str, connect_timeout_s: float, ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context``: what an ``https://`` node is verified with, and the client certificate shown to it
        (the caller's ``apollo.client.tls`` context, the one its aiohttp requests use too); None: aiohttp's
        default (the system's CAs, or the file SSL_CERT_FILE names), so both paths of the client trust the same."""
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"storage node endpoint {endpoint!r}: only http(s)://host:port is spoken")
        self.host, self.port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
        # An ``apollo server --certs`` serves its shards over HTTPS, an ``apollo storage --certs`` over mutual TLS.
        self.ssl = (ssl_context or ssl.create_default_context()) if url.scheme == "https" else None
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[_Exchange] = []
        self._open: set[_Exchange] = set()

    async def get(self, target: str, headers: dict[str, str], timeout_s: float, body_limit: int) -> Reply:
        """GET ``target`` (path and query); the reply's body is read into a buffer of its own.

        :raises TimeoutError: no whole reply within ``timeout_s``.
        :raises ConnectionError: refused, reset, or a reply this client does not speak.
        """
        return await self.request("GET", target, headers, timeout_s, body_limit)

    async def request(self, method: str, target: str, headers: dict[str, str], timeout_s: float, body_limit: int,
                      body: bytes = b"") -> Reply:  # fmt: skip
        """``get`` for any idempotent request (a batch of shard reads is a POST): ``body`` goes with a length."""
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n",
                 *(f"{name}: {value}\r\n" for name, value in headers.items())]  # fmt: skip
        if body or method != "GET":
            lines.append(f"Content-Length: {len(body)}\r\n")
        request = "".join([*lines, "\r\n"]).encode() + body
        async with asyncio.timeout(timeout_s):
            while self._idle:
                exchange = self._idle.pop()
                if exchange.closed:
                    self._open.discard(exchange)
                    continue
                try:
                    return await self._exchange(exchange, request, body_limit)
                except _StaleConnection:
                    continue
            return await self._exchange(await self._connect(), request, body_limit)

    async def _connect(self) -> _Exchange:
        loop = asyncio.get_running_loop()
        transport, exchange = await asyncio.wait_for(
            loop.create_connection(_Exchange, self.host, self.port, ssl=self.ssl), self.connect_timeout_s
        )
        sock = transport.get_extra_info("socket")
        if sock is None or transport.is_closing():  # the node ended it at once: TLS 1.3 refuses a client
            transport.close()                         # certificate only after the handshake
            raise ConnectionResetError(f"{self.host}:{self.port} closed the connection as it opened "
                                       "(a client certificate it does not accept?)")  # fmt: skip
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._open.add(exchange)
        return exchange

    async def _exchange(self, exchange: _Exchange, request: bytes, body_limit: int) -> Reply:
        try:
            reply = await exchange.send(request, body_limit)
        except BaseException:  # a failure, a timeout or a cancelled read: the connection is mid-reply
            exchange.close()
            self._open.discard(exchange)
            raise
        if exchange.keep_alive and not exchange.closed and len(self._idle) < IDLE_CONNECTIONS_MAX:
            self._idle.append(exchange)
        else:
            exchange.close()
            self._open.discard(exchange)
        return reply

    def close(self) -> None:
        for exchange in self._open:
            exchange.close()
        self._open.clear()
        self._idle.clear()
