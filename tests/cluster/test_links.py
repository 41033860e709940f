"""Latency and loss on the links of hosts (``Network.delay``, ``Network.loss``), measured with real sockets,
and a cluster that writes and reads back every byte over a lossy, delayed link.

Servers and the pings sent from inside a host are small scripts run in the host's namespace; the test's
own sockets are clients in the root namespace, as the test's clients of a cluster are.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from apollo.testing import netns
from apollo.testing.cluster import RoleProcess
from apollo.testing.netns import Host, Network
from apollo.testing.workload import Workload

MIB = 1024**2
FAST_MS = 5.0  # a round trip on an undelayed link here is well under a millisecond; 5 allows a busy box

# An echo server: prints its port, then sends back every byte of every connection until the client's FIN.
ECHO = """
import socket, sys, threading
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
def echo(conn):
    with conn:
        while data := conn.recv(1 << 20):
            conn.sendall(data)
while True:
    threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()
"""
# A server that accepts connections and never reads from them.
HOARD = """
import socket, sys
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
held = []
while True:
    held.append(server.accept()[0])
"""
# Pings from inside a host: the median round trip in ms of 100-byte requests on one connection.
PING = """
import socket, statistics, sys, time
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
times = []
for _ in range(int(sys.argv[3])):
    started = time.perf_counter()
    conn.sendall(b"x" * 100)
    got = 0
    while got < 100:
        got += len(conn.recv(100))
    times.append(time.perf_counter() - started)
print(statistics.median(times) * 1000)
"""


@pytest.fixture
def links(network: Network) -> Network:
    """The network, where latency can be put on links (it needs ``iptables``)."""
    if why := netns.delay_available():
        if os.environ.get("CI"):
            pytest.fail(f"CI installs iptables (./run tests): {why}")
        pytest.skip(why)
    return network


@contextlib.contextmanager
def echo_server(host: Host, script: str = ECHO) -> Iterator[tuple[str, int]]:
    """An echo server on ``host`` (or another ``script`` that prints its port): its address."""
    process = subprocess.Popen(host.command([sys.executable, "-c", script, host.address]), stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        yield host.address, int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()


def _exchange(conn: socket.socket, size: int = 100) -> float:
    """Seconds for ``size`` bytes to go to the echo server and come back."""
    started = time.perf_counter()
    conn.sendall(b"x" * size)
    got = 0
    while got < size:
        got += len(conn.recv(size))
    return time.perf_counter() - started


def round_trip_ms(address: tuple[str, int], count: int = 20, conn: socket.socket | None = None) -> float:
    """The median round trip of 100-byte requests on one connection (a new one unless given), in ms."""
    with contextlib.ExitStack() as stack:
        if conn is None:
            conn = stack.enter_context(socket.create_connection(address, timeout=10))
        return statistics.median(_exchange(conn) for _ in range(count)) * 1000


def ping_from(host: Host, address: tuple[str, int], count: int = 20) -> float:
    """``round_trip_ms`` measured from inside ``host``: on a connection ``host`` opens."""
    argv = host.command([sys.executable, "-c", PING, address[0], str(address[1]), str(count)])
    return float(subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout)


def echo_back(address: tuple[str, int], payload: bytes) -> bytes:
    """Send ``payload`` while reading the echo, then half-close; what came back before the server's FIN."""
    received: list[bytes] = []
    with socket.create_connection(address, timeout=30) as conn:

        def read() -> None:
            while data := conn.recv(MIB):
                received.append(data)

        reader = threading.Thread(target=read)
        reader.start()
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        reader.join()
    return b"".join(received)


def link_drops(host: Host) -> dict[str, tuple[int, int]]:
    """{"arrivals" | "departures": (packets dropped, packets seen)} by the loss filters of ``host``'s link:
    the ingress counters of its end (arrivals) and of the switch's end (departures)."""
    counts = {}
    for way, argv in (("arrivals", host.command(["tc", "-s", "qdisc", "show", "dev", "eth0"])),
                      ("departures", ["tc", "-s", "qdisc", "show", "dev", host.link])):  # fmt: skip
        shown = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        found = re.search(r"qdisc clsact .*?\n Sent (\d+) bytes (\d+) pkt \(dropped (\d+)", shown)
        counts[way] = (int(found[3]), int(found[2])) if found else (0, 0)
    return counts


def retransmitted(host: Host) -> int:
    """TCP segments ``host`` has sent again (``RetransSegs`` of its namespace)."""
    snmp = subprocess.run(host.command(["cat", "/proc/net/snmp"]), capture_output=True, text=True).stdout
    names, values = [line.split() for line in snmp.splitlines() if line.startswith("Tcp:")]
    return int(values[names.index("RetransSegs")])


