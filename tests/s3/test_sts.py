"""Temporary credentials (STS AssumeRole on the S3 port) with boto3's own STS client: a job gets a key that
expires, needs its session token, can only narrow its parent's rights, and dies with its parent."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from apollo import errors
from apollo.client import Client
from apollo.testing.admin import admin
from apollo.testing.s3error import s3_error
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

ROLE = "arn:aws:iam::000000000000:role/training-job"
CONFIG = Config(retries={"total_max_attempts": 1}, parameter_validation=False)  # the server must refuse


def _sts(server, access_key: str = DEV_ACCESS_KEY, secret: str = DEV_SECRET_KEY, token: str | None = None):
    return boto3.client("sts", endpoint_url=server.endpoint, aws_access_key_id=access_key,
                        aws_secret_access_key=secret, aws_session_token=token, region_name="us-east-1",
                        config=CONFIG)  # fmt: skip


def _s3(server, credentials: dict, token: str | None = "same"):
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=credentials["AccessKeyId"],
                        aws_secret_access_key=credentials["SecretAccessKey"],
                        aws_session_token=credentials["SessionToken"] if token == "same" else token,
                        region_name="us-east-1", config=CONFIG)  # fmt: skip


def _assume(sts, **extra) -> dict:
    return sts.assume_role(RoleArn=ROLE, RoleSessionName="job-42", **extra)["Credentials"]


def _sts_error(call) -> tuple[str, int]:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"], caught.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_a_session_works_with_its_token_only_and_says_when_it_ends(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    before = time.time()
    credentials = _assume(_sts(server), DurationSeconds=900)
    assert credentials["AccessKeyId"].startswith("ASIA")
    assert 890 <= credentials["Expiration"].timestamp() - before <= 910
    job = _s3(server, credentials)
    assert job.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    url = job.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)
    assert "security-token=" in url.lower()
    with urllib.request.urlopen(url, timeout=30) as answer:  # the token travels in the URL
        assert answer.read() == b"v"
    with s3_error("InvalidToken", 400):
        _s3(server, credentials, token=None).get_object(Bucket=bucket, Key="k")
    with s3_error("InvalidToken", 400):
        _s3(server, credentials, token=credentials["SessionToken"][:-4] + "AAAA").get_object(Bucket=bucket, Key="k")
    with s3_error("InvalidToken", 400):  # a token on a key that has none
        boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=DEV_ACCESS_KEY,
                     aws_secret_access_key=DEV_SECRET_KEY, aws_session_token=credentials["SessionToken"],
                     region_name="us-east-1", config=CONFIG).list_buckets()  # fmt: skip


def test_a_session_policy_narrows_the_parents_rights(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="data/a", Body=b"a")
    s3.put_object(Bucket=bucket, Key="other/b", Body=b"b")
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": f"arn:aws:s3:::{bucket}/data/*"}]})
    job = _s3(server, _assume(_sts(server), Policy=policy))  # the root key's session: never more than the policy
    assert job.get_object(Bucket=bucket, Key="data/a")["Body"].read() == b"a"
    job.put_object(Bucket=bucket, Key="data/out", Body=b"result")
    with s3_error("AccessDenied", 403):
        job.get_object(Bucket=bucket, Key="other/b")
    with s3_error("AccessDenied", 403):
        job.delete_object(Bucket=bucket, Key="data/a")
    with s3_error("AccessDenied", 403):
        job.create_bucket(Bucket=f"job-{uuid.uuid4().hex[:8]}")


def test_a_session_never_has_more_than_its_parent(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    made = admin("user", "create", "--policy", "readonly", meta_dir=server.meta_dir)
    key, secret = made.split("access key: ")[1].split()[0], made.split("secret key: ")[1].split()[0]
    everything = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
                                                                     "Resource": "*"}]})  # fmt: skip
    credentials = _assume(_sts(server, key, secret), Policy=everything)
    job = _s3(server, credentials)
    assert job.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    with s3_error("AccessDenied", 403):
        job.put_object(Bucket=bucket, Key="k", Body=b"overwritten")
    session_sts = _sts(server, credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"])
    assert _sts_error(lambda: session_sts.assume_role(RoleArn=ROLE, RoleSessionName="chained")) == (
        "AccessDenied", 403)  # no chains: ask with a real key
    with Client(server.endpoint, credentials["AccessKeyId"], credentials["SecretAccessKey"]) as native:
        assert native.get(bucket, "k") == b"v"  # the native path takes key and secret, with the same rights
        with pytest.raises(errors.AccessDenied):
            native.put(bucket, "k", b"overwritten")
    admin("user", "delete", key, meta_dir=server.meta_dir)  # its sessions go with it (within the 10 s cache)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            job.get_object(Bucket=bucket, Key="k")
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "InvalidAccessKeyId"
            break
        time.sleep(0.5)
    else:
        pytest.fail("a deleted key's session kept working")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


@pytest.mark.parametrize(("extra", "code"), [
    ({"DurationSeconds": 899}, "ValidationError"),
    ({"DurationSeconds": 43201}, "ValidationError"),
    ({"Policy": "{not json"}, "MalformedPolicyDocument"),
    ({"Policy": json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*"}]})},
     "MalformedPolicyDocument"),
    ({"Policy": json.dumps({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Sid": "x" * 2100}]})},
     "PackedPolicyTooLarge"),
    ({"Tags": [{"Key": "team", "Value": "a"}]}, "ValidationError"),
])  # fmt: skip
def test_bad_requests_get_sts_errors_and_make_no_key(server, extra, code):
    assert _sts_error(lambda: _assume(_sts(server), **extra)) == (code, 400)


def test_an_unsigned_or_wrongly_signed_assume_role_is_refused(server):
    assert _sts_error(lambda: _sts(server, DEV_ACCESS_KEY, "wrong-secret").assume_role(
        RoleArn=ROLE, RoleSessionName="job"))[1] == 403
    assert _sts_error(lambda: _sts(server).assume_role(RoleArn=ROLE, RoleSessionName="bad name!")) == (
        "ValidationError", 400)


def test_an_expired_session_is_refused_on_both_doors(server, s3, bucket):
    """Sessions last 15 minutes at least: this one is written straight into the database, ending in 2 s."""
    from apollo.roles.server import open_admin_store

    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    key, secret, token = f"ASIATEST{uuid.uuid4().hex[:8].upper()}", "session-secret-for-the-test", "session-token"
    store = open_admin_store(server.meta_dir)
    store.put_session(key, secret, hashlib.sha256(token.encode()).hexdigest(), DEV_ACCESS_KEY, "", time.time() + 2,
                      time.time())  # fmt: skip
    store.close()
    job = _s3(server, {"AccessKeyId": key, "SecretAccessKey": secret, "SessionToken": token})
    assert job.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    time.sleep(2.5)
    with s3_error("ExpiredToken", 400):
        job.get_object(Bucket=bucket, Key="k")
    with pytest.raises(errors.AccessDenied, match="expired"), Client(server.endpoint, key, secret) as native:
        native.get(bucket, "k")
