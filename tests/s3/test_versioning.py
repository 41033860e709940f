"""Bucket versioning through boto3: states, version ids, delete markers, ListObjectVersions, suspended "null"."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from apollo.testing.s3error import s3_error


def _etag(body: bytes) -> str:
    return f'"{hashlib.md5(body).hexdigest()}"'


def _enable(s3, bucket: str, status: str = "Enabled") -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})


@pytest.fixture
def versioned(s3, bucket) -> str:
    _enable(s3, bucket)
    return bucket


def _put(s3, bucket: str, key: str, body: bytes) -> str:
    return s3.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]


def _versions(s3, bucket: str, **kwargs) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is delete marker), in listing order (key, then newest first)."""
    page = s3.list_object_versions(Bucket=bucket, **kwargs)
    rows = [(v["Key"], v["VersionId"], v["IsLatest"], False, v["LastModified"]) for v in page.get("Versions", [])]
    rows += [(m["Key"], m["VersionId"], m["IsLatest"], True, m["LastModified"]) for m in page.get("DeleteMarkers", [])]
    return [r[:4] for r in rows]


# bucket versioning state -----------------------------------------------------------------------


def test_fresh_bucket_has_no_versioning_status(s3, bucket):
    response = s3.get_bucket_versioning(Bucket=bucket)
    assert "Status" not in response
    assert "MFADelete" not in response


