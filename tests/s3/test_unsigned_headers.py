"""Headers a signer did not sign must not change what a request does.

The attack: take a request someone signed (a presigned PUT URL handed to an uploader, or a captured
header-signed request) and add an ``x-amz-*`` header. ``x-amz-copy-source`` turns an upload into a copy
of any object the signer can read; ``x-amz-meta-*`` and ``x-amz-tagging`` attach what the signer never
agreed to. AWS refuses such SigV4 requests with ``403 AccessDenied`` "There were headers present in the
request which were not signed" and a ``HeadersNotSigned`` element naming them; SigV2 signs every
``x-amz-*`` header (CanonicalizedAmzHeaders), so an added one is a ``SignatureDoesNotMatch``.

Every attack goes over plain HTTP to the real server, and each test checks that nothing was written.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import boto3
import pytest
from botocore.auth import HmacV1Auth, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from signed_http import REGION, Reply, send, sign

from apollo.testing.s3error import s3_error
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

NOT_SIGNED = "There were headers present in the request which were not signed"
SECRET = b"the signer can read this; the uploader must not"
# Headers an uploader could add to change what a signed PUT stores (x-amz-copy-source has tests of its own).
STORING_HEADERS = [{"x-amz-meta-owner": "attacker"}, {"x-amz-tagging": "role=admin"},
                   {"x-amz-meta-owner": "attacker", "x-amz-tagging": "role=admin"}]  # fmt: skip
STORING_IDS = ["x-amz-meta", "x-amz-tagging", "both"]


def _client(server, signature_version: str):
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=DEV_ACCESS_KEY,
                        aws_secret_access_key=DEV_SECRET_KEY, region_name=REGION,
                        config=Config(signature_version=signature_version, retries={"max_attempts": 1}))  # fmt: skip


def _presign_put(server, bucket: str, key: str, signature_version: str = "s3v4", **params) -> str:
    """The path and query of a presigned PutObject URL (what an uploader is handed)."""
    url = _client(server, signature_version).generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key, **params}, ExpiresIn=300)  # fmt: skip
    assert ("X-Amz-Signature=" in url) == (signature_version == "s3v4")
    return url.removeprefix(server.endpoint)


def _sign_v2(port: int, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> dict[str, str]:
    """Headers (Date and ``Authorization: AWS key:signature`` added) signed with botocore's SigV2 signer."""
    request = AWSRequest(method=method, url=f"http://127.0.0.1:{port}{target}",
                         headers={"Host": f"127.0.0.1:{port}", **headers}, data=body)  # fmt: skip
    HmacV1Auth(Credentials(DEV_ACCESS_KEY, DEV_SECRET_KEY)).add_auth(request)
    return dict(request.headers.items())


class _LeavesOut(S3SigV4Auth):
    """botocore's SigV4 signer, except that it leaves some headers out of SignedHeaders (a careless client)."""

    def __init__(self, leave_out: set[str]) -> None:
        super().__init__(Credentials(DEV_ACCESS_KEY, DEV_SECRET_KEY), "s3", REGION)
        self._leave_out = leave_out

    def headers_to_sign(self, request):
        headers = super().headers_to_sign(request)
        for name in self._leave_out:
            del headers[name]
        return headers


def _put_raw(server, target: str, headers: dict[str, str], body: bytes = b"") -> Reply:
    """Send exactly these headers (already signed, or none for a presigned URL) on a fresh connection."""
    return send(server.port, "PUT", target, headers, body, signed=False)


def _assert_headers_not_signed(reply: Reply, names: list[str]) -> None:
    assert reply.status == 403, reply.body
    root = ET.fromstring(reply.body)
    assert root.findtext("Code") == "AccessDenied", reply.body
    assert root.findtext("Message") == NOT_SIGNED
    assert root.findtext("HeadersNotSigned") == ", ".join(names)


def _assert_signature_does_not_match(reply: Reply) -> None:
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch"), reply.body


def _absent(s3, bucket: str, key: str) -> bool:
    with s3_error(status=404):
        s3.head_object(Bucket=bucket, Key=key)
    return True


