"""Clients that stop sending a body or stop reading a response lose their connection (security issue,
holes 7 and 8): before, a stalled GET pinned ~18 MiB of read-ahead for ever and a stalled PUT kept its
connection and file descriptor open past 100 s. A slow client that keeps moving bytes is not cut off.

The S3 side runs with ``--client-timeout 2``; the shard route of the same server (the storage node's
code) has its fixed ``limits.shard_client_stall_s``.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.parse
import urllib.request

import pytest

from apollo import limits, tokens
from apollo.meta.location import meta_target
from apollo.meta.store import SqlStore
from apollo.storage.shardfile import HEADER_BYTES

STALL_S = 2.0
CUT_WITHIN_S = STALL_S * 2 + 10  # the guard notices within one more period; lingering close adds up to 10 s


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from apollo.testing.server import ServerProcess

    process = ServerProcess(tmp_path_factory.mktemp("stall"), extra_args=["--client-timeout", str(STALL_S)])
    process.start()
    yield process
    process.kill()


@pytest.fixture(scope="module")
def s3(server):
    client = server.s3()
    client.create_bucket(Bucket="stall")
    return client


def _request_head(method: str, url: str, headers: dict[str, str]) -> bytes:
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _connect(server, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer:  # before connecting, so the window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", server.port))
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received)


def _stalled_count(server, direction: str) -> float:
    text = urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10).read().decode()
    prefix = f'apollo_stalled_connections_total{{direction="{direction}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def test_a_put_whose_body_stalls_is_cut_off_and_stores_nothing(server, s3):
    before = _stalled_count(server, "receive")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "stall", "Key": "stalled"})
    sock = _connect(server)
    sock.sendall(_request_head("PUT", url, {"Content-Length": str(8 << 20)}) + os.urandom(100_000))
    started = time.monotonic()
    _read_until_closed(sock)  # the server gives up on the body: the connection ends (before: never)
    waited = time.monotonic() - started
    sock.close()
    assert STALL_S - 0.5 < waited < CUT_WITHIN_S, waited
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket="stall", Key="stalled")
    _no_temp_files_soon(server)
    assert _stalled_count(server, "receive") == before + 1


def test_a_slow_put_that_keeps_sending_is_not_cut_off(server, s3):
    """A byte every second, under a 2 s stall timeout, for twice that long: the upload succeeds."""
    body = os.urandom(6 * 1000)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "stall", "Key": "slow"})
    sock = _connect(server)
    sock.sendall(_request_head("PUT", url, {"Content-Length": str(len(body))}))
    for start in range(0, len(body), 1000):
        time.sleep(STALL_S * 0.6)
        sock.sendall(body[start : start + 1000])
    reply = sock.recv(4096)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert s3.get_object(Bucket="stall", Key="slow")["Body"].read() == body


def test_a_get_whose_reader_stops_reading_is_cut_off(server, s3):
    size = 64 << 20
    s3.put_object(Bucket="stall", Key="big", Body=os.urandom(size))
    before = _stalled_count(server, "send")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "stall", "Key": "big"})
    sock = _connect(server, receive_buffer=64 << 10)
    sock.sendall(_request_head("GET", url, {}))
    first = sock.recv(1 << 16)
    assert first.startswith(b"HTTP/1.1 200"), first[:200]
    time.sleep(CUT_WITHIN_S)  # reads nothing: the server's socket buffer fills, its writes wait
    rest = _read_until_closed(sock)
    sock.close()
    # Before, the whole object followed once the reader woke up: the gateway had waited for it for ever.
    assert len(first) + len(rest) < size
    assert _stalled_count(server, "send") == before + 1
    assert s3.get_object(Bucket="stall", Key="big", Range="bytes=0-9")["ContentLength"] == 10  # still served


def test_a_shard_upload_that_stalls_is_cut_off_and_leaves_no_temp_file(server):
    """The storage node's shard route (here on the all-in-one server's port) with a valid write token:
    a native client that sends a shard header and then nothing."""
    store = SqlStore(meta_target(server.meta_dir))
    try:
        keyring = tokens.Keyring(store.token_keys())
        drive = store.list_drives()[0].drive_id
    finally:
        store.close()
    segment = "0" * 31 + "1"
    token = keyring.issue(tokens.WRITE, segment, 120)
    path = f"/_apollo/shards/{drive}/7/{segment}/0"
    headers = {"X-Apollo-Token": token, "Transfer-Encoding": "chunked"}
    sock = _connect(server)
    first_chunk = b"%x\r\n" % HEADER_BYTES + b"\0" * HEADER_BYTES + b"\r\n"
    sock.sendall(_request_head("PUT", server.endpoint + path, headers) + first_chunk)
    started = time.monotonic()
    _read_until_closed(sock)
    waited = time.monotonic() - started
    sock.close()
    assert limits.shard_client_stall_s - 0.5 < waited < limits.shard_client_stall_s * 2 + 10, waited
    _no_temp_files_soon(server)  # the cut comes first, the upload's abort (on a drive thread) right after


def _no_temp_files_soon(server, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while server.tmp_files() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.tmp_files() == []
