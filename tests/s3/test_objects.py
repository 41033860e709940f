"""Object operations through boto3: PUT/GET/HEAD/DELETE, headers and metadata, digests and checksums,
ranges, conditional reads and writes, response overrides and key names."""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import os
import threading
import uuid
import zlib

import crc32c
import pytest
from awscrt import checksums as crt_checksums
from botocore.exceptions import ClientError

KIB = 1024
MIB = 1024 * KIB


def _error(exc_info: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc_info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def _headers(response: dict) -> dict[str, str]:
    return response["ResponseMetadata"]["HTTPHeaders"]


def _md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def _put(s3, bucket: str, key: str, data: bytes, **kwargs) -> dict:
    return s3.put_object(Bucket=bucket, Key=key, Body=data, **kwargs)


def _get(s3, bucket: str, key: str, **kwargs) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


# --- PUT / GET / HEAD / DELETE ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, 16 * KIB, 16 * KIB + 1, 20 * MIB + 12345],
    ids=["empty", "one-byte", "inline-max", "just-over-inline", "multi-batch-20MiB"],
)
def test_put_get_head_roundtrip_is_byte_exact(s3, bucket, size):
    data = os.urandom(size)
    put = _put(s3, bucket, "obj", data)
    assert put["ETag"] == _md5_etag(data)
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["Body"].read() == data
    assert got["ContentLength"] == size
    assert got["ETag"] == _md5_etag(data)
    head = s3.head_object(Bucket=bucket, Key="obj")
    assert head["ContentLength"] == size
    assert head["ETag"] == _md5_etag(data)
    assert _headers(head)["accept-ranges"] == "bytes"


def test_default_content_type_is_binary_octet_stream(s3, bucket):
    # boto3 sends no Content-Type of its own for a bytes body.
    _put(s3, bucket, "k", b"data")
    assert s3.head_object(Bucket=bucket, Key="k")["ContentType"] == "binary/octet-stream"


def test_last_modified_is_now_with_second_precision(s3, bucket):
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    _put(s3, bucket, "k", b"data")
    modified = s3.head_object(Bucket=bucket, Key="k")["LastModified"]
    after = datetime.datetime.now(datetime.UTC)
    assert before - datetime.timedelta(seconds=1) <= modified <= after
    assert modified.microsecond == 0


def test_system_headers_and_user_metadata_roundtrip(s3, bucket):
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    _put(
        s3, bucket, "doc.txt", b"hello",
        ContentType="text/plain; charset=utf-8", ContentEncoding="identity", ContentLanguage="en-GB",
        ContentDisposition='attachment; filename="doc.txt"', CacheControl="max-age=60", Expires=expires,
        Metadata={"Color": "blue", "x-y": "1 2 3"},
    )  # fmt: skip
    for response in (s3.get_object(Bucket=bucket, Key="doc.txt"), s3.head_object(Bucket=bucket, Key="doc.txt")):
        headers = _headers(response)
        assert response["ContentType"] == "text/plain; charset=utf-8"
        assert response["ContentEncoding"] == "identity"
        assert response["ContentLanguage"] == "en-GB"
        assert response["ContentDisposition"] == 'attachment; filename="doc.txt"'
        assert response["CacheControl"] == "max-age=60"
        assert headers["expires"] == "Wed, 02 Jan 2030 03:04:05 GMT"
        assert response["Metadata"] == {"color": "blue", "x-y": "1 2 3"}  # names come back lower-cased


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "aws-chunked-ish"])
def test_content_encoding_is_metadata_and_the_body_is_stored_verbatim(s3, bucket, encoding):
    # S3 never decodes a body: a gzip'd upload is stored and served gzip'd, whatever Content-Encoding says.
    data = gzip.compress(b"compressible " * 1000)
    put = _put(s3, bucket, "k", data, ContentEncoding=encoding)
    assert put["ETag"] == _md5_etag(data)
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["ContentEncoding"] == encoding
    assert got["Body"].read() == data


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
    put = _put(s3, bucket, "k", data, ChecksumAlgorithm="SHA256", **extra)
    assert sent == [b"gzip,aws-chunked" if encoding else b"aws-chunked"]  # the trailer path was really taken
    assert put["ChecksumSHA256"] == _checksum("SHA256", data)
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got.get("ContentEncoding") == stored
    assert got["Body"].read() == data


def test_user_metadata_over_2_kib_is_metadata_too_large(s3, bucket):
    with pytest.raises(ClientError) as exc:
        _put(s3, bucket, "k", b"x", Metadata={"big": "v" * 2100})
    assert _error(exc) == ("MetadataTooLarge", 400)


