"""Users and identity policies (security issue, "tenants and policies"), with boto3 and the native client
against a real server: what a key may do comes from the policies attached to it (``apollo admin user|policy``),
the policies of the buckets and the buckets it owns, with AWS's precedence (an explicit Deny anywhere wins)."""

from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from apollo import errors
from apollo.client import Client
from apollo.testing.admin import admin, admin_refused
from apollo.testing.s3error import s3_error
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY


def _client(server, access_key: str, secret: str):
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=access_key,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}))  # fmt: skip


def _document(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _store_policy(server, tmp_path, *statements: dict) -> str:
    name = f"p-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.json"
    path.write_text(_document(*statements))
    admin("policy", "create", name, path, meta_dir=server.meta_dir)
    return name


def _user(server, *policies: str):
    """A new key with these policies attached: (name, boto3 client, secret)."""
    flags = [arg for name in policies for arg in ("--policy", name)]
    made = admin("user", "create", *flags, meta_dir=server.meta_dir)
    access = made.split("access key: ")[1].split()[0]
    secret = made.split("secret key: ")[1].split()[0]
    return access, _client(server, access, secret), secret


def test_a_readonly_user_reads_and_lists_but_cannot_write_or_delete(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="data/a", Body=b"a")
    _, reader, _ = _user(server, "readonly")
    assert reader.get_object(Bucket=bucket, Key="data/a")["Body"].read() == b"a"
    assert [o["Key"] for o in reader.list_objects_v2(Bucket=bucket)["Contents"]] == ["data/a"]
    with s3_error("AccessDenied", 403):
        reader.put_object(Bucket=bucket, Key="data/b", Body=b"b")
    with s3_error("AccessDenied", 403):
        reader.delete_object(Bucket=bucket, Key="data/a")
    with s3_error("AccessDenied", 403):
        reader.create_bucket(Bucket=f"ro-{uuid.uuid4().hex[:12]}")
    assert s3.get_object(Bucket=bucket, Key="data/a")["Body"].read() == b"a"
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1  # nothing was written


def test_a_user_without_policies_may_do_only_what_a_bucket_policy_grants_it(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="shared/x", Body=b"x")
    s3.put_object(Bucket=bucket, Key="other/y", Body=b"y")
    name, nobody, _ = _user(server)
    with s3_error("AccessDenied", 403):
        nobody.get_object(Bucket=bucket, Key="shared/x")
    with s3_error("AccessDenied", 403):
        nobody.list_buckets()
    s3.put_bucket_policy(Bucket=bucket, Policy=_document(
        {"Sid": "Shared", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::000000000000:user/{name}"},
         "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/shared/*"}))  # fmt: skip
    assert nobody.get_object(Bucket=bucket, Key="shared/x")["Body"].read() == b"x"
    with s3_error("AccessDenied", 403):
        nobody.get_object(Bucket=bucket, Key="other/y")


def test_resource_and_prefix_conditions_limit_a_stored_policy(server, s3, bucket, tmp_path):
    for key in ("team-a/1", "team-b/1"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    policy = _store_policy(server, tmp_path,
        {"Sid": "ListOwnPrefix", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": "team-a/*"}}},
        {"Sid": "OwnObjects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": f"arn:aws:s3:::{bucket}/team-a/*"})  # fmt: skip
    _, team_a, _ = _user(server, policy)
    assert [o["Key"] for o in team_a.list_objects_v2(Bucket=bucket, Prefix="team-a/")["Contents"]] == ["team-a/1"]
    with s3_error("AccessDenied", 403):
        team_a.list_objects_v2(Bucket=bucket)  # no prefix: the condition fails
    with s3_error("AccessDenied", 403):
        team_a.list_objects_v2(Bucket=bucket, Prefix="team-b/")
    team_a.put_object(Bucket=bucket, Key="team-a/2", Body=b"2")
    with s3_error("AccessDenied", 403):
        team_a.put_object(Bucket=bucket, Key="team-b/2", Body=b"2")
    with s3_error("AccessDenied", 403):
        team_a.get_object(Bucket=bucket, Key="team-b/1")


def test_an_explicit_deny_wins_from_either_side(server, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    deny_delete = _store_policy(server, tmp_path, {"Sid": "NoDelete", "Effect": "Deny", "Action": "s3:DeleteObject",
                                                   "Resource": "*"})  # fmt: skip
    name, user, _ = _user(server, "readwrite", deny_delete)
    with s3_error("AccessDenied", 403):  # its own Deny beats its readwrite
        user.delete_object(Bucket=bucket, Key="k")
    s3.put_bucket_policy(Bucket=bucket, Policy=_document(
        {"Sid": "NoReads", "Effect": "Deny", "Principal": {"AWS": name}, "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/*"},
        {"Sid": "Deletes", "Effect": "Allow", "Principal": {"AWS": name}, "Action": "s3:DeleteObject",
         "Resource": f"arn:aws:s3:::{bucket}/*"}))  # fmt: skip
    with s3_error("AccessDenied", 403):  # the bucket's Deny beats its readwrite
        user.get_object(Bucket=bucket, Key="k")
    with s3_error("AccessDenied", 403):  # the bucket's Allow does not undo its own Deny
        user.delete_object(Bucket=bucket, Key="k")
    user.put_object(Bucket=bucket, Key="k2", Body=b"neither denies it")


def test_tenants_own_the_buckets_they_create_and_see_only_theirs(server, s3, tmp_path):
    tenant = _store_policy(server, tmp_path, {"Sid": "Tenant", "Effect": "Allow",
                                              "Action": ["s3:CreateBucket", "s3:ListAllMyBuckets"], "Resource": "*"})
    (a_name, a, _), (_, b, _) = _user(server, tenant), _user(server, tenant)
    a_bucket, b_bucket = f"tenant-a-{uuid.uuid4().hex[:8]}", f"tenant-b-{uuid.uuid4().hex[:8]}"
    a.create_bucket(Bucket=a_bucket)
    b.create_bucket(Bucket=b_bucket)
    a.put_object(Bucket=a_bucket, Key="mine", Body=b"a's")
    assert a.get_object(Bucket=a_bucket, Key="mine")["Body"].read() == b"a's"
    assert [x["Name"] for x in a.list_buckets()["Buckets"]] == [a_bucket]
    assert [x["Name"] for x in b.list_buckets()["Buckets"]] == [b_bucket]
    assert {a_bucket, b_bucket} <= {x["Name"] for x in s3.list_buckets()["Buckets"]}  # root sees all
    for call in (lambda: b.get_object(Bucket=a_bucket, Key="mine"), lambda: b.list_objects_v2(Bucket=a_bucket),
                 lambda: b.put_object(Bucket=a_bucket, Key="theirs", Body=b"x"),
                 lambda: b.delete_bucket(Bucket=a_bucket), lambda: b.get_bucket_policy(Bucket=a_bucket)):  # fmt: skip
        with s3_error("AccessDenied", 403):
            call()
    # The owner can share, and can never lock itself out of its bucket's policy.
    a.put_bucket_policy(Bucket=a_bucket, Policy=_document(
        {"Sid": "LockEveryoneOut", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{a_bucket}", f"arn:aws:s3:::{a_bucket}/*"]}))  # fmt: skip
    with s3_error("AccessDenied", 403):
        a.get_object(Bucket=a_bucket, Key="mine")
    a.delete_bucket_policy(Bucket=a_bucket)
    assert a.get_object(Bucket=a_bucket, Key="mine")["Body"].read() == b"a's"
    assert a_name not in b.list_buckets()["Buckets"]


def test_existing_object_tags_decide_what_a_user_may_read(server, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="open", Body=b"o", Tagging="classification=public")
    s3.put_object(Bucket=bucket, Key="closed", Body=b"c", Tagging="classification=secret")
    s3.put_object(Bucket=bucket, Key="untagged", Body=b"u")
    policy = _store_policy(server, tmp_path, {
        "Sid": "PublicOnly", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectTagging"],
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"StringEquals": {"s3:ExistingObjectTag/classification": "public"}}})  # fmt: skip
    name, reader, secret = _user(server, policy)
    assert reader.get_object(Bucket=bucket, Key="open")["Body"].read() == b"o"
    assert reader.get_object_tagging(Bucket=bucket, Key="open")["TagSet"] == [
        {"Key": "classification", "Value": "public"}]
    for key in ("closed", "untagged", "missing"):
        with s3_error("AccessDenied", 403):
            reader.get_object(Bucket=bucket, Key=key)
    s3.put_object_tagging(Bucket=bucket, Key="closed", Tagging={"TagSet": [{"Key": "classification",
                                                                             "Value": "public"}]})  # fmt: skip
    assert reader.get_object(Bucket=bucket, Key="closed")["Body"].read() == b"c"  # tags are read per request
    with Client(server.endpoint, name, secret) as native:  # the native path reads the same tags
        assert native.get(bucket, "open") == b"o"
        with pytest.raises(errors.AccessDenied, match="s3:GetObject"):
            native.get(bucket, "untagged")


def test_the_native_path_obeys_identity_policies(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    name, _, secret = _user(server, "readonly")
    with Client(server.endpoint, name, secret) as native:
        assert native.get(bucket, "k") == b"x"
        assert bucket in native.list_buckets()
        with pytest.raises(errors.AccessDenied, match="s3:PutObject"):
            native.put(bucket, "new", b"y")
        with pytest.raises(errors.AccessDenied, match="s3:DeleteObject"):
            native.delete(bucket, "k")
        with pytest.raises(errors.AccessDenied, match="s3:CreateBucket"):
            native.create_bucket(f"native-{uuid.uuid4().hex[:8]}")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]


def test_a_native_client_owns_the_bucket_it_creates_and_cannot_claim_another_owner(server, tmp_path):
    tenant = _store_policy(server, tmp_path, {"Sid": "Tenant", "Effect": "Allow",
                                              "Action": ["s3:CreateBucket", "s3:ListAllMyBuckets"], "Resource": "*"})
    (a_name, _, a_secret), (_, b, _) = _user(server, tenant), _user(server, tenant)
    name = f"native-own-{uuid.uuid4().hex[:8]}"
    with Client(server.endpoint, a_name, a_secret) as native:
        native.create_bucket(name)
        native.put(name, "k", b"mine")
        assert native.list_buckets() == [name]
        with pytest.raises(errors.InvalidRequest, match="bucket name"):  # "/" would name another's bucket
            native.create_bucket(f"{name}/../x")
    with s3_error("AccessDenied", 403):
        b.get_object(Bucket=name, Key="k")


def test_admin_commands_refuse_mistakes_and_change_nothing(server, tmp_path):
    refused = admin_refused("user", "create", "--policy", "no-such-policy", meta_dir=server.meta_dir)
    assert "no such policy: no-such-policy" in refused
    bad = tmp_path / "bad.json"
    bad.write_text('{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}]}')
    assert "Principal" in admin_refused("policy", "create", "bad", bad, meta_dir=server.meta_dir)
    assert "built-in" in admin_refused("policy", "delete", "readonly", meta_dir=server.meta_dir)
    policy = _store_policy(server, tmp_path, {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})
    name, _, _ = _user(server, policy)
    assert f"attached to {name}" in admin_refused("policy", "delete", policy, meta_dir=server.meta_dir)
    admin("policy", "detach", policy, name, meta_dir=server.meta_dir)
    admin("policy", "delete", policy, meta_dir=server.meta_dir)
    listed = admin("policy", "list", meta_dir=server.meta_dir)
    assert policy not in listed and "readwrite" in listed
    assert f"{name}" in admin("user", "list", meta_dir=server.meta_dir)
    assert "policies:   none" in admin("user", "info", name, meta_dir=server.meta_dir)
    assert "bad access key" in admin_refused("user", "create", "../x", meta_dir=server.meta_dir)


# Attacks an independent review found (each failed before its fix) ---------------------------------------


def test_a_temporary_key_cannot_open_its_parents_bucket_through_the_policy_calls(server, tmp_path):
    """The owner may always manage its bucket's policy; a job's session of that owner may not, beyond its
    session policy, and neither may an owner whose own identity policies deny it."""
    tenant = _store_policy(server, tmp_path, {"Sid": "Tenant", "Effect": "Allow",
                                              "Action": ["s3:CreateBucket", "s3:ListAllMyBuckets"], "Resource": "*"})
    name, owner, secret = _user(server, tenant)
    bucket = f"owned-{uuid.uuid4().hex[:8]}"
    owner.create_bucket(Bucket=bucket)
    read_only = _document({"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"})
    sts = boto3.client("sts", endpoint_url=server.endpoint, aws_access_key_id=name, aws_secret_access_key=secret,
                        region_name="us-east-1")  # fmt: skip
    creds = sts.assume_role(RoleArn="arn:aws:iam::000000000000:role/job", RoleSessionName="job",
                            Policy=read_only)["Credentials"]  # fmt: skip
    job = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"],
                        region_name="us-east-1")  # fmt: skip
    public = _document({"Effect": "Allow", "Principal": "*", "Action": "s3:*",
                        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]})  # fmt: skip
    with s3_error("AccessDenied", 403):
        job.put_bucket_policy(Bucket=bucket, Policy=public)
    with s3_error("NoSuchBucketPolicy", 404):
        owner.get_bucket_policy(Bucket=bucket)  # nothing was stored
    no_public = _store_policy(server, tmp_path, {"Sid": "NoPolicies", "Effect": "Deny",
                                                 "Action": "s3:PutBucketPolicy", "Resource": "*"})  # fmt: skip
    admin("policy", "attach", no_public, name, meta_dir=server.meta_dir)
    deadline = time.monotonic() + 30  # the key's rights are cached 10 s
    while time.monotonic() < deadline:
        try:
            owner.put_bucket_policy(Bucket=bucket, Policy=public)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "AccessDenied"
            break
        owner.delete_bucket_policy(Bucket=bucket)
        time.sleep(0.5)
    else:
        pytest.fail("an owner's own Deny did not stop it setting a bucket policy")


def test_the_native_path_holds_policies_and_tags_to_the_grammar_and_asks_for_tagging_rights(server, s3, bucket,
                                                                                           tmp_path):
    from apollo.proto.records import ObjectAttrs

    writer = _store_policy(server, tmp_path, {"Effect": "Allow", "Action": ["s3:PutObject", "s3:ListBucket"],
                                              "Resource": "*"})
    name, _, secret = _user(server, writer)
    with Client(server.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as root:
        engine = root._async._engine
        with pytest.raises(errors.InvalidRequest, match="MalformedPolicy"):
            root._run(engine.set_bucket_policy(bucket, "garbage"))
        with pytest.raises(errors.InvalidRequest, match="tag set"):
            root._run(engine.set_bucket_tags(bucket, {"k": ["not", "a", "string"]}))
    s3.put_object(Bucket=bucket, Key="still-works", Body=b"x")  # nothing unparseable was stored
    with Client(server.endpoint, name, secret) as native:
        native.put(bucket, "plain", b"allowed")
        engine = native._async._engine
        async def body():
            yield b"x"

        with pytest.raises(errors.AccessDenied, match="s3:PutObjectTagging"):
            native._run(engine.put_object(bucket, "tagged", body(), ObjectAttrs(tags={"class": "public"})))
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["plain", "still-works"]


def test_tag_conditions_on_a_copy_source_read_the_version_copied(server, s3, bucket, tmp_path):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old = s3.put_object(Bucket=bucket, Key="doc", Body=b"secret", Tagging="class=secret")["VersionId"]
    s3.put_object(Bucket=bucket, Key="doc", Body=b"public", Tagging="class=public")
    policy = _store_policy(server, tmp_path,
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"], "Resource": f"arn:aws:s3:::{bucket}/*",
         "Condition": {"StringEquals": {"s3:ExistingObjectTag/class": "public"}}},
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/copies/*"})  # fmt: skip
    _, user, _ = _user(server, policy)
    user.copy_object(Bucket=bucket, Key="copies/latest", CopySource={"Bucket": bucket, "Key": "doc"})
    with s3_error("AccessDenied", 403):
        user.copy_object(Bucket=bucket, Key="copies/old", CopySource={"Bucket": bucket, "Key": "doc",
                                                                      "VersionId": old})  # fmt: skip


def test_a_native_listing_carries_its_prefix_into_the_policy(server, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="hr/salaries", Body=b"x")
    s3.put_object(Bucket=bucket, Key="ml/data", Body=b"y")
    policy = _store_policy(server, tmp_path,
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"},
        {"Effect": "Deny", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": "hr/*"}}})  # fmt: skip
    name, _, secret = _user(server, policy)
    with Client(server.endpoint, name, secret) as native:
        assert [o.key for o in native.list(bucket, prefix="ml/")] == ["ml/data"]
        with pytest.raises(errors.AccessDenied, match="s3:ListBucket"):
            native.list(bucket, prefix="hr/")
