"""AWS Signature Version 2 (``apollo.gateway.sigv2``), checked against the AWS documentation's own examples:
"Signing and authenticating REST requests", Authentication examples and query string request authentication
(docs.aws.amazon.com/AmazonS3/latest/API/RESTAuthentication.html).

The page now names the bucket "awsexamplebucket1" but still shows the signatures computed when it was
"johnsmith" (they do not match the renamed strings to sign), so the examples here use "johnsmith": every
signature below is AWS's, verified by the code under test.
"""

from __future__ import annotations

import datetime
import email.utils

import pytest
from multidict import CIMultiDict

from apollo.gateway.s3errors import S3Error
from apollo.gateway.sigv2 import _signature, _string_to_sign, parse_query, verify_header, verify_presigned

ACCESS = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SKEW_S = 900


def lookup(access_key: str) -> str | None:
    return SECRET if access_key == ACCESS else None


def at(date: str) -> datetime.datetime:
    return email.utils.parsedate_to_datetime(date)


# (name, method, path-style raw path, raw query, headers, AWS's signature); path-style because the gateway
# canonicalizes path-style requests: the bucket the Host header named moves into the path.
EXAMPLES = [
    ("object GET", "GET", "/johnsmith/photos/puppy.jpg", "", [("Date", "Tue, 27 Mar 2007 19:36:42 +0000")],
     "bWq2s1WEIj+Ydj0vQ697zp+IXMU="),
    ("object PUT", "PUT", "/johnsmith/photos/puppy.jpg", "",
     [("Content-Type", "image/jpeg"), ("Content-Length", "94328"), ("Date", "Tue, 27 Mar 2007 21:15:45 +0000")],
     "MyyxeRY7whkBe+bq8fHCL/2kKUg="),
    ("list", "GET", "/johnsmith/", "prefix=photos&max-keys=50&marker=puppy",
     [("User-Agent", "Mozilla/5.0"), ("Date", "Tue, 27 Mar 2007 19:42:41 +0000")], "htDYFYduRNen8P9ZfE/s9SuKy0U="),
    ("fetch acl", "GET", "/johnsmith/", "acl", [("Date", "Tue, 27 Mar 2007 19:44:46 +0000")],
     "c2WLPFtWHVgbEmeEG93a4cG37dM="),
    ("upload", "PUT", "/static.johnsmith.net/db-backup.dat.gz", "", [
        ("User-Agent", "curl/7.15.5"), ("Date", "Tue, 27 Mar 2007 21:06:08 +0000"), ("x-amz-acl", "public-read"),
        ("content-type", "application/x-download"), ("Content-MD5", "4gJE4saaMU4BqNR0kLY+lw=="),
        ("X-Amz-Meta-ReviewedBy", "joe@johnsmith.net"), ("X-Amz-Meta-ReviewedBy", "jane@johnsmith.net"),
        ("X-Amz-Meta-FileChecksum", "0x02661779"), ("X-Amz-Meta-ChecksumAlgorithm", "crc32"),
        ("Content-Disposition", "attachment; filename=database.dat"), ("Content-Encoding", "gzip"),
        ("Content-Length", "5913339")], "ilyl83RwaSoYIEdixDQcA4OnAnc="),
    ("list all my buckets", "GET", "/", "", [("Date", "Wed, 28 Mar 2007 01:29:59 +0000")],
     "qGdzdERIC03wnaRNKh6OqZehG9s="),
    ("unicode keys", "GET", "/dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re", "",
     [("Date", "Wed, 28 Mar 2007 01:49:49 +0000")], "DNEZGsoieTZ92F3bUfSPQcbGmlM="),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "query", "headers", "signature"), [e[1:] for e in EXAMPLES],
                         ids=[e[0] for e in EXAMPLES])  # fmt: skip
def test_aws_documentation_examples_verify(method, path, query, headers, signature):
    headers = CIMultiDict(headers)
    authorization = f"AWS {ACCESS}:{signature}"
    assert verify_header(method, path, query, headers, authorization, lookup, at(headers["Date"]), SKEW_S) == ACCESS


