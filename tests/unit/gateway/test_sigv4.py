"""SigV4 and SigV2 request verification, checked against botocore's own signers and AWS's published example.

Each accepted request is signed by botocore (``S3SigV4Auth``, ``S3SigV4QueryAuth``, ``HmacV1Auth``,
``HmacV1QueryAuth``) exactly as boto3 would send it; each rejection changes one thing after signing and
asserts the S3 error code and HTTP status AWS documents for it.
"""

from __future__ import annotations

import datetime
import hashlib
from urllib.parse import urlsplit

import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict

from apollo.gateway.s3errors import S3Error
from apollo.gateway.sigv4 import EMPTY_SHA256, verify_request

ACCESS_KEY, SECRET = "apollo-dev", "apollo-dev-secret"
ENDPOINT = "http://127.0.0.1:9000"
# AWS's documented example (S3 API reference, "Signature Calculations for the Authorization Header").
AWS_KEY, AWS_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_NOW = datetime.datetime(2013, 5, 24, 0, 0, 30, tzinfo=datetime.UTC)


def _lookup(key: str) -> str | None:
    return {ACCESS_KEY: SECRET, AWS_KEY: AWS_SECRET}.get(key)


class Signed:
    """A request as the server sees it: method, raw path, raw query, headers."""

    def __init__(self, method: str, url: str, headers) -> None:
        parts = urlsplit(url)
        self.method, self.path, self.query = method, parts.path, parts.query
        self.headers = CIMultiDict(headers)
        self.headers.setdefault("Host", parts.netloc)

    def verify(self, now: datetime.datetime | None = None, lookup=_lookup):
        return verify_request(self.method, self.path, self.query, self.headers, lookup,
                              now or datetime.datetime.now(datetime.UTC))  # fmt: skip


def _sign(signer, method="GET", path="/bucket/key.txt", query="", headers=None, body=b"", secret=SECRET,
          key=ACCESS_KEY) -> Signed:  # fmt: skip
    url = f"{ENDPOINT}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
    credentials = Credentials(key, secret)
    if signer in (S3SigV4Auth, S3SigV4QueryAuth):
        args = (credentials, "s3", "us-east-1") + ((60,) if signer is S3SigV4QueryAuth else ())
        signer(*args).add_auth(request)
    else:
        signer(credentials, *((60,) if signer is HmacV1QueryAuth else ())).add_auth(request)
    prepared = request.prepare()
    return Signed(method, prepared.url, prepared.headers.items())


def _code(exc_info: pytest.ExceptionInfo[S3Error]) -> tuple[str, int]:
    return exc_info.value.code, exc_info.value.status


def _rejected(signed: Signed, **kwargs) -> tuple[str, int]:
    with pytest.raises(S3Error) as exc:
        signed.verify(**kwargs)
    return _code(exc)


def _aws_example(range_header: str = "bytes=0-9") -> Signed:
    headers = {
        "Host": "examplebucket.s3.amazonaws.com",
        "Range": range_header,
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": "20130524T000000Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    }
    return Signed("GET", "http://examplebucket.s3.amazonaws.com/test.txt", headers.items())


# --- AWS's published vectors -------------------------------------------------------------------------


def test_aws_documented_get_object_example_is_accepted():
    auth = _aws_example().verify(now=AWS_NOW)
    assert auth.access_key == AWS_KEY
    assert auth.seed_signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    assert auth.scope == "20130524/us-east-1/s3/aws4_request"
    assert auth.presigned is False


def test_aws_documented_example_with_another_range_does_not_match():
    assert _rejected(_aws_example("bytes=0-10"), now=AWS_NOW) == ("SignatureDoesNotMatch", 403)


