"""The cap on connections a process holds open (apollo/roles/serving.py): idle connections and half-sent
request heads cost a file descriptor each, which request limits do not see. Past --max-connections a new
connection is closed as it arrives; the ones held keep working, and room frees as they close."""

from __future__ import annotations

import re
import socket
import time
import urllib.request

import pytest

from apollo.testing.server import ServerProcess

CAP = 12


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("connections"), extra_args=["--max-connections", str(CAP)])
    process.start()
    yield process
    process.kill()


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _closed_at_once(sock: socket.socket) -> bool:
    """The server hung up without a byte (a refused connection), rather than waiting for a request."""
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _refused_total(server) -> float:
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return float(re.search(r"^apollo_refused_connections_total (\S+)$", text, re.M).group(1))


def test_connections_past_the_cap_are_closed_and_room_comes_back(server):
    before = _refused_total(server)
    held = [_connect(server) for _ in range(CAP)]
    try:
        held[0].sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")  # a held connection still works
        assert held[0].recv(100).startswith(b"HTTP/1.1 200")
        time.sleep(0.3)  # the server has taken every one
        extra = _connect(server)
        assert _closed_at_once(extra)
        extra.close()
        half_sent = held[1]
        half_sent.sendall(b"GET /health/live HTTP/1.1\r\nHo")  # a half-sent head holds its slot too
        another = _connect(server)
        assert _closed_at_once(another)
        another.close()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert _refused_total(server) == before + 2  # counted, and answering again once room came back
    assert server.s3().list_buckets()["Buckets"] == []