def test_overwrite_replaces_data_and_metadata(s3, bucket):
    _put(s3, bucket, "k", b"first version, longer", Metadata={"a": "1"}, ContentType="text/plain")
    second = os.urandom(40 * KIB)
    _put(s3, bucket, "k", second, Metadata={"b": "2"})
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == second
    assert got["Metadata"] == {"b": "2"}
    assert got["ContentType"] == "binary/octet-stream"
    assert got["ETag"] == _md5_etag(second)


def test_get_missing_key_is_no_such_key(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="missing")
    assert _error(exc) == ("NoSuchKey", 404)
    assert exc.value.response["Error"]["Key"] == "missing"


def test_head_missing_key_is_404(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="missing")
    assert _error(exc) == ("404", 404)


def test_delete_object_then_get_is_no_such_key(s3, bucket):
    _put(s3, bucket, "k", b"x")
    assert s3.delete_object(Bucket=bucket, Key="k")["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="k")
    assert _error(exc) == ("NoSuchKey", 404)


def test_delete_missing_key_is_204(s3, bucket):
    response = s3.delete_object(Bucket=bucket, Key="never-existed")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_delete_large_object_then_recreate(s3, bucket):
    data = os.urandom(9 * MIB)
    _put(s3, bucket, "big", data)
    s3.delete_object(Bucket=bucket, Key="big")
    _put(s3, bucket, "big", b"small now")
    assert _get(s3, bucket, "big") == b"small now"


def test_object_calls_on_missing_bucket_are_no_such_bucket(s3):
    missing = f"test-missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=missing, Key="k")
    assert _error(exc) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=missing, Key="k")
    assert _error(exc) == ("404", 404)


def test_unsupported_object_api_is_not_implemented(s3, bucket):
    _put(s3, bucket, "k", b"x")
    with pytest.raises(ClientError) as exc:
        s3.get_object_retention(Bucket=bucket, Key="k")
    assert _error(exc) == ("NotImplemented", 501)
    assert _get(s3, bucket, "k") == b"x"


# --- Content-MD5 and additional checksums ----------------------------------------------------------------------


def test_put_with_correct_content_md5_succeeds(s3, bucket):
    data = b"digest me"
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert _put(s3, bucket, "k", data, ContentMD5=md5)["ETag"] == _md5_etag(data)


def test_put_with_wrong_content_md5_is_bad_digest_and_stores_nothing(s3, bucket):
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        _put(s3, bucket, "k", b"digest me", ContentMD5=wrong)
    assert _error(exc) == ("BadDigest", 400)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="k")
    assert _error(exc) == ("404", 404)


def test_failed_overwrite_keeps_the_previous_object(s3, bucket):
    original = os.urandom(300 * KIB)
    _put(s3, bucket, "k", original)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        _put(s3, bucket, "k", os.urandom(200 * KIB), ContentMD5=wrong)
    assert _error(exc) == ("BadDigest", 400)
    assert _get(s3, bucket, "k") == original


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()], ids=["garbage", "wrong-len"])
def test_put_with_malformed_content_md5_is_invalid_digest(s3, bucket, value):
    with pytest.raises(ClientError) as exc:
        _put(s3, bucket, "k", b"digest me", ContentMD5=value)
    assert _error(exc) == ("InvalidDigest", 400)


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
    put = _put(s3, bucket, "k", data, ChecksumAlgorithm=algorithm)
    assert put[f"Checksum{algorithm}"] == expected
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == expected
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got[f"Checksum{algorithm}"] == expected


def test_checksum_is_not_returned_without_checksum_mode(s3, bucket):
    _put(s3, bucket, "k", b"data", ChecksumAlgorithm="SHA256")
    headers = _headers(s3.head_object(Bucket=bucket, Key="k"))
    assert not [name for name in headers if name.startswith("x-amz-checksum-")]


def test_wrong_explicit_checksum_is_bad_digest(s3, bucket):
    wrong = _checksum("SHA256", b"something else")
    with pytest.raises(ClientError) as exc:
        _put(s3, bucket, "k", b"data", ChecksumSHA256=wrong)
    assert _error(exc) == ("BadDigest", 400)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="k")


# --- Range GET -------------------------------------------------------------------------------------------------

RANGE_DATA = bytes(range(256)) * 40  # 10240 bytes, every offset recognisable


@pytest.fixture
def ranged(s3, bucket) -> str:
    _put(s3, bucket, "r", RANGE_DATA)
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
    assert _headers(response)["content-length"] == str(end - start + 1)


def test_range_get_on_multi_batch_object_crosses_batch_boundary(s3, bucket):
    data = os.urandom(17 * MIB)
    _put(s3, bucket, "big", data)
    start, end = 8 * MIB - 1000, 16 * MIB + 1000
    response = s3.get_object(Bucket=bucket, Key="big", Range=f"bytes={start}-{end}")
    assert response["Body"].read() == data[start : end + 1]
    assert response["ContentRange"] == f"bytes {start}-{end}/{len(data)}"