def test_aws_documented_chunked_upload_seed_signature_is_accepted():
    headers = {
        "Host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z", "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "66560", "Content-Length": "66824",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class,"
        "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    }  # fmt: skip
    auth = Signed("PUT", "http://s3.amazonaws.com/examplebucket/chunkObject.txt", headers.items()).verify(now=AWS_NOW)
    assert auth.seed_signature == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    assert auth.content_sha256 == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


# --- SigV4 Authorization header, signed by botocore ----------------------------------------------------


def test_botocore_signed_get_is_accepted():
    auth = _sign(S3SigV4Auth).verify()
    assert auth.access_key == ACCESS_KEY
    assert auth.presigned is False
    assert auth.content_sha256 == EMPTY_SHA256


def test_botocore_signed_put_carries_the_body_sha256():
    body = b"hello world\n" * 100
    signed = _sign(S3SigV4Auth, "PUT", body=body, headers={"Content-Type": "text/plain", "x-amz-meta-a": "1"})
    assert signed.verify().content_sha256 == hashlib.sha256(body).hexdigest()


def test_query_parameters_are_canonicalised_like_botocore():
    query = "list-type=2&prefix=a%20b%2Bc&delimiter=%2F&encoding-type=url&start-after=%C3%BC"
    assert _sign(S3SigV4Auth, path="/bucket", query=query).verify().access_key == ACCESS_KEY


def test_subresource_without_value_is_accepted():
    assert _sign(S3SigV4Auth, "POST", path="/bucket/key", query="uploads").verify().access_key == ACCESS_KEY


def test_key_with_special_characters_is_accepted():
    path = "/bucket/dir%20one/%C3%BCber%2Bplus%3Dequals%26amp%40at~tilde.txt"
    assert _sign(S3SigV4Auth, path=path).verify().access_key == ACCESS_KEY


def test_header_values_with_inner_whitespace_are_trimmed_and_collapsed():
    signed = _sign(S3SigV4Auth, "PUT", headers={"x-amz-meta-note": "  two   spaces  here "})
    assert signed.verify().access_key == ACCESS_KEY


def test_uppercase_hex_signature_is_accepted():
    signed = _sign(S3SigV4Auth)
    head, _, signature = signed.headers["Authorization"].rpartition("Signature=")
    signed.headers["Authorization"] = head + "Signature=" + signature.upper()
    assert signed.verify().access_key == ACCESS_KEY


def test_date_header_instead_of_x_amz_date_is_accepted():
    # botocore signs the Date header (and drops X-Amz-Date) when the request already has one.
    signed = _sign(S3SigV4Auth, headers={"Date": "Thu, 01 Jan 2004 00:00:00 GMT"})
    assert "x-amz-date" not in signed.headers
    assert signed.verify().access_key == ACCESS_KEY


def test_anonymous_request_verifies_as_none():
    assert Signed("GET", f"{ENDPOINT}/bucket/key", {}).verify() is None


@pytest.mark.parametrize("header", ["x-amz-meta-a", "Content-Type", "Range"])
def test_changed_signed_header_value_does_not_match(header):
    signed = _sign(S3SigV4Auth, headers={"x-amz-meta-a": "1", "Content-Type": "text/plain", "Range": "bytes=0-1"})
    signed.headers[header] = signed.headers[header] + "x"
    assert _rejected(signed) == ("SignatureDoesNotMatch", 403)


def test_changed_path_does_not_match():
    signed = _sign(S3SigV4Auth)
    signed.path = "/bucket/other.txt"
    assert _rejected(signed) == ("SignatureDoesNotMatch", 403)


def test_changed_query_value_does_not_match():
    signed = _sign(S3SigV4Auth, path="/bucket", query="prefix=a&max-keys=10")
    signed.query = "prefix=b&max-keys=10"
    assert _rejected(signed) == ("SignatureDoesNotMatch", 403)


def test_added_query_parameter_does_not_match():
    signed = _sign(S3SigV4Auth, path="/bucket", query="prefix=a")
    signed.query += "&versionId=abc"
    assert _rejected(signed) == ("SignatureDoesNotMatch", 403)


def test_changed_method_does_not_match():
    signed = _sign(S3SigV4Auth, "GET")
    signed.method = "DELETE"
    assert _rejected(signed) == ("SignatureDoesNotMatch", 403)


def test_changed_payload_hash_does_not_match():
    signed = _sign(S3SigV4Auth, "PUT", body=b"abc")
    signed.headers["x-amz-content-sha256"] = hashlib.sha256(b"abd").hexdigest()
    assert _rejected(signed) == ("SignatureDoesNotMatch", 403)


def test_wrong_secret_does_not_match_and_reports_what_was_signed():
    with pytest.raises(S3Error) as exc:
        _sign(S3SigV4Auth, secret="not-the-secret").verify()
    assert _code(exc) == ("SignatureDoesNotMatch", 403)
    assert exc.value.fields["AWSAccessKeyId"] == ACCESS_KEY
    assert exc.value.fields["CanonicalRequest"].startswith("GET\n/bucket/key.txt\n")
    assert exc.value.fields["StringToSign"].startswith("AWS4-HMAC-SHA256\n")


def test_unknown_access_key_is_invalid_access_key_id():
    assert _rejected(_sign(S3SigV4Auth, key="AKUNKNOWN")) == ("InvalidAccessKeyId", 403)


@pytest.mark.parametrize("minutes", [16, -16])
def test_clock_skew_beyond_15_minutes_is_request_time_too_skewed(minutes):
    now = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes)
    with pytest.raises(S3Error) as exc:
        _sign(S3SigV4Auth).verify(now=now)
    assert _code(exc) == ("RequestTimeTooSkewed", 403)
    assert exc.value.fields["MaxAllowedSkewMilliseconds"] == "900000"


