"""Object operations through boto3: PUT/GET/HEAD/DELETE, headers and user metadata, key names.

Digests and checksums are in test_object_checksums.py, ranges and response overrides in
test_object_ranges.py, conditional reads and writes in test_conditional_requests.py."""

from __future__ import annotations

import base64
import datetime
import gzip
import http.client
import os
import uuid

import pytest
from signed_http import send, sign

from apollo.client.blocking import Client
from apollo.testing.s3calls import get_bytes, md5_etag, put_bytes, response_headers
from apollo.testing.s3error import s3_error
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

KIB = 1024
MIB = 1024 * KIB


# --- PUT / GET / HEAD / DELETE ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, 16 * KIB, 16 * KIB + 1, 20 * MIB + 12345],
    ids=["empty", "one-byte", "inline-max", "just-over-inline", "multi-batch-20MiB"],
)
def test_put_get_head_roundtrip_is_byte_exact(s3, bucket, size):
    data = os.urandom(size)
    put = put_bytes(s3, bucket, "obj", data)
    assert put["ETag"] == md5_etag(data)
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["Body"].read() == data
    assert got["ContentLength"] == size
    assert got["ETag"] == md5_etag(data)
    head = s3.head_object(Bucket=bucket, Key="obj")
    assert head["ContentLength"] == size
    assert head["ETag"] == md5_etag(data)
    assert response_headers(head)["accept-ranges"] == "bytes"


def test_default_content_type_is_binary_octet_stream(s3, bucket):
    # boto3 sends no Content-Type of its own for a bytes body.
    put_bytes(s3, bucket, "k", b"data")
    assert s3.head_object(Bucket=bucket, Key="k")["ContentType"] == "binary/octet-stream"


def test_last_modified_is_now_with_second_precision(s3, bucket):
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    put_bytes(s3, bucket, "k", b"data")
    modified = s3.head_object(Bucket=bucket, Key="k")["LastModified"]
    after = datetime.datetime.now(datetime.UTC)
    assert before - datetime.timedelta(seconds=1) <= modified <= after
    assert modified.microsecond == 0


def test_system_headers_and_user_metadata_roundtrip(s3, bucket):
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    put_bytes(
        s3, bucket, "doc.txt", b"hello",
        ContentType="text/plain; charset=utf-8", ContentEncoding="identity", ContentLanguage="en-GB",
        ContentDisposition='attachment; filename="doc.txt"', CacheControl="max-age=60", Expires=expires,
        Metadata={"Color": "blue", "x-y": "1 2 3"},
    )  # fmt: skip
    for response in (s3.get_object(Bucket=bucket, Key="doc.txt"), s3.head_object(Bucket=bucket, Key="doc.txt")):
        headers = response_headers(response)
        assert response["ContentType"] == "text/plain; charset=utf-8"
        assert response["ContentEncoding"] == "identity"
        assert response["ContentLanguage"] == "en-GB"
        assert response["ContentDisposition"] == 'attachment; filename="doc.txt"'
        assert response["CacheControl"] == "max-age=60"
        assert headers["expires"] == "Wed, 02 Jan 2030 03:04:05 GMT"
        assert response["Metadata"] == {"color": "blue", "x-y": "1 2 3"}  # names come back lower-cased


HELLO_WORD = "=?UTF-8?B?SGVsbG8gV29ybGTDqQ==?="  # RFC 2047 for "Hello Worldé"


def test_non_ascii_metadata_is_stored_as_text_and_answered_as_an_rfc2047_word(server, s3, bucket):
    """S3 decodes encoded-words before storing a value and encodes a value that is not US-ASCII on the
    way out: boto3 (which sends only ASCII) sees the word both ways; the native client sees the text."""
    put_bytes(s3, bucket, "worded", b"x", Metadata={"greet": HELLO_WORD, "plain": "ascii"})
    assert s3.head_object(Bucket=bucket, Key="worded")["Metadata"] == {"greet": HELLO_WORD, "plain": "ascii"}
    with Client(server.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as client:
        assert client.head(bucket, "worded").metadata == {"greet": "Hello Worldé", "plain": "ascii"}
        client.put(bucket, "native", b"x", metadata={"greet": "Hello Worldé", "line": "a\nb"})
    assert s3.get_object(Bucket=bucket, Key="native")["Metadata"] == {"greet": HELLO_WORD,
                                                                      "line": "=?UTF-8?B?YQpi?="}  # fmt: skip


def test_raw_utf8_metadata_comes_back_as_the_same_text(server, bucket):
    """A Go or Rust client sends a string's UTF-8 as raw header bytes: it must come back as that text (it
    came back as "Hello WorldÃ©"), in a form a header can carry."""
    target = f"/{bucket}/raw-utf8"
    headers = sign(server.port, "PUT", target, {"x-amz-meta-greet": "Hello Worldé", "Content-Length": "1"}, b"x")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("PUT", target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value.encode())  # the UTF-8 botocore signed, not http.client's Latin-1
        connection.endheaders(b"x")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    reply = send(server.port, "HEAD", target)
    assert reply.status == 200 and reply.headers["x-amz-meta-greet"] == HELLO_WORD


def test_metadata_size_counts_the_decoded_text(s3, bucket):
    word = "=?UTF-8?B?" + base64.b64encode(b"v" * 1530).decode() + "?="  # over 2 KiB on the wire, not stored
    put_bytes(s3, bucket, "k", b"x", Metadata={"big": word})
    assert len("big" + word) > 2048
    assert s3.head_object(Bucket=bucket, Key="k")["Metadata"] == {"big": "v" * 1530}


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "aws-chunked-ish"])
def test_content_encoding_is_metadata_and_the_body_is_stored_verbatim(s3, bucket, encoding):
    # S3 never decodes a body: a gzip'd upload is stored and served gzip'd, whatever Content-Encoding says.
    data = gzip.compress(b"compressible " * 1000)
    put = put_bytes(s3, bucket, "k", data, ContentEncoding=encoding)
    assert put["ETag"] == md5_etag(data)
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["ContentEncoding"] == encoding
    assert got["Body"].read() == data


