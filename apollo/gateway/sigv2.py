"""AWS Signature Version 2 (HMAC-SHA1), still what boto3's ``generate_presigned_url`` emits
by default and what older tools send. Path-style addressing only: the canonical
resource of a virtual-host request needs the bucket from the Host header."""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import hmac
from collections.abc import Callable, Mapping
from urllib.parse import unquote_plus

from multidict import CIMultiDict

from apollo import limits
from apollo.gateway.s3errors import s3error

# How far ahead a presigned URL may expire: SigV4's hard limit (X-Amz-Expires), applied to SigV2's Expires too.
PRESIGN_EXPIRES_MAX_S = 7 * 24 * 3600

# Query parameters that are part of the signed resource (the list AWS and botocore use).
SUBRESOURCES = frozenset(
    [
        "accelerate",
        "acl",
        "cors",
        "defaultObjectAcl",
        "delete",
        "lifecycle",
        "location",
        "logging",
        "notification",
        "partNumber",
        "policy",
        "requestPayment",
        "replication",
        "restore",
        "storageClass",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
        "select",
        "select-type",
        "object-lock",
        "legal-hold",
        "retention",
        "analytics",
        "metrics",
        "inventory",
        "response-content-type",
        "response-content-language",
        "response-expires",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
    ]
)


def _string_to_sign(method: str, raw_path: str, query: dict[str, str], headers: Mapping[str, str], date: str) -> str:
    amz = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("x-amz-"):
            amz.setdefault(lower, []).append(" ".join(value.strip().split()))
    amz_lines = "".join(f"{name}:{','.join(values)}\n" for name, values in sorted(amz.items()))
    resource = raw_path
    signed_params = sorted((n, v) for n, v in query.items() if n in SUBRESOURCES)
    if signed_params:
        resource += "?" + "&".join(f"{n}={v}" if v else n for n, v in signed_params)
    return "\n".join((method, headers.get("Content-MD5", ""), headers.get("Content-Type", ""), date)) + "\n" + \
        amz_lines + resource  # fmt: skip


def wire_bytes(text: str) -> bytes:
    """The bytes the client sent: aiohttp hands a header's non-UTF-8 bytes over as lone surrogates
    (``surrogateescape``), which a plain ``encode()`` refuses with a UnicodeEncodeError (a 500)."""
    return text.encode("utf-8", "surrogateescape")


def _signature(secret: str, text: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), wire_bytes(text), hashlib.sha1).digest()).decode()


def secret_for(access_key: str, lookup_secret: Callable[[str], str | None]) -> str:
    secret = lookup_secret(access_key)
    if secret is None:
        raise s3error("InvalidAccessKeyId", AWSAccessKeyId=access_key)
    return secret