@pytest.fixture
def secret(s3) -> str:
    """``/<private bucket>/secret.txt``: an object the signer can read, in a bucket of its own."""
    private = f"private-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=private)
    s3.put_object(Bucket=private, Key="secret.txt", Body=SECRET)
    return f"/{private}/secret.txt"


# --- SigV4 presigned URLs ---------------------------------------------------------------------------------


def test_presigned_put_with_added_copy_source_is_refused_and_copies_nothing(server, s3, bucket, secret):
    target = _presign_put(server, bucket, "upload-slot")
    reply = _put_raw(server, target, {"x-amz-copy-source": secret})
    _assert_headers_not_signed(reply, ["x-amz-copy-source"])
    assert SECRET not in reply.body
    assert _absent(s3, bucket, "upload-slot")


@pytest.mark.parametrize("added", STORING_HEADERS, ids=STORING_IDS)
def test_presigned_put_with_added_metadata_or_tagging_is_refused_and_stores_nothing(server, s3, bucket, added):
    target = _presign_put(server, bucket, "upload-slot")
    reply = _put_raw(server, target, added, b"uploaded bytes")
    _assert_headers_not_signed(reply, list(added))
    assert _absent(s3, bucket, "upload-slot")


def test_presigned_upload_part_with_added_copy_source_is_refused_and_copies_nothing(server, s3, bucket, secret):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    url = _client(server, "s3v4").generate_presigned_url(
        "upload_part", Params={"Bucket": bucket, "Key": "big", "UploadId": upload_id, "PartNumber": 1},
        ExpiresIn=300)  # fmt: skip
    reply = _put_raw(server, url.removeprefix(server.endpoint), {"x-amz-copy-source": secret})
    _assert_headers_not_signed(reply, ["x-amz-copy-source"])
    assert s3.list_parts(Bucket=bucket, Key="big", UploadId=upload_id).get("Parts", []) == []


def test_the_same_presigned_url_without_the_added_header_still_works(server, s3, bucket, secret):
    target = _presign_put(server, bucket, "upload-slot")
    _assert_headers_not_signed(_put_raw(server, target, {"x-amz-copy-source": secret}), ["x-amz-copy-source"])
    reply = _put_raw(server, target, {}, b"uploaded bytes")
    assert reply.status == 200, reply.body
    stored = s3.get_object(Bucket=bucket, Key="upload-slot")
    assert (stored["Body"].read(), stored["Metadata"]) == (b"uploaded bytes", {})
    assert s3.get_object_tagging(Bucket=bucket, Key="upload-slot")["TagSet"] == []


def test_presigned_put_that_signed_metadata_and_tagging_stores_them(server, s3, bucket):
    target = _presign_put(server, bucket, "upload-slot", Metadata={"owner": "alice"}, Tagging="team=ml")
    assert "x-amz-meta-owner" in target and "x-amz-tagging" in target  # in X-Amz-SignedHeaders
    reply = _put_raw(server, target, {"x-amz-meta-owner": "alice", "x-amz-tagging": "team=ml"}, b"uploaded bytes")
    assert reply.status == 200, reply.body
    assert s3.head_object(Bucket=bucket, Key="upload-slot")["Metadata"] == {"owner": "alice"}
    assert s3.get_object_tagging(Bucket=bucket, Key="upload-slot")["TagSet"] == [{"Key": "team", "Value": "ml"}]


def test_presigned_put_that_signed_metadata_refuses_another_added_one(server, s3, bucket):
    target = _presign_put(server, bucket, "upload-slot", Metadata={"owner": "alice"})
    reply = _put_raw(server, target, {"x-amz-meta-owner": "alice", "x-amz-meta-role": "admin"}, b"uploaded bytes")
    _assert_headers_not_signed(reply, ["x-amz-meta-role"])
    assert _absent(s3, bucket, "upload-slot")