def test_clock_skew_within_15_minutes_is_accepted():
    now = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=14)
    assert _sign(S3SigV4Auth).verify(now=now).access_key == ACCESS_KEY


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=apollo-dev/20240101/us-east-1/s3/aws4_request",
        "AWS4-HMAC-SHA256 Credential=apollo-dev/20240101/us-east-1/s3/aws4_request, SignedHeaders=host",
        "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=apollo-dev/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=xyz",
        "AWS4-HMAC-SHA512 Credential=apollo-dev/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
        "Bearer abc",
    ],
)
def test_malformed_authorization_header_is_rejected(authorization):
    signed = _sign(S3SigV4Auth)
    signed.headers["Authorization"] = authorization
    assert _rejected(signed) == ("AuthorizationHeaderMalformed", 400)


@pytest.mark.parametrize(
    "credential",
    [
        "apollo-dev/{date}/us-east-1/s3",  # too few parts
        "apollo-dev/{date}/us-east-1/s3/aws5_request",
        "/{date}/us-east-1/s3/aws4_request",  # no key
        "apollo-dev/{date}/us-east-1/ec2/aws4_request",  # another service
    ],
)
def test_malformed_credential_scope_is_rejected(credential):
    signed = _sign(S3SigV4Auth)
    date = signed.headers["x-amz-date"][:8]
    _, _, tail = signed.headers["Authorization"].partition(", SignedHeaders=")
    credential = credential.format(date=date)
    signed.headers["Authorization"] = f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={tail}"
    assert _rejected(signed) == ("AuthorizationHeaderMalformed", 400)


def test_credential_date_other_than_x_amz_date_is_rejected():
    signed = _sign(S3SigV4Auth)
    date = signed.headers["x-amz-date"][:8]
    signed.headers["Authorization"] = signed.headers["Authorization"].replace(f"/{date}/", "/20200101/")
    assert _rejected(signed) == ("AuthorizationHeaderMalformed", 400)


def test_missing_x_amz_content_sha256_is_invalid_request():
    signed = _sign(S3SigV4Auth)
    del signed.headers["x-amz-content-sha256"]
    assert _rejected(signed) == ("InvalidRequest", 400)


def test_missing_date_is_access_denied():
    signed = _sign(S3SigV4Auth)
    del signed.headers["x-amz-date"]
    assert _rejected(signed) == ("AccessDenied", 403)


def test_unparseable_x_amz_date_is_access_denied():
    signed = _sign(S3SigV4Auth)
    signed.headers["x-amz-date"] = "yesterday"
    assert _rejected(signed) == ("AccessDenied", 403)


def test_signed_header_missing_from_request_is_rejected():
    signed = _sign(S3SigV4Auth, headers={"x-amz-meta-a": "1"})
    del signed.headers["x-amz-meta-a"]
    assert _rejected(signed)[1] == 403


def test_header_and_query_authentication_together_is_invalid_argument():
    signed = _sign(S3SigV4QueryAuth)
    signed.headers["Authorization"] = _sign(S3SigV4Auth).headers["Authorization"]
    assert _rejected(signed) == ("InvalidArgument", 400)


# --- SigV4 presigned URLs -------------------------------------------------------------------------------


def test_presigned_get_is_accepted():
    auth = _sign(S3SigV4QueryAuth).verify()
    assert auth.access_key == ACCESS_KEY
    assert auth.presigned is True
    assert auth.content_sha256 == "UNSIGNED-PAYLOAD"


