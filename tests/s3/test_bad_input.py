"""Bad input over real sockets: malformed XML, odd Range headers, bodies shorter or longer than declared,
oversized uploads, wrong checksums and digests, invalid names; and the server keeps serving afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
import zlib

import pytest
from botocore.exceptions import ClientError
from signed_http import Reply, put_signed_chunks, send, send_partial, sign

from apollo.testing.s3error import error_of

GIB = 1024**3


def _absent(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return error_of(exc)[1] == 404
    return False


def _wait_for(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _ready(server) -> int:
    with urllib.request.urlopen(f"{server.endpoint}/health/ready", timeout=5) as response:
        return response.status


def _head_only(port: int, method: str, target: str, headers: dict[str, str]) -> Reply:
    """Send a signed request head whose body never comes; the server must answer from the head alone."""
    signed = sign(port, method, target, headers, payload=headers.pop("x-amz-content-sha256", "UNSIGNED-PAYLOAD"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in signed.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


# --- malformed XML -------------------------------------------------------------------------------------

BROKEN_XML = [b"<not-closed>", b"not xml at all", b"<?xml version='1.0'?><Wrong/>", b""]


@pytest.mark.parametrize("body", BROKEN_XML, ids=["unclosed", "text", "wrong-root", "empty"])
def test_complete_multipart_upload_with_malformed_xml(server, s3, bucket, body):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"part")
    reply = send(server.port, "POST", f"/{bucket}/mp?uploadId={upload}", {}, body)
    assert (reply.status, reply.code) == (400, "MalformedXML")
    assert _absent(s3, bucket, "mp")


@pytest.mark.parametrize("body", BROKEN_XML, ids=["unclosed", "text", "wrong-root", "empty"])
def test_delete_objects_with_malformed_xml(server, s3, bucket, body):
    s3.put_object(Bucket=bucket, Key="keep", Body=b"k")
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    reply = send(server.port, "POST", f"/{bucket}?delete", {"Content-MD5": md5}, body)
    assert (reply.status, reply.code) == (400, "MalformedXML")
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"k"


@pytest.mark.parametrize("body", BROKEN_XML, ids=["unclosed", "text", "wrong-root", "empty"])
def test_put_object_tagging_with_malformed_xml(server, s3, bucket, body):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v", Tagging="a=1")
    reply = send(server.port, "PUT", f"/{bucket}/k?tagging", {}, body)
    assert (reply.status, reply.code) == (400, "MalformedXML")
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == [{"Key": "a", "Value": "1"}]


@pytest.mark.parametrize("body", BROKEN_XML, ids=["unclosed", "text", "wrong-root", "empty"])
def test_put_bucket_versioning_with_malformed_xml(server, s3, bucket, body):
    reply = send(server.port, "PUT", f"/{bucket}?versioning", {}, body)
    assert (reply.status, reply.code) == (400, "MalformedXML")
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)


# --- Range headers -------------------------------------------------------------------------------------

OBJECT = bytes(range(100))


@pytest.fixture
def ten_bytes(s3, bucket) -> str:
    s3.put_object(Bucket=bucket, Key="ten", Body=OBJECT[:10])
    return bucket


@pytest.mark.parametrize("value", ["bytes=5-2", "bytes=abc", "bytes=0-1,4-5", "items=0-1", "bytes=-", "bytes 0-1"])
def test_invalid_or_multiple_ranges_are_ignored(server, ten_bytes, value):
    # RFC 7233 (which S3 follows): a Range that does not parse is ignored; S3 serves no multipart ranges.
    reply = send(server.port, "GET", f"/{ten_bytes}/ten", {"Range": value})
    assert (reply.status, reply.body) == (200, OBJECT[:10])
    assert "Content-Range" not in reply.headers


@pytest.mark.parametrize(("value", "expected", "content_range"), [
    ("bytes=2-4", OBJECT[2:5], "bytes 2-4/10"),
    ("bytes=7-", OBJECT[7:10], "bytes 7-9/10"),
    ("bytes=-3", OBJECT[7:10], "bytes 7-9/10"),
    ("bytes=5-100", OBJECT[5:10], "bytes 5-9/10"),
    ("bytes=-100", OBJECT[:10], "bytes 0-9/10"),
])  # fmt: skip
def test_valid_ranges_answer_206(server, ten_bytes, value, expected, content_range):
    reply = send(server.port, "GET", f"/{ten_bytes}/ten", {"Range": value})
    assert (reply.status, reply.body, reply.headers["Content-Range"]) == (206, expected, content_range)


@pytest.mark.parametrize("value", ["bytes=10-", "bytes=50-60", "bytes=-0"])
def test_unsatisfiable_range_is_416_invalid_range(server, ten_bytes, value):
    reply = send(server.port, "GET", f"/{ten_bytes}/ten", {"Range": value})
    assert (reply.status, reply.code) == (416, "InvalidRange")
    assert reply.headers["Content-Range"] == "bytes */10"


# --- bodies that do not match their declared length ------------------------------------------------------


def test_client_closing_mid_upload_leaves_no_object_and_no_temp_files(server, s3, bucket):
    headers = {"Content-Length": str(4 * 1024 * 1024)}
    send_partial(server.port, "PUT", f"/{bucket}/cut-short", headers, os.urandom(1024 * 1024 + 7))
    assert _wait_for(lambda: not server.tmp_files()), server.tmp_files()
    assert _wait_for(lambda: "IncompleteBody" in server.log_tail(200)), server.log_tail()
    assert _absent(s3, bucket, "cut-short")
    assert _ready(server) == 200
    s3.put_object(Bucket=bucket, Key="after", Body=b"still serving")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"still serving"


def test_client_closing_mid_signed_chunk_upload_leaves_nothing(server, s3, bucket):
    data = os.urandom(300_000)
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
               "Content-Length": str(len(data) + 1000), "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}  # fmt: skip # noqa: E501
    send_partial(server.port, "PUT", f"/{bucket}/cut-chunks", headers, b"10000;chunk-signature=" + b"0" * 64 + b"\r\n")
    assert _wait_for(lambda: not server.tmp_files()), server.tmp_files()
    assert _absent(s3, bucket, "cut-chunks")


def test_declared_length_over_5_gib_is_entity_too_large(server, s3, bucket):
    reply = _head_only(server.port, "PUT", f"/{bucket}/huge", {"Content-Length": str(5 * GIB + 1)})
    assert (reply.status, reply.code) == (400, "EntityTooLarge")
    assert _absent(s3, bucket, "huge")


def test_declared_decoded_length_over_5_gib_is_entity_too_large(server, s3, bucket):
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(5 * GIB + 1),
               "Content-Length": str(5 * GIB + 100_000), "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}  # fmt: skip # noqa: E501
    reply = _head_only(server.port, "PUT", f"/{bucket}/huge", headers)
    assert (reply.status, reply.code) == (400, "EntityTooLarge")


def test_decoded_length_larger_than_the_chunks_is_incomplete_body(server, s3, bucket):
    reply = put_signed_chunks(server.port, f"/{bucket}/short", b"x" * 1000, decoded_length=2000)
    assert (reply.status, reply.code) == (400, "IncompleteBody")
    assert _absent(s3, bucket, "short")


def test_decoded_length_smaller_than_the_chunks_is_incomplete_body(server, s3, bucket):
    reply = put_signed_chunks(server.port, f"/{bucket}/long", b"x" * 1000, chunk_size=100, decoded_length=500)
    assert (reply.status, reply.code) == (400, "IncompleteBody")
    assert _absent(s3, bucket, "long")


def test_streaming_put_without_decoded_length_is_missing_content_length(server, s3, bucket):
    body = b"3\r\nabc\r\n0\r\n\r\n"
    reply = send(server.port, "PUT", f"/{bucket}/nolen", {"Content-Encoding": "aws-chunked"}, body,
                 payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")  # fmt: skip
    assert (reply.status, reply.code) == (411, "MissingContentLength")


def test_put_without_content_length_is_missing_content_length(server, s3, bucket):
    reply = _head_only(server.port, "PUT", f"/{bucket}/nolen", {})
    assert (reply.status, reply.code) == (411, "MissingContentLength")
    assert _absent(s3, bucket, "nolen")


# --- checksums and digests -----------------------------------------------------------------------------


def test_wrong_crc32_header_is_bad_digest_and_stores_nothing(server, s3, bucket):
    reply = send(server.port, "PUT", f"/{bucket}/crc", {"x-amz-checksum-crc32": _crc32(b"other")}, b"payload")
    assert (reply.status, reply.code) == (400, "BadDigest")
    assert _absent(s3, bucket, "crc")


def test_right_crc32_header_is_stored_and_returned(server, s3, bucket):
    reply = send(server.port, "PUT", f"/{bucket}/crc", {"x-amz-checksum-crc32": _crc32(b"payload")}, b"payload")
    assert reply.status == 200
    assert reply.headers["x-amz-checksum-crc32"] == _crc32(b"payload")
    head = s3.head_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == _crc32(b"payload")


@pytest.mark.parametrize("value", ["not base64!", "AAAA", base64.b64encode(b"12345").decode()])
def test_malformed_crc32_header_is_invalid_request(server, s3, bucket, value):
    reply = send(server.port, "PUT", f"/{bucket}/crc", {"x-amz-checksum-crc32": value}, b"payload")
    assert (reply.status, reply.code) == (400, "InvalidRequest")
    assert _absent(s3, bucket, "crc")


def test_two_checksum_headers_are_invalid_request(server, s3, bucket):
    headers = {"x-amz-checksum-crc32": _crc32(b"p"), "x-amz-checksum-sha1": base64.b64encode(
        hashlib.sha1(b"p").digest()).decode()}  # fmt: skip
    reply = send(server.port, "PUT", f"/{bucket}/two", headers, b"p")
    assert (reply.status, reply.code) == (400, "InvalidRequest")


def test_wrong_content_md5_is_bad_digest_and_stores_nothing(server, s3, bucket):
    md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    reply = send(server.port, "PUT", f"/{bucket}/md5", {"Content-MD5": md5}, b"payload")
    assert (reply.status, reply.code) == (400, "BadDigest")
    assert _absent(s3, bucket, "md5")


@pytest.mark.parametrize("value", ["zzz", base64.b64encode(b"short").decode()])
def test_malformed_content_md5_is_invalid_digest(server, s3, bucket, value):
    reply = send(server.port, "PUT", f"/{bucket}/md5", {"Content-MD5": value}, b"payload")
    assert (reply.status, reply.code) == (400, "InvalidDigest")
    assert _absent(s3, bucket, "md5")


# --- names, missing resources, unsupported requests ------------------------------------------------------


@pytest.mark.parametrize("name", ["ab", "Upper-Case", "under_score", "a" * 64, "192.168.1.1", "bad..dots", "-dash"])
def test_invalid_bucket_name_is_rejected(server, name):
    reply = send(server.port, "PUT", f"/{name}", {}, b"")
    assert (reply.status, reply.code) == (400, "InvalidBucketName")


def test_key_longer_than_1024_bytes_is_key_too_long(server, s3, bucket):
    reply = send(server.port, "PUT", f"/{bucket}/{'k' * 1025}", {}, b"x")
    assert (reply.status, reply.code) == (400, "KeyTooLongError")


@pytest.mark.parametrize("target", ["/{bucket}/nul%00key", "/{bucket}?list-type=2&prefix=a%00b"])
def test_nul_in_a_key_or_parameter_is_invalid_argument(server, bucket, target):
    reply = send(server.port, "GET" if "?" in target else "PUT", target.format(bucket=bucket), {}, b"x")
    assert (reply.status, reply.code) == (400, "InvalidArgument")


def test_path_that_is_not_utf8_is_invalid_uri(server, bucket):
    reply = send(server.port, "GET", f"/{bucket}/%FF%FE")
    assert (reply.status, reply.code) == (400, "InvalidURI")


def test_missing_bucket_is_no_such_bucket_with_full_error_body(server):
    name = f"missing-{uuid.uuid4().hex[:12]}"
    reply = send(server.port, "GET", f"/{name}/some/key")
    assert (reply.status, reply.code) == (404, "NoSuchBucket")
    assert reply.headers["Content-Type"] == "application/xml"
    root = ET.fromstring(reply.body)
    assert root.tag == "Error"
    assert root.findtext("Message")
    assert root.findtext("RequestId") == reply.headers["x-amz-request-id"]
    assert len(reply.headers["x-amz-request-id"]) >= 16


def test_put_into_missing_bucket_is_no_such_bucket_and_leaves_no_temp_files(server):
    reply = send(server.port, "PUT", f"/missing-{uuid.uuid4().hex[:12]}/k", {}, os.urandom(100_000))
    assert (reply.status, reply.code) == (404, "NoSuchBucket")
    assert _wait_for(lambda: not server.tmp_files())


def test_unsupported_subresource_is_not_implemented(server, bucket):
    reply = send(server.port, "GET", f"/{bucket}?website")
    assert (reply.status, reply.code) == (501, "NotImplemented")


def test_server_is_still_ready_after_all_of_this(server, s3, bucket):
    assert _ready(server) == 200
    s3.put_object(Bucket=bucket, Key="ok", Body=b"fine")
    assert s3.get_object(Bucket=bucket, Key="ok")["Body"].read() == b"fine"