def test_a_delay_adds_its_round_trip_to_every_connection_into_the_host(links, seed):
    host = links.add_host("far")
    with echo_server(host) as address:
        plain = round_trip_ms(address)
        earlier = socket.create_connection(address, timeout=10)  # opened before the delay: goes straight
        links.delay(host, 20)
        delayed = round_trip_ms(address)
        assert plain < FAST_MS and 15 < delayed - plain < 60, (plain, delayed)
        assert round_trip_ms(address, conn=earlier) < FAST_MS

        # Bytes come through intact and in order both ways, a half-close included, and more of them than
        # the proxy may hold at once (4 MiB a way).
        payload = random.Random(seed).randbytes(6 * MIB + 12345)
        assert echo_back(address, payload) == payload

        # A port nobody listens on: the proxy has accepted the connection, so it is reset, not refused.
        with socket.create_connection((address[0], 9), timeout=10) as nobody, pytest.raises(ConnectionResetError):
            nobody.recv(1)

        # A partition still acts first: a new connection from the clients meets silence.
        links.partition(host)
        with pytest.raises(TimeoutError):
            socket.create_connection(address, timeout=1)
        links.heal(host)

        # The end of a delay: connections relayed go on (undelayed), new ones go straight.
        during = socket.create_connection(address, timeout=10)
        assert _exchange(during) > 0.015
        links.delay(host, 0)
        assert round_trip_ms(address, conn=during) < FAST_MS
        assert round_trip_ms(address) < FAST_MS
        during.close()
        earlier.close()


def test_a_delayed_link_holds_back_a_writer_whose_reader_does_not_read(links):
    """The proxy holds a bounded amount: past it the writer blocks, as across a link with no proxy."""
    host = links.add_host("far")
    with echo_server(host, HOARD) as address:
        links.delay(host, 20)
        with socket.create_connection(address, timeout=10) as conn:
            conn.settimeout(1)
            sent, chunk = 0, bytes(MIB)
            with pytest.raises(TimeoutError):
                while sent < 256 * MIB:
                    sent += conn.send(chunk)
    # What the socket buffers of the two connections take (sending ones grow to 4 MiB here, receiving ones
    # to 32 MiB while they are read: 10 to 40 MiB in all, measured) and the proxy's 4 MiB; without
    # backpressure, all 256 MiB.
    assert sent < 64 * MIB, sent


def test_connections_a_host_opens_are_delayed_by_the_far_ends_delay_only(links):
    near, far = links.add_host("near"), links.add_host("far")
    with echo_server(near) as near_address, echo_server(far) as far_address:
        links.delay(far, 20)
        outgoing = ping_from(far, near_address)  # far's connection into near: near has no delay
        incoming = ping_from(near, far_address)  # near's connection into far: far's delay
        links.delay(near, 10)
        both = ping_from(near, far_address)  # the way out of near is not delayed by near's own
        into_near = ping_from(far, near_address)
    assert outgoing < FAST_MS and 15 < incoming < 60 and 15 < both < 60 and 8 < into_near < 40, (
        outgoing, incoming, both, into_near)  # fmt: skip


def test_loss_drops_frames_each_way_and_tcp_retransmits(links, seed):
    host = links.add_host("lossy")
    with echo_server(host) as address:
        links.loss(host, 5)
        resent = retransmitted(host)
        payload = random.Random(seed).randbytes(MIB)
        assert echo_back(address, payload) == payload
        drops = link_drops(host)
        for dropped, seen in drops.values():  # about 750 frames each way: about 37 dropped
            assert seen > 700 and 0.01 < dropped / seen < 0.12, drops
        assert retransmitted(host) > resent  # the host's departures were lost after it sent them

        links.loss(host, 0)
        resent = retransmitted(host)
        assert echo_back(address, payload) == payload
        assert retransmitted(host) == resent and link_drops(host) == {"arrivals": (0, 0), "departures": (0, 0)}


def _health_round_trip_ms(role: RoleProcess, count: int = 10) -> float:
    """The median time of ``GET /health/live`` on one kept-alive connection (opened first), in ms."""
    host, port = role.address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    times = []
    try:
        for _ in range(count + 1):
            started = time.perf_counter()
            conn.request("GET", "/health/live")
            conn.getresponse().read()
            times.append(time.perf_counter() - started)
    finally:
        conn.close()
    return statistics.median(times[1:]) * 1000  # the first paid for the connection


def test_a_cluster_over_a_lossy_delayed_link_writes_and_reads_back_every_byte(hosts_cluster, links, seed):
    cluster = hosts_cluster(nodes=6)
    hosts = links.hosts

    # A delay on a storage node's link: a role's answers come that much later.
    plain = _health_round_trip_ms(cluster.nodes[0])
    links.delay(hosts["node0"], 20)
    delayed = _health_round_trip_ms(cluster.nodes[0])
    assert 15 < delayed - plain < 60, (plain, delayed)

    # node1 loses 2 % of its frames each way and adds 5 ms; the metadata service 2 ms.
    links.loss(hosts["node1"], 2)
    links.delay(hosts["node1"], 5)
    links.delay(hosts["meta0"], 2)
    client = cluster.native()  # after the delays: its connections go through them
    client.create_bucket("links")
    objects = Workload(seed)
    started = time.monotonic()
    objects.write(client, "links", 6)
    assert objects.verify(client, "links") == 6
    drops = link_drops(hosts["node1"])
    assert all(dropped > 0 for dropped, _ in drops.values()), drops
    print(f"health round trip {plain:.2f} ms, {delayed:.2f} ms with 20 ms on the link; 6 objects written and "
          f"verified in {time.monotonic() - started:.1f} s through a link losing 2 %: {drops}")  # fmt: skip
    client.close()