def test_the_string_to_sign_of_the_upload_example_is_aws_s():
    """amz headers lower-cased, sorted, repeated ones joined by commas; of the other headers only Content-MD5
    and Content-Type; the resource taken literally."""
    _, method, path, _, headers, _ = EXAMPLES[4]
    text = _string_to_sign(method, path, {}, CIMultiDict(headers), "Tue, 27 Mar 2007 21:06:08 +0000")
    assert text == ("PUT\n4gJE4saaMU4BqNR0kLY+lw==\napplication/x-download\nTue, 27 Mar 2007 21:06:08 +0000\n"
                    "x-amz-acl:public-read\nx-amz-meta-checksumalgorithm:crc32\nx-amz-meta-filechecksum:0x02661779\n"
                    "x-amz-meta-reviewedby:joe@johnsmith.net,jane@johnsmith.net\n"
                    "/static.johnsmith.net/db-backup.dat.gz")  # fmt: skip
    assert _signature(SECRET, text) == "ilyl83RwaSoYIEdixDQcA4OnAnc="


def test_only_subresources_are_signed_sorted_and_with_their_values():
    query = parse_query("versionId=v%201&prefix=p&uploads&response-content-type=text%2Fplain&acl&max-keys=5")
    text = _string_to_sign("GET", "/b/k", query, CIMultiDict(), "D")
    assert text.endswith("\n/b/k?acl&response-content-type=text/plain&uploads&versionId=v 1")


def test_amz_header_values_are_folded_to_single_spaces():
    text = _string_to_sign("GET", "/", {}, CIMultiDict([("X-Amz-Meta-A", "  one \t two  ")]), "D")
    assert "x-amz-meta-a:one two\n" in text


def test_a_bare_bucket_path_verifies_signed_with_or_without_its_trailing_slash():
    """botocore signs ``/bucket`` as ``/bucket/``; other clients sign what they send."""
    _, method, _, query, headers, signature = EXAMPLES[2]  # AWS signed /johnsmith/
    headers = CIMultiDict(headers)
    now = at(headers["Date"])
    assert verify_header(method, "/johnsmith", query, headers, f"AWS {ACCESS}:{signature}", lookup, now, SKEW_S)


def test_x_amz_date_replaces_the_date_line_and_is_signed_as_an_amz_header():
    """The page's rule: with x-amz-date, the Date position of the string to sign is empty. (Its DELETE example
    puts the x-amz-date value in that position with no amz header line instead, against its own rule.)"""
    headers = CIMultiDict(
        [("Date", "Tue, 27 Mar 2007 21:20:27 +0000"), ("x-amz-date", "Tue, 27 Mar 2007 21:20:26 +0000")]
    )
    text = "DELETE\n\n\n\nx-amz-date:Tue, 27 Mar 2007 21:20:26 +0000\n/johnsmith/photos/puppy.jpg"
    signature = _signature(SECRET, text)
    now = at("Tue, 27 Mar 2007 21:20:30 +0000")
    auth = f"AWS {ACCESS}:{signature}"
    assert verify_header("DELETE", "/johnsmith/photos/puppy.jpg", "", headers, auth, lookup, now, SKEW_S) == ACCESS


def refused(code: str, call, *args) -> S3Error:
    with pytest.raises(S3Error) as caught:
        call(*args)
    assert caught.value.code == code, caught.value
    return caught.value


def test_a_wrong_signature_is_signature_does_not_match_with_the_string_to_sign():
    _, method, path, query, headers, _ = EXAMPLES[0]
    headers = CIMultiDict(headers)
    error = refused("SignatureDoesNotMatch", verify_header, method, path, query, headers,
                    f"AWS {ACCESS}:AAAAs1WEIj+Ydj0vQ697zp+IXMU=", lookup, at(headers["Date"]), SKEW_S)  # fmt: skip
    assert error.status == 403
    assert error.fields["StringToSign"] == "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/johnsmith/photos/puppy.jpg"
    for tampered in ("/johnsmith/photos/puppy.png", "/johnsmith/photos/Puppy.jpg"):  # the path is signed
        refused("SignatureDoesNotMatch", verify_header, method, tampered, query, headers,
                "AWS " + ACCESS + ":bWq2s1WEIj+Ydj0vQ697zp+IXMU=", lookup, at(headers["Date"]), SKEW_S)  # fmt: skip


