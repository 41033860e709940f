"""AWS Signature Version 4 verification (Authorization header and presigned query); the
entry point for Version 2 too, which ``sigv2`` checks.

The canonical request is rebuilt from what arrived on the wire, the way AWS
documents it for S3: the path re-encoded once (S3 does not double-encode or
normalise), query parameters decoded and re-encoded, sorted; signed headers
trimmed with inner whitespace collapsed. The signing key and the seed
signature are kept in ``AuthContext`` because aws-chunked bodies chain their
chunk signatures from them.

A signature covers only the headers it lists, and ``x-amz-*`` headers change
what a request does (``x-amz-copy-source`` turns an upload into a copy), so
every ``x-amz-*`` header on the request must be signed, as AWS requires
(``_require_amz_headers_signed``). SigV2 needs no such check: its string to
sign carries every ``x-amz-*`` header.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus, unquote_to_bytes

from apollo import limits
from apollo.gateway import sigv2
from apollo.gateway.s3errors import s3error
from apollo.gateway.sigv2 import PRESIGN_EXPIRES_MAX_S, parse_query, secret_for, skew_error, wire_bytes

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*SignedHeaders=(?P<signed>[^,\s]+)\s*,"
    r"\s*Signature=(?P<signature>[0-9a-fA-F]+)\s*$"
)
_SPACES = re.compile(r"\s+")
HEADERS_NOT_SIGNED = "There were headers present in the request which were not signed"
# The one x-amz-* header AWS lets the user of a presigned URL add unsigned (AWS leaves it out of
# HeadersNotSigned; LocalStack's emulation exempts it too), and clients do send
# "x-amz-content-sha256: UNSIGNED-PAYLOAD" with presigned PUTs. It can only restrict the request: a hex value
# is checked against the body, and its streaming modes need x-amz-decoded-content-length, which must be signed
# (signed chunks also need an Authorization header). With an Authorization header it is the payload hash and
# must be signed like every other x-amz-* header.
PRESIGNED_UNSIGNED_OK = frozenset({"x-amz-content-sha256"})


@dataclass(frozen=True)
class AuthContext:
    """Who signed a request, and what a streaming body needs to check its chunk signatures."""

    access_key: str
    signing_key: bytes
    amz_date: str
    scope: str
    seed_signature: str
    content_sha256: str
    presigned: bool


@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """Derived once per key, day and region (four HMACs), as AWS intends: cached."""
    key = _hmac(("AWS4" + secret).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.digest(key, wire_bytes(text), "sha256")


def sign(key: bytes, string_to_sign: str) -> str:
    return hmac.digest(key, wire_bytes(string_to_sign), "sha256").hex()  # one-shot C path: ~3x hmac.new


def signature_matches(expected: str, provided: str) -> bool:
    """``provided`` (hex, either case) is ``expected``; compare_digest raises TypeError on a non-ASCII str."""
    return provided.isascii() and hmac.compare_digest(expected, provided.lower())


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(raw_query: str, drop: str | None = None) -> str:
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        name, value = unquote_plus(name), unquote_plus(value)
        if name != drop:
            pairs.append((_encode(name), _encode(value)))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _canonical_headers(headers: Mapping[str, str], signed: list[str]) -> str:
    lines = []
    getall = getattr(headers, "getall", None)
    for name in signed:
        values = getall(name, []) if getall else ([headers[name]] if name in headers else [])
        if not values:
            raise s3error("AccessDenied", f"Signed header {name!r} is missing from the request")
        lines.append(f"{name}:{','.join(_SPACES.sub(' ', v.strip()) for v in values)}\n")
    return "".join(lines)


def _unsigned_amz_headers(headers: Mapping[str, str], signed: list[str], exempt: frozenset[str]) -> list[str]:
    """The ``x-amz-*`` headers present but not in ``signed`` (lower case, first-seen order, once each).

    ``x-amzn-*`` (trace ids that SDKs never sign) does not match the prefix.
    """
    covered = {name.lower() for name in signed} | exempt
    unsigned: list[str] = []
    for name in headers:
        lower = name.lower()
        if lower.startswith("x-amz-") and lower not in covered and lower not in unsigned:
            unsigned.append(lower)
    return unsigned


def _require_amz_headers_signed(headers: Mapping[str, str], signed: list[str], *, presigned: bool) -> None:
    """Refuse the request, as AWS does, when it carries an ``x-amz-*`` header its signature does not cover."""
    unsigned = _unsigned_amz_headers(headers, signed, PRESIGNED_UNSIGNED_OK if presigned else frozenset())
    if unsigned:
        raise s3error("AccessDenied", HEADERS_NOT_SIGNED, HeadersNotSigned=", ".join(unsigned))


def canonical_request(
    method: str, raw_path: str, query: str, headers: Mapping[str, str], signed: list[str], payload: str
) -> str:
    # Bytes, not str: a path that is not UTF-8 (%FF) must still be signed as sent, so that the request gets
    # past authentication to the InvalidURI it deserves rather than a confusing SignatureDoesNotMatch.
    uri = quote(unquote_to_bytes(raw_path), safe="/~") or "/"
    return "\n".join((method, uri, query, _canonical_headers(headers, signed), ";".join(signed), payload))


_BASIC_TIME = re.compile(r"[0-9]{8}T[0-9]{6}Z")  # ASCII digits: int() alone would take "+5" or "٥" as 5


def _parse_time(value: str, what: str) -> datetime.datetime:
    try:  # slicing instead of strptime: this runs on every request
        if not _BASIC_TIME.fullmatch(value):
            raise ValueError(value)
        return datetime.datetime(int(value[:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                                 int(value[11:13]), int(value[13:15]), tzinfo=datetime.UTC)  # fmt: skip
    except ValueError as exc:
        raise s3error("AccessDenied", f"{what} {value!r} is not an ISO 8601 basic-format timestamp") from exc


def _basic_time_from_date(value: str | None) -> str | None:
    """SigV4 accepts a ``Date`` header in place of ``x-amz-date`` (botocore signs ``Date`` when a request
    already has one); the string to sign then carries the same instant in ISO 8601 basic format."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return when.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    except (TypeError, ValueError, OverflowError):  # OverflowError: "31 Dec 9999 23:00 -0200" is past year 9999
        return None


