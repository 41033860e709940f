"""Conditional reads (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since on GET and
HEAD) and conditional writes (If-None-Match: * and If-Match on PUT), racing writers included."""

from __future__ import annotations

import datetime
import os
import threading

import pytest
from botocore.exceptions import ClientError

from apollo.testing.s3calls import get_bytes, md5_etag, put_bytes
from apollo.testing.s3error import error_of, s3_error

KIB = 1024
MIB = 1024 * KIB


# --- Conditional GET / HEAD ------------------------------------------------------------------------------------


@pytest.fixture
def stored(s3, bucket) -> tuple[str, str, datetime.datetime]:
    """(bucket, etag, last_modified) of key "c"."""
    put_bytes(s3, bucket, "c", b"conditional")
    head = s3.head_object(Bucket=bucket, Key="c")
    return bucket, head["ETag"], head["LastModified"]


HOUR = datetime.timedelta(hours=1)


def test_if_match_right_etag_returns_object(s3, stored):
    bucket, etag, _ = stored
    assert get_bytes(s3, bucket, "c", IfMatch=etag) == b"conditional"
    assert get_bytes(s3, bucket, "c", IfMatch=f'"nope", {etag}') == b"conditional"
    assert get_bytes(s3, bucket, "c", IfMatch="*") == b"conditional"


def test_if_match_wrong_etag_is_412(s3, stored):
    bucket, _, _ = stored
    with s3_error("PreconditionFailed", 412):
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0123456789abcdef0123456789abcdef"')
    with s3_error("412", 412):
        s3.head_object(Bucket=bucket, Key="c", IfMatch='"0123456789abcdef0123456789abcdef"')


def test_if_none_match_same_etag_is_304_not_modified(s3, stored):
    bucket, etag, _ = stored
    with s3_error("304", 304) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert exc.headers["etag"] == etag
    with s3_error("304", 304):
        s3.head_object(Bucket=bucket, Key="c", IfNoneMatch=etag)


def test_if_none_match_other_etag_returns_object(s3, stored):
    bucket, _, _ = stored
    assert get_bytes(s3, bucket, "c", IfNoneMatch='"0123456789abcdef0123456789abcdef"') == b"conditional"


def test_if_modified_since(s3, stored):
    bucket, _, modified = stored
    assert get_bytes(s3, bucket, "c", IfModifiedSince=modified - HOUR) == b"conditional"
    for since in (modified, modified + HOUR):
        with s3_error("304", 304):
            s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=since)


def test_if_unmodified_since(s3, stored):
    bucket, _, modified = stored
    assert get_bytes(s3, bucket, "c", IfUnmodifiedSince=modified) == b"conditional"
    assert get_bytes(s3, bucket, "c", IfUnmodifiedSince=modified + HOUR) == b"conditional"
    with s3_error("PreconditionFailed", 412):
        s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=modified - HOUR)


def test_if_match_true_overrides_if_unmodified_since_false(s3, stored):
    bucket, etag, modified = stored
    assert get_bytes(s3, bucket, "c", IfMatch=etag, IfUnmodifiedSince=modified - HOUR) == b"conditional"


def test_if_none_match_false_with_if_modified_since_true_is_304(s3, stored):
    bucket, etag, modified = stored
    with s3_error("304", 304):
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag, IfModifiedSince=modified - HOUR)


def test_if_match_failure_wins_over_if_none_match(s3, stored):
    bucket, etag, _ = stored
    with s3_error("PreconditionFailed", 412):
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0123456789abcdef0123456789abcdef"', IfNoneMatch=etag)


def test_unparseable_if_modified_since_is_ignored(s3, stored):
    bucket, _, _ = stored
    s3.meta.events.register_first("before-sign.s3.GetObject", _set_header("If-Modified-Since", "not a date"))
    assert get_bytes(s3, bucket, "c") == b"conditional"


def _set_header(name: str, value: str):
    def handler(request, **kwargs):
        request.headers[name] = value

    return handler


# --- Conditional writes ----------------------------------------------------------------------------------------


def test_put_if_none_match_star_on_new_key_succeeds(s3, bucket):
    put_bytes(s3, bucket, "new", b"created", IfNoneMatch="*")
    assert get_bytes(s3, bucket, "new") == b"created"


