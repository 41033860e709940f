"""Authentication against the real server: credentials, presigned URLs, clock skew, access keys made with
``apollo admin key``, and the streaming bodies boto3 and other SDKs send (aws-chunked, signed and unsigned).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
import zlib
from urllib.parse import urlparse

import boto3
import botocore.auth
import botocore.crt.auth
import botocore.httpchecksum
import pytest
from botocore.auth import HmacV1QueryAuth
from botocore.config import Config
from botocore.exceptions import ClientError
from signed_http import put_signed_chunks, send, sign

from apollo.testing.admin import admin
from apollo.testing.s3error import error_of, s3_error
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY


def _client(server, key: str = DEV_ACCESS_KEY, secret: str = DEV_SECRET_KEY, **config):
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                        region_name="us-east-1", config=Config(retries={"max_attempts": 1}, **config))  # fmt: skip


def _urlopen(url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None):
    """(status, body, error code) of a plain urllib request: no SDK, no signing."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), None
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, body, ET.fromstring(body).findtext("Code") if body else None


def _sign_at(monkeypatch, when: datetime.datetime) -> None:
    """Make botocore sign as if its clock said ``when`` (boto3 uses the awscrt signers when awscrt is installed)."""

    def clock(remove_tzinfo: bool = True) -> datetime.datetime:
        return when.replace(tzinfo=None) if remove_tzinfo else when

    monkeypatch.setattr(botocore.auth, "get_current_datetime", clock)
    monkeypatch.setattr(botocore.crt.auth, "get_current_datetime", clock)


def _crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _absent(s3, bucket: str, key: str) -> bool:
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key=key)
    return True


def _no_temp_files_left(server, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while server.tmp_files():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- credentials ---------------------------------------------------------------------------------------


def test_wrong_secret_is_signature_does_not_match(server, bucket):
    with s3_error("SignatureDoesNotMatch", 403):
        _client(server, secret="not-the-secret").list_objects_v2(Bucket=bucket)


def test_unknown_access_key_is_invalid_access_key_id(server, bucket):
    with s3_error("InvalidAccessKeyId", 403):
        _client(server, key="AKNOSUCHKEY0000000").list_objects_v2(Bucket=bucket)


def test_wrong_secret_cannot_write(server, s3, bucket):
    with s3_error("SignatureDoesNotMatch", 403):
        _client(server, secret="not-the-secret").put_object(Bucket=bucket, Key="k", Body=b"data")
    assert _absent(s3, bucket, "k")


def test_anonymous_get_is_access_denied(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="secret.txt", Body=b"classified")
    status, body, code = _urlopen(f"{server.endpoint}/{bucket}/secret.txt")
    assert (status, code) == (403, "AccessDenied")
    assert b"classified" not in body


def test_anonymous_put_is_access_denied_and_stores_nothing(server, s3, bucket):
    status, _, code = _urlopen(f"{server.endpoint}/{bucket}/anon.txt", "PUT", b"x")
    assert (status, code) == (403, "AccessDenied")
    assert _absent(s3, bucket, "anon.txt")


def _head_expecting_continue(server, target: str, secret: str | None, length: int) -> socket.socket:
    """Send a PUT's head with ``Expect: 100-continue`` and no body yet (signed with ``secret``; None: unsigned)."""
    headers = {"Content-Length": str(length), "Expect": "100-continue"}
    if secret is not None:
        headers = sign(server.port, "PUT", target, headers, payload="UNSIGNED-PAYLOAD", secret=secret)
    else:
        headers["Host"] = f"127.0.0.1:{server.port}"
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall((f"PUT {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers.items()) +
                  "\r\n").encode())  # fmt: skip
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("secret", ["not-the-secret", None], ids=["bad-signature", "anonymous"])
def test_a_refused_upload_expecting_continue_gets_the_error_not_100(server, s3, bucket, secret):
    """S3 answers the final error to a refused request that waits for 100 Continue, so the client never
    sends a body that would be thrown away; the connection then closes (the body was never asked for)."""
    with _head_expecting_continue(server, f"/{bucket}/refused", secret, 5 * 1024 * 1024) as sock:
        answer = _read_until_closed(sock)  # a 100 Continue would leave it waiting here for the body
    assert answer.startswith(b"HTTP/1.1 403 "), answer[:200]
    assert b"100 Continue" not in answer
    assert _absent(s3, bucket, "refused")


def test_an_accepted_upload_expecting_continue_is_asked_for_its_body(server, s3, bucket):
    with _head_expecting_continue(server, f"/{bucket}/accepted", DEV_SECRET_KEY, 5) as sock:
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    assert s3.get_object(Bucket=bucket, Key="accepted")["Body"].read() == b"hello"


def test_sigv2_client_reads_and_writes(server, bucket):
    s3v2 = _client(server, signature_version="s3")
    s3v2.put_object(Bucket=bucket, Key="v2 key+plus.txt", Body=b"signed with v2", ContentType="text/plain")
    assert s3v2.get_object(Bucket=bucket, Key="v2 key+plus.txt")["Body"].read() == b"signed with v2"


# --- presigned URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("signature_version", ["s3v4", None], ids=["sigv4", "boto3-default"])
def test_presigned_get_works_with_plain_urllib(server, s3, bucket, signature_version):
    payload = os.urandom(70_000)
    s3.put_object(Bucket=bucket, Key="dir/päth with space.bin", Body=payload)
    signer = _client(server, **({"signature_version": signature_version} if signature_version else {}))
    url = signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "dir/päth with space.bin"},
                                        ExpiresIn=300)  # fmt: skip
    assert ("X-Amz-Signature=" in url) == (signature_version == "s3v4")
    assert _urlopen(url) == (200, payload, None)


