"""DeleteObjects (multi-object delete) through boto3: per-key results, Quiet mode, limits, versioned buckets."""

from __future__ import annotations

import uuid

from apollo.testing.s3error import s3_error


def _delete(s3, bucket: str, objects: list[dict], quiet: bool = False) -> dict:
    return s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": quiet})


def _keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_batch_delete_reports_every_key_including_missing(s3, bucket):
    for key in ("a", "b", "keep"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    response = _delete(s3, bucket, [{"Key": "a"}, {"Key": "b"}, {"Key": "never-existed"}])
    assert sorted(d["Key"] for d in response["Deleted"]) == ["a", "b", "never-existed"]
    assert "Errors" not in response
    assert all("DeleteMarker" not in d and "VersionId" not in d for d in response["Deleted"])
    assert _keys(s3, bucket) == ["keep"]


def test_quiet_mode_returns_no_deleted_entries(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    response = _delete(s3, bucket, [{"Key": "a"}, {"Key": "missing"}], quiet=True)
    assert "Deleted" not in response and "Errors" not in response
    assert _keys(s3, bucket) == []


def test_keys_with_special_characters(s3, bucket):
    keys = ["dir/with space", "ünïcödé", "amp&lt;<>", "plus+sign"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    response = _delete(s3, bucket, [{"Key": k} for k in keys])
    assert sorted(d["Key"] for d in response["Deleted"]) == sorted(keys)
    assert _keys(s3, bucket) == []


def test_exactly_1000_keys_is_accepted(s3, bucket):
    response = _delete(s3, bucket, [{"Key": f"k{n}"} for n in range(1000)], quiet=True)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_more_than_1000_keys_is_malformed_xml(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k0", Body=b"x")
    with s3_error("MalformedXML", 400):
        _delete(s3, bucket, [{"Key": f"k{n}"} for n in range(1001)])
    assert _keys(s3, bucket) == ["k0"]  # nothing was deleted


def test_empty_object_list_is_malformed_xml(s3, bucket):
    with s3_error("MalformedXML", 400):
        _delete(s3, bucket, [])


def test_delete_objects_in_missing_bucket_is_no_such_bucket(s3):
    with s3_error("NoSuchBucket", 404):
        _delete(s3, f"missing-{uuid.uuid4().hex[:12]}", [{"Key": "a"}])


def test_versioned_batch_delete_creates_delete_markers(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    kept = {k: s3.put_object(Bucket=bucket, Key=k, Body=b"x")["VersionId"] for k in ("a", "b")}
    response = _delete(s3, bucket, [{"Key": "a"}, {"Key": "b"}])
    deleted = {d["Key"]: d for d in response["Deleted"]}
    assert set(deleted) == {"a", "b"}
    for key, entry in deleted.items():
        assert entry["DeleteMarker"] is True
        assert entry["DeleteMarkerVersionId"] not in (kept[key], "null")
    assert _keys(s3, bucket) == []
    versions = s3.list_object_versions(Bucket=bucket)
    assert sorted((m["Key"], m["VersionId"]) for m in versions["DeleteMarkers"]) == sorted(
        (k, deleted[k]["DeleteMarkerVersionId"]) for k in ("a", "b")
    )
    assert sorted((v["Key"], v["VersionId"]) for v in versions["Versions"]) == sorted(kept.items())


def test_batch_delete_with_version_id_removes_exactly_that_version(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"two")["VersionId"]
    response = _delete(s3, bucket, [{"Key": "k", "VersionId": second}])
    assert response["Deleted"] == [{"Key": "k", "VersionId": second}]
    versions = s3.list_object_versions(Bucket=bucket)
    assert [(v["VersionId"], v["IsLatest"]) for v in versions["Versions"]] == [(first, True)]
    assert "DeleteMarkers" not in versions
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"one"


def test_batch_delete_of_a_delete_marker_by_version_id_restores_the_object(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"back")
    marker = _delete(s3, bucket, [{"Key": "k"}])["Deleted"][0]["DeleteMarkerVersionId"]
    response = _delete(s3, bucket, [{"Key": "k", "VersionId": marker}])
    assert response["Deleted"] == [{"Key": "k", "VersionId": marker, "DeleteMarker": True,
                                    "DeleteMarkerVersionId": marker}]  # fmt: skip
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"back"


def test_batch_delete_mixing_versioned_and_plain_entries(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old = s3.put_object(Bucket=bucket, Key="a", Body=b"1")["VersionId"]
    s3.put_object(Bucket=bucket, Key="a", Body=b"2")
    s3.put_object(Bucket=bucket, Key="b", Body=b"3")
    response = _delete(s3, bucket, [{"Key": "a", "VersionId": old}, {"Key": "b"}])
    deleted = {d["Key"]: d for d in response["Deleted"]}
    assert deleted["a"] == {"Key": "a", "VersionId": old}
    assert deleted["b"]["DeleteMarker"] is True
    assert _keys(s3, bucket) == ["a"]
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"2"