def verify_header(
    method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], authorization: str,
    lookup_secret: Callable[[str], str | None], now: datetime.datetime, max_skew_s: float,
) -> str:  # fmt: skip
    """Check ``Authorization: AWS key:signature``; returns the access key."""
    access_key, sep, signature = authorization[4:].strip().rpartition(":")
    if not sep or not access_key:
        raise s3error("AccessDenied", "The V2 authorization header is malformed; expecting 'AWS key:signature'")
    date = headers.get("x-amz-date") or headers.get("Date")
    if not date:
        raise s3error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    try:
        when = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError) as exc:
        raise s3error("AccessDenied", f"Cannot parse the request date {date!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    if abs((now - when).total_seconds()) > max_skew_s:
        raise skew_error(date, now, max_skew_s)
    date_line = "" if "x-amz-date" in headers else date
    _verify(secret_for(access_key, lookup_secret), method, raw_path, parse_query(raw_query), headers, date_line,
            signature, access_key)  # fmt: skip
    return access_key


def verify_presigned(
    method: str, raw_path: str, raw_query: str, headers: Mapping[str, str],
    lookup_secret: Callable[[str], str | None], now: datetime.datetime,
    max_skew_s: float = limits.clock_skew_s_max,
) -> str:  # fmt: skip
    """Check ``?AWSAccessKeyId=..&Expires=..&Signature=..``; returns the access key."""
    query = parse_query(raw_query)
    access_key, expires, signature = query.get("AWSAccessKeyId"), query.get("Expires"), query.get("Signature")
    if not (access_key and expires and signature):
        raise s3error("AccessDenied", "Query-string authentication requires the Signature, Expires and "
                      "AWSAccessKeyId parameters")  # fmt: skip
    _check_expires(expires, now, max_skew_s)
    # x-amz-* parameters are signed as the headers they stand for (botocore moves the session token there).
    signed_headers = CIMultiDict(headers)
    for name, value in query.items():
        if name.lower().startswith("x-amz-"):
            signed_headers.add(name.lower(), value)
    _verify(secret_for(access_key, lookup_secret), method, raw_path, query, signed_headers, expires, signature,
            access_key)  # fmt: skip
    return access_key


def _check_expires(expires: str, now: datetime.datetime, max_skew_s: float) -> None:
    """``Expires`` (seconds since the epoch) must be in the future, and at most 7 days away.

    AWS puts no upper bound on a SigV2 expiry (nor does MinIO): a URL signed to expire in 2126 works there
    for a century, and cannot be revoked short of deleting the key. Apollo caps it like SigV4's
    X-Amz-Expires, with the same 400 AuthorizationQueryParametersError, allowing the client's clock to be
    ``max_skew_s`` ahead as for any signed request.
    """
    if not (expires.isascii() and expires.isdigit()):
        raise s3error("AccessDenied", "Expires must be a number of seconds since the epoch")
    expires_at = int(expires) if len(expires) <= 19 else 10**19  # int() refuses 4300+ digits; any 20 are too far
    if now.timestamp() > expires_at:
        raise s3error("AccessDenied", "Request has expired", Expires=expires,
                      ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"))  # fmt: skip
    if expires_at - now.timestamp() > PRESIGN_EXPIRES_MAX_S + max_skew_s:
        raise s3error("AuthorizationQueryParametersError",
                      f"Expires must be at most a week ({PRESIGN_EXPIRES_MAX_S} seconds) from now",
                      Expires=expires, ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"))  # fmt: skip


def _verify(secret: str, method: str, raw_path: str, query: dict[str, str], headers: Mapping[str, str], date: str,
            signature: str, access_key: str) -> None:  # fmt: skip
    """botocore signs a path-style bucket request (``/bucket``) as ``/bucket/`` while sending ``/bucket``,
    and other clients sign what they send: for a bare bucket path both resources are accepted."""
    text = _string_to_sign(method, raw_path, query, headers, date)
    expected = _signature(secret, text)
    bare_bucket = raw_path.count("/") == 1 and len(raw_path) > 1
    if bare_bucket and not hmac.compare_digest(expected.encode(), wire_bytes(signature)):
        alternative = _signature(secret, _string_to_sign(method, raw_path + "/", query, headers, date))
        if hmac.compare_digest(alternative.encode(), wire_bytes(signature)):
            return
    _compare(expected, signature, text, access_key)


def skew_error(request_time: str, now: datetime.datetime, max_skew_s: float):
    """RequestTimeTooSkewed, with the fields AWS returns (shared by SigV2 and SigV4)."""
    return s3error("RequestTimeTooSkewed", RequestTime=request_time, ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   MaxAllowedSkewMilliseconds=str(int(max_skew_s * 1000)))  # fmt: skip


def parse_query(raw_query: str) -> dict[str, str]:
    """Query parameters, decoded (``+`` is a space), the last of repeated names winning."""
    query = {}
    for item in raw_query.split("&"):
        if item:
            name, _, value = item.partition("=")
            query[unquote_plus(name)] = unquote_plus(value)
    return query


def _compare(expected: str, provided: str, text: str, access_key: str) -> None:
    if not hmac.compare_digest(expected.encode(), wire_bytes(provided)):
        raise s3error("SignatureDoesNotMatch", AWSAccessKeyId=access_key, StringToSign=text,
                      SignatureProvided=provided)  # fmt: skip
