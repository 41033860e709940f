"""A lean HTTP/1.1 keep-alive client on ``asyncio.BufferedProtocol``: one connection per load slot.

Why not aiohttp: its client spends 70-140 µs of CPU per small request, about
twice what an aiohttp *server* spends answering it, so on a 2-core machine a
loopback baseline measured with it is bounded by the client and flatters every
ratio. Here a request is one ``transport.write`` of preformatted headers and a
response is parsed from one reused receive buffer: discarded bodies are never
copied into Python objects, so large GETs run at memory speed.

Supports what the benchmark needs: Content-Length and chunked responses,
request bodies as bytes or an async iterator of buffers (written with flow
control), reconnect after ``Connection: close``, and TLS (``ssl=``, for
``s3bench.py --tls``: the event loop's TLS transport under the same protocol).
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module

RECV_BUFFER = 1024 * 1024


class HttpError(Exception):
    pass


class _Protocol(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buffer = memoryview(bytearray(RECV_BUFFER))
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = False
        self._reset(None)

    def _reset(self, waiter: asyncio.Future | None) -> None:
        self.waiter, self.head, self.in_head = waiter, bytearray(), True
        self.status, self.keep_body, self.body, self.received = 0, False, bytearray(), 0
        self.left = 0  # Content-Length bytes still to come, or of the current chunk
        self.chunked, self.chunk_line, self.chunk_state, self.close_after = False, bytearray(), "size", False

    # -- asyncio callbacks ---------------------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.writable.set()
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection lost: {exc or 'closed by the server'}"))

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.waiter is None or self.waiter.done():
            self.transport.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            self._feed(self.buffer[:nbytes])
        except Exception as exc:  # a parse error fails the request, not the event loop
            self.waiter.set_exception(exc)
            self.transport.close()

    # -- response parsing ----------------------------------------------------------------------------------------

    def _feed(self, data: memoryview) -> None:
        if self.in_head:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 65536:
                    raise HttpError("response header larger than 64 KiB")
                return
            rest = memoryview(bytes(self.head[end + 4 :]))
            self._parse_head(bytes(self.head[:end]))
            self.in_head = False
            data = rest
        if self.chunked:
            self._feed_chunked(data)
        else:
            self._take(data)
            self.left -= len(data)
            if self.left <= 0:
                self._done()

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"bad status line {lines[0][:100]!r}")
        self.status = int(parts[1])
        self.keep_body = self.keep_body or not 200 <= self.status < 300
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True
            elif name == b"connection" and value.strip().lower() == b"close":
                self.close_after = True
        if self.chunked:
            return
        if length is None:
            raise HttpError("response without Content-Length or chunked encoding")
        self.left = length
        if length == 0:
            self._done()

    def _feed_chunked(self, data: memoryview) -> None:
        while data:
            if self.chunk_state == "data":
                n = min(self.left, len(data))
                self._take(data[:n])
                data, self.left = data[n:], self.left - n
                if self.left == 0:
                    self.chunk_state = "crlf"
                continue
            end = bytes(data[:64]).find(b"\n")
            if end < 0:
                if len(self.chunk_line) + len(data) >= 64:
                    raise HttpError("chunk header line too long")
                self.chunk_line += data
                return
            line, data = bytes(self.chunk_line + data[:end]).strip(), data[end + 1 :]
            self.chunk_line = bytearray()
            if self.chunk_state == "crlf":
                self.chunk_state = "size"
            elif self.chunk_state == "trailer":
                if not line:
                    self._done()
                    return
            else:
                self.left = int(line.split(b";")[0], 16)
                self.chunk_state = "data" if self.left else "trailer"

    def _take(self, data: memoryview) -> None:
        self.received += len(data)
        if self.keep_body:
            self.body += data

    def _done(self) -> None:
        if not self.waiter.done():
            self.waiter.set_result((self.status, self.received, bytes(self.body) if self.keep_body else b""))


class Connection:
    """One keep-alive connection; ``request`` sends one request and waits for its whole response."""

    def __init__(self, host: str, port: int, ssl: ssl_module.SSLContext | None = None) -> None:
        self.host, self.port, self.ssl = host, port, ssl
        self.protocol: _Protocol | None = None

    async def request(self, method: str, target: str, headers: dict[str, str], body=b"",
                      keep_body: bool = False) -> tuple[int, int, bytes]:  # fmt: skip
        """(status, body bytes received, body if kept or the status is not 2xx)."""
        if self.protocol is None or self.protocol.closed:
            loop = asyncio.get_running_loop()
            _, self.protocol = await loop.create_connection(_Protocol, self.host, self.port, ssl=self.ssl)
        protocol = self.protocol
        waiter = asyncio.get_running_loop().create_future()
        protocol._reset(waiter)
        protocol.keep_body = keep_body
        if method == "HEAD":
            raise HttpError("HEAD is not supported by this client")
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sent_all = True
        if isinstance(body, bytes | bytearray | memoryview):
            protocol.transport.write(f"{method} {target} HTTP/1.1\r\n{head}\r\n".encode() + body)
        else:
            protocol.transport.write(f"{method} {target} HTTP/1.1\r\n{head}\r\n".encode())
            async for chunk in body:
                if waiter.done() or protocol.closed:  # answered (an error) or dropped before the body was sent
                    sent_all = False
                    break
                if not protocol.writable.is_set():
                    await protocol.writable.wait()
                    if protocol.closed:
                        continue
                protocol.transport.write(chunk)
        try:
            result = await waiter
        except BaseException:
            self.close()
            raise
        if protocol.close_after or not sent_all:  # a half-sent body leaves the connection out of step
            self.close()
        return result

    def close(self) -> None:
        if self.protocol is not None and not self.protocol.closed:
            self.protocol.transport.close()
        self.protocol = None
