"""Multipart uploads through boto3: complete, validation errors, abort, ListParts, ListMultipartUploads,
UploadPartCopy, part reads, conditional completion and checksums.

Only two uploads use full 5 MiB parts (the minimum for a non-last part); everything else uses single
or last parts, which may be small.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import time
import uuid

import pytest
from signed_http import sign

from apollo.testing.s3error import s3_error

MIB5 = 5 * 1024 * 1024


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _multipart_etag(parts: list[bytes]) -> str:
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def _start(s3, bucket: str, key: str = "mp", **kwargs) -> str:
    return s3.create_multipart_upload(Bucket=bucket, Key=key, **kwargs)["UploadId"]


def _part(s3, bucket: str, upload_id: str, number: int, body: bytes, key: str = "mp") -> dict:
    etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)["ETag"]
    return {"PartNumber": number, "ETag": etag}


def _complete(s3, bucket: str, upload_id: str, parts: list[dict], key: str = "mp", **kwargs) -> dict:
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                        MultipartUpload={"Parts": parts}, **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def big_parts() -> list[bytes]:
    return [os.urandom(MIB5), os.urandom(MIB5), os.urandom(1000)]


@pytest.fixture(scope="module")
def completed(server, big_parts) -> tuple[str, str, dict]:
    """One 3-part object (5 MiB, 5 MiB, 1000 bytes) shared by the read-side tests."""
    s3 = server.s3()
    bucket = f"test-mp-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    upload_id = _start(s3, bucket, ContentType="application/x-test", Metadata={"color": "blue"})
    parts = [_part(s3, bucket, upload_id, n, body) for n, body in enumerate(big_parts, start=1)]
    response = _complete(s3, bucket, upload_id, parts)
    return bucket, "mp", response


# complete ---------------------------------------------------------------------------------------


def test_complete_returns_the_multipart_etag(completed, big_parts):
    bucket, key, response = completed
    assert response["ETag"] == _multipart_etag(big_parts)
    assert response["Bucket"] == bucket and response["Key"] == key


def test_completed_object_reads_back_whole(s3, completed, big_parts):
    bucket, key, _ = completed
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == b"".join(big_parts)
    assert got["ETag"] == _multipart_etag(big_parts)
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"color": "blue"}
    assert "PartsCount" not in got  # only partNumber reads report it


def test_get_by_part_number_returns_that_part(s3, completed, big_parts):
    bucket, key, _ = completed
    total = sum(map(len, big_parts))
    got = s3.get_object(Bucket=bucket, Key=key, PartNumber=2)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["Body"].read() == big_parts[1]
    assert got["ContentRange"] == f"bytes {MIB5}-{2 * MIB5 - 1}/{total}"
    assert got["PartsCount"] == 3
    assert got["ContentLength"] == MIB5


def test_head_by_part_number_reports_range_and_parts_count(s3, completed, big_parts):
    bucket, key, _ = completed
    total = sum(map(len, big_parts))
    head = s3.head_object(Bucket=bucket, Key=key, PartNumber=3)
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert head["ContentLength"] == 1000
    assert head["ContentRange"] == f"bytes {2 * MIB5}-{total - 1}/{total}"
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-mp-parts-count"] == "3"


def test_part_number_beyond_the_parts_is_invalid_part(s3, completed):
    bucket, key, _ = completed
    with s3_error("InvalidPart", 400):
        s3.get_object(Bucket=bucket, Key=key, PartNumber=4)


def test_part_number_on_a_plain_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="plain", Body=b"0123456789")
    got = s3.get_object(Bucket=bucket, Key="plain", PartNumber=1)
    assert got["Body"].read() == b"0123456789"
    assert "PartsCount" not in got
    with s3_error("InvalidPart", 400):
        s3.get_object(Bucket=bucket, Key="plain", PartNumber=2)


def test_completed_upload_leaves_the_uploads_list(s3, completed):
    bucket, _, _ = completed
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_single_small_part_upload(s3, bucket):
    upload_id = _start(s3, bucket)
    parts = [_part(s3, bucket, upload_id, 1, b"tiny")]
    response = _complete(s3, bucket, upload_id, parts)
    assert response["ETag"] == _multipart_etag([b"tiny"])
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"tiny"


def test_complete_may_skip_uploaded_part_numbers(s3, bucket):
    upload_id = _start(s3, bucket)
    one = _part(s3, bucket, upload_id, 1, b"one")
    _part(s3, bucket, upload_id, 2, b"two")
    three = _part(s3, bucket, upload_id, 3, b"three")
    with s3_error("EntityTooSmall", 400):  # a small part may only be the last one
        _complete(s3, bucket, upload_id, [one, three])
    _complete(s3, bucket, upload_id, [three])
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"three"


def test_complete_twice_answers_twice_until_the_object_is_replaced(s3, bucket):
    upload_id = _start(s3, bucket)
    parts = [_part(s3, bucket, upload_id, 1, b"x")]
    assert _complete(s3, bucket, upload_id, parts)["ETag"] == _complete(s3, bucket, upload_id, parts)["ETag"]
    with s3_error("NoSuchUpload", 404):  # completed: nothing left to abort
        s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id)
    s3.put_object(Bucket=bucket, Key="mp", Body=b"newer")
    with s3_error("NoSuchUpload", 404):  # the object it made is gone: the upload is no more
        _complete(s3, bucket, upload_id, parts)
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"newer"


def test_complete_in_versioned_bucket_returns_a_version_id(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    upload_id = _start(s3, bucket)
    response = _complete(s3, bucket, upload_id, [_part(s3, bucket, upload_id, 1, b"v")])
    assert s3.head_object(Bucket=bucket, Key="mp")["VersionId"] == response["VersionId"]


# validation errors ------------------------------------------------------------------------------


def test_small_part_that_is_not_last_is_entity_too_small(s3, bucket):
    upload_id = _start(s3, bucket)
    parts = [_part(s3, bucket, upload_id, 1, b"a" * 1024), _part(s3, bucket, upload_id, 2, b"b")]
    with s3_error("EntityTooSmall", 400):
        _complete(s3, bucket, upload_id, parts)
    assert s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)["Parts"][0]["Size"] == 1024  # still open


def test_wrong_part_etag_is_invalid_part(s3, bucket):
    upload_id = _start(s3, bucket)
    _part(s3, bucket, upload_id, 1, b"x")
    with s3_error("InvalidPart", 400):
        _complete(s3, bucket, upload_id, [{"PartNumber": 1, "ETag": f'"{_md5(b"other")}"'}])


def test_never_uploaded_part_is_invalid_part(s3, bucket):
    upload_id = _start(s3, bucket)
    part = _part(s3, bucket, upload_id, 1, b"x")
    with s3_error("InvalidPart", 400):
        _complete(s3, bucket, upload_id, [{**part, "PartNumber": 2}])


def test_unordered_parts_are_invalid_part_order(s3, bucket):
    upload_id = _start(s3, bucket)
    one, two = _part(s3, bucket, upload_id, 1, b"1"), _part(s3, bucket, upload_id, 2, b"2")
    with s3_error("InvalidPartOrder", 400):
        _complete(s3, bucket, upload_id, [two, one])


def test_empty_part_list_is_malformed_xml(s3, bucket):
    upload_id = _start(s3, bucket)
    _part(s3, bucket, upload_id, 1, b"1")
    with s3_error("MalformedXML", 400):
        _complete(s3, bucket, upload_id, [])


def test_complete_listing_more_than_10000_parts_is_refused_and_the_upload_survives(s3, bucket):
    upload_id = _start(s3, bucket)
    part = _part(s3, bucket, upload_id, 1, b"1")
    too_many = [{"PartNumber": n, "ETag": part["ETag"]} for n in range(1, 10_002)]
    with s3_error("InvalidArgument", 400):
        _complete(s3, bucket, upload_id, too_many)
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)["Parts"]] == [1]
    _complete(s3, bucket, upload_id, [part])  # still completable
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"1"


@pytest.mark.parametrize("number", [0, 10001])
def test_part_number_out_of_range_is_invalid_argument(s3, bucket, number):
    upload_id = _start(s3, bucket)
    with s3_error("InvalidArgument", 400):
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=number, Body=b"x")


def test_unknown_upload_id_is_no_such_upload(s3, bucket):
    missing = uuid.uuid4().hex
    calls = [
        lambda: s3.upload_part(Bucket=bucket, Key="mp", UploadId=missing, PartNumber=1, Body=b"x"),
        lambda: _complete(s3, bucket, missing, [{"PartNumber": 1, "ETag": f'"{_md5(b"x")}"'}]),
        lambda: s3.list_parts(Bucket=bucket, Key="mp", UploadId=missing),
        lambda: s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=missing),
    ]
    for call in calls:
        with s3_error("NoSuchUpload", 404):
            call()


def test_upload_id_of_another_key_is_no_such_upload(s3, bucket):
    upload_id = _start(s3, bucket, key="one")
    with s3_error("NoSuchUpload", 404):
        s3.list_parts(Bucket=bucket, Key="two", UploadId=upload_id)


def test_create_upload_in_missing_bucket_is_no_such_bucket(s3):
    with s3_error("NoSuchBucket", 404):
        _start(s3, f"missing-{uuid.uuid4().hex[:12]}")


# re-upload, abort -------------------------------------------------------------------------------


def test_reuploading_a_part_number_replaces_it(s3, bucket):
    upload_id = _start(s3, bucket)
    old = _part(s3, bucket, upload_id, 1, b"first")
    new = _part(s3, bucket, upload_id, 1, b"second!")
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [(1, new["ETag"], 7)]
    with s3_error("InvalidPart", 400):
        _complete(s3, bucket, upload_id, [old])
    _complete(s3, bucket, upload_id, [new])
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"second!"


def _start_slow_part(server, bucket: str, upload_id: str, body: bytes) -> socket.socket:
    """Begin an UploadPart of part 1 whose body is still in flight: its head and a first MiB are sent."""
    target = f"/{bucket}/mp?partNumber=1&uploadId={upload_id}"
    headers = sign(server.port, "PUT", target, {"Content-Length": str(len(body))}, payload="UNSIGNED-PAYLOAD")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = f"PUT {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers.items()) + "\r\n"
    sock.sendall(head.encode() + body[: 1 << 20])
    time.sleep(0.3)  # the gateway is writing it
    return sock


@pytest.mark.parametrize("earlier_send", ["finishes last", "is dropped"])
def test_a_part_resent_while_an_earlier_send_is_in_flight(server, s3, bucket, earlier_send):
    """An SDK that times out resends the part: the last send to finish is the part (AWS keeps the last one
    uploaded), and an earlier send that dies takes nothing with it."""
    upload_id = _start(s3, bucket)
    earlier, later = os.urandom(MIB5 + 1), os.urandom(MIB5 + 2)
    sock = _start_slow_part(server, bucket, upload_id, earlier)
    with sock:
        resent = _part(s3, bucket, upload_id, 1, later)
        if earlier_send == "finishes last":
            sock.sendall(earlier[1 << 20 :])
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    expected = earlier if earlier_send == "finishes last" else later
    stale = {"PartNumber": 1, "ETag": f'"{_md5(later if expected is earlier else earlier)}"'}
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)["Parts"]
    assert [(p["ETag"], p["Size"]) for p in listed] == [(f'"{_md5(expected)}"', len(expected))]
    if earlier_send == "is dropped":
        time.sleep(0.5)  # the dropped send has failed by now; it must not have removed the resent part
        assert s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)["Parts"][0]["ETag"] == resent["ETag"]
    with s3_error("InvalidPart", 400):
        _complete(s3, bucket, upload_id, [stale])
    _complete(s3, bucket, upload_id, [{"PartNumber": 1, "ETag": f'"{_md5(expected)}"'}])
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == expected


def test_abort_removes_the_upload(s3, bucket):
    upload_id = _start(s3, bucket)
    _part(s3, bucket, upload_id, 1, b"x")
    response = s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    with s3_error("NoSuchUpload", 404):
        s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)
    with s3_error(status=404):
        s3.head_object(Bucket=bucket, Key="mp")
    s3.delete_bucket(Bucket=bucket)  # nothing left behind that keeps the bucket busy


def test_aborted_part_data_is_collected(make_server):
    server = make_server(extra_args=["--gc-delay", "0"])
    s3 = server.s3()
    s3.create_bucket(Bucket="gc-bucket")
    upload_id = _start(s3, "gc-bucket")
    _part(s3, "gc-bucket", upload_id, 1, os.urandom(256 * 1024))  # above the inline limit: real shard files
    assert server.shard_files()
    s3.abort_multipart_upload(Bucket="gc-bucket", Key="mp", UploadId=upload_id)
    deadline = time.monotonic() + 20
    while server.shard_files() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.shard_files() == []


def test_a_bucket_whose_only_content_is_open_uploads_is_deleted_with_them(server, s3):
    """As on AWS: a client that crashed mid-upload must not leave a bucket nobody can delete; the parts'
    shards go to the garbage collector like an aborted upload's."""
    name = f"crashed-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    for key in ("one", "two"):
        upload_id = _start(s3, name, key)
        _part(s3, name, upload_id, 1, os.urandom(256 * 1024), key=key)
    s3.delete_bucket(Bucket=name)
    with s3_error("NoSuchBucket", 404):
        s3.list_multipart_uploads(Bucket=name)
    s3.create_bucket(Bucket=name)  # the name is free again, with nothing left in it
    assert s3.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
    s3.delete_bucket(Bucket=name)