def test_many_ranges_across_erasure_cells_are_exact(s3, bucket):
    data = os.urandom(3 * MIB + 777)
    _put(s3, bucket, "cells", data)
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
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=ranged, Key="r", Range=header)
    assert _error(exc) == ("InvalidRange", 416)
    assert _headers(exc.value.response)["content-range"] == f"bytes */{len(RANGE_DATA)}"


def test_any_range_on_empty_object_is_416(s3, bucket):
    _put(s3, bucket, "empty", b"")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="empty", Range="bytes=0-0")
    assert _error(exc) == ("InvalidRange", 416)
    assert _headers(exc.value.response)["content-range"] == "bytes */0"


@pytest.mark.parametrize("header", ["bytes=50-10", "items=0-5", "bytes=0-1,5-6"])
def test_invalid_or_multi_range_returns_whole_object(s3, ranged, header):
    response = s3.get_object(Bucket=ranged, Key="r", Range=header)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["Body"].read() == RANGE_DATA
    assert "ContentRange" not in response


# --- Conditional GET / HEAD ------------------------------------------------------------------------------------


@pytest.fixture
def stored(s3, bucket) -> tuple[str, str, datetime.datetime]:
    """(bucket, etag, last_modified) of key "c"."""
    _put(s3, bucket, "c", b"conditional")
    head = s3.head_object(Bucket=bucket, Key="c")
    return bucket, head["ETag"], head["LastModified"]


HOUR = datetime.timedelta(hours=1)


def test_if_match_right_etag_returns_object(s3, stored):
    bucket, etag, _ = stored
    assert _get(s3, bucket, "c", IfMatch=etag) == b"conditional"
    assert _get(s3, bucket, "c", IfMatch=f'"nope", {etag}') == b"conditional"
    assert _get(s3, bucket, "c", IfMatch="*") == b"conditional"


def test_if_match_wrong_etag_is_412(s3, stored):
    bucket, _, _ = stored
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert _error(exc) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="c", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert _error(exc) == ("412", 412)


def test_if_none_match_same_etag_is_304_not_modified(s3, stored):
    bucket, etag, _ = stored
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert _error(exc) == ("304", 304)
    assert _headers(exc.value.response)["etag"] == etag
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert _error(exc) == ("304", 304)


def test_if_none_match_other_etag_returns_object(s3, stored):
    bucket, _, _ = stored
    assert _get(s3, bucket, "c", IfNoneMatch='"0123456789abcdef0123456789abcdef"') == b"conditional"


def test_if_modified_since(s3, stored):
    bucket, _, modified = stored
    assert _get(s3, bucket, "c", IfModifiedSince=modified - HOUR) == b"conditional"
    for since in (modified, modified + HOUR):
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=since)
        assert _error(exc) == ("304", 304)


def test_if_unmodified_since(s3, stored):
    bucket, _, modified = stored
    assert _get(s3, bucket, "c", IfUnmodifiedSince=modified) == b"conditional"
    assert _get(s3, bucket, "c", IfUnmodifiedSince=modified + HOUR) == b"conditional"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=modified - HOUR)
    assert _error(exc) == ("PreconditionFailed", 412)


def test_if_match_true_overrides_if_unmodified_since_false(s3, stored):
    bucket, etag, modified = stored
    assert _get(s3, bucket, "c", IfMatch=etag, IfUnmodifiedSince=modified - HOUR) == b"conditional"


def test_if_none_match_false_with_if_modified_since_true_is_304(s3, stored):
    bucket, etag, modified = stored
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag, IfModifiedSince=modified - HOUR)
    assert _error(exc) == ("304", 304)


def test_if_match_failure_wins_over_if_none_match(s3, stored):
    bucket, etag, _ = stored
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0123456789abcdef0123456789abcdef"', IfNoneMatch=etag)
    assert _error(exc) == ("PreconditionFailed", 412)


def test_unparseable_if_modified_since_is_ignored(s3, stored):
    bucket, _, _ = stored
    s3.meta.events.register_first("before-sign.s3.GetObject", _set_header("If-Modified-Since", "not a date"))
    assert _get(s3, bucket, "c") == b"conditional"


def _set_header(name: str, value: str):
    def handler(request, **kwargs):
        request.headers[name] = value

    return handler


# --- Conditional writes ----------------------------------------------------------------------------------------


def test_put_if_none_match_star_on_new_key_succeeds(s3, bucket):
    _put(s3, bucket, "new", b"created", IfNoneMatch="*")
    assert _get(s3, bucket, "new") == b"created"


def test_put_if_none_match_star_on_existing_key_is_412(s3, bucket):
    _put(s3, bucket, "k", b"original")
    with pytest.raises(ClientError) as exc:
        _put(s3, bucket, "k", b"replacement", IfNoneMatch="*")
    assert _error(exc) == ("PreconditionFailed", 412)
    assert _get(s3, bucket, "k") == b"original"