@pytest.mark.parametrize("signature_version", ["s3v4", None], ids=["sigv4", "boto3-default"])
def test_presigned_put_works_with_plain_urllib(server, s3, bucket, signature_version):
    payload = os.urandom(100_000)
    signer = _client(server, **({"signature_version": signature_version} if signature_version else {}))
    url = signer.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "upload.bin"}, ExpiresIn=300)
    # http.client, not urllib: urllib adds a Content-Type the SigV2 URL did not sign (AWS would refuse it too).
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("PUT", url.removeprefix(server.endpoint), body=payload)
    assert connection.getresponse().status == 200
    connection.close()
    assert s3.get_object(Bucket=bucket, Key="upload.bin")["Body"].read() == payload


@pytest.mark.parametrize("signature_version", ["s3v4", None], ids=["sigv4", "boto3-default"])
def test_presigned_url_for_another_key_does_not_match(server, s3, bucket, signature_version):
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"a")
    s3.put_object(Bucket=bucket, Key="b.txt", Body=b"b")
    signer = _client(server, **({"signature_version": signature_version} if signature_version else {}))
    url = signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "a.txt"}, ExpiresIn=300)
    status, _, code = _urlopen(url.replace("/a.txt?", "/b.txt?"))
    assert (status, code) == (403, "SignatureDoesNotMatch")


def test_presigned_get_used_for_put_does_not_match(server, s3, bucket):
    url = _client(server, signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300)  # fmt: skip
    status, _, code = _urlopen(url, "PUT", b"sneaky")
    assert (status, code) == (403, "SignatureDoesNotMatch")
    assert _absent(s3, bucket, "k")


def test_expired_sigv4_presigned_url_is_access_denied(server, s3, bucket, monkeypatch):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    _sign_at(monkeypatch, datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=120))
    url = _client(server, signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)  # fmt: skip
    status, body, code = _urlopen(url)
    assert (status, code) == (403, "AccessDenied")
    assert ET.fromstring(body).findtext("Message") == "Request has expired"


@pytest.mark.parametrize("expires", [0, -5, 604801])
def test_a_presigned_lifetime_out_of_range_is_a_query_parameters_error(server, s3, bucket, expires):
    url = _client(server, signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300)  # fmt: skip
    status, _, code = _urlopen(url.replace("X-Amz-Expires=300", f"X-Amz-Expires={expires}"))
    assert (status, code) == (400, "AuthorizationQueryParametersError")


def test_an_expired_presigned_put_is_access_denied_and_stores_nothing(server, s3, bucket, monkeypatch):
    _sign_at(monkeypatch, datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=120))
    url = _client(server, signature_version="s3v4").generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "late"}, ExpiresIn=60)  # fmt: skip
    status, body, code = _urlopen(url, "PUT", b"too late")
    assert (status, code) == (403, "AccessDenied")
    assert ET.fromstring(body).findtext("Message") == "Request has expired"
    assert _absent(s3, bucket, "late")


def test_sigv4_presigned_url_expires_after_its_lifetime(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    lifetime = 4  # the first GET must land inside it: 1 s was too short for a loaded CI machine once
    signed = time.time()
    url = _client(server, signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=lifetime)  # fmt: skip
    assert _urlopen(url)[0] == 200
    time.sleep(max(0.0, signed + lifetime + 1.1 - time.time()))
    assert _urlopen(url)[::2] == (403, "AccessDenied")


def test_expired_sigv2_presigned_url_is_access_denied(server, s3, bucket, monkeypatch):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    monkeypatch.setattr(HmacV1QueryAuth, "_get_date", lambda self: str(int(time.time()) - 5))
    url = _client(server).generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)
    assert "Signature=" in url and "X-Amz-Signature" not in url
    assert _urlopen(url)[::2] == (403, "AccessDenied")