def test_presigned_put_with_signed_content_type_is_accepted():
    signed = _sign(S3SigV4QueryAuth, "PUT", headers={"Content-Type": "image/png"})
    assert signed.verify().presigned is True


def test_presigned_url_with_changed_path_does_not_match():
    signed = _sign(S3SigV4QueryAuth)
    signed.path = "/bucket/other.txt"
    assert _rejected(signed) == ("SignatureDoesNotMatch", 403)


def test_presigned_url_with_added_parameter_does_not_match():
    signed = _sign(S3SigV4QueryAuth)
    signed.query += "&response-content-type=text%2Fhtml"
    assert _rejected(signed) == ("SignatureDoesNotMatch", 403)


def test_presigned_url_with_longer_expiry_does_not_match():
    signed = _sign(S3SigV4QueryAuth)
    signed.query = signed.query.replace("X-Amz-Expires=60", "X-Amz-Expires=3600")
    assert _rejected(signed) == ("SignatureDoesNotMatch", 403)


def test_presigned_url_with_wrong_secret_does_not_match():
    assert _rejected(_sign(S3SigV4QueryAuth, secret="nope")) == ("SignatureDoesNotMatch", 403)


def test_presigned_url_past_its_expiry_is_access_denied():
    now = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=61)
    with pytest.raises(S3Error) as exc:
        _sign(S3SigV4QueryAuth).verify(now=now)
    assert _code(exc) == ("AccessDenied", 403)
    assert exc.value.message == "Request has expired"


def test_presigned_expiry_over_a_week_is_rejected():
    signed = _sign(S3SigV4QueryAuth)
    signed.query = signed.query.replace("X-Amz-Expires=60", "X-Amz-Expires=604801")
    assert _rejected(signed) == ("AuthorizationQueryParametersError", 400)


@pytest.mark.parametrize("param", ["X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
                                   "X-Amz-Signature"])  # fmt: skip
def test_presigned_url_missing_a_parameter_is_rejected(param):
    signed = _sign(S3SigV4QueryAuth)
    signed.query = "&".join(p for p in signed.query.split("&") if not p.startswith(param + "="))
    assert _rejected(signed) == ("AuthorizationQueryParametersError", 400)


def test_presigned_url_for_unknown_key_is_invalid_access_key_id():
    assert _rejected(_sign(S3SigV4QueryAuth, key="AKUNKNOWN")) == ("InvalidAccessKeyId", 403)


# --- SigV2 (HMAC-SHA1) ---------------------------------------------------------------------------------


def test_sigv2_header_signed_put_is_accepted():
    signed = _sign(HmacV1Auth, "PUT", headers={"Content-Type": "text/plain", "x-amz-meta-a": "1"}, body=b"abc")
    assert signed.verify().access_key == ACCESS_KEY


def test_sigv2_subresource_is_part_of_the_signature():
    signed = _sign(HmacV1Auth, "PUT", query="tagging")
    assert signed.verify().access_key == ACCESS_KEY
    signed.query = "acl"
    assert _rejected(signed) == ("SignatureDoesNotMatch", 403)


def test_sigv2_changed_amz_header_does_not_match():
    signed = _sign(HmacV1Auth, "PUT", headers={"x-amz-meta-a": "1"})
    signed.headers["x-amz-meta-a"] = "2"
    assert _rejected(signed) == ("SignatureDoesNotMatch", 403)


def test_sigv2_wrong_secret_does_not_match():
    assert _rejected(_sign(HmacV1Auth, secret="nope")) == ("SignatureDoesNotMatch", 403)


def test_sigv2_unknown_key_is_invalid_access_key_id():
    assert _rejected(_sign(HmacV1Auth, key="AKUNKNOWN")) == ("InvalidAccessKeyId", 403)


def test_sigv2_skewed_date_is_request_time_too_skewed():
    now = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=20)
    assert _rejected(_sign(HmacV1Auth), now=now) == ("RequestTimeTooSkewed", 403)


def test_sigv2_presigned_get_is_accepted_and_expires():
    signed = _sign(HmacV1QueryAuth)
    assert signed.verify().presigned is True
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=120)
    assert _rejected(signed, now=later) == ("AccessDenied", 403)


def test_sigv2_presigned_with_changed_path_does_not_match():
    signed = _sign(HmacV1QueryAuth)
    signed.path = "/bucket/other.txt"
    assert _rejected(signed) == ("SignatureDoesNotMatch", 403)
