"""Bucket policies (security issue, "tenants and policies"), with boto3 against a real server: stored and
validated as AWS does, and enforced with AWS's precedence (an explicit Deny wins, then an Allow; anonymous
requests get only what a policy grants to "*")."""

from __future__ import annotations

import http.client
import json
import uuid

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from apollo import errors
from apollo.client import Client
from apollo.testing.admin import admin
from apollo.testing.s3error import assert_s3_error, s3_error
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY


def _client(server, access_key: str | None = None, secret: str | None = None):
    if access_key is None:
        config = Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1})
        return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1", config=config)
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=access_key,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}))  # fmt: skip


@pytest.fixture
def user(server):
    """A key that is not root."""
    made = admin("key", "create", meta_dir=server.meta_dir)
    access = made.split("access key: ")[1].split()[0]
    secret = made.split("secret key: ")[1].split()[0]
    return access, _client(server, access, secret), secret


def _policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_put_get_delete_bucket_policy(s3, bucket):
    with s3_error("NoSuchBucketPolicy", 404):
        s3.get_bucket_policy(Bucket=bucket)
    document = _policy({"Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{bucket}/public/*"})  # fmt: skip
    s3.put_bucket_policy(Bucket=bucket, Policy=document)
    assert json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]) == json.loads(document)
    s3.delete_bucket_policy(Bucket=bucket)
    with s3_error("NoSuchBucketPolicy", 404):
        s3.get_bucket_policy(Bucket=bucket)