def _parse_credential(credential: str, amz_date: str, *, presigned: bool, service: str = "s3") -> tuple[str, str, str]:
    """(access key, scope, region) from ``AK/date/region/s3/aws4_request``, checked against the date and the
    service the request is for."""
    parts = credential.split("/")
    code = "AuthorizationQueryParametersError" if presigned else "AuthorizationHeaderMalformed"
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise s3error(code, f"The credential {credential!r} is malformed; expecting '<KEY>/<YYYYMMDD>/<REGION>/s3/aws4_request'.")  # fmt: skip # noqa: E501
    if parts[3] != service:
        raise s3error(code, f"The credential is for service {parts[3]!r}; this request is for {service!r}.")
    if parts[1] != amz_date[:8]:
        raise s3error(code, f"The credential date {parts[1]} does not match the request date {amz_date[:8]}.")
    return parts[0], "/".join(parts[1:]), parts[2]


def verify_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    lookup_secret: Callable[[str], str | None],
    now: datetime.datetime,
    max_skew_s: float = limits.clock_skew_s_max,
    sts_body_sha256: str | None = None,
) -> AuthContext | None:
    """Check a request's SigV4 signature; None for an anonymous request. Raises S3Error.

    ``sts_body_sha256``: the request is an STS call (``apollo.gateway.sts``), whose body the caller read
    and hashed: STS signs that hash without sending it, under the service name ``sts``, in a header only.
    """
    if sts_body_sha256 is not None:
        if not headers.get("Authorization", "").startswith(ALGORITHM):
            raise s3error("AccessDenied", "STS calls are signed with SigV4 in the Authorization header")
        return _verify_header(method, raw_path, raw_query, headers, headers["Authorization"], lookup_secret, now,
                              max_skew_s, sts_body_sha256)  # fmt: skip
    authorization = headers.get("Authorization")
    query_has_sig = "X-Amz-Signature=" in raw_query or "X-Amz-Algorithm=" in raw_query
    query_has_v2 = "Signature=" in raw_query and "AWSAccessKeyId=" in raw_query
    if authorization and (query_has_sig or query_has_v2):
        raise s3error("InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                      "parameter or the Authorization header should be specified")  # fmt: skip
    if authorization and authorization.startswith("AWS "):
        key = sigv2.verify_header(method, raw_path, raw_query, headers, authorization, lookup_secret, now, max_skew_s)
        return AuthContext(key, b"", "", "", "", "UNSIGNED-PAYLOAD", presigned=False)
    if authorization:
        return _verify_header(method, raw_path, raw_query, headers, authorization, lookup_secret, now, max_skew_s)
    if query_has_sig:
        return _verify_presigned(method, raw_path, raw_query, headers, lookup_secret, now, max_skew_s)
    if query_has_v2:
        key = sigv2.verify_presigned(method, raw_path, raw_query, headers, lookup_secret, now, max_skew_s)
        return AuthContext(key, b"", "", "", "", "UNSIGNED-PAYLOAD", presigned=True)
    return None


def _verify_header(method, raw_path, raw_query, headers, authorization, lookup_secret, now, max_skew_s,
                   sts_body_sha256=None):  # fmt: skip
    match = _AUTH_RE.match(authorization.strip())
    if match is None:
        raise s3error("AuthorizationHeaderMalformed",
                      "The authorization header is malformed; expecting 'AWS4-HMAC-SHA256 Credential=..., "
                      "SignedHeaders=..., Signature=...'.")  # fmt: skip
    amz_date = headers.get("x-amz-date") or _basic_time_from_date(headers.get("Date"))
    if amz_date is None:
        raise s3error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    when = _parse_time(amz_date, "x-amz-date")
    if abs((now - when).total_seconds()) > max_skew_s:
        raise skew_error(amz_date, now, max_skew_s)
    service = "s3" if sts_body_sha256 is None else "sts"
    access_key, scope, region = _parse_credential(match["credential"], amz_date, presigned=False, service=service)
    signed = match["signed"].split(";")
    if "host" not in signed:
        raise s3error("AccessDenied", "The host header must be signed")
    _require_amz_headers_signed(headers, signed, presigned=False)
    content_sha256 = headers.get("x-amz-content-sha256") if sts_body_sha256 is None else sts_body_sha256
    if content_sha256 is None:
        raise s3error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    payload = content_sha256
    canonical = canonical_request(method, raw_path, canonical_query(raw_query), headers, signed, payload)
    key = signing_key(secret_for(access_key, lookup_secret), amz_date[:8], region, service)
    expected = sign(key, _string_to_sign(amz_date, scope, canonical))
    if not signature_matches(expected, match["signature"]):
        raise _mismatch(canonical, _string_to_sign(amz_date, scope, canonical), access_key, match["signature"])
    return AuthContext(access_key, key, amz_date, scope, expected, content_sha256, presigned=False)


def _verify_presigned(method, raw_path, raw_query, headers, lookup_secret, now, max_skew_s):
    params = parse_query(raw_query)
    missing = [p for p in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                           "X-Amz-SignedHeaders", "X-Amz-Signature") if not params.get(p)]  # fmt: skip
    if missing:
        raise s3error("AuthorizationQueryParametersError", f"Query-string authentication requires {', '.join(missing)}.")  # fmt: skip # noqa: E501
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise s3error("AuthorizationQueryParametersError", 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    amz_date = params["X-Amz-Date"]
    when = _parse_time(amz_date, "X-Amz-Date")
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError as exc:
        raise s3error("AuthorizationQueryParametersError", "X-Amz-Expires should be a number") from exc
    if expires < 1:
        raise s3error("AuthorizationQueryParametersError", "X-Amz-Expires must be at least 1 second")
    if expires > PRESIGN_EXPIRES_MAX_S:
        raise s3error("AuthorizationQueryParametersError", "X-Amz-Expires must be less than a week (in seconds)")
    if (when - now).total_seconds() > max_skew_s:
        raise skew_error(amz_date, now, max_skew_s)
    if (now - when).total_seconds() > expires:
        expired_at = (when + datetime.timedelta(seconds=expires)).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise s3error("AccessDenied", "Request has expired", Expires=expired_at,
                      ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"), **{"X-Amz-Expires": str(expires)})  # fmt: skip
    access_key, scope, region = _parse_credential(params["X-Amz-Credential"], amz_date, presigned=True)
    signed = params["X-Amz-SignedHeaders"].split(";")
    if "host" not in signed:
        raise s3error("AccessDenied", "The host header must be signed")
    _require_amz_headers_signed(headers, signed, presigned=True)
    payload = params.get("X-Amz-Content-Sha256") or "UNSIGNED-PAYLOAD"
    query = canonical_query(raw_query, drop="X-Amz-Signature")
    canonical = canonical_request(method, raw_path, query, headers, signed, payload)
    key = signing_key(secret_for(access_key, lookup_secret), amz_date[:8], region, "s3")
    string_to_sign = _string_to_sign(amz_date, scope, canonical)
    expected = sign(key, string_to_sign)
    if not signature_matches(expected, params["X-Amz-Signature"]):
        raise _mismatch(canonical, string_to_sign, access_key, params["X-Amz-Signature"])
    return AuthContext(access_key, key, amz_date, scope, expected, payload, presigned=True)


def _string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(wire_bytes(canonical)).hexdigest()))


def _mismatch(canonical: str, string_to_sign: str, access_key: str, signature: str):
    # AWS returns both strings so a client author can see where the two sides differ.
    return s3error("SignatureDoesNotMatch", AWSAccessKeyId=access_key, StringToSign=string_to_sign,
                   SignatureProvided=signature, CanonicalRequest=canonical)  # fmt: skip