def test_a_bucket_with_objects_and_uploads_stays(s3, bucket):
    _start(s3, bucket)
    s3.put_object(Bucket=bucket, Key="kept", Body=b"x")
    with s3_error("BucketNotEmpty", 409):
        s3.delete_bucket(Bucket=bucket)
    assert len(s3.list_multipart_uploads(Bucket=bucket)["Uploads"]) == 1


def test_a_repeated_complete_answers_with_the_same_object(s3, bucket):
    """An SDK that lost the first answer sends the same CompleteMultipartUpload again: AWS answers 200."""
    versioned_bucket = bucket
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    upload_id = _start(s3, versioned_bucket)
    etag = _part(s3, versioned_bucket, upload_id, 1, b"only part")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    first, again = (s3.complete_multipart_upload(Bucket=versioned_bucket, Key="mp", UploadId=upload_id,
                                                 MultipartUpload=parts) for _ in range(2))  # fmt: skip
    assert (again["ETag"], again["VersionId"]) == (first["ETag"], first["VersionId"])
    assert s3.get_object(Bucket=versioned_bucket, Key="mp")["Body"].read() == b"only part"
    assert len(s3.list_object_versions(Bucket=versioned_bucket)["Versions"]) == 1  # no second version
    with s3_error("NoSuchUpload", 404):
        s3.complete_multipart_upload(Bucket=versioned_bucket, Key="mp", UploadId="0" * 32, MultipartUpload=parts)
    s3.put_object(Bucket=versioned_bucket, Key="plain", Body=b"not from an upload")
    with s3_error("NoSuchUpload", 404):  # an empty upload id names no upload, not every plain PUT
        s3.complete_multipart_upload(Bucket=versioned_bucket, Key="plain", UploadId="", MultipartUpload=parts)