# --- clock skew ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [-20, 20])
def test_request_signed_20_minutes_off_is_request_time_too_skewed(server, bucket, monkeypatch, minutes):
    _sign_at(monkeypatch, datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes))
    with s3_error("RequestTimeTooSkewed", 403) as exc:
        _client(server).list_objects_v2(Bucket=bucket)
    assert exc.fields["MaxAllowedSkewMilliseconds"] == "900000"


def test_request_signed_10_minutes_off_is_accepted(server, bucket, monkeypatch):
    _sign_at(monkeypatch, datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=10))
    assert _client(server).list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# --- access keys made with `apollo admin key` ----------------------------------------------------------


def _admin_key(server, *args: str) -> str:
    return admin("key", *args, meta_dir=server.meta_dir, timeout=60)


def _create_key(server) -> tuple[str, str]:
    lines = dict(line.split(": ", 1) for line in _admin_key(server, "create").splitlines() if ": " in line)
    return lines["access key"], lines["secret key"]


def test_created_key_works_and_is_listed(server, bucket):
    key, secret = _create_key(server)
    client = _client(server, key, secret)
    client.put_object(Bucket=bucket, Key="by-new-key", Body=b"hello")
    assert client.get_object(Bucket=bucket, Key="by-new-key")["Body"].read() == b"hello"
    assert key in _admin_key(server, "list")


def test_created_key_with_wrong_secret_does_not_match(server, bucket):
    key, _ = _create_key(server)
    with s3_error("SignatureDoesNotMatch", 403):
        _client(server, key, DEV_SECRET_KEY).list_objects_v2(Bucket=bucket)


def test_key_works_at_once_even_after_a_failed_attempt_before_it_existed(server, bucket):
    key, secret = f"AKLATE{uuid.uuid4().hex[:10].upper()}", None
    with s3_error("InvalidAccessKeyId", 403):
        _client(server, key, "not-yet-a-secret-at-all").list_objects_v2(Bucket=bucket)
    lines = dict(line.split(": ", 1) for line in _admin_key(server, "create", key).splitlines() if ": " in line)
    secret = lines["secret key"]
    assert _client(server, key, secret).list_objects_v2(Bucket=bucket)["KeyCount"] == 0  # no negative caching


def test_key_deleted_before_use_is_invalid_access_key_id(server, bucket):
    key, secret = _create_key(server)
    _admin_key(server, "delete", key)
    with s3_error("InvalidAccessKeyId", 403):
        _client(server, key, secret).list_objects_v2(Bucket=bucket)


def test_deleted_key_stops_working_within_the_cache_lifetime(server, bucket):
    key, secret = _create_key(server)
    client = _client(server, key, secret)
    client.list_objects_v2(Bucket=bucket)  # cached now
    _admin_key(server, "delete", key)
    deadline = time.monotonic() + 15  # the gateway caches secrets for 10 s (apollo/gateway/keys.py)
    while True:
        try:
            client.list_objects_v2(Bucket=bucket)
        except ClientError as exc:
            assert error_of(exc)[0] == "InvalidAccessKeyId"
            break
        assert time.monotonic() < deadline, "a deleted key still works after 15 s"
        time.sleep(0.25)


# --- streaming bodies ----------------------------------------------------------------------------------


def test_boto3_put_over_http_sends_a_checksum_header_and_stores_exact_bytes(server, s3, bucket):
    payload = os.urandom(100_003)
    response = s3.put_object(Bucket=bucket, Key="boto3-http", Body=payload)
    assert response["ChecksumCRC32"] == _crc32(payload)
    assert s3.get_object(Bucket=bucket, Key="boto3-http")["Body"].read() == payload


