"""Hand-made S3 requests over plain sockets, signed with botocore's own SigV4 signer.

For what boto3 cannot send: a chosen ``x-amz-content-sha256`` (streaming modes, UNSIGNED-PAYLOAD),
a body shorter than its Content-Length, malformed XML, raw paths. The aws-chunked encoder follows the
AWS documentation and is independent of the gateway's decoder.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

REGION = "us-east-1"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def code(self) -> str | None:
        """The S3 error code of an XML error body, or None."""
        if not self.body.startswith(b"<?xml") and not self.body.startswith(b"<Error"):
            return None
        return ET.fromstring(self.body).findtext("Code")


class _Signer(S3SigV4Auth):
    """botocore's S3 SigV4 signer with the payload hash the test chooses (streaming modes, UNSIGNED-PAYLOAD)."""

    def __init__(self, credentials: Credentials, payload: str | None) -> None:
        super().__init__(credentials, "s3", REGION)
        self._payload = payload

    def payload(self, request) -> str:
        return self._payload if self._payload is not None else super().payload(request)


def sign(port: int, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"", *,
         payload: str | None = None, access_key: str = DEV_ACCESS_KEY, secret: str = DEV_SECRET_KEY) -> dict[str, str]:  # fmt: skip # noqa: E501
    """Headers (Host, X-Amz-Date, X-Amz-Content-SHA256, Authorization added) for ``method target``."""
    headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    request = AWSRequest(method=method, url=f"http://127.0.0.1:{port}{target}", headers=headers, data=body)
    _Signer(Credentials(access_key, secret), payload).add_auth(request)
    return dict(request.headers.items())


def send(port: int, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"", *,
         signed: bool = True, payload: str | None = None, **credentials: str) -> Reply:  # fmt: skip
    """One request on a fresh connection; ``target`` is the raw path (and query) exactly as sent."""
    headers = dict(headers or {})
    if body or method in ("PUT", "POST"):
        headers.setdefault("Content-Length", str(len(body)))
    if signed:
        headers = sign(port, method, target, headers, body, payload=payload, **credentials)
    else:
        headers.setdefault("Host", f"127.0.0.1:{port}")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def send_partial(port: int, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
    """Send the signed head and only ``body`` (shorter than the declared length), then close the socket."""
    signed = sign(port, method, target, headers, payload=headers.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD"))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in signed.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        time.sleep(0.2)  # let the server start the write before the connection drops


def _signing_key(secret: str, date: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signed_chunks(headers: dict[str, str], data: bytes, chunk_size: int, secret: str = DEV_SECRET_KEY,
                  trailers: dict[str, str] | None = None) -> bytes:  # fmt: skip
    """The aws-chunked body for signed ``headers`` (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER])."""
    amz_date = headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    key = _signing_key(secret, amz_date[:8])
    previous = re.search(r"Signature=([0-9a-f]{64})", headers["Authorization"]).group(1)
    out = []
    for start in [*range(0, len(data), chunk_size), len(data)]:
        chunk = data[start : start + chunk_size]
        text = "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256,
                          hashlib.sha256(chunk).hexdigest()))  # fmt: skip
        previous = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
        out.append(f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk + (b"\r\n" if chunk else b""))
    if trailers is None:
        return b"".join(out) + b"\r\n"
    canonical = "".join(f"{name}:{value}\n" for name, value in trailers.items())
    text = "\n".join(("AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous,
                      hashlib.sha256(canonical.encode()).hexdigest()))  # fmt: skip
    signature = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    lines = "".join(f"{name}:{value}\r\n" for name, value in trailers.items())
    return b"".join(out) + f"{lines}x-amz-trailer-signature:{signature}\r\n\r\n".encode()


def put_signed_chunks(port: int, target: str, data: bytes, chunk_size: int = 64 * 1024, *,
                      trailers: dict[str, str] | None = None, corrupt=None, headers: dict[str, str] | None = None,
                      decoded_length: int | None = None) -> Reply:  # fmt: skip
    """PUT ``data`` as signed aws-chunked (with a signed trailer when ``trailers`` is given).

    ``corrupt(body) -> body`` changes the encoded body after signing, to test rejection.
    """
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailers is not None else "")
    headers = {"Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(data) if decoded_length is None else decoded_length),
               **({"x-amz-trailer": ",".join(trailers)} if trailers else {}), **(headers or {})}  # fmt: skip
    # The encoded length does not depend on the signature values, so a dummy signing gives it.
    dummy = {"X-Amz-Date": "20000101T000000Z", "Authorization": "Signature=" + "0" * 64}
    headers["Content-Length"] = str(len(signed_chunks(dummy, data, chunk_size, trailers=trailers)))
    signed = sign(port, "PUT", target, headers, payload=mode)
    body = signed_chunks(signed, data, chunk_size, trailers=trailers)
    if corrupt is not None:
        body = corrupt(body)
    return send(port, "PUT", target, signed, body, signed=False)
