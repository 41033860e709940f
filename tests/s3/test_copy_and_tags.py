"""CopyObject (directives, self-copy, copy-source conditions, large objects), object tagging and object ACLs."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import uuid

import crc32c
import pytest

from apollo.testing.s3calls import get_bytes, md5_etag
from apollo.testing.s3error import s3_error

MIB = 1024 * 1024
HOUR = datetime.timedelta(hours=1)
OTHER_ETAG = '"0123456789abcdef0123456789abcdef"'


def _tags(s3, bucket: str, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


@pytest.fixture
def source(s3, bucket) -> tuple[str, bytes]:
    """(bucket, data) of key "src" with metadata, a content type and a tag."""
    data = b"source object bytes"
    s3.put_object(Bucket=bucket, Key="src", Body=data, ContentType="text/plain", CacheControl="max-age=9",
                  Metadata={"origin": "test"}, Tagging="team=storage")  # fmt: skip
    return bucket, data


# --- CopyObject ------------------------------------------------------------------------------------------------


def test_copy_within_bucket_copies_data_and_metadata(s3, source):
    bucket, data = source
    result = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert result["CopyObjectResult"]["ETag"] == md5_etag(data)
    assert result["CopyObjectResult"]["LastModified"].tzinfo is not None
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == data
    assert got["ContentType"] == "text/plain"
    assert got["CacheControl"] == "max-age=9"
    assert got["Metadata"] == {"origin": "test"}
    assert _tags(s3, bucket, "dst") == {"team": "storage"}
    assert get_bytes(s3, bucket, "src") == data  # the source is untouched


def test_copy_to_another_bucket(s3, source):
    bucket, data = source
    other = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=other)
    s3.copy_object(Bucket=other, Key="copied", CopySource={"Bucket": bucket, "Key": "src"})
    assert get_bytes(s3, other, "copied") == data
    assert s3.head_object(Bucket=other, Key="copied")["Metadata"] == {"origin": "test"}


def test_copy_with_copy_directive_ignores_request_metadata(s3, source):
    bucket, _ = source
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="COPY", Metadata={"ignored": "yes"}, ContentType="image/png")  # fmt: skip
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["Metadata"] == {"origin": "test"}
    assert head["ContentType"] == "text/plain"


def test_copy_with_replace_directive_uses_request_metadata(s3, source):
    bucket, data = source
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"fresh": "1"}, ContentType="image/png")  # fmt: skip
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == data
    assert got["Metadata"] == {"fresh": "1"}
    assert got["ContentType"] == "image/png"
    assert "CacheControl" not in got  # REPLACE drops what the request does not repeat


def test_copy_onto_itself_without_replace_is_invalid_request(s3, source):
    bucket, _ = source
    with s3_error("InvalidRequest", 400):
        s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"})


def test_copy_onto_itself_with_replace_changes_metadata_only(s3, source):
    bucket, data = source
    s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"edited": "true"}, ContentType="text/csv")  # fmt: skip
    got = s3.get_object(Bucket=bucket, Key="src")
    assert got["Body"].read() == data
    assert got["Metadata"] == {"edited": "true"}
    assert got["ContentType"] == "text/csv"
    assert got["ETag"] == md5_etag(data)


def test_copy_replaces_existing_destination(s3, source):
    bucket, data = source
    s3.put_object(Bucket=bucket, Key="dst", Body=b"old destination contents, longer than the source", Tagging="a=b")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert get_bytes(s3, bucket, "dst") == data
    assert _tags(s3, bucket, "dst") == {"team": "storage"}


def test_copy_missing_source_key_is_no_such_key(s3, bucket):
    with s3_error("NoSuchKey", 404):
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "missing"})


def test_copy_missing_source_bucket_is_no_such_bucket(s3, bucket):
    missing = f"test-{uuid.uuid4().hex[:12]}"
    with s3_error("NoSuchBucket", 404):
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": missing, "Key": "src"})


def test_copy_to_missing_destination_bucket_is_no_such_bucket(s3, source):
    bucket, _ = source
    with s3_error("NoSuchBucket", 404):
        s3.copy_object(Bucket=f"test-{uuid.uuid4().hex[:12]}", Key="dst", CopySource={"Bucket": bucket, "Key": "src"})


@pytest.mark.parametrize("size", [0, 20 * MIB + 3], ids=["empty", "20MiB"])
def test_copy_is_byte_exact(s3, bucket, size):
    data = os.urandom(size)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    result = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert result["CopyObjectResult"]["ETag"] == md5_etag(data)
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["ContentLength"] == size
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("key", ["with space", "plus+sign", "ünï/日本", "q?mark#hash", "percent%25"])
def test_copy_source_with_odd_key_names(s3, bucket, key):
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    s3.copy_object(Bucket=bucket, Key=f"copy/{key}", CopySource={"Bucket": bucket, "Key": key})
    assert get_bytes(s3, bucket, f"copy/{key}") == key.encode()


def test_copy_tagging_directive_replace(s3, source):
    bucket, _ = source
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                   TaggingDirective="REPLACE", Tagging="stage=new&x=1")  # fmt: skip
    assert _tags(s3, bucket, "dst") == {"stage": "new", "x": "1"}


def test_copy_keeps_the_source_checksum_algorithm(s3, bucket):
    data = os.urandom(50_000)
    put = s3.put_object(Bucket=bucket, Key="src", Body=data, ChecksumAlgorithm="SHA256")
    result = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert result["CopyObjectResult"]["ChecksumSHA256"] == put["ChecksumSHA256"]
    head = s3.head_object(Bucket=bucket, Key="dst", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == put["ChecksumSHA256"]


def test_copy_with_checksum_algorithm_computes_that_checksum(s3, bucket):
    data = os.urandom(50_000)
    s3.put_object(Bucket=bucket, Key="src", Body=data, ChecksumAlgorithm="SHA256")
    result = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                            ChecksumAlgorithm="CRC32C")  # fmt: skip
    expected = base64.b64encode(crc32c.crc32c(data).to_bytes(4, "big")).decode()
    assert result["CopyObjectResult"]["ChecksumCRC32C"] == expected
    head = s3.head_object(Bucket=bucket, Key="dst", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == expected
    assert "ChecksumSHA256" not in head


def test_copy_if_none_match_star_refuses_an_existing_destination(s3, source):
    bucket, data = source
    s3.put_object(Bucket=bucket, Key="dst", Body=b"keep me")
    with s3_error("PreconditionFailed", 412):
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}, IfNoneMatch="*")
    assert get_bytes(s3, bucket, "dst") == b"keep me"
    s3.copy_object(Bucket=bucket, Key="new", CopySource={"Bucket": bucket, "Key": "src"}, IfNoneMatch="*")
    assert get_bytes(s3, bucket, "new") == data


def test_copy_if_match_on_the_destination(s3, source):
    bucket, data = source
    etag = s3.put_object(Bucket=bucket, Key="dst", Body=b"old")["ETag"]
    with s3_error("PreconditionFailed", 412):
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}, IfMatch=OTHER_ETAG)
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}, IfMatch=etag)
    assert get_bytes(s3, bucket, "dst") == data


def test_copy_with_unknown_metadata_directive_is_invalid_argument(s3, source):
    bucket, _ = source
    s3.meta.events.register_first(
        "before-sign.s3.CopyObject", lambda request, **_: request.headers.__setitem__("x-amz-metadata-directive", "X")
    )
    with s3_error("InvalidArgument", 400):
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})


# --- Copy-source conditions ------------------------------------------------------------------------------------


def _source_state(s3, bucket: str) -> tuple[str, datetime.datetime]:
    head = s3.head_object(Bucket=bucket, Key="src")
    return head["ETag"], head["LastModified"]


def _copy(s3, bucket: str, **conditions) -> dict:
    return s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}, **conditions)


def _copy_fails(s3, bucket: str, **conditions) -> None:
    with s3_error("PreconditionFailed", 412):
        _copy(s3, bucket, **conditions)
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key="dst")


# (condition, the value that fails, the value that passes), from the source's ETag and Last-Modified
SINGLE_CONDITIONS = [
    ("CopySourceIfMatch", lambda etag, modified: OTHER_ETAG, lambda etag, modified: etag),
    ("CopySourceIfNoneMatch", lambda etag, modified: etag, lambda etag, modified: OTHER_ETAG),
    ("CopySourceIfModifiedSince", lambda etag, modified: modified, lambda etag, modified: modified - HOUR),
    ("CopySourceIfUnmodifiedSince", lambda etag, modified: modified - HOUR, lambda etag, modified: modified),
]


@pytest.mark.parametrize(("condition", "failing", "passing"), SINGLE_CONDITIONS, ids=[c[0] for c in SINGLE_CONDITIONS])
def test_copy_source_condition(s3, source, condition, failing, passing):
    bucket, data = source
    state = _source_state(s3, bucket)
    _copy_fails(s3, bucket, **{condition: failing(*state)})
    _copy(s3, bucket, **{condition: passing(*state)})
    assert get_bytes(s3, bucket, "dst") == data


def test_copy_source_if_match_true_overrides_if_unmodified_since_false(s3, source):
    bucket, data = source
    etag, modified = _source_state(s3, bucket)
    _copy(s3, bucket, CopySourceIfMatch=etag, CopySourceIfUnmodifiedSince=modified - HOUR)
    assert get_bytes(s3, bucket, "dst") == data


def test_copy_source_if_none_match_false_with_if_modified_since_true_fails(s3, source):
    bucket, _ = source
    etag, modified = _source_state(s3, bucket)
    _copy_fails(s3, bucket, CopySourceIfNoneMatch=etag, CopySourceIfModifiedSince=modified - HOUR)


# --- Object tagging --------------------------------------------------------------------------------------------


def test_put_get_delete_object_tagging(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []
    tag_set = [{"Key": "project", "Value": "apollo"}, {"Key": "empty", "Value": ""}]
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": tag_set})
    assert _tags(s3, bucket, "k") == {"project": "apollo", "empty": ""}
    response = s3.delete_object_tagging(Bucket=bucket, Key="k")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []
    assert get_bytes(s3, bucket, "k") == b"x"  # tagging never touches the data


def test_put_object_tagging_replaces_the_whole_set(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="a=1&b=2")
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": [{"Key": "c", "Value": "3"}]})
    assert _tags(s3, bucket, "k") == {"c": "3"}


def test_tagging_header_on_put_object_is_url_decoded(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="team=storage&key%20one=v%2B1%26more&blank=")
    assert _tags(s3, bucket, "k") == {"team": "storage", "key one": "v+1&more", "blank": ""}


def test_tagging_count_header_on_head_and_get(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="a=1&b=2&c=3")
    assert s3.head_object(Bucket=bucket, Key="k")["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "3"
    assert s3.get_object(Bucket=bucket, Key="k")["TagCount"] == 3
    s3.delete_object_tagging(Bucket=bucket, Key="k")
    assert "x-amz-tagging-count" not in s3.head_object(Bucket=bucket, Key="k")["ResponseMetadata"]["HTTPHeaders"]


def test_overwriting_an_object_drops_its_tags(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="a=1")
    s3.put_object(Bucket=bucket, Key="k", Body=b"y")
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []


def test_ten_tags_are_allowed(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    tag_set = [{"Key": f"k{n}", "Value": f"v{n}"} for n in range(10)]
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": tag_set})
    assert len(_tags(s3, bucket, "k")) == 10


@pytest.mark.parametrize(
    "tag_set",
    [
        [{"Key": f"k{n}", "Value": "v"} for n in range(11)],
        [{"Key": "k" * 129, "Value": "v"}],
        [{"Key": "k", "Value": "v" * 257}],
        [{"Key": "", "Value": "v"}],
        [{"Key": "dup", "Value": "1"}, {"Key": "dup", "Value": "2"}],
        [{"Key": "aws:reserved", "Value": "v"}],
    ],
    ids=["eleven-tags", "long-key", "long-value", "empty-key", "duplicate-key", "aws-prefix"],
)
def test_invalid_tag_set_is_invalid_tag(server, s3, bucket, tag_set):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="keep=me")
    unvalidated = server.s3(parameter_validation=False)  # boto3 itself refuses an empty key
    with s3_error("InvalidTag", 400):
        unvalidated.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": tag_set})
    assert _tags(s3, bucket, "k") == {"keep": "me"}


def test_invalid_tagging_header_on_put_object_is_invalid_tag(s3, bucket):
    tagging = "&".join(f"k{n}=v" for n in range(11))
    with s3_error("InvalidTag", 400):
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging=tagging)
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key="k")


def test_tagging_on_missing_key_is_no_such_key(s3, bucket):
    with s3_error("NoSuchKey", 404):
        s3.get_object_tagging(Bucket=bucket, Key="missing")
    with s3_error("NoSuchKey", 404):
        s3.put_object_tagging(Bucket=bucket, Key="missing", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})


# --- Object ACLs -----------------------------------------------------------------------------------------------


def test_object_acl_private_roundtrip(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="private")
    s3.put_object_acl(Bucket=bucket, Key="k", ACL="private")
    acl = s3.get_object_acl(Bucket=bucket, Key="k")
    assert [g["Permission"] for g in acl["Grants"]] == ["FULL_CONTROL"]
    assert acl["Grants"][0]["Grantee"]["ID"] == acl["Owner"]["ID"]
    assert acl["Grants"][0]["Grantee"]["Type"] == "CanonicalUser"


def test_object_acls_naming_the_owner_are_accepted(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="bucket-owner-full-control")
    current = s3.get_object_acl(Bucket=bucket, Key="k")
    s3.put_object_acl(Bucket=bucket, Key="k", AccessControlPolicy={"Owner": current["Owner"],
                                                                   "Grants": current["Grants"]})  # fmt: skip
    s3.put_object_acl(Bucket=bucket, Key="k", GrantFullControl=f'id={current["Owner"]["ID"]}')
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k"}, ACL="private")


def test_object_acls_that_would_open_an_object_are_refused_and_store_nothing(s3, bucket):
    """Ignoring them would leave a client believing an object is public (or shared) when it is not."""
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with s3_error("AccessControlListNotSupported", 400):
        s3.put_object_acl(Bucket=bucket, Key="k", ACL="public-read")
    with s3_error("AccessControlListNotSupported", 400):
        s3.put_object(Bucket=bucket, Key="new", Body=b"x", ACL="public-read")
    with s3_error("AccessControlListNotSupported", 400):
        s3.put_object(Bucket=bucket, Key="new", Body=b"x", GrantRead='id="someone-else"')
    with s3_error("AccessControlListNotSupported", 400):
        s3.copy_object(Bucket=bucket, Key="new", CopySource={"Bucket": bucket, "Key": "k"}, ACL="public-read")
    with s3_error("AccessControlListNotSupported", 400):
        s3.create_multipart_upload(Bucket=bucket, Key="new", ACL="authenticated-read")
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key="new")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_object_acl_on_missing_key_is_no_such_key(s3, bucket):
    with s3_error("NoSuchKey", 404):
        s3.get_object_acl(Bucket=bucket, Key="missing")
    with s3_error("NoSuchKey", 404):
        s3.put_object_acl(Bucket=bucket, Key="missing", ACL="private")
