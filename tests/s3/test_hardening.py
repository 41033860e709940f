"""Attacks on the S3 gateway that once worked, each performed against a real server.

Each test sends what an attacker (or a confused client) would send and checks the refusal: presigned URLs
that outlive the 7-day cap or accept a body other than the one they sign, XML entity expansion, request
bodies of unbounded size, header injection through ``response-*`` overrides, aws-chunked size fields
Python's ``int(x, 16)`` is too lenient about, error messages that reveal drive paths, and query
parameters outside the ranges S3 accepts.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.client
import os
import shutil
import urllib.request
import xml.etree.ElementTree as ET
from urllib.parse import quote

import boto3
import pytest
from botocore.config import Config
from signed_http import Reply, send, sign

from apollo.testing.s3error import s3_error
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

REGION = "us-east-1"
DAY_S = 24 * 3600


def _absent(s3, bucket: str, key: str) -> bool:
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key=key)
    return True


def _reply(connection: http.client.HTTPConnection) -> Reply:
    response = connection.getresponse()
    return Reply(response.status, response.headers, response.read())


def _message(reply: Reply) -> str:
    return ET.fromstring(reply.body).findtext("Message") or ""


# --- 1. SigV2 presigned URLs: at most 7 days ahead -------------------------------------------------------


def _sigv2_presigned_get(server, bucket: str, key: str, expires_in_s: int) -> str:
    client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=DEV_ACCESS_KEY,
                          aws_secret_access_key=DEV_SECRET_KEY, region_name=REGION,
                          config=Config(signature_version="s3", retries={"max_attempts": 1}))  # fmt: skip
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in_s)
    assert "AWSAccessKeyId=" in url and "X-Amz-Signature" not in url
    return url.removeprefix(server.endpoint)


def test_sigv2_presigned_url_expiring_in_a_century_is_refused(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"secret")
    reply = send(server.port, "GET", _sigv2_presigned_get(server, bucket, "k", 100 * 365 * DAY_S), signed=False)
    assert (reply.status, reply.code) == (400, "AuthorizationQueryParametersError")
    assert b"secret" not in reply.body


def test_sigv2_presigned_url_expiring_in_six_days_still_works(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"shared")
    reply = send(server.port, "GET", _sigv2_presigned_get(server, bucket, "k", 6 * DAY_S), signed=False)
    assert (reply.status, reply.body) == (200, b"shared")


# --- 2. SigV4 presigned URL that signs the payload hash --------------------------------------------------


def _sigv4_presigned(port: int, method: str, path: str, payload_sha256: str) -> str:
    """A presigned URL whose query carries X-Amz-Content-Sha256, signed by hand after the AWS documentation
    (botocore's presigner always signs UNSIGNED-PAYLOAD)."""
    now = datetime.datetime.now(datetime.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{REGION}/s3/aws4_request"
    params = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": f"{DEV_ACCESS_KEY}/{scope}",
              "X-Amz-Date": amz_date, "X-Amz-Expires": "300", "X-Amz-SignedHeaders": "host",
              "X-Amz-Content-Sha256": payload_sha256}  # fmt: skip
    query = "&".join(f"{quote(n, safe='-_.~')}={quote(v, safe='-_.~')}" for n, v in sorted(params.items()))
    canonical = "\n".join((method, quote(path, safe="/~"), query, f"host:127.0.0.1:{port}\n", "host", payload_sha256))
    string_to_sign = "\n".join(("AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()))
    key = ("AWS4" + DEV_SECRET_KEY).encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return f"{path}?{query}&X-Amz-Signature={hmac.digest(key, string_to_sign.encode(), 'sha256').hex()}"


def _put_raw(port: int, target: str, body: bytes, headers: dict[str, str] | None = None) -> Reply:
    headers = {"Content-Length": str(len(body)), **(headers or {})}
    return send(port, "PUT", target, headers, body, signed=False)


def test_sigv4_presigned_put_refuses_a_body_other_than_the_signed_hash(server, s3, bucket):
    url = _sigv4_presigned(server.port, "PUT", f"/{bucket}/k", hashlib.sha256(b"the signed body").hexdigest())
    reply = _put_raw(server.port, url, b"another body")
    assert (reply.status, reply.code) == (400, "XAmzContentSHA256Mismatch")
    assert _absent(s3, bucket, "k")


def test_sigv4_presigned_put_signed_hash_is_not_overridden_by_an_unsigned_header(server, s3, bucket):
    url = _sigv4_presigned(server.port, "PUT", f"/{bucket}/k", hashlib.sha256(b"the signed body").hexdigest())
    reply = _put_raw(server.port, url, b"another body", {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    assert reply.status == 400, reply.body
    assert _absent(s3, bucket, "k")


def test_sigv4_presigned_put_with_the_signed_body_is_stored(server, s3, bucket):
    url = _sigv4_presigned(server.port, "PUT", f"/{bucket}/k", hashlib.sha256(b"the signed body").hexdigest())
    assert _put_raw(server.port, url, b"the signed body").status == 200
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"the signed body"


def test_signed_payload_hash_of_an_xml_request_is_checked(server, s3, bucket):
    """The header form: a DeleteObjects whose body is not the one the signature covers deletes nothing."""
    s3.put_object(Bucket=bucket, Key="victim", Body=b"k")
    signed_body = b"<Delete><Object><Key>decoys</Key></Object></Delete>"
    tampered = b"<Delete><Object><Key>victim</Key></Object></Delete>"  # same length: Content-Length is signed
    headers = sign(server.port, "POST", f"/{bucket}?delete", {"Content-Length": str(len(signed_body))}, signed_body)
    reply = send(server.port, "POST", f"/{bucket}?delete", headers, tampered, signed=False)
    assert (reply.status, reply.code) == (400, "XAmzContentSHA256Mismatch")
    assert s3.get_object(Bucket=bucket, Key="victim")["Body"].read() == b"k"


def test_uppercase_hex_payload_hash_is_still_checked(server, s3, bucket):
    """An uppercase hex x-amz-content-sha256 is a digest too, not a reason to skip the check."""
    wrong = hashlib.sha256(b"not the body").hexdigest().upper()
    reply = send(server.port, "PUT", f"/{bucket}/k", {}, b"the body", payload=wrong)
    assert (reply.status, reply.code) == (400, "XAmzContentSHA256Mismatch")
    assert _absent(s3, bucket, "k")


# --- 3. XML: no DOCTYPE, no entities; DeleteObjects keys follow PutObject's rules --------------------------

LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE Delete [<!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b"<Delete><Object><Key>&c;</Key></Object><Object><Key>x</Key></Object></Delete>"
)  # a 5,000-byte key


def _delete_raw(server, bucket: str, body: bytes) -> Reply:
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    return send(server.port, "POST", f"/{bucket}?delete", {"Content-MD5": md5}, body)


def test_delete_objects_with_expanding_entities_is_malformed_xml(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="x", Body=b"x")
    reply = _delete_raw(server, bucket, LAUGHS)
    assert (reply.status, reply.code) == (400, "MalformedXML")
    assert s3.get_object(Bucket=bucket, Key="x")["Body"].read() == b"x"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_any_doctype_is_malformed_xml(server, s3, bucket, encoding):
    s3.put_object(Bucket=bucket, Key="x", Body=b"x")
    body = (f'<?xml version="1.0" encoding="{encoding}"?><!DOCTYPE Delete>'
            "<Delete><Object><Key>x</Key></Object></Delete>").encode(encoding)  # fmt: skip
    reply = _delete_raw(server, bucket, body)
    assert (reply.status, reply.code) == (400, "MalformedXML")
    assert s3.get_object(Bucket=bucket, Key="x")["Body"].read() == b"x"


@pytest.mark.parametrize("target", ["k?tagging", "?versioning"], ids=["tagging", "versioning"])
def test_entities_are_refused_in_every_request_document(server, s3, bucket, target):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    root = "Tagging" if "tagging" in target else "VersioningConfiguration"
    tag = "<TagSet><Tag><Key>&e;</Key><Value>v</Value></Tag></TagSet>"
    inner = tag if root == "Tagging" else "<Status>&e;</Status>"
    body = f'<!DOCTYPE {root} [<!ENTITY e "Enabled">]><{root}>{inner}</{root}>'.encode()
    reply = send(server.port, "PUT", f"/{bucket}/{target}", {}, body)
    assert (reply.status, reply.code) == (400, "MalformedXML")


def _delete_errors(reply: Reply) -> tuple[list[str], dict[str, str]]:
    """(deleted keys, {key: error code}) of a DeleteResult."""
    root = ET.fromstring(reply.body)
    ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
    deleted = [d.findtext(f"{ns}Key") for d in root.iter(f"{ns}Deleted")]
    failed = {e.findtext(f"{ns}Key"): e.findtext(f"{ns}Code") for e in root.iter(f"{ns}Error")}
    return deleted, failed


def test_delete_objects_reports_a_key_over_1024_bytes_as_a_per_key_error(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="x", Body=b"x")
    long_key = "k" * 1025
    body = f"<Delete><Object><Key>{long_key}</Key></Object><Object><Key>x</Key></Object></Delete>".encode()
    reply = _delete_raw(server, bucket, body)
    assert reply.status == 200, reply.body
    deleted, failed = _delete_errors(reply)
    assert (deleted, failed) == (["x"], {long_key: "KeyTooLongError"})
    assert _absent(s3, bucket, "x")


def test_delete_objects_key_of_1024_multibyte_bytes_is_accepted(server, s3, bucket):
    key = "é" * 512  # 1024 bytes in UTF-8
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    reply = _delete_raw(server, bucket, f"<Delete><Object><Key>{key}</Key></Object></Delete>".encode())
    assert _delete_errors(reply) == ([key], {})


def test_delete_objects_reports_an_empty_key_as_a_per_key_error(server, s3, bucket):
    reply = _delete_raw(server, bucket, b"<Delete><Object><Key></Key></Object><Object><Key>y</Key></Object></Delete>")
    assert reply.status == 200, reply.body
    assert _delete_errors(reply) == (["y"], {"": "InvalidArgument"})


# --- 4. A PUT must say its length ----------------------------------------------------------------------


def _put_transfer_chunked(port: int, target: str, chunks: list[bytes]) -> Reply:
    """PUT with ``Transfer-Encoding: chunked`` and no Content-Length (or decoded length): the size is unknown."""
    headers = sign(port, "PUT", target, {"Transfer-Encoding": "chunked"}, payload="UNSIGNED-PAYLOAD")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("PUT", target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        for chunk in [*chunks, b""]:
            connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        return _reply(connection)
    finally:
        connection.close()


def test_put_object_with_transfer_encoding_chunked_is_missing_content_length(server, s3, bucket):
    reply = _put_transfer_chunked(server.port, f"/{bucket}/k", [b"a" * 1000, b"b" * 1000])
    assert (reply.status, reply.code) == (411, "MissingContentLength")
    assert _absent(s3, bucket, "k")


def test_upload_part_with_transfer_encoding_chunked_is_missing_content_length(server, s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    reply = _put_transfer_chunked(server.port, f"/{bucket}/mp?partNumber=1&uploadId={upload}", [b"a" * 1000])
    assert (reply.status, reply.code) == (411, "MissingContentLength")
    assert s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload).get("Parts", []) == []


# --- 5. response-* overrides cannot inject headers -----------------------------------------------------


@pytest.mark.parametrize("param", ["response-content-type", "response-content-disposition", "response-expires"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_crlf_in_a_response_override_is_invalid_argument(server, s3, bucket, param, method):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    value = quote("text/plain\r\nX-Injected: 1", safe="-_.~")  # encoded as botocore signs it
    reply = send(server.port, method, f"/{bucket}/k?{param}={value}")
    assert reply.status == 400
    assert "X-Injected" not in reply.headers
    if method == "GET":
        assert reply.code == "InvalidArgument"


def test_a_plain_response_override_still_applies(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    value = quote('attachment; filename="a.txt"', safe="-_.~")
    reply = send(server.port, "GET", f"/{bucket}/k?response-content-disposition={value}")
    assert (reply.status, reply.headers["Content-Disposition"]) == (200, 'attachment; filename="a.txt"')


# --- 6. aws-chunked sizes: hex digits only, bounded, never more than declared ----------------------------

UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


def _aws_chunked_headers(decoded_length: int, body_length: int) -> dict[str, str]:
    return {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(decoded_length),
            "Content-Length": str(body_length)}  # fmt: skip


@pytest.mark.parametrize("size", ["0x3", "+3", "0_3", " 3", "3 ", "-0", "00000000000000000003"])
def test_aws_chunked_size_that_is_not_plain_hex_is_incomplete_body(server, s3, bucket, size):
    body = f"{size}\r\nabc\r\n0\r\n\r\n".encode()
    headers = _aws_chunked_headers(3, len(body))
    reply = send(server.port, "PUT", f"/{bucket}/k", headers, body, payload=UNSIGNED_TRAILER)
    assert (reply.status, reply.code) == (400, "IncompleteBody")
    assert _absent(s3, bucket, "k")


def test_aws_chunked_plain_hex_sizes_are_accepted(server, s3, bucket):
    body = b"A\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n"
    headers = _aws_chunked_headers(13, len(body))
    reply = send(server.port, "PUT", f"/{bucket}/k", headers, body, payload=UNSIGNED_TRAILER)
    assert reply.status == 200, reply.body
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"0123456789abc"


def test_aws_chunked_chunk_past_the_decoded_length_is_refused_before_its_bytes_arrive(server, s3, bucket):
    """The second chunk would bring the body past the 4 declared bytes: refused from its header, so the
    server answers without waiting for bytes the client never sends."""
    head = b"3\r\nabc\r\n3\r\n"
    headers = _aws_chunked_headers(4, len(head) + 100)
    headers = sign(server.port, "PUT", f"/{bucket}/k", headers, payload=UNSIGNED_TRAILER)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("PUT", f"/{bucket}/k", skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(head)
        reply = _reply(connection)
    finally:
        connection.close()
    assert (reply.status, reply.code) == (400, "IncompleteBody")
    assert _absent(s3, bucket, "k")


# --- 7. errors never carry drive paths or internal identifiers -----------------------------------------


def _break(area: str, server) -> None:
    """Replace ``area`` (``tmp`` or ``shards``) of every drive with a plain file: each open under it fails
    with an OSError that names the absolute path."""
    for drive in server.drives:
        shutil.rmtree(drive / area)
        (drive / area).write_bytes(b"")


def test_drive_error_on_write_does_not_reveal_paths(make_server):
    server = make_server(drives=6)
    s3 = server.s3()
    s3.create_bucket(Bucket="hardening")
    _break("tmp", server)
    reply = send(server.port, "PUT", "/hardening/k", {}, os.urandom(200_000))
    assert (reply.status, reply.code) == (507, "InsufficientStorage"), reply.body
    assert str(server.root) not in reply.body.decode(errors="replace")
    assert "Not a directory" in _message(reply), "a 507 still names its cause (docs/operations.md)"
    assert str(server.root) in server.log_tail(200), "the log keeps the detail"


def test_drive_error_on_read_does_not_reveal_internals(make_server):
    server = make_server(drives=6)
    s3 = server.s3()
    s3.create_bucket(Bucket="hardening")
    s3.put_object(Bucket="hardening", Key="k", Body=os.urandom(200_000))
    _break("shards", server)
    reply = send(server.port, "GET", "/hardening/k")
    assert (reply.status, reply.code) == (503, "ServiceUnavailable"), reply.body
    assert str(server.root) not in reply.body.decode(errors="replace")
    assert "segment" not in _message(reply) and "stripe" not in _message(reply)



def test_public_metrics_do_not_reveal_drive_paths(server):
    """``/metrics`` answers without a signature: drives appear by id, never by path."""
    text = urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10).read().decode()
    assert "apollo_drive_up{" in text
    assert str(server.root) not in text and "path=" not in text

# --- request parameters out of range -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "abc", "2147483648", "1_0", "٣", " 5"])
def test_max_keys_outside_int32_or_not_plain_digits_is_invalid_argument(server, bucket, value):
    reply = send(server.port, "GET", f"/{bucket}?list-type=2&max-keys={quote(value)}")
    assert (reply.status, reply.code) == (400, "InvalidArgument")


@pytest.mark.parametrize("value", ["0", "10001", "1_0", "٣"])
def test_part_number_outside_1_to_10000_or_not_plain_digits_is_invalid_argument(server, s3, bucket, value):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    reply = send(server.port, "PUT", f"/{bucket}/mp?partNumber={quote(value)}&uploadId={upload}", {}, b"x")
    assert (reply.status, reply.code) == (400, "InvalidArgument")


def test_max_buckets_of_a_superscript_digit_is_invalid_argument(server):
    reply = send(server.port, "GET", f"/?max-buckets={quote('²')}")  # str.isdigit() says yes, int() says no
    assert (reply.status, reply.code) == (400, "InvalidArgument")


@pytest.mark.parametrize("source", ["a%00b", "k" * 1025], ids=["nul", "too-long"])
def test_copy_source_key_follows_the_key_rules(server, s3, bucket, source):
    reply = send(server.port, "PUT", f"/{bucket}/dst", {"x-amz-copy-source": f"/{bucket}/{source}"}, b"")
    assert (reply.status, reply.code) in ((400, "InvalidArgument"), (400, "KeyTooLongError"))
    assert _absent(s3, bucket, "dst")