def test_put_if_none_match_star_on_existing_key_is_412(s3, bucket):
    put_bytes(s3, bucket, "k", b"original")
    with s3_error("PreconditionFailed", 412):
        put_bytes(s3, bucket, "k", b"replacement", IfNoneMatch="*")
    assert get_bytes(s3, bucket, "k") == b"original"


def test_put_if_none_match_star_after_delete_succeeds(s3, bucket):
    put_bytes(s3, bucket, "k", b"original")
    s3.delete_object(Bucket=bucket, Key="k")
    put_bytes(s3, bucket, "k", b"again", IfNoneMatch="*")
    assert get_bytes(s3, bucket, "k") == b"again"


def test_put_if_match_right_etag_replaces(s3, bucket):
    etag = put_bytes(s3, bucket, "k", b"v1")["ETag"]
    put = put_bytes(s3, bucket, "k", b"v2", IfMatch=etag)
    assert put["ETag"] == md5_etag(b"v2")
    assert get_bytes(s3, bucket, "k") == b"v2"


def test_put_if_match_wrong_etag_is_412(s3, bucket):
    put_bytes(s3, bucket, "k", b"v1")
    with s3_error("PreconditionFailed", 412):
        put_bytes(s3, bucket, "k", b"v2", IfMatch=md5_etag(b"something else"))
    assert get_bytes(s3, bucket, "k") == b"v1"


def test_put_if_match_on_missing_key_is_no_such_key(s3, bucket):
    # AWS: "If the object doesn't exist, Amazon S3 returns 404 Not Found" for a conditional overwrite.
    with s3_error("NoSuchKey", 404):
        put_bytes(s3, bucket, "missing", b"v", IfMatch=md5_etag(b"v"))


def test_put_if_match_star_needs_the_key_to_exist(s3, bucket):
    with s3_error("NoSuchKey", 404):
        put_bytes(s3, bucket, "k", b"v", IfMatch="*")
    put_bytes(s3, bucket, "k", b"v1")
    put_bytes(s3, bucket, "k", b"v2", IfMatch="*")
    assert get_bytes(s3, bucket, "k") == b"v2"


@pytest.mark.parametrize("headers", [{"If-None-Match": '"0123456789abcdef0123456789abcdef"'},
                                     {"If-None-Match": "*", "If-Match": "*"}],
                         ids=["if-none-match-etag", "both"])  # fmt: skip
def test_write_conditions_aws_does_not_implement_are_501(s3, bucket, headers):
    """AWS answers these 501 NotImplemented (aws/aws-sdk-ruby#3144 for the ETag form), and nothing is stored."""
    for name, value in headers.items():
        s3.meta.events.register_first("before-sign.s3.PutObject", _set_header(name, value))
    with s3_error("NotImplemented", 501):
        put_bytes(s3, bucket, "k", b"v")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_complete_multipart_upload_takes_the_same_conditions(s3, bucket):
    def upload(key: str, **conditions):
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"part")["ETag"]
        return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
                                            **conditions)  # fmt: skip

    upload("mp", IfNoneMatch="*")
    with s3_error("PreconditionFailed", 412):
        upload("mp", IfNoneMatch="*")
    with s3_error("NoSuchKey", 404):
        upload("absent", IfMatch="*")
    with s3_error("PreconditionFailed", 412):
        upload("mp", IfMatch=md5_etag(b"other"))
    upload("mp", IfMatch="*")


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
            code, status = error_of(exc)
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
    assert get_bytes(clients[0], bucket, "race") == payloads[winners[0]]


@pytest.mark.parametrize("size", [64 * KIB, 3 * MIB], ids=["64KiB", "3MiB"])
def test_racing_if_none_match_puts_have_exactly_one_winner(server, bucket, size):
    _race(server, bucket, size, IfNoneMatch="*")


def test_racing_if_match_puts_have_exactly_one_winner(server, s3, bucket):
    etag = put_bytes(s3, bucket, "race", b"the version everyone read")["ETag"]
    _race(server, bucket, 64 * KIB, IfMatch=etag)