def test_put_if_none_match_star_after_delete_succeeds(s3, bucket):
    _put(s3, bucket, "k", b"original")
    s3.delete_object(Bucket=bucket, Key="k")
    _put(s3, bucket, "k", b"again", IfNoneMatch="*")
    assert _get(s3, bucket, "k") == b"again"


def test_put_if_match_right_etag_replaces(s3, bucket):
    etag = _put(s3, bucket, "k", b"v1")["ETag"]
    put = _put(s3, bucket, "k", b"v2", IfMatch=etag)
    assert put["ETag"] == _md5_etag(b"v2")
    assert _get(s3, bucket, "k") == b"v2"


def test_put_if_match_wrong_etag_is_412(s3, bucket):
    _put(s3, bucket, "k", b"v1")
    with pytest.raises(ClientError) as exc:
        _put(s3, bucket, "k", b"v2", IfMatch=_md5_etag(b"something else"))
    assert _error(exc) == ("PreconditionFailed", 412)
    assert _get(s3, bucket, "k") == b"v1"


def test_put_if_match_on_missing_key_is_no_such_key(s3, bucket):
    # AWS: "If the object doesn't exist, Amazon S3 returns 404 Not Found" for a conditional overwrite.
    with pytest.raises(ClientError) as exc:
        _put(s3, bucket, "missing", b"v", IfMatch=_md5_etag(b"v"))
    assert _error(exc) == ("NoSuchKey", 404)


def _race(server, bucket: str, size: int, **conditions) -> None:
    """8 writers PUT the same key at once under ``conditions``: exactly one may win, and its bytes are stored."""
    writers = 8
    clients = [server.s3() for _ in range(writers)]
    payloads = [os.urandom(size) + bytes([n]) for n in range(writers)]
    barrier = threading.Barrier(writers)
    outcomes: list[tuple[int, int, str]] = []  # (writer, status, code)
    lock = threading.Lock()

    def write(n: int) -> None:
        barrier.wait()
        try:
            response = clients[n].put_object(Bucket=bucket, Key="race", Body=payloads[n], **conditions)
            result = (n, response["ResponseMetadata"]["HTTPStatusCode"], "")
        except ClientError as exc:
            code, status = _error_of(exc)
            result = (n, status, code)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    winners = [n for n, status, _ in outcomes if status == 200]
    losers = {(status, code) for _, status, code in outcomes if status != 200}
    assert len(outcomes) == writers
    assert len(winners) == 1, outcomes
    assert losers <= {(412, "PreconditionFailed"), (409, "ConditionalRequestConflict")}, outcomes
    assert _get(clients[0], bucket, "race") == payloads[winners[0]]


@pytest.mark.parametrize("size", [64 * KIB, 3 * MIB], ids=["64KiB", "3MiB"])
def test_racing_if_none_match_puts_have_exactly_one_winner(server, bucket, size):
    _race(server, bucket, size, IfNoneMatch="*")


def test_racing_if_match_puts_have_exactly_one_winner(server, s3, bucket):
    etag = _put(s3, bucket, "race", b"the version everyone read")["ETag"]
    _race(server, bucket, 64 * KIB, IfMatch=etag)


def _error_of(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


# --- Response header overrides ---------------------------------------------------------------------------------


def test_response_header_overrides_on_get(s3, bucket):
    _put(s3, bucket, "k", b"data", ContentType="text/plain", CacheControl="no-cache")
    response = s3.get_object(
        Bucket=bucket, Key="k",
        ResponseContentType="application/json", ResponseContentLanguage="fr",
        ResponseExpires=datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
        ResponseCacheControl="max-age=5", ResponseContentDisposition="inline", ResponseContentEncoding="gzip",
    )  # fmt: skip
    headers = _headers(response)
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
    _put(s3, bucket, key, data)
    assert _get(s3, bucket, key) == data
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(data)
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == [key]
    s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_all_odd_keys_list_together_in_byte_order(s3, bucket):
    for key in ODD_KEYS:
        _put(s3, bucket, key, b"x")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(ODD_KEYS, key=lambda k: k.encode())


def test_key_of_1024_bytes_is_accepted(s3, bucket):
    key = "k" * 1021 + "é" + "z"  # 1024 bytes of UTF-8 in 1023 characters
    assert len(key.encode()) == 1024
    _put(s3, bucket, key, b"long")
    assert _get(s3, bucket, key) == b"long"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]


def test_key_of_1025_bytes_is_key_too_long(s3, bucket):
    with pytest.raises(ClientError) as exc:
        _put(s3, bucket, "k" * 1023 + "é", b"long")
    assert _error(exc) == ("KeyTooLongError", 400)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
