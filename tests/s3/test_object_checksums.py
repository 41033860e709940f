"""Content-MD5 and the additional checksums (x-amz-checksum-*) of single PUTs, in headers and
in aws-chunked trailers."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import zlib

import crc32c
import pytest
from awscrt import checksums as crt_checksums

from apollo.testing.s3calls import get_bytes, md5_etag, put_bytes, response_headers
from apollo.testing.s3error import s3_error

KIB = 1024


# --- Content-MD5 and additional checksums ----------------------------------------------------------------------


def test_put_with_correct_content_md5_succeeds(s3, bucket):
    data = b"digest me"
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert put_bytes(s3, bucket, "k", data, ContentMD5=md5)["ETag"] == md5_etag(data)


def test_put_with_wrong_content_md5_is_bad_digest_and_stores_nothing(s3, bucket):
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with s3_error("BadDigest", 400):
        put_bytes(s3, bucket, "k", b"digest me", ContentMD5=wrong)
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key="k")


def test_failed_overwrite_keeps_the_previous_object(s3, bucket):
    original = os.urandom(300 * KIB)
    put_bytes(s3, bucket, "k", original)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with s3_error("BadDigest", 400):
        put_bytes(s3, bucket, "k", os.urandom(200 * KIB), ContentMD5=wrong)
    assert get_bytes(s3, bucket, "k") == original


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()], ids=["garbage", "wrong-len"])
def test_put_with_malformed_content_md5_is_invalid_digest(s3, bucket, value):
    with s3_error("InvalidDigest", 400):
        put_bytes(s3, bucket, "k", b"digest me", ContentMD5=value)


def _checksum(algorithm: str, data: bytes) -> str:
    if algorithm == "CRC32":
        raw = zlib.crc32(data).to_bytes(4, "big")
    elif algorithm == "CRC32C":
        raw = crc32c.crc32c(data).to_bytes(4, "big")
    elif algorithm == "CRC64NVME":
        raw = crt_checksums.crc64nvme(data).to_bytes(8, "big")
    else:
        raw = hashlib.new(algorithm.lower(), data).digest()
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"])
def test_checksum_algorithm_is_stored_and_returned_with_checksum_mode(s3, bucket, algorithm):
    data = os.urandom(100 * KIB + 7)
    expected = _checksum(algorithm, data)
    put = put_bytes(s3, bucket, "k", data, ChecksumAlgorithm=algorithm)
    assert (put[f"Checksum{algorithm}"], put["ChecksumType"]) == (expected, "FULL_OBJECT")
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert (head[f"Checksum{algorithm}"], head["ChecksumType"]) == (expected, "FULL_OBJECT")
    copied = s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k"},
                            ChecksumAlgorithm=algorithm)["CopyObjectResult"]  # fmt: skip
    assert (copied[f"Checksum{algorithm}"], copied["ChecksumType"]) == (expected, "FULL_OBJECT")
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got[f"Checksum{algorithm}"] == expected


def test_checksum_is_not_returned_without_checksum_mode(s3, bucket):
    put_bytes(s3, bucket, "k", b"data", ChecksumAlgorithm="SHA256")
    headers = response_headers(s3.head_object(Bucket=bucket, Key="k"))
    assert not [name for name in headers if name.startswith("x-amz-checksum-")]


def test_wrong_explicit_checksum_is_bad_digest(s3, bucket):
    wrong = _checksum("SHA256", b"something else")
    with s3_error("BadDigest", 400):
        put_bytes(s3, bucket, "k", b"data", ChecksumSHA256=wrong)
    with s3_error(status=404):
        s3.head_object(Bucket=bucket, Key="k")


# --- Checksums in aws-chunked trailers --------------------------------------------------------------------------


def _force_trailing_checksum(context, **_) -> None:
    """boto3 sends checksums as aws-chunked trailers only over https; ask for the trailer over http too."""
    algorithm = context.get("checksum", {}).get("request_algorithm")
    if isinstance(algorithm, dict):
        algorithm["in"] = "trailer"


@pytest.mark.parametrize(("encoding", "stored"), [("gzip", "gzip"), (None, None)])
def test_aws_chunked_is_dropped_from_the_stored_content_encoding(s3, bucket, encoding, stored):
    sent: list[bytes] = []
    s3.meta.events.register("before-call.s3.PutObject", _force_trailing_checksum)
    s3.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(request.headers["Content-Encoding"])
    )
    data = gzip.compress(os.urandom(1000))
    extra = {"ContentEncoding": encoding} if encoding else {}
    put = put_bytes(s3, bucket, "k", data, ChecksumAlgorithm="SHA256", **extra)
    assert sent == [b"gzip,aws-chunked" if encoding else b"aws-chunked"]  # the trailer path was really taken
    assert put["ChecksumSHA256"] == _checksum("SHA256", data)
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got.get("ContentEncoding") == stored
    assert got["Body"].read() == data
