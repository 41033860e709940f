"""GetObjectAttributes: ETag, checksum, size and part layout without the bytes."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from apollo.testing.s3error import s3_error

MIB5 = 5 * 1024 * 1024


def test_attributes_of_a_plain_object(s3, bucket):
    body = b"attributes please"
    s3.put_object(Bucket=bucket, Key="plain", Body=body, ChecksumAlgorithm="SHA256")
    got = s3.get_object_attributes(Bucket=bucket, Key="plain",
                                   ObjectAttributes=["ETag", "Checksum", "ObjectSize", "StorageClass"])  # fmt: skip
    assert got["ETag"] == hashlib.md5(body).hexdigest()
    assert got["ObjectSize"] == len(body)
    assert got["StorageClass"] == "STANDARD"
    assert got["Checksum"] == {"ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
                               "ChecksumType": "FULL_OBJECT"}  # fmt: skip
    assert "ObjectParts" not in got
    assert "LastModified" in got


def test_only_the_requested_attributes_come_back(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    got = s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["ObjectSize"])
    assert got["ObjectSize"] == 1
    assert "ETag" not in got and "StorageClass" not in got


def test_object_parts_page_through_a_multipart_object(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    bodies = [b"a" * MIB5, b"b" * MIB5, b"tail"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=n,
                                                      Body=body)["ETag"]}
             for n, body in enumerate(bodies, start=1)]  # fmt: skip
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts})
    first = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=2)
    assert first["ObjectParts"]["TotalPartsCount"] == 3
    assert first["ObjectParts"]["IsTruncated"] is True
    assert [(p["PartNumber"], p["Size"]) for p in first["ObjectParts"]["Parts"]] == [(1, MIB5), (2, MIB5)]
    rest = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"],
                                    PartNumberMarker=first["ObjectParts"]["NextPartNumberMarker"])  # fmt: skip
    assert [(p["PartNumber"], p["Size"]) for p in rest["ObjectParts"]["Parts"]] == [(3, 4)]
    assert rest["ObjectParts"]["IsTruncated"] is False


@pytest.mark.parametrize(("algorithm", "checksum_type"), [("SHA256", "COMPOSITE"), ("CRC32C", "COMPOSITE"),
                                                         ("CRC32", "FULL_OBJECT"), ("CRC64NVME", "FULL_OBJECT")])
def test_a_multipart_objects_checksums_whole_and_per_part(s3, bucket, algorithm, checksum_type):
    """What a verifying downloader reads: the object's checksum with its type, and each part's checksum as
    UploadPart answered it; ListParts says the type while the upload is open."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm=algorithm,
                                           ChecksumType=checksum_type)["UploadId"]  # fmt: skip
    sent = []
    for number, body in enumerate([os.urandom(MIB5), b"tail"], start=1):
        answer = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=number, Body=body,
                                ChecksumAlgorithm=algorithm)  # fmt: skip
        checksum = answer[f"Checksum{algorithm}"]
        sent.append({"PartNumber": number, "ETag": answer["ETag"], f"Checksum{algorithm}": checksum})
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)
    assert (listed["ChecksumAlgorithm"], listed["ChecksumType"]) == (algorithm, checksum_type)
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": sent})
    assert done["ChecksumType"] == checksum_type
    got = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["Checksum", "ObjectParts"])
    assert got["Checksum"] == {f"Checksum{algorithm}": done[f"Checksum{algorithm}"], "ChecksumType": checksum_type}
    per_part = [{"PartNumber": p["PartNumber"], f"Checksum{algorithm}": p[f"Checksum{algorithm}"]} for p in sent]
    assert [{k: v for k, v in p.items() if k != "Size"} for p in got["ObjectParts"]["Parts"]] == per_part


def test_unknown_attribute_and_missing_key(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with s3_error("InvalidArgument"):
        s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["Colour"])
    with s3_error("NoSuchKey"):
        s3.get_object_attributes(Bucket=bucket, Key="missing", ObjectAttributes=["ETag"])