def test_boto3_default_put_sends_unsigned_trailer_and_stores_exact_bytes(server, s3, bucket, monkeypatch):
    # boto3 streams STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32 trailer only over TLS; let it believe the
    # endpoint is https so that exactly the body it sends to AWS goes over this plain-HTTP test server.
    monkeypatch.setattr(botocore.httpchecksum, "urlparse", lambda url: urlparse(url)._replace(scheme="https"))
    sent = {}
    s3.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.update((k.lower(), v) for k, v in request.headers.items())
    )
    payload = os.urandom(300_001)
    response = s3.put_object(Bucket=bucket, Key="boto3-default", Body=payload)
    assert sent["x-amz-content-sha256"] in (b"STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert sent["x-amz-trailer"] in (b"x-amz-checksum-crc32", "x-amz-checksum-crc32")
    assert response["ChecksumCRC32"] == _crc32(payload)
    assert response["ETag"] == f'"{hashlib.md5(payload).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="boto3-default")["Body"].read() == payload


@pytest.mark.parametrize("size", [0, 1, 65536, 200_003])
def test_signed_aws_chunked_upload_stores_exact_bytes(server, s3, bucket, size):
    payload = os.urandom(size)
    reply = put_signed_chunks(server.port, f"/{bucket}/chunked-{size}", payload)
    assert reply.status == 200, reply.body
    assert reply.headers["ETag"] == f'"{hashlib.md5(payload).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key=f"chunked-{size}")["Body"].read() == payload


def test_signed_aws_chunked_upload_with_signed_trailer_stores_exact_bytes(server, s3, bucket):
    payload = os.urandom(150_000)
    reply = put_signed_chunks(server.port, f"/{bucket}/trailer", payload, trailers={"x-amz-checksum-crc32":
                              _crc32(payload)})  # fmt: skip
    assert reply.status == 200, reply.body
    assert reply.headers["x-amz-checksum-crc32"] == _crc32(payload)
    assert s3.get_object(Bucket=bucket, Key="trailer")["Body"].read() == payload


def test_signed_chunk_with_a_flipped_byte_stores_nothing(server, s3, bucket):
    payload = os.urandom(200_000)

    def flip(body: bytes) -> bytes:
        changed = bytearray(body)
        changed[len(body) // 2] ^= 0x01
        return bytes(changed)

    reply = put_signed_chunks(server.port, f"/{bucket}/tampered", payload, corrupt=flip)
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")
    assert _absent(s3, bucket, "tampered")
    assert _no_temp_files_left(server), server.tmp_files()


def test_signed_chunks_swapped_store_nothing(server, s3, bucket):
    payload = b"A" * 65536 + b"B" * 65536

    def swap(body: bytes) -> bytes:
        first = body.index(b"\r\n" + b"A" * 65536 + b"\r\n") + 65536 + 4
        second = body.index(b"\r\n" + b"B" * 65536 + b"\r\n") + 65536 + 4
        return body[first:second] + body[:first] + body[second:]

    reply = put_signed_chunks(server.port, f"/{bucket}/swapped", payload, corrupt=swap)
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")
    assert _absent(s3, bucket, "swapped")


def test_signed_trailer_with_wrong_checksum_is_bad_digest(server, s3, bucket):
    payload = os.urandom(70_000)
    reply = put_signed_chunks(server.port, f"/{bucket}/bad-crc", payload,
                              trailers={"x-amz-checksum-crc32": _crc32(b"something else")})  # fmt: skip
    assert (reply.status, reply.code) == (400, "BadDigest")
    assert _absent(s3, bucket, "bad-crc")


def test_unsigned_trailer_with_wrong_checksum_is_bad_digest(server, s3, bucket):
    body = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:" + _crc32(b"world").encode() + b"\r\n\r\n"
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "5",
               "x-amz-trailer": "x-amz-checksum-crc32"}  # fmt: skip
    reply = send(server.port, "PUT", f"/{bucket}/unsigned-bad", headers, body,
                 payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")  # fmt: skip
    assert (reply.status, reply.code) == (400, "BadDigest")
    assert _absent(s3, bucket, "unsigned-bad")


def test_unsigned_payload_put_over_http_client_stores_exact_bytes(server, s3, bucket):
    payload = os.urandom(50_000)
    reply = send(server.port, "PUT", f"/{bucket}/unsigned", {}, payload, payload="UNSIGNED-PAYLOAD")
    assert reply.status == 200, reply.body
    assert s3.get_object(Bucket=bucket, Key="unsigned")["Body"].read() == payload


def test_signed_payload_hash_that_does_not_match_the_body_stores_nothing(server, s3, bucket):
    reply = send(server.port, "PUT", f"/{bucket}/sha-mismatch", {}, b"actual body",
                 payload=hashlib.sha256(b"claimed body").hexdigest())  # fmt: skip
    assert (reply.status, reply.code) == (400, "XAmzContentSHA256Mismatch")
    assert _absent(s3, bucket, "sha-mismatch")


def test_error_reply_names_the_request_id_in_header_and_body(server, bucket):
    reply = send(server.port, "GET", f"/{bucket}/x", secret="wrong-secret")
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")
    root = ET.fromstring(reply.body)
    assert root.findtext("RequestId") == reply.headers["x-amz-request-id"] != ""
    assert root.findtext("AWSAccessKeyId") == DEV_ACCESS_KEY
    assert root.findtext("CanonicalRequest").startswith(f"GET\n/{bucket}/x\n")