def test_versioning_can_be_enabled_then_suspended(s3, bucket):
    _enable(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    _enable(s3, bucket, "Suspended")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    _enable(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


def test_invalid_versioning_status_is_malformed_xml(s3, bucket):
    with s3_error("MalformedXML", 400):
        _enable(s3, bucket, "On")
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)


def test_versioning_of_missing_bucket_is_no_such_bucket(s3):
    with s3_error("NoSuchBucket", 404):
        s3.get_bucket_versioning(Bucket=f"missing-{uuid.uuid4().hex[:12]}")


# versions ---------------------------------------------------------------------------------------


def test_put_twice_gives_two_readable_versions(s3, versioned):
    first = _put(s3, versioned, "k", b"one")
    second = _put(s3, versioned, "k", b"two")
    assert first != second
    assert s3.get_object(Bucket=versioned, Key="k")["Body"].read() == b"two"
    old = s3.get_object(Bucket=versioned, Key="k", VersionId=first)
    assert old["Body"].read() == b"one"
    assert old["VersionId"] == first
    assert old["ETag"] == _etag(b"one")


def test_head_by_version_id(s3, versioned):
    first = _put(s3, versioned, "k", b"first body")
    _put(s3, versioned, "k", b"2")
    head = s3.head_object(Bucket=versioned, Key="k", VersionId=first)
    assert head["ContentLength"] == len(b"first body")
    assert head["ETag"] == _etag(b"first body")
    assert head["VersionId"] == first


def test_get_latest_reports_its_version_id(s3, versioned):
    latest = _put(s3, versioned, "k", b"x")
    assert s3.get_object(Bucket=versioned, Key="k")["VersionId"] == latest


def test_delete_by_version_id_removes_exactly_that_version(s3, versioned):
    first = _put(s3, versioned, "k", b"one")
    second = _put(s3, versioned, "k", b"two")
    response = s3.delete_object(Bucket=versioned, Key="k", VersionId=second)
    assert response["VersionId"] == second
    assert response["DeleteMarker"] is False  # what went was a version, not a delete marker
    assert _versions(s3, versioned) == [("k", first, True, False)]
    assert s3.get_object(Bucket=versioned, Key="k")["Body"].read() == b"one"


def test_delete_of_an_older_version_keeps_the_latest(s3, versioned):
    first = _put(s3, versioned, "k", b"one")
    second = _put(s3, versioned, "k", b"two")
    s3.delete_object(Bucket=versioned, Key="k", VersionId=first)
    assert _versions(s3, versioned) == [("k", second, True, False)]


def test_unknown_version_id_is_no_such_version(s3, versioned):
    _put(s3, versioned, "k", b"x")
    with s3_error("NoSuchVersion", 404):
        s3.get_object(Bucket=versioned, Key="k", VersionId=uuid.uuid4().hex)
    with s3_error(status=404):
        s3.head_object(Bucket=versioned, Key="k", VersionId=uuid.uuid4().hex)


@pytest.mark.parametrize("version_id", ["not-a-version", "", "A" * 32])
def test_malformed_version_id_is_invalid_argument(s3, versioned, version_id):
    _put(s3, versioned, "k", b"x")
    with s3_error("InvalidArgument", 400):
        s3.get_object(Bucket=versioned, Key="k", VersionId=version_id)
    with s3_error("InvalidArgument", 400):
        s3.delete_object(Bucket=versioned, Key="k", VersionId=version_id)
    assert s3.get_object(Bucket=versioned, Key="k")["Body"].read() == b"x"


# delete markers ---------------------------------------------------------------------------------


def test_delete_without_version_creates_a_delete_marker(s3, versioned):
    original = _put(s3, versioned, "k", b"x")
    response = s3.delete_object(Bucket=versioned, Key="k")
    assert response["DeleteMarker"] is True
    marker = response["VersionId"]
    assert marker not in (original, "null")
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    assert _versions(s3, versioned) == [("k", original, False, False), ("k", marker, True, True)]


def test_get_after_delete_marker_is_no_such_key_with_marker_headers(s3, versioned):
    _put(s3, versioned, "k", b"x")
    marker = s3.delete_object(Bucket=versioned, Key="k")["VersionId"]
    with s3_error("NoSuchKey", 404) as exc:
        s3.get_object(Bucket=versioned, Key="k")
    assert exc.headers["x-amz-delete-marker"] == "true"
    assert exc.headers["x-amz-version-id"] == marker
    with s3_error(status=404) as exc:
        s3.head_object(Bucket=versioned, Key="k")
    assert exc.headers["x-amz-delete-marker"] == "true"


def test_get_by_delete_marker_id_is_method_not_allowed(s3, versioned):
    _put(s3, versioned, "k", b"x")
    marker = s3.delete_object(Bucket=versioned, Key="k")["VersionId"]
    with s3_error("MethodNotAllowed", 405) as exc:
        s3.get_object(Bucket=versioned, Key="k", VersionId=marker)
    assert exc.headers["x-amz-delete-marker"] == "true"
    assert exc.headers["allow"] == "DELETE"


def test_older_version_is_still_readable_behind_a_delete_marker(s3, versioned):
    original = _put(s3, versioned, "k", b"kept")
    s3.delete_object(Bucket=versioned, Key="k")
    assert s3.get_object(Bucket=versioned, Key="k", VersionId=original)["Body"].read() == b"kept"


def test_deleting_the_delete_marker_restores_the_object(s3, versioned):
    original = _put(s3, versioned, "k", b"back")
    marker = s3.delete_object(Bucket=versioned, Key="k")["VersionId"]
    response = s3.delete_object(Bucket=versioned, Key="k", VersionId=marker)
    assert response["DeleteMarker"] is True
    assert response["VersionId"] == marker
    got = s3.get_object(Bucket=versioned, Key="k")
    assert got["Body"].read() == b"back" and got["VersionId"] == original
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=versioned)["Contents"]] == ["k"]


def test_listing_hides_keys_whose_latest_is_a_delete_marker(s3, versioned):
    for key in ("a", "b", "c"):
        _put(s3, versioned, key, b"x")
    s3.delete_object(Bucket=versioned, Key="b")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=versioned)["Contents"]] == ["a", "c"]
    page = s3.list_objects_v2(Bucket=versioned, MaxKeys=1, StartAfter="a")
    assert [o["Key"] for o in page["Contents"]] == ["c"] and page["IsTruncated"] is False


def test_delete_marker_on_a_missing_key_is_still_created(s3, versioned):
    response = s3.delete_object(Bucket=versioned, Key="never-written")
    assert response["DeleteMarker"] is True
    assert _versions(s3, versioned) == [("never-written", response["VersionId"], True, True)]


# ListObjectVersions -----------------------------------------------------------------------------


