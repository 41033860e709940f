"""A link's latency in user space: a proxy inside a host that holds every byte half a round trip each way.

This kernel has no ``netem`` qdisc, and no ``fq`` either (whose per-packet departure times a BPF program
could have set), so no packet can be delayed where it crosses a link. ``Network.delay`` starts this
module inside the host's network namespace and redirects every TCP connection that arrives on the host's
link to it (iptables ``nat PREROUTING -i eth0 -p tcp --syn -j REDIRECT``). For each one it reads where the
connection was going (``SO_ORIGINAL_DST``), connects there from inside the host (locally originated, so
not redirected again) and relays both ways, writing each chunk ``rtt / 2`` after it was read, in order.

What is delayed is bytes, not packets: the kernel answers the handshake, so ``connect()`` costs no round
trip, a request and its answer cost one. Each way holds at most ``HOLD_BYTES_MAX``; past that it stops
reading, so a slow reader still holds back a fast writer (and one connection moves at most
``HOLD_BYTES_MAX / (rtt / 2)``, as a TCP window caps a long link). A role behind the proxy sees every
peer as its own address, and a dead role is met as a connection reset, not a refusal.

The loop is asyncio's over ``select()``, whose timeouts are in microseconds: epoll's are in
milliseconds, rounded up, which turns a 0.5 ms hold into 1 ms, and uvloop's round down to none.
``select()`` takes descriptors below ``FD_SETSIZE`` only, so the proxy lowers its own limit to that
(about 500 relayed connections at once); past it, new connections wait in the listen queue.

Control is on stdin, a line each: a number sets the round trip in ms for chunks read from then on;
``drain`` stops accepting (the redirect rule is gone) and holds nothing more, and the proxy exits when its
last connection closes. The end of stdin (its owner closed it, or died) ends the proxy at once.

    ip netns exec NS python -m apollo.testing.linkproxy --port 1000 --rtt-ms 20    # prints "ready"
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import resource
import selectors
import socket
import struct
import sys

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h: the destination a connection had before NAT
HOLD_BYTES_MAX = 4 * 1024**2  # per connection and way: 4 MiB / 10 ms (a 20 ms round trip) is 400 MiB/s
FD_SETSIZE = 1024  # select() takes no descriptor at or above it
_EOF, _RESET = b"", None  # queued behind the data like it: a FIN, or an abortive close


class Relay:
    """What every connection of the proxy shares: the current hold, the live connections, draining or not."""

    def __init__(self, rtt_ms: float) -> None:
        self.hold_s = rtt_ms / 2000
        self.connections: set[Connection] = set()
        self.draining = False
        self.done = asyncio.Event()  # set when draining and the last connection has closed

    def closed(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if self.draining and not self.connections:
            self.done.set()


class Way:
    """One direction of one connection: chunks read from ``source`` and written to ``sink`` ``hold_s`` later.

    The queue is in arrival order, and so in order of due time while the hold stays the same; a shorter
    hold only lets later chunks wait for earlier ones, so bytes never overtake each other."""

    def __init__(self, connection: Connection, source: int, sink: int) -> None:
        self.connection, self.source, self.sink = connection, source, sink
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.held = 0
        self.sink_full = False  # the sink's write buffer is over its high-water mark
        self.reading_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.ended = False  # its FIN has been written

    def push(self, data: bytes | None) -> None:
        """Queue ``data`` (``_EOF``, ``_RESET``) for ``hold_s`` from now; stop reading if too much is held."""
        loop = asyncio.get_running_loop()
        self.queue.append((loop.time() + self.connection.relay.hold_s, data))
        self.held += len(data or b"")
        self._throttle()
        if self.timer is None:
            self._deliver()

    def _deliver(self) -> None:
        """Write every chunk that is due, then wake again when the next one is."""
        self.timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            self.held -= len(data or b"")
            self.connection.write(self, data)
        self._throttle()
        if self.queue:
            self.timer = loop.call_at(self.queue[0][0], self._deliver)

    def _throttle(self) -> None:
        """Backpressure: pause reading above ``HOLD_BYTES_MAX`` held or a full sink, resume below half."""
        source = self.connection.transports[self.source]
        if source is None:
            return
        if not self.reading_paused and (self.held > HOLD_BYTES_MAX or self.sink_full):
            source.pause_reading()
            self.reading_paused = True
        elif self.reading_paused and self.held <= HOLD_BYTES_MAX // 2 and not self.sink_full:
            source.resume_reading()
            self.reading_paused = False

    def sink_pressure(self, full: bool) -> None:
        self.sink_full = full
        self._throttle()

    def cancel(self) -> None:
        if self.timer:
            self.timer.cancel()
        self.queue.clear()


class Connection:
    """A relayed connection: end 0 is the peer's (accepted), end 1 the role's (connected from inside)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transports: list[asyncio.Transport | None] = [None, None]
        self.ways = (Way(self, 0, 1), Way(self, 1, 0))  # peer -> role, role -> peer
        self.finished = False
        relay.connections.add(self)

    def end(self, index: int) -> End:
        return End(self, index)

    def attached(self, index: int, transport: asyncio.Transport) -> None:
        """Neither end reads before both exist: a chunk needs somewhere to go."""
        self.transports[index] = transport
        other = self.transports[1 - index]
        if other is None:
            transport.pause_reading()
        else:
            other.resume_reading()

    def write(self, way: Way, data: bytes | None) -> None:
        """Pass on one chunk, FIN or reset that has been held long enough."""
        if data is _RESET:  # even to a sink that is gone too: the connection ends here
            self.finish(abort=True)
            return
        sink = self.transports[way.sink]
        if sink is None or sink.is_closing():
            return
        if data == _EOF:
            way.ended = True
            try:
                sink.write_eof()  # asyncio lets its OSError through, unlike write's
            except OSError:  # the sink's peer has reset, and the sink has not read it yet
                self.finish(abort=True)
                return
            if all(w.ended for w in self.ways):
                self.finish()
        else:
            sink.write(data)

    def finish(self, abort: bool = False) -> None:
        """Close both ends: gracefully (their buffers are written first) or abortively (a reset)."""
        if self.finished:
            return
        self.finished = True
        for way in self.ways:
            way.cancel()
        for transport in self.transports:
            if transport is not None:
                transport.abort() if abort else transport.close()
        self.relay.closed(self)