def test_header_problems_are_refused_before_any_signature_is_computed():
    date = "Tue, 27 Mar 2007 19:36:42 +0000"
    now = at(date)
    args = ("GET", "/johnsmith/photos/puppy.jpg", "")
    assert refused("InvalidAccessKeyId", verify_header, *args, CIMultiDict(Date=date), "AWS AKNOBODY:sig", lookup,
                   now, SKEW_S).fields == {"AWSAccessKeyId": "AKNOBODY"}  # fmt: skip
    refused("AccessDenied", verify_header, *args, CIMultiDict(Date=date), "AWS no-colon", lookup, now, SKEW_S)
    refused("AccessDenied", verify_header, *args, CIMultiDict(Date=date), "AWS :sig", lookup, now, SKEW_S)
    refused("AccessDenied", verify_header, *args, CIMultiDict(), f"AWS {ACCESS}:sig", lookup, now, SKEW_S)
    refused("AccessDenied", verify_header, *args, CIMultiDict(Date="yesterday"), f"AWS {ACCESS}:sig", lookup, now,
            SKEW_S)  # fmt: skip


@pytest.mark.parametrize("minutes", [-16, 16])
def test_a_request_dated_beyond_the_allowed_skew_is_request_time_too_skewed(minutes):
    _, method, path, query, headers, signature = EXAMPLES[0]
    headers = CIMultiDict(headers)
    now = at(headers["Date"]) + datetime.timedelta(minutes=minutes)
    error = refused("RequestTimeTooSkewed", verify_header, method, path, query, headers, f"AWS {ACCESS}:{signature}",
                    lookup, now, SKEW_S)  # fmt: skip
    assert error.fields["MaxAllowedSkewMilliseconds"] == "900000"
    assert error.fields["RequestTime"] == headers["Date"]
    within = at(headers["Date"]) + datetime.timedelta(minutes=14 if minutes > 0 else -14)
    assert verify_header(method, path, query, headers, f"AWS {ACCESS}:{signature}", lookup, within, SKEW_S)


# query string authentication (presigned URLs) -----------------------------------------------------------

PRESIGNED_QUERY = f"AWSAccessKeyId={ACCESS}&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620"
EXPIRES = datetime.datetime.fromtimestamp(1175139620, datetime.UTC)


def test_aws_presigned_example_verifies_until_it_expires():
    path = "/johnsmith/photos/puppy.jpg"
    for now in (EXPIRES - datetime.timedelta(days=1), EXPIRES):
        assert verify_presigned("GET", path, PRESIGNED_QUERY, CIMultiDict(), lookup, now) == ACCESS
    late = EXPIRES + datetime.timedelta(seconds=1)
    error = refused("AccessDenied", verify_presigned, "GET", path, PRESIGNED_QUERY, CIMultiDict(), lookup, late)
    assert error.message == "Request has expired" and error.fields["Expires"] == "1175139620"
    refused("SignatureDoesNotMatch", verify_presigned, "HEAD", path, PRESIGNED_QUERY, CIMultiDict(), lookup,
            EXPIRES)  # fmt: skip


@pytest.mark.parametrize("query", [
    "Expires=1175139620&Signature=x",  # no access key
    f"AWSAccessKeyId={ACCESS}&Signature=x",  # no expiry
    f"AWSAccessKeyId={ACCESS}&Expires=1175139620",  # no signature
    f"AWSAccessKeyId={ACCESS}&Expires=soon&Signature=x",
])  # fmt: skip
def test_presigned_urls_missing_a_parameter_or_with_a_bad_expiry_are_access_denied(query):
    refused("AccessDenied", verify_presigned, "GET", "/b/k", query, CIMultiDict(), lookup, EXPIRES)


def test_query_parameters_are_decoded_and_the_last_repeat_wins():
    assert parse_query("a=1&b=x+y&c=%2B%2F&a=2&flag&&=v") == {"a": "2", "b": "x y", "c": "+/", "flag": "", "": "v"}