def test_list_versions_newest_first_with_markers(s3, versioned):
    a1 = _put(s3, versioned, "a", b"1")
    a2 = _put(s3, versioned, "a", b"22")
    b1 = _put(s3, versioned, "b", b"333")
    marker = s3.delete_object(Bucket=versioned, Key="b")["VersionId"]
    page = s3.list_object_versions(Bucket=versioned)
    assert [(v["Key"], v["VersionId"], v["IsLatest"], v["Size"]) for v in page["Versions"]] == [
        ("a", a2, True, 2), ("a", a1, False, 1), ("b", b1, False, 3),
    ]  # fmt: skip
    assert page["Versions"][0]["ETag"] == _etag(b"22")
    assert [(m["Key"], m["VersionId"], m["IsLatest"]) for m in page["DeleteMarkers"]] == [("b", marker, True)]
    assert page["IsTruncated"] is False


def test_list_versions_pagination_with_key_and_version_markers(s3, versioned):
    expected = []
    for key in ("a", "b"):
        ids = [_put(s3, versioned, key, b"x") for _ in range(3)]
        expected += [(key, vid) for vid in reversed(ids)]
    page = s3.list_object_versions(Bucket=versioned, MaxKeys=2)
    assert [(v["Key"], v["VersionId"]) for v in page["Versions"]] == expected[:2]
    assert page["IsTruncated"] is True
    assert (page["NextKeyMarker"], page["NextVersionIdMarker"]) == expected[1]
    page = s3.list_object_versions(Bucket=versioned, MaxKeys=3, KeyMarker=page["NextKeyMarker"],
                                   VersionIdMarker=page["NextVersionIdMarker"])  # fmt: skip
    assert [(v["Key"], v["VersionId"]) for v in page["Versions"]] == expected[2:5]
    assert page["KeyMarker"] == "a" and page["VersionIdMarker"] == expected[1][1]
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=versioned, PaginationConfig={"PageSize": 1})
    assert [(v["Key"], v["VersionId"]) for p in pages for v in p.get("Versions", [])] == expected


def test_list_versions_key_marker_alone_skips_that_whole_key(s3, versioned):
    for key in ("a", "b"):
        _put(s3, versioned, key, b"x")
        _put(s3, versioned, key, b"y")
    page = s3.list_object_versions(Bucket=versioned, KeyMarker="a")
    assert {v["Key"] for v in page["Versions"]} == {"b"} and len(page["Versions"]) == 2


def test_list_versions_prefix_and_delimiter(s3, versioned):
    for key in ("d/1", "d/2", "d/sub/3", "e"):
        _put(s3, versioned, key, b"x")
    s3.delete_object(Bucket=versioned, Key="d/2")
    page = s3.list_object_versions(Bucket=versioned, Prefix="d/", Delimiter="/")
    assert [v["Key"] for v in page["Versions"]] == ["d/1", "d/2"]
    assert [m["Key"] for m in page["DeleteMarkers"]] == ["d/2"]
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["d/sub/"]
    assert page["Prefix"] == "d/" and page["Delimiter"] == "/"


def test_list_versions_of_missing_bucket_is_no_such_bucket(s3):
    with s3_error("NoSuchBucket", 404):
        s3.list_object_versions(Bucket=f"missing-{uuid.uuid4().hex[:12]}")


# suspended and unversioned buckets --------------------------------------------------------------


def test_suspended_bucket_overwrites_the_null_version(s3, versioned):
    kept = _put(s3, versioned, "k", b"enabled-era")
    _enable(s3, versioned, "Suspended")
    s3.put_object(Bucket=versioned, Key="k", Body=b"null-1")
    s3.put_object(Bucket=versioned, Key="k", Body=b"null-2")
    assert _versions(s3, versioned) == [("k", "null", True, False), ("k", kept, False, False)]
    assert s3.get_object(Bucket=versioned, Key="k", VersionId="null")["Body"].read() == b"null-2"
    assert s3.get_object(Bucket=versioned, Key="k", VersionId=kept)["Body"].read() == b"enabled-era"


def test_suspended_delete_makes_a_null_delete_marker(s3, versioned):
    kept = _put(s3, versioned, "k", b"x")
    _enable(s3, versioned, "Suspended")
    s3.put_object(Bucket=versioned, Key="k", Body=b"null body")
    response = s3.delete_object(Bucket=versioned, Key="k")
    assert response["DeleteMarker"] is True and response["VersionId"] == "null"
    assert _versions(s3, versioned) == [("k", kept, False, False), ("k", "null", True, True)]