# ListParts / ListMultipartUploads ---------------------------------------------------------------


def test_list_parts_paginates_with_max_parts_and_marker(s3, bucket):
    upload_id = _start(s3, bucket)
    bodies = {n: bytes([n]) * n for n in range(1, 6)}
    etags = {n: _part(s3, bucket, upload_id, n, body)["ETag"] for n, body in bodies.items()}
    page = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id, MaxParts=2)
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in page["Parts"]] == [(1, 1, etags[1]), (2, 2, etags[2])]
    assert page["IsTruncated"] is True and page["NextPartNumberMarker"] == 2 and page["MaxParts"] == 2
    page = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id, MaxParts=2, PartNumberMarker=2)
    assert [p["PartNumber"] for p in page["Parts"]] == [3, 4]
    assert page["PartNumberMarker"] == 2
    pages = s3.get_paginator("list_parts").paginate(Bucket=bucket, Key="mp", UploadId=upload_id,
                                                    PaginationConfig={"PageSize": 2})  # fmt: skip
    assert [p["PartNumber"] for page in pages for p in page["Parts"]] == [1, 2, 3, 4, 5]
    last = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumberMarker=4)
    assert [p["PartNumber"] for p in last["Parts"]] == [5] and last["IsTruncated"] is False


def test_list_uploads_prefix_and_delimiter(s3, bucket):
    for key in ("a/1", "a/2", "a/sub/3", "b"):
        _start(s3, bucket, key=key)
    page = s3.list_multipart_uploads(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [u["Key"] for u in page["Uploads"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/sub/"]
    top = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [u["Key"] for u in top["Uploads"]] == ["b"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/"]


def test_list_uploads_orders_a_keys_uploads_by_initiation(s3, bucket):
    ids = [_start(s3, bucket, key="same") for _ in range(4)]
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [u["UploadId"] for u in listed] == ids
    assert listed[0]["Initiated"] <= listed[-1]["Initiated"]


def test_list_uploads_paginates_with_key_and_upload_id_markers(s3, bucket):
    expected = [(key, _start(s3, bucket, key=key)) for key in ("a", "a", "b", "c", "c")]
    page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=2)
    assert [(u["Key"], u["UploadId"]) for u in page["Uploads"]] == expected[:2]
    assert page["IsTruncated"] is True
    assert (page["NextKeyMarker"], page["NextUploadIdMarker"]) == expected[1]
    page = s3.list_multipart_uploads(Bucket=bucket, KeyMarker="a", UploadIdMarker=expected[0][1])
    assert [(u["Key"], u["UploadId"]) for u in page["Uploads"]] == expected[1:]
    page = s3.list_multipart_uploads(Bucket=bucket, KeyMarker="a")
    assert [u["Key"] for u in page["Uploads"]] == ["b", "c", "c"]
    pages = s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, PaginationConfig={"PageSize": 1})
    assert [(u["Key"], u["UploadId"]) for p in pages for u in p.get("Uploads", [])] == expected


# UploadPartCopy, conditions, checksums ----------------------------------------------------------


def test_upload_part_copy_with_source_range(s3, bucket):
    source = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    upload_id = _start(s3, bucket)
    copied = s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1,
                                 CopySource={"Bucket": bucket, "Key": "src"},
                                 CopySourceRange="bytes=1000-60999")  # fmt: skip
    assert copied["CopyPartResult"]["ETag"] == f'"{_md5(source[1000:61000])}"'
    tail = _part(s3, bucket, upload_id, 2, b"tail")
    with s3_error("EntityTooSmall", 400):  # the copied part is 60,000 bytes: too small unless last
        _complete(s3, bucket, upload_id, [{"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]}, tail])
    _complete(s3, bucket, upload_id, [{"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]}])
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == source[1000:61000]


def test_upload_part_copy_of_whole_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"whole source")
    upload_id = _start(s3, bucket)
    copied = s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1,
                                 CopySource=f"{bucket}/src")  # fmt: skip
    _complete(s3, bucket, upload_id, [{"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]}])
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"whole source"


@pytest.mark.parametrize("spec", ["bytes=5-10", "bytes=10-12", "bytes=6-5"])
def test_upload_part_copy_range_outside_the_source_is_a_400(s3, bucket, spec):
    """AWS answers 400 InvalidArgument "Range specified is not valid for source object of size: N" (as
    s3fs users and versitygw saw it, fsspec/s3fs#321, versity/versitygw#610), not GET's 416; no part is made."""
    s3.put_object(Bucket=bucket, Key="src", Body=b"0123456789")
    upload_id = _start(s3, bucket)
    with s3_error("InvalidArgument", 400, "Range specified is not valid for source object of size: 10"):
        s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=spec)  # fmt: skip
    assert s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id).get("Parts", []) == []


@pytest.mark.parametrize("spec", ["5-10", "bytes=a-b", "bytes=1-", "bytes=0-1,3-4"])
def test_upload_part_copy_range_of_another_form_is_invalid_argument(s3, bucket, spec):
    s3.put_object(Bucket=bucket, Key="src", Body=b"0123456789")
    upload_id = _start(s3, bucket)
    with s3_error("InvalidArgument", 400, "must be of the form bytes=first-last"):
        s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=spec)  # fmt: skip


def test_complete_with_if_none_match_on_existing_key_is_precondition_failed(s3, bucket):
    s3.put_object(Bucket=bucket, Key="mp", Body=b"existing")
    upload_id = _start(s3, bucket)
    parts = [_part(s3, bucket, upload_id, 1, b"new")]
    with s3_error("PreconditionFailed", 412):
        _complete(s3, bucket, upload_id, parts, IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"existing"


def test_complete_with_if_none_match_on_new_key_succeeds(s3, bucket):
    upload_id = _start(s3, bucket)
    parts = [_part(s3, bucket, upload_id, 1, b"new")]
    _complete(s3, bucket, upload_id, parts, IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"new"


def test_part_checksum_is_verified_and_returned(s3, bucket):
    body = b"checksummed part"
    created = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="SHA256")
    assert created["ChecksumAlgorithm"] == "SHA256"
    upload_id = created["UploadId"]
    response = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=body,
                              ChecksumAlgorithm="SHA256")  # fmt: skip
    assert response["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with s3_error("BadDigest", 400):
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=2, Body=body, ChecksumSHA256=wrong)
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)
    assert listed["ChecksumAlgorithm"] == "SHA256"
    assert [(p["PartNumber"], p["ChecksumSHA256"]) for p in listed["Parts"]] == [(1, response["ChecksumSHA256"])]
    parts = [{"PartNumber": 1, "ETag": response["ETag"], "ChecksumSHA256": response["ChecksumSHA256"]}]
    _complete(s3, bucket, upload_id, parts)
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == body


def test_list_uploads_pages_ending_on_a_common_prefix_continue_past_it(s3, bucket):
    for key in ("a/1", "a/2", "b", "c/1", "d"):
        _start(s3, bucket, key=key)
    page = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/", MaxUploads=1)
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/"] and page["IsTruncated"] is True
    assert page["NextKeyMarker"] == "a/"
    paginator = s3.get_paginator("list_multipart_uploads")
    pages = list(paginator.paginate(Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 1}))
    assert [u["Key"] for p in pages for u in p.get("Uploads", [])] == ["b", "d"]
    assert [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])] == ["a/", "c/"]
    assert len(pages) == 4


def _crc(algorithm: str, data: bytes) -> int:
    import zlib

    import crc32c
    from awscrt import checksums

    return {"CRC32": zlib.crc32, "CRC32C": crc32c.crc32c, "CRC64NVME": checksums.crc64nvme}[algorithm](data)


@pytest.mark.parametrize(("algorithm", "width"), [("CRC32", 4), ("CRC32C", 4), ("CRC64NVME", 8)])
def test_full_object_crc_of_a_multipart_object_equals_the_crc_of_its_bytes(s3, bucket, big_parts, algorithm, width):
    created = s3.create_multipart_upload(Bucket=bucket, Key="full", ChecksumAlgorithm=algorithm,
                                         ChecksumType="FULL_OBJECT")  # fmt: skip
    assert created["ChecksumType"] == "FULL_OBJECT"
    upload_id = created["UploadId"]
    bodies = [big_parts[0], b"tail of the object"]
    parts = []
    for number, body in enumerate(bodies, start=1):
        response = s3.upload_part(Bucket=bucket, Key="full", UploadId=upload_id, PartNumber=number, Body=body,
                                  ChecksumAlgorithm=algorithm)  # fmt: skip
        parts.append(
            {"PartNumber": number, "ETag": response["ETag"], f"Checksum{algorithm}": response[f"Checksum{algorithm}"]}
        )
    done = _complete(s3, bucket, upload_id, parts, key="full")
    expected = base64.b64encode(_crc(algorithm, b"".join(bodies)).to_bytes(width, "big")).decode()
    assert done[f"Checksum{algorithm}"] == expected
    head = s3.head_object(Bucket=bucket, Key="full", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == expected
    assert head["ChecksumType"] == "FULL_OBJECT"


def test_composite_checksum_is_the_checksum_of_part_checksums(s3, bucket, big_parts):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="comp", ChecksumAlgorithm="SHA256")["UploadId"]
    bodies = [big_parts[0], b"last"]
    parts, digests = [], []
    for number, body in enumerate(bodies, start=1):
        response = s3.upload_part(Bucket=bucket, Key="comp", UploadId=upload_id, PartNumber=number, Body=body,
                                  ChecksumAlgorithm="SHA256")  # fmt: skip
        parts.append({"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": response["ChecksumSHA256"]})
        digests.append(hashlib.sha256(body).digest())
    _complete(s3, bucket, upload_id, parts, key="comp")
    head = s3.head_object(Bucket=bucket, Key="comp", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode() + "-2"
    assert head["ChecksumType"] == "COMPOSITE"


def test_sha_checksums_cannot_be_full_object(s3, bucket):
    with s3_error("InvalidRequest", 400):
        s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="SHA1", ChecksumType="FULL_OBJECT")


def test_wrong_full_object_checksum_on_complete_is_bad_digest_and_publishes_nothing(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="bad", ChecksumAlgorithm="CRC32C",
                                           ChecksumType="FULL_OBJECT")["UploadId"]  # fmt: skip
    response = s3.upload_part(Bucket=bucket, Key="bad", UploadId=upload_id, PartNumber=1, Body=b"abc",
                              ChecksumAlgorithm="CRC32C")  # fmt: skip
    wrong = base64.b64encode(_crc("CRC32C", b"abd").to_bytes(4, "big")).decode()
    with s3_error("BadDigest", 400):
        _complete(s3, bucket, upload_id, [{"PartNumber": 1, "ETag": response["ETag"]}], key="bad",
                  ChecksumCRC32C=wrong, ChecksumType="FULL_OBJECT")  # fmt: skip
    with s3_error(status=404):
        s3.head_object(Bucket=bucket, Key="bad")


def test_composite_checksum_sent_with_complete_is_compared(s3, bucket, big_parts):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="sent", ChecksumAlgorithm="SHA256")["UploadId"]
    bodies = [big_parts[0], b"end"]
    parts, digests = [], []
    for number, body in enumerate(bodies, start=1):
        response = s3.upload_part(Bucket=bucket, Key="sent", UploadId=upload_id, PartNumber=number, Body=body,
                                  ChecksumAlgorithm="SHA256")  # fmt: skip
        parts.append({"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": response["ChecksumSHA256"]})
        digests.append(hashlib.sha256(body).digest())
    composite = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode() + "-2"
    wrong = base64.b64encode(hashlib.sha256(b"nope").digest()).decode() + "-2"
    with s3_error("BadDigest", 400):
        _complete(s3, bucket, upload_id, parts, key="sent", ChecksumSHA256=wrong)
    done = _complete(s3, bucket, upload_id, parts, key="sent", ChecksumSHA256=composite)
    assert done["ChecksumSHA256"] == composite
