"""Range GET and HEAD, and the response-* query parameters that override the response headers."""

from __future__ import annotations

import datetime
import os

import pytest

from apollo.testing.s3calls import put_bytes, response_headers
from apollo.testing.s3error import s3_error

KIB = 1024
MIB = 1024 * KIB


# --- Range GET -------------------------------------------------------------------------------------------------

RANGE_DATA = bytes(range(256)) * 40  # 10240 bytes, every offset recognisable


@pytest.fixture
def ranged(s3, bucket) -> str:
    put_bytes(s3, bucket, "r", RANGE_DATA)
    return bucket


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-99", 10, 99),
        ("bytes=10000-", 10000, 10239),
        ("bytes=-100", 10140, 10239),
        ("bytes=10000-99999", 10000, 10239),  # clipped to the end
        ("bytes=-99999", 0, 10239),  # suffix longer than the object: all of it
    ],
)
def test_range_get_returns_206_with_content_range(s3, ranged, header, start, end):
    response = s3.get_object(Bucket=ranged, Key="r", Range=header)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert response["Body"].read() == RANGE_DATA[start : end + 1]
    assert response["ContentRange"] == f"bytes {start}-{end}/{len(RANGE_DATA)}"
    assert response["ContentLength"] == end - start + 1
    assert response_headers(response)["content-length"] == str(end - start + 1)


def test_range_get_on_multi_batch_object_crosses_batch_boundary(s3, bucket):
    data = os.urandom(17 * MIB)
    put_bytes(s3, bucket, "big", data)
    start, end = 8 * MIB - 1000, 16 * MIB + 1000
    response = s3.get_object(Bucket=bucket, Key="big", Range=f"bytes={start}-{end}")
    assert response["Body"].read() == data[start : end + 1]
    assert response["ContentRange"] == f"bytes {start}-{end}/{len(data)}"


def test_many_ranges_across_erasure_cells_are_exact(s3, bucket):
    data = os.urandom(3 * MIB + 777)
    put_bytes(s3, bucket, "cells", data)
    cell = 256 * KIB
    spans = [(0, cell - 1), (cell - 1, cell), (cell - 10, 3 * cell + 10), (5 * cell + 1, len(data) - 2),
             (len(data) - 1, len(data) - 1), (1, 2 * MIB)]  # fmt: skip
    for start, end in spans:
        response = s3.get_object(Bucket=bucket, Key="cells", Range=f"bytes={start}-{end}")
        assert response["Body"].read() == data[start : end + 1], (start, end)


def test_range_head_reports_partial_length(s3, ranged):
    response = s3.head_object(Bucket=ranged, Key="r", Range="bytes=100-199")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert response["ContentLength"] == 100
    assert response["ContentRange"] == f"bytes 100-199/{len(RANGE_DATA)}"


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=20000-30000", "bytes=-0"])
def test_unsatisfiable_range_is_416_invalid_range(s3, ranged, header):
    with s3_error("InvalidRange", 416) as exc:
        s3.get_object(Bucket=ranged, Key="r", Range=header)
    assert exc.headers["content-range"] == f"bytes */{len(RANGE_DATA)}"


def test_any_range_on_empty_object_is_416(s3, bucket):
    put_bytes(s3, bucket, "empty", b"")
    with s3_error("InvalidRange", 416) as exc:
        s3.get_object(Bucket=bucket, Key="empty", Range="bytes=0-0")
    assert exc.headers["content-range"] == "bytes */0"


@pytest.mark.parametrize("header", ["bytes=50-10", "items=0-5", "bytes=0-1,5-6"])
def test_invalid_or_multi_range_returns_whole_object(s3, ranged, header):
    response = s3.get_object(Bucket=ranged, Key="r", Range=header)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["Body"].read() == RANGE_DATA
    assert "ContentRange" not in response


# --- Response header overrides ---------------------------------------------------------------------------------


def test_response_header_overrides_on_get(s3, bucket):
    put_bytes(s3, bucket, "k", b"data", ContentType="text/plain", CacheControl="no-cache")
    response = s3.get_object(
        Bucket=bucket, Key="k",
        ResponseContentType="application/json", ResponseContentLanguage="fr",
        ResponseExpires=datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
        ResponseCacheControl="max-age=5", ResponseContentDisposition="inline", ResponseContentEncoding="gzip",
    )  # fmt: skip
    headers = response_headers(response)
    assert response["Body"].read() == b"data"
    assert headers["content-type"] == "application/json"
    assert headers["content-language"] == "fr"
    assert headers["expires"] == "Tue, 06 May 2031 07:08:09 GMT"
    assert headers["cache-control"] == "max-age=5"
    assert headers["content-disposition"] == "inline"
    assert headers["content-encoding"] == "gzip"
    # The stored attributes are unchanged.
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["ContentType"] == "text/plain"
    assert head["CacheControl"] == "no-cache"