def test_unversioned_object_is_readable_as_version_null(s3, bucket):
    response = s3.put_object(Bucket=bucket, Key="k", Body=b"plain")
    assert "VersionId" not in response
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"plain"
    assert s3.head_object(Bucket=bucket, Key="k", VersionId="null")["ContentLength"] == 5
    assert _versions(s3, bucket) == [("k", "null", True, False)]


def test_unversioned_delete_removes_the_object_without_marker(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"plain")
    response = s3.delete_object(Bucket=bucket, Key="k")
    assert response["DeleteMarker"] is False  # the header says false: no marker was made
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "false"
    assert _versions(s3, bucket) == []


def test_versions_written_before_enabling_keep_version_null(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"before")
    _enable(s3, bucket)
    after = _put(s3, bucket, "k", b"after")
    assert _versions(s3, bucket) == [("k", after, True, False), ("k", "null", False, False)]
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"before"


def test_version_id_marker_without_key_marker_is_invalid_argument(s3, versioned):
    vid = _put(s3, versioned, "k", b"x")
    with s3_error("InvalidArgument", 400):
        s3.list_object_versions(Bucket=versioned, VersionIdMarker=vid)


def test_a_malformed_version_id_marker_is_invalid_argument(s3, versioned):
    _put(s3, versioned, "k", b"x")
    with s3_error("InvalidArgument", 400):
        s3.list_object_versions(Bucket=versioned, KeyMarker="k", VersionIdMarker="not-a-version-of-ours")


def test_a_cleanup_tool_empties_a_bucket_page_by_page_past_the_versions_it_deleted(s3, versioned):
    """What cleanup tools do (issue 16, "breaks tools"): list a page, delete every version in it, ask for the
    next page after the last one, which is gone by then. Markers are positions; nothing may be skipped."""
    for n in range(7):
        for key in ("a", "b", "c"):
            _put(s3, versioned, key, f"{key}{n}".encode())
        s3.delete_object(Bucket=versioned, Key="b")  # delete markers among the versions too
    total = len(_versions(s3, versioned))
    deleted, markers = 0, {}
    while True:
        page = s3.list_object_versions(Bucket=versioned, MaxKeys=4, **markers)
        entries = page.get("Versions", []) + page.get("DeleteMarkers", [])
        for entry in entries:
            s3.delete_object(Bucket=versioned, Key=entry["Key"], VersionId=entry["VersionId"])
        deleted += len(entries)
        if not page["IsTruncated"]:
            break
        markers = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
    assert deleted == total == 28
    assert _versions(s3, versioned) == []
    s3.delete_bucket(Bucket=versioned)


def test_a_gone_version_marker_resumes_at_the_keys_newest_remaining_version(s3, versioned):
    ids = [_put(s3, versioned, "k", bytes([n])) for n in range(4)]  # newest last
    s3.delete_object(Bucket=versioned, Key="k", VersionId=ids[2])
    page = s3.list_object_versions(Bucket=versioned, KeyMarker="k", VersionIdMarker=ids[2])
    assert [v["VersionId"] for v in page["Versions"]] == [ids[3], ids[1], ids[0]]  # none skipped


def test_prefix_holding_only_delete_markers_is_not_listed(s3, versioned):
    for key in ("gone/1", "gone/2", "kept/1"):
        _put(s3, versioned, key, b"x")
    for key in ("gone/1", "gone/2"):
        s3.delete_object(Bucket=versioned, Key=key)
    page = s3.list_objects_v2(Bucket=versioned, Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["kept/"]
    assert page["KeyCount"] == 1
    versions = s3.list_object_versions(Bucket=versioned, Delimiter="/")  # versions still show it
    assert [p["Prefix"] for p in versions["CommonPrefixes"]] == ["gone/", "kept/"]


def test_list_versions_pages_ending_on_a_common_prefix_continue_past_it(s3, versioned):
    for key in ("a/1", "a/2", "b", "c/1"):
        _put(s3, versioned, key, b"x")
    page = s3.list_object_versions(Bucket=versioned, Delimiter="/", MaxKeys=1)
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/"] and page["NextKeyMarker"] == "a/"
    pages = list(s3.get_paginator("list_object_versions").paginate(Bucket=versioned, Delimiter="/",
                                                                   PaginationConfig={"PageSize": 1}))  # fmt: skip
    assert [v["Key"] for p in pages for v in p.get("Versions", [])] == ["b"]
    assert [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])] == ["a/", "c/"]
