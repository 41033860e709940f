"""What a peer can make the metadata API hold: bodies are read only after the headers name a known key,
up to ``limits.rpc_body_bytes_max``, within ``limits.rpc_body_read_s`` (the all-in-one server serves the
API beside S3; ``apollo meta`` runs the same code)."""

from __future__ import annotations

import socket
import time

import pytest

from apollo import limits
from apollo.proto import routes, signing
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

PATH = routes.RPC_PREFIX + "list_buckets"


def _send_head(server, headers: dict[str, str], first_bytes: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    lines = [f"POST {PATH} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + first_bytes)
    return sock


def _status(sock: socket.socket) -> int:
    reply = b""
    while b"\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    sock.close()
    return int(reply.split(b" ", 2)[1]) if reply else 0


def test_an_unknown_key_is_refused_before_its_body_is_read(server):
    headers = {**signing.sign("POST", PATH, b"x", "no-such-key", "nothing"), "Content-Length": str(50 * 1024**2)}
    started = time.monotonic()
    assert _status(_send_head(server, headers)) == 403  # no byte of the 50 MiB was sent, none awaited
    assert time.monotonic() - started < 5


def test_a_known_key_cannot_send_an_oversized_body(server):
    size = limits.rpc_body_bytes_max + 1
    headers = {**signing.sign("POST", PATH, b"x", DEV_ACCESS_KEY, DEV_SECRET_KEY), "Content-Length": str(size)}
    assert _status(_send_head(server, headers)) == 400


def test_a_stalled_body_is_given_up_after_the_deadline(server):
    body = b'{"@d": {"args": [], "kwargs": {"@d": {}}}}'
    headers = {**signing.sign("POST", PATH, body, DEV_ACCESS_KEY, DEV_SECRET_KEY), "Content-Length": str(len(body))}
    started = time.monotonic()
    sock = _send_head(server, headers, body[:10])  # and then nothing
    assert _status(sock) == 400
    assert limits.rpc_body_read_s - 1 < time.monotonic() - started < limits.rpc_body_read_s + 10
    # The same call, sent whole, works: the deadline is for stalled bodies only.
    assert _status(_send_head(server, headers, body)) == 200


@pytest.mark.parametrize("body", [b"[]", b'{"@t": []}', b'{"@d": {"args": {}, "kwargs": {"@d": {}}}}',
                                  b'{"@d": {"args": [], "kwargs": []}}', b"7"])  # fmt: skip
def test_a_signed_call_that_is_not_args_and_kwargs_is_a_bad_request(server, body):
    """Found by the codec's property tests: a body that decodes to something other than a call was a 500."""
    headers = {**signing.sign("POST", PATH, body, DEV_ACCESS_KEY, DEV_SECRET_KEY), "Content-Length": str(len(body))}
    assert _status(_send_head(server, headers, body)) == 400
