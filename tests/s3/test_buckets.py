"""Bucket operations through boto3: create, list, head, delete, location, names, ACL, unsupported APIs."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET

import boto3
import pytest
from signed_http import send

from apollo.testing.admin import admin
from apollo.testing.s3error import s3_error


def _new_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def test_create_bucket_appears_in_list_buckets(s3):
    name = _new_name()
    s3.create_bucket(Bucket=name)
    listed = s3.list_buckets()
    entry = next(b for b in listed["Buckets"] if b["Name"] == name)
    assert entry["CreationDate"].tzinfo is not None
    assert listed["Owner"]["ID"]


def test_list_buckets_is_sorted_by_name(s3):
    names = [f"test-sort-{uuid.uuid4().hex[:8]}-{suffix}" for suffix in ("b", "a", "c")]
    for name in names:
        s3.create_bucket(Bucket=name)
    listed = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    positions = [listed.index(name) for name in sorted(names)]
    assert positions == sorted(positions)


def test_list_buckets_prefix_filters_and_is_echoed(s3):
    prefix = f"test-pfx-{uuid.uuid4().hex[:8]}-"
    names = [prefix + suffix for suffix in ("a", "b")]
    for name in names:
        s3.create_bucket(Bucket=name)
    listed = s3.list_buckets(Prefix=prefix)
    assert [b["Name"] for b in listed["Buckets"]] == names
    assert listed["Prefix"] == prefix
    assert "ContinuationToken" not in listed


def test_list_buckets_pages_with_max_buckets(s3):
    prefix = f"test-page-{uuid.uuid4().hex[:8]}-"
    names = [f"{prefix}{n}" for n in range(5)]
    for name in names:
        s3.create_bucket(Bucket=name)
    first = s3.list_buckets(Prefix=prefix, MaxBuckets=2)
    assert [b["Name"] for b in first["Buckets"]] == names[:2]
    second = s3.list_buckets(Prefix=prefix, MaxBuckets=2, ContinuationToken=first["ContinuationToken"])
    assert [b["Name"] for b in second["Buckets"]] == names[2:4]
    third = s3.list_buckets(Prefix=prefix, MaxBuckets=2, ContinuationToken=second["ContinuationToken"])
    assert [b["Name"] for b in third["Buckets"]] == names[4:]
    assert "ContinuationToken" not in third
    paged = s3.get_paginator("list_buckets").paginate(Prefix=prefix, PaginationConfig={"PageSize": 2})
    assert [b["Name"] for page in paged for b in page["Buckets"]] == names


@pytest.mark.parametrize("max_buckets", [0, 10001])
def test_list_buckets_max_buckets_out_of_range_is_invalid_argument(server, max_buckets):
    unvalidated = server.s3(parameter_validation=False)
    with s3_error("InvalidArgument", 400):
        unvalidated.list_buckets(MaxBuckets=max_buckets)


def test_create_bucket_twice_is_already_owned_by_you(s3, bucket):
    s3.put_object(Bucket=bucket, Key="kept", Body=b"x")
    with s3_error("BucketAlreadyOwnedByYou", 409):
        s3.create_bucket(Bucket=bucket)
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"x"  # nothing erased


def test_another_keys_bucket_already_exists(server, s3):
    """Once keys own buckets, a name someone else holds answers BucketAlreadyExists, as AWS does to
    anyone but the owner."""
    made = admin("key", "create", meta_dir=server.meta_dir)
    key, secret = made.split("access key: ")[1].split()[0], made.split("secret key: ")[1].split()[0]
    user = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                        region_name="us-east-1")  # fmt: skip
    name = _new_name()
    user.create_bucket(Bucket=name)
    with s3_error("BucketAlreadyOwnedByYou", 409):
        user.create_bucket(Bucket=name)
    other = admin("key", "create", meta_dir=server.meta_dir)
    other_client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                                aws_access_key_id=other.split("access key: ")[1].split()[0],
                                aws_secret_access_key=other.split("secret key: ")[1].split()[0])  # fmt: skip
    with s3_error("BucketAlreadyExists", 409):
        other_client.create_bucket(Bucket=name)


def test_bucket_tagging_put_get_delete(s3, bucket):
    with s3_error("NoSuchTagSet", 404):
        s3.get_bucket_tagging(Bucket=bucket)
    tags = [{"Key": f"k{n}", "Value": f"v{n}"} for n in range(50)]
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags})
    assert sorted(s3.get_bucket_tagging(Bucket=bucket)["TagSet"], key=lambda t: t["Key"]) == sorted(
        tags, key=lambda t: t["Key"])  # a set: S3 promises no order
    with s3_error("InvalidTag", 400):  # 51: one over S3's bucket limit, and nothing changes
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [*tags, {"Key": "one", "Value": "more"}]})
    assert len(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == 50
    s3.delete_bucket_tagging(Bucket=bucket)
    with s3_error("NoSuchTagSet", 404):
        s3.get_bucket_tagging(Bucket=bucket)
    with s3_error("NoSuchBucket", 404):
        s3.get_bucket_tagging(Bucket=_new_name())


def test_create_bucket_with_location_constraint_is_accepted(s3):
    name = _new_name()
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.head_bucket(Bucket=name)


def test_head_bucket_existing_answers_200(s3, bucket):
    response = s3.head_bucket(Bucket=bucket)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_head_bucket_missing_answers_404(s3):
    # HEAD has no body: botocore reports the bare status as the code.
    with s3_error("404", 404):
        s3.head_bucket(Bucket=_new_name())


def test_delete_empty_bucket_then_it_is_gone(s3, bucket):
    response = s3.delete_bucket(Bucket=bucket)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with s3_error("404", 404):
        s3.head_bucket(Bucket=bucket)


def test_delete_non_empty_bucket_is_bucket_not_empty(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with s3_error("BucketNotEmpty", 409):
        s3.delete_bucket(Bucket=bucket)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


def test_delete_bucket_after_its_objects_are_deleted(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="k")
    s3.delete_bucket(Bucket=bucket)
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_delete_missing_bucket_is_no_such_bucket(s3):
    with s3_error("NoSuchBucket", 404):
        s3.delete_bucket(Bucket=_new_name())


def test_bucket_name_can_be_reused_after_delete(s3, bucket):
    s3.delete_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=bucket)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_object_operations_on_missing_bucket_are_no_such_bucket(s3):
    name = _new_name()
    with s3_error("NoSuchBucket", 404):
        s3.put_object(Bucket=name, Key="k", Body=b"x")
    with s3_error("NoSuchBucket", 404):
        s3.get_object(Bucket=name, Key="k")


def test_get_bucket_location_is_us_east_1(s3, bucket):
    # us-east-1 is the empty LocationConstraint, which boto3 reports as None.
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] is None


def test_get_bucket_location_missing_bucket(s3):
    with s3_error("NoSuchBucket", 404):
        s3.get_bucket_location(Bucket=_new_name())


@pytest.mark.parametrize(
    "name",
    [
        "ab",  # too short
        "a" * 64,  # too long
        "UpperCase",
        "192.168.5.4",  # IP-address-like
        "my..bucket",
        "-leading-dash",
        "trailing-dash-",
        "under_score",
        "dot.-dash",
        "xn--prefix",
    ],
)
def test_invalid_bucket_name_is_rejected(s3, name):
    with s3_error("InvalidBucketName", 400):
        s3.create_bucket(Bucket=name)


@pytest.mark.parametrize(
    "make_name",
    [
        lambda tag: tag[:3],  # shortest allowed
        lambda tag: ("edge-" + tag * 4)[:63],  # longest allowed
        lambda tag: f"a.b.c.{tag}",
        lambda tag: f"1-2-3-{tag}",
        lambda tag: f"my.bucket-name.{tag}",
    ],
    ids=["3-chars", "63-chars", "dots", "digits-and-dashes", "dots-and-dashes"],
)
def test_valid_edge_bucket_names_are_accepted(s3, make_name):
    name = make_name(uuid.uuid4().hex)
    s3.create_bucket(Bucket=name)
    s3.head_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets(Prefix=name)["Buckets"]]


def test_get_bucket_acl_is_owner_full_control(s3, bucket):
    acl = s3.get_bucket_acl(Bucket=bucket)
    owner_id = acl["Owner"]["ID"]
    assert owner_id
    assert len(acl["Grants"]) == 1
    grant = acl["Grants"][0]
    assert grant["Permission"] == "FULL_CONTROL"
    assert grant["Grantee"]["ID"] == owner_id
    assert grant["Grantee"]["Type"] == "CanonicalUser"


def test_get_bucket_acl_missing_bucket(s3):
    with s3_error("NoSuchBucket", 404):
        s3.get_bucket_acl(Bucket=_new_name())


ALL_USERS = 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'


def _policy_granting(acl: dict, grantee: dict, permission: str = "READ") -> dict:
    return {"Owner": acl["Owner"], "Grants": [*acl["Grants"], {"Grantee": grantee, "Permission": permission}]}


def test_bucket_acls_that_name_only_the_owner_are_accepted(s3, bucket):
    """ACLs are disabled, as on an AWS bucket with Object Ownership BucketOwnerEnforced: what says the owner
    has full control (canned, grant header, or the document GetBucketAcl returned) is accepted."""
    current = s3.get_bucket_acl(Bucket=bucket)
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    s3.put_bucket_acl(Bucket=bucket, GrantFullControl=f'id="{current["Owner"]["ID"]}"')
    s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy={"Owner": current["Owner"], "Grants": current["Grants"]})
    s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=current["Owner"]["ID"])
    assert s3.get_bucket_acl(Bucket=bucket)["Grants"] == current["Grants"]


def test_bucket_acls_that_grant_more_are_refused(s3, bucket):
    current = s3.get_bucket_acl(Bucket=bucket)
    with s3_error("AccessControlListNotSupported", 400, "The bucket does not allow ACLs"):
        s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    with s3_error("AccessControlListNotSupported", 400):
        s3.put_bucket_acl(Bucket=bucket, GrantRead=ALL_USERS)
    with s3_error("AccessControlListNotSupported", 400):
        s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=_policy_granting(
            current, {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"}))  # fmt: skip
    with s3_error("AccessControlListNotSupported", 400):
        s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=_policy_granting(
            current, {"Type": "CanonicalUser", "ID": "someone-else"}, "FULL_CONTROL"))  # fmt: skip
    with s3_error("InvalidRequest", 400, "Specifying both Canned ACLs and Header Grants is not allowed"):
        s3.put_bucket_acl(Bucket=bucket, ACL="private", GrantFullControl='id="apollo"')
    assert s3.get_bucket_acl(Bucket=bucket)["Grants"] == current["Grants"]


def test_a_malformed_acl_document_is_malformed_acl_error(server, bucket):
    reply = send(server.port, "PUT", f"/{bucket}?acl", body=b"<AccessControlPolicy><AccessControlList><Grant>"
                 b"<Permission>READ</Permission></Grant></AccessControlList></AccessControlPolicy>")  # fmt: skip
    assert (reply.status, reply.code) == (400, "MalformedACLError")
    reply = send(server.port, "PUT", f"/{bucket}?acl", body=b"<NotAnAcl/>")
    assert (reply.status, reply.code) == (400, "MalformedACLError")


def test_create_bucket_with_an_acl_beyond_the_owner_is_refused(s3):
    name = _new_name()
    with s3_error("InvalidBucketAclWithObjectOwnership", 400):
        s3.create_bucket(Bucket=name, ACL="public-read")
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.create_bucket(Bucket=name, ACL="private")
    assert s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]  # fmt: skip
    s3.delete_bucket(Bucket=name)


def test_a_request_expecting_another_owner_is_refused(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with s3_error("AccessDenied", 403):
        s3.get_object(Bucket=bucket, Key="k", ExpectedBucketOwner="123456789012")
    with s3_error("AccessDenied", 403):
        s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k"},
                       ExpectedSourceBucketOwner="123456789012")  # fmt: skip
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key="copy")


def test_unsupported_bucket_put_is_not_implemented(s3, bucket):
    with s3_error("NotImplemented", 501):
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{"AllowedMethods": ["GET"],
                                                                            "AllowedOrigins": ["*"]}]})
    # The server keeps serving the bucket normally afterwards.
    s3.put_object(Bucket=bucket, Key="after", Body=b"still fine")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"still fine"


def test_unsupported_bucket_get_answers_501_with_xml_error_body(s3, bucket):
    url = s3.generate_presigned_url("get_bucket_lifecycle_configuration", Params={"Bucket": bucket})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url, timeout=10)
    assert exc.value.code == 501
    assert exc.value.headers["Content-Type"] == "application/xml"
    root = ET.fromstring(exc.value.read())
    assert root.tag == "Error"
    assert root.findtext("Code") == "NotImplemented"
    assert root.findtext("RequestId") == exc.value.headers["x-amz-request-id"]
    assert s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200


@pytest.mark.parametrize(
    "call",
    [
        lambda s3, b: s3.get_bucket_cors(Bucket=b),
        lambda s3, b: s3.get_bucket_encryption(Bucket=b),
        lambda s3, b: s3.get_bucket_website(Bucket=b),
    ],
    ids=["cors", "encryption", "website"],
)
def test_other_unsupported_bucket_apis_are_not_implemented(s3, bucket, call):
    with s3_error("NotImplemented", 501):
        call(s3, bucket)