@pytest.mark.parametrize("document", [
    "not json",
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}',
    _policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::other/*"}),
    _policy({"Effect": "Maybe", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::BUCKET/*"}),
    _policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObjekt", "Resource": "arn:aws:s3:::BUCKET/*"}),
])  # fmt: skip
def test_a_malformed_policy_is_refused_and_nothing_is_stored(s3, bucket, document):
    """Not JSON; no Principal; a resource outside the bucket; a bad Effect; an action S3 does not have."""
    with s3_error("MalformedPolicy", 400):
        s3.put_bucket_policy(Bucket=bucket, Policy=document.replace("BUCKET", bucket))
    with s3_error("NoSuchBucketPolicy", 404):
        s3.get_bucket_policy(Bucket=bucket)


def test_anonymous_reads_exactly_what_a_policy_grants_to_everyone(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="public/a.txt", Body=b"for everyone")
    s3.put_object(Bucket=bucket, Key="private/b.txt", Body=b"for keys")
    anonymous = _client(server)
    with s3_error("AccessDenied", 403):
        anonymous.get_object(Bucket=bucket, Key="public/a.txt")  # no policy: nothing anonymous
    s3.put_bucket_policy(Bucket=bucket, Policy=_policy(
        {"Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/public/*"}))  # fmt: skip
    assert anonymous.get_object(Bucket=bucket, Key="public/a.txt")["Body"].read() == b"for everyone"
    with s3_error("AccessDenied", 403):
        anonymous.get_object(Bucket=bucket, Key="private/b.txt")
    with s3_error("AccessDenied", 403):
        anonymous.put_object(Bucket=bucket, Key="public/new.txt", Body=b"no")
    with s3_error("AccessDenied", 403):
        anonymous.list_objects_v2(Bucket=bucket)
    with s3_error("AccessDenied", 403):
        anonymous.list_buckets()
    assert s3.get_object(Bucket=bucket, Key="private/b.txt")["Body"].read() == b"for keys"  # keys unaffected


def test_anyone_learns_that_a_bucket_does_not_exist(server):
    """AWS answers 404 NoSuchBucket to anonymous callers too: bucket names are global and public (creating
    one says whether it is taken), so a 403 would hide nothing and mislead a client."""
    anonymous, missing = _client(server), f"never-made-{uuid.uuid4().hex[:8]}"
    for call in (lambda: anonymous.get_object(Bucket=missing, Key="k"),
                 lambda: anonymous.put_object(Bucket=missing, Key="k", Body=b"x"),
                 lambda: anonymous.list_objects_v2(Bucket=missing)):  # fmt: skip
        assert_s3_error(call, "NoSuchBucket", 404)
    assert_s3_error(lambda: anonymous.head_bucket(Bucket=missing), "404", 404)


def test_a_missing_key_is_no_such_key_only_to_who_may_list_the_bucket(server, s3, bucket):
    """AWS: a GET or HEAD of a key with no object answers 404 NoSuchKey to a caller with s3:ListBucket
    and 403 AccessDenied to any other, so that reading public/* does not reveal which other keys exist."""
    s3.put_object(Bucket=bucket, Key="public/deleted", Body=b"x")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.delete_object(Bucket=bucket, Key="public/deleted")  # a delete marker: "not there" too
    read = {"Sid": "Read", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/public/*"}  # fmt: skip
    s3.put_bucket_policy(Bucket=bucket, Policy=_policy(read))
    anonymous = _client(server)
    for key in ("public/never", "public/deleted"):
        with s3_error("AccessDenied", 403) as denied:
            anonymous.get_object(Bucket=bucket, Key=key)
        assert "x-amz-delete-marker" not in denied.headers
        with s3_error("403", 403):
            anonymous.head_object(Bucket=bucket, Key=key)
    s3.put_bucket_policy(Bucket=bucket, Policy=_policy(read, {
        "Sid": "List", "Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket",
        "Resource": f"arn:aws:s3:::{bucket}"}))  # fmt: skip
    try:
        with s3_error("NoSuchKey", 404):
            anonymous.get_object(Bucket=bucket, Key="public/never")
        with s3_error("NoSuchKey", 404) as gone:
            anonymous.get_object(Bucket=bucket, Key="public/deleted")
        assert gone.headers["x-amz-delete-marker"] == "true"
        with s3_error("NoSuchKey", 404):
            s3.get_object(Bucket=bucket, Key="public/never")  # the owner may list: told as it is
    finally:  # a bucket everyone may list is in every key's ListBuckets: other tests count theirs
        s3.delete_bucket_policy(Bucket=bucket)


def test_an_explicit_deny_for_one_key_wins_and_others_keep_their_access(server, s3, bucket, user):
    name, client, _ = user
    s3.put_object(Bucket=bucket, Key="keep", Body=b"x")
    s3.put_bucket_policy(Bucket=bucket, Policy=_policy(
        {"Sid": "NoDeletes", "Effect": "Deny", "Principal": {"AWS": [name]}, "Action": "s3:DeleteObject",
         "Resource": f"arn:aws:s3:::{bucket}/*"}))  # fmt: skip
    assert client.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"x"  # what is not denied
    with s3_error("AccessDenied", 403):
        client.delete_object(Bucket=bucket, Key="keep")
    result = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "keep"}]})  # per key, in a 200
    assert [e["Code"] for e in result["Errors"]] == ["AccessDenied"] and not result.get("Deleted")
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"x"
    s3.delete_object(Bucket=bucket, Key="keep")  # the root key is not named: allowed


def test_a_deny_on_a_condition_holds_for_every_key_and_root_can_still_remove_the_policy(server, s3, bucket, user):
    """AWS's "deny unless aws:SecureTransport" example on a plain-HTTP server: nothing gets through, not even
    the root key; only the bucket policy calls stay open to root, as on AWS, so the policy can be fixed."""
    _, client, _ = user
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.put_bucket_policy(Bucket=bucket, Policy=_policy(
        {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}}))  # fmt: skip
    for caller in (s3, client):
        with s3_error("AccessDenied", 403):
            caller.get_object(Bucket=bucket, Key="k")
        with s3_error("AccessDenied", 403):
            caller.list_objects_v2(Bucket=bucket)
    with s3_error("AccessDenied", 403):
        client.delete_bucket_policy(Bucket=bucket)  # not root
    s3.delete_bucket_policy(Bucket=bucket)
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


def test_a_source_ip_condition_allows_only_the_network_it_names(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    anonymous = _client(server)
    s3.put_bucket_policy(Bucket=bucket, Policy=_policy(
        {"Sid": "OtherNet", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": {"IpAddress": {"aws:SourceIp": "10.9.0.0/16"}}}))
    with s3_error("AccessDenied", 403):
        anonymous.get_object(Bucket=bucket, Key="k")
    s3.put_bucket_policy(Bucket=bucket, Policy=_policy(
        {"Sid": "Loopback", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}))
    assert anonymous.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


def test_copy_needs_read_on_the_source_bucket_too(server, s3, bucket, user):
    name, client, _ = user
    source = f"{bucket}-src"
    s3.create_bucket(Bucket=source)
    s3.put_object(Bucket=source, Key="secret", Body=b"s")
    s3.put_bucket_policy(Bucket=source, Policy=_policy(
        {"Sid": "NoReads", "Effect": "Deny", "Principal": {"AWS": name}, "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{source}/*"}))  # fmt: skip
    with s3_error("AccessDenied", 403):
        client.copy_object(Bucket=bucket, Key="stolen", CopySource={"Bucket": source, "Key": "secret"})
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="stolen")
    s3.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": source, "Key": "secret"})


def test_the_native_path_obeys_bucket_policies_too(server, s3, bucket, user):
    """A key a policy denies cannot go around the gateway: its native client's metadata calls are checked as
    the S3 requests they stand for, and it gets no capability token."""
    name, _, secret = user
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.put_bucket_policy(Bucket=bucket, Policy=_policy(
        {"Sid": "NoObjects", "Effect": "Deny", "Principal": {"AWS": name}, "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": f"arn:aws:s3:::{bucket}/*"}))  # fmt: skip
    with Client(server.endpoint, name, secret) as client:
        with pytest.raises(errors.AccessDenied, match="s3:GetObject"):
            client.get(bucket, "k")
        with pytest.raises(errors.AccessDenied, match="s3:PutObject"):
            client.put(bucket, "new", b"y")
        assert [info.key for info in client.list(bucket)] == ["k"]  # what the policy does not deny
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="new")
    with Client(server.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as root:  # not named in the policy
        assert root.get(bucket, "k") == b"x"


def test_an_anonymous_signed_aws_chunked_body_is_refused_even_where_anonymous_writes_are_allowed(server, s3, bucket):
    """Chunk signatures need a signing key: without one they would go unchecked (the aws-chunked reader refuses)."""
    s3.put_bucket_policy(Bucket=bucket, Policy=_policy(
        {"Sid": "DropBox", "Effect": "Allow", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{bucket}/*"}))  # fmt: skip
    body = b"5;chunk-signature=" + b"0" * 64 + b"\r\nhello\r\n0;chunk-signature=" + b"0" * 64 + b"\r\n\r\n"
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("PUT", f"/{bucket}/chunked", body=body, headers={
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "x-amz-decoded-content-length": "5",
        "Content-Encoding": "aws-chunked", "Content-Length": str(len(body))})  # fmt: skip
    reply = connection.getresponse()
    assert reply.status == 403 and b"<Code>AccessDenied</Code>" in reply.read()
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="chunked")
    assert _client(server).put_object(Bucket=bucket, Key="plain", Body=b"ok")  # the policy itself works