def test_presigned_put_with_an_unsigned_unsigned_payload_header_is_accepted(server, s3, bucket):
    # AWS exempts x-amz-content-sha256 on presigned URLs, and some upload guides tell clients to send it.
    target = _presign_put(server, bucket, "upload-slot")
    reply = _put_raw(server, target, {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, b"uploaded bytes")
    assert reply.status == 200, reply.body
    assert s3.get_object(Bucket=bucket, Key="upload-slot")["Body"].read() == b"uploaded bytes"


# --- SigV4 Authorization header -----------------------------------------------------------------------------


def test_header_signed_put_with_added_copy_source_is_refused_and_copies_nothing(server, s3, bucket, secret):
    target = f"/{bucket}/upload-slot"
    headers = sign(server.port, "PUT", target, {"Content-Length": "0"})
    reply = _put_raw(server, target, {**headers, "x-amz-copy-source": secret})
    _assert_headers_not_signed(reply, ["x-amz-copy-source"])
    assert SECRET not in reply.body
    assert _absent(s3, bucket, "upload-slot")
    assert _put_raw(server, target, headers).status == 200  # the request as it was signed is fine


@pytest.mark.parametrize("added", STORING_HEADERS, ids=STORING_IDS)
def test_header_signed_put_with_added_metadata_or_tagging_is_refused_and_stores_nothing(server, s3, bucket, added):
    target, body = f"/{bucket}/upload-slot", b"uploaded bytes"
    headers = sign(server.port, "PUT", target, {"Content-Length": str(len(body))}, body)
    reply = _put_raw(server, target, {**headers, **added}, body)
    _assert_headers_not_signed(reply, list(added))
    assert _absent(s3, bucket, "upload-slot")


def test_header_auth_needs_x_amz_content_sha256_signed(server, s3, bucket):
    # AWS exempts it only on presigned URLs: with an Authorization header every x-amz-* header is signed.
    target, body = f"/{bucket}/upload-slot", b"uploaded bytes"
    request = AWSRequest(method="PUT", url=f"http://127.0.0.1:{server.port}{target}", data=body,
                         headers={"Host": f"127.0.0.1:{server.port}", "Content-Length": str(len(body))})  # fmt: skip
    _LeavesOut({"x-amz-content-sha256"}).add_auth(request)
    assert "x-amz-content-sha256;" not in request.headers["Authorization"]
    reply = _put_raw(server, target, dict(request.headers.items()), body)
    _assert_headers_not_signed(reply, ["x-amz-content-sha256"])
    assert _absent(s3, bucket, "upload-slot")


# --- SigV2: every x-amz-* header is in the string to sign --------------------------------------------------


def test_sigv2_presigned_put_with_added_copy_source_does_not_match_and_copies_nothing(server, s3, bucket, secret):
    target = _presign_put(server, bucket, "upload-slot", signature_version="s3")
    reply = _put_raw(server, target, {"x-amz-copy-source": secret})
    _assert_signature_does_not_match(reply)
    assert SECRET not in reply.body
    assert _absent(s3, bucket, "upload-slot")
    assert _put_raw(server, target, {}, b"uploaded bytes").status == 200  # the URL itself is fine


@pytest.mark.parametrize("added", STORING_HEADERS, ids=STORING_IDS)
def test_sigv2_presigned_put_with_added_metadata_or_tagging_does_not_match(server, s3, bucket, added):
    target = _presign_put(server, bucket, "upload-slot", signature_version="s3")
    _assert_signature_does_not_match(_put_raw(server, target, added, b"uploaded bytes"))
    assert _absent(s3, bucket, "upload-slot")


def test_sigv2_header_signed_put_with_added_copy_source_does_not_match_and_copies_nothing(server, s3, bucket, secret):
    target = f"/{bucket}/upload-slot"
    headers = _sign_v2(server.port, "PUT", target, {"Content-Length": "0"})
    reply = _put_raw(server, target, {**headers, "x-amz-copy-source": secret})
    _assert_signature_does_not_match(reply)
    assert SECRET not in reply.body
    assert _absent(s3, bucket, "upload-slot")
    assert _put_raw(server, target, headers).status == 200  # the request as it was signed is fine


@pytest.mark.parametrize("added", STORING_HEADERS, ids=STORING_IDS)
def test_sigv2_header_signed_put_with_added_metadata_or_tagging_does_not_match(server, s3, bucket, added):
    target, body = f"/{bucket}/upload-slot", b"uploaded bytes"
    headers = _sign_v2(server.port, "PUT", target, {"Content-Length": str(len(body))}, body)
    _assert_signature_does_not_match(_put_raw(server, target, {**headers, **added}, body))
    assert _absent(s3, bucket, "upload-slot")