class End(asyncio.Protocol):
    """One socket of a connection: what it reads goes into its outgoing way; its buffer throttles the other."""

    def __init__(self, connection: Connection, index: int) -> None:
        self.connection, self.index = connection, index
        self.outgoing = connection.ways[index]
        self.incoming = connection.ways[1 - index]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connection.attached(self.index, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.outgoing.push(data)

    def eof_received(self) -> bool:
        self.outgoing.push(_EOF)
        return True  # half-open: the other way may still have bytes to deliver

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.connection.finished:
            self.outgoing.push(_RESET)  # the reset crosses the link behind the bytes before it

    def pause_writing(self) -> None:
        self.incoming.sink_pressure(True)

    def resume_writing(self) -> None:
        self.incoming.sink_pressure(False)


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was going: ``struct sockaddr_in`` from ``SO_ORIGINAL_DST``."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, address = struct.unpack("!2xH4s8x", raw)
    return socket.inet_ntoa(address), port


async def relay_one(sock: socket.socket, relay: Relay, own_port: int) -> None:
    """Connect to where ``sock`` was going and relay; a refused connect resets ``sock``, half a round trip on."""
    loop = asyncio.get_running_loop()
    try:
        address = original_destination(sock)
    except OSError:  # no NAT record: not a redirected connection
        address = ("", own_port)
    if address[1] == own_port:  # not redirected, or aimed at the proxy itself: relaying it would loop
        sock.close()
        return
    connection = Connection(relay)
    try:
        await loop.create_connection(lambda: connection.end(1), *address)
    except OSError:
        await asyncio.sleep(relay.hold_s)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        sock.close()
        relay.closed(connection)
        return
    try:
        await loop.connect_accepted_socket(lambda: connection.end(0), sock)
    except OSError:
        connection.finish(abort=True)


async def accept(listener: socket.socket, relay: Relay) -> None:
    """Accept and relay; out of descriptors, wait a moment (the connection waits in the listen queue)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()
    own_port = listener.getsockname()[1]
    while True:
        try:
            sock, _ = await loop.sock_accept(listener)
        except OSError as exc:
            print(f"linkproxy: accept failed, waiting: {exc!r}", file=sys.stderr, flush=True)
            await asyncio.sleep(0.1)
            continue
        task = loop.create_task(relay_one(sock, relay, own_port))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


class Control:
    """The owner's lines on stdin: a round trip in ms, or ``drain``; their end ends the proxy."""

    def __init__(self, relay: Relay, listener: socket.socket, accepting: asyncio.Task) -> None:
        self.relay, self.listener, self.accepting = relay, listener, accepting
        self.pending = b""

    def readable(self) -> None:
        chunk = os.read(0, 4096)
        if not chunk:  # the owner closed it or died
            self.relay.done.set()
            return
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            self.apply(line.decode().strip())

    def apply(self, line: str) -> None:
        if line == "drain" and not self.relay.draining:
            self.relay.draining, self.relay.hold_s = True, 0.0
            self.accepting.cancel()
            # select() fails on a closed descriptor: out of the selector first, then closed (which resets
            # any connection still in the listen queue)
            asyncio.get_running_loop().remove_reader(self.listener.fileno())
            self.listener.close()
            if not self.relay.connections:
                self.relay.done.set()
        elif line and line != "drain":
            self.relay.hold_s = float(line) / 2000


async def run(port: int, rtt_ms: float) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay(rtt_ms)
    listener = socket.create_server(("0.0.0.0", port), backlog=1024)
    listener.setblocking(False)
    control = Control(relay, listener, loop.create_task(accept(listener, relay)))
    os.set_blocking(0, False)
    loop.add_reader(0, control.readable)
    print("ready", flush=True)
    await relay.done.wait()
    control.accepting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await control.accepting


def main() -> None:
    parser = argparse.ArgumentParser(description="A link's latency: relay TCP connections, holding each byte.")
    parser.add_argument("--port", type=int, required=True, help="where the REDIRECT rule sends connections")
    parser.add_argument("--rtt-ms", type=float, required=True, help="round trip added, half of it each way")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, FD_SETSIZE), hard))
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        loop.run_until_complete(run(args.port, args.rtt_ms))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