def test_user_metadata_over_2_kib_is_metadata_too_large(s3, bucket):
    with s3_error("MetadataTooLarge", 400):
        put_bytes(s3, bucket, "k", b"x", Metadata={"big": "v" * 2100})


def test_overwrite_replaces_data_and_metadata(s3, bucket):
    put_bytes(s3, bucket, "k", b"first version, longer", Metadata={"a": "1"}, ContentType="text/plain")
    second = os.urandom(40 * KIB)
    put_bytes(s3, bucket, "k", second, Metadata={"b": "2"})
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == second
    assert got["Metadata"] == {"b": "2"}
    assert got["ContentType"] == "binary/octet-stream"
    assert got["ETag"] == md5_etag(second)


def test_get_missing_key_is_no_such_key(s3, bucket):
    with s3_error("NoSuchKey", 404) as exc:
        s3.get_object(Bucket=bucket, Key="missing")
    assert exc.fields["Key"] == "missing"


def test_head_missing_key_is_404(s3, bucket):
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key="missing")


def test_delete_object_then_get_is_no_such_key(s3, bucket):
    put_bytes(s3, bucket, "k", b"x")
    assert s3.delete_object(Bucket=bucket, Key="k")["ResponseMetadata"]["HTTPStatusCode"] == 204
    with s3_error("NoSuchKey", 404):
        s3.get_object(Bucket=bucket, Key="k")


def test_delete_missing_key_is_204(s3, bucket):
    response = s3.delete_object(Bucket=bucket, Key="never-existed")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_delete_large_object_then_recreate(s3, bucket):
    data = os.urandom(9 * MIB)
    put_bytes(s3, bucket, "big", data)
    s3.delete_object(Bucket=bucket, Key="big")
    put_bytes(s3, bucket, "big", b"small now")
    assert get_bytes(s3, bucket, "big") == b"small now"


def test_object_calls_on_missing_bucket_are_no_such_bucket(s3):
    missing = f"test-missing-{uuid.uuid4().hex[:12]}"
    with s3_error("NoSuchBucket", 404):
        s3.delete_object(Bucket=missing, Key="k")
    with s3_error("404", 404):
        s3.head_object(Bucket=missing, Key="k")


def test_unsupported_object_api_is_not_implemented(s3, bucket):
    put_bytes(s3, bucket, "k", b"x")
    with s3_error("NotImplemented", 501):
        s3.get_object_retention(Bucket=bucket, Key="k")
    assert get_bytes(s3, bucket, "k") == b"x"


# --- Key names -------------------------------------------------------------------------------------------------

ODD_KEYS = [
    "with space",
    "percent%20literal",
    "plus+sign",
    "ünïcödé/日本語/🎉",
    "question?mark",
    "hash#tag",
    "trailing/slash/",
    "a//b",
    "/leading-slash",
    "amp&equals=semi;colon",
    "tilde~star*quote'paren()",
    "tab\tand\nnewline",
    "carriage\rreturn and \x01 control",
    "dots/../and/./segments",
    "..",
    "/",
    "%2F-already-encoded",
]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_key_names_roundtrip(s3, bucket, key):
    data = key.encode() + b"!"
    put_bytes(s3, bucket, key, data)
    assert get_bytes(s3, bucket, key) == data
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(data)
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == [key]
    s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_all_odd_keys_list_together_in_byte_order(s3, bucket):
    for key in ODD_KEYS:
        put_bytes(s3, bucket, key, b"x")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(ODD_KEYS, key=lambda k: k.encode())


def test_key_of_1024_bytes_is_accepted(s3, bucket):
    key = "k" * 1021 + "é" + "z"  # 1024 bytes of UTF-8 in 1023 characters
    assert len(key.encode()) == 1024
    put_bytes(s3, bucket, key, b"long")
    assert get_bytes(s3, bucket, key) == b"long"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]


def test_key_of_1025_bytes_is_key_too_long(s3, bucket):
    with s3_error("KeyTooLongError", 400):
        put_bytes(s3, bucket, "k" * 1023 + "é", b"long")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
