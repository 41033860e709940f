"""HTTP details of object requests: bodies, digests, ranges, conditions, headers."""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import re
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
from aiohttp import web

from apollo import limits, metrics
from apollo.client.writer import WriteResult
from apollo.eventloop import StallGuard
from apollo.gateway import header_text
from apollo.gateway.checksums import ALGORITHMS, checksum_from_headers, checksum_type_of, new_checksummer
from apollo.gateway.chunked import AwsChunkedReader
from apollo.gateway.s3errors import S3Error, s3error
from apollo.gateway.state import CLIENT_STALL_S
from apollo.gateway.xml import http_date, validate_tags
from apollo.proto.records import ObjectAttrs, Version

SYSTEM_HEADERS = ("Content-Encoding", "Content-Disposition", "Content-Language", "Cache-Control", "Expires")
READ_CHUNK_BYTES = 1024 * 1024


class _Sha256:
    """x-amz-content-sha256 given as a hex digest: verified over the whole body."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def b64digest(self) -> str:
        return self._hash.hexdigest()


_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS = re.compile(r"[0-9]{1,19}")  # int() would also take " 1", "+1", "1_0" and non-ASCII digits


def plain_int(text: str) -> int | None:
    """The value of a string of ASCII digits (at most 19: any S3 number fits), else None.

    Python's ``int()`` is more lenient than HTTP and S3 are: it takes signs, spaces, underscores and other
    scripts' digits, so ``int()`` alone would let such values through as numbers."""
    return int(text) if _DIGITS.fullmatch(text) else None


def content_sha256(request: web.Request) -> str:
    """The payload hash the request's signature commits to: the ``x-amz-content-sha256`` header, or the
    ``X-Amz-Content-Sha256`` a SigV4 presigned URL signs in its query.

    On a presigned URL the header is not signed (AWS lets it through unsigned, see
    ``sigv4.PRESIGNED_UNSIGNED_OK``), so it may repeat a signed hash but never replace it: otherwise an
    ``UNSIGNED-PAYLOAD`` header would switch off the check the URL's signer asked for.
    """
    header = request.headers.get("x-amz-content-sha256")
    auth = request.get("auth")
    signed = auth.content_sha256 if auth is not None and auth.presigned else None
    if signed is None or not _HEX_SHA256.fullmatch(signed):
        return header or "UNSIGNED-PAYLOAD"
    if header is not None and header.lower() != signed.lower():
        raise s3error("InvalidRequest", "The x-amz-content-sha256 header does not match the X-Amz-Content-Sha256 "
                      "the presigned URL signs")  # fmt: skip
    return signed


def _sha256_to_verify(mode: str) -> str | None:
    """The lowercase hex digest a body must hash to, when the payload hash is a digest (either case: an
    uppercase one is a digest too, not a reason to skip the check)."""
    return mode.lower() if _HEX_SHA256.fullmatch(mode) else None


def sha256_mismatch(expected: str, computed: str) -> S3Error:
    return s3error("XAmzContentSHA256Mismatch", ClientComputedContentSHA256=expected,
                   S3ComputedContentSHA256=computed)  # fmt: skip


def _declared_length(request: web.Request, streaming: bool) -> int:
    """The body's size as the request declares it, before any byte is read: Content-Length, or the decoded
    length of an aws-chunked body. A PUT must declare it (AWS answers 411 MissingContentLength): a
    ``Transfer-Encoding: chunked`` body of unknown size could otherwise run past every size limit."""
    name = "x-amz-decoded-content-length" if streaming else "Content-Length"
    raw = request.headers.get(name)
    if raw is None:
        raise s3error("MissingContentLength")
    length = plain_int(raw)
    if length is None:
        raise s3error("InvalidArgument", f"{name} must be a non-negative integer", ArgumentName=name)
    return length


class RequestBody:
    """A request body as an async iterator of chunks plus the checks to run once it is stored."""

    def __init__(self, request: web.Request, size_max: int) -> None:
        self.request = request
        headers = request.headers
        self.mode = content_sha256(request)
        self.streaming = self.mode.startswith("STREAMING-")
        self.length = _declared_length(request, self.streaming)
        if self.length > size_max:
            raise s3error("EntityTooLarge", MaxSizeAllowed=str(size_max), ProposedSize=str(self.length))
        self._auth = request.get("auth")
        self._chunked: AwsChunkedReader | None = None
        self.checksummers: dict = {}
        self.declared: dict[str, str | None] = {}
        found = checksum_from_headers(headers)
        if found is not None:
            algorithm, expected = found
            self.checksummers[algorithm] = new_checksummer(algorithm)
            self.declared[algorithm] = expected
        self._sha256 = _sha256_to_verify(self.mode)
        if self._sha256 is not None:
            self.checksummers["_sha256"] = _Sha256()
        self.content_md5 = parse_content_md5(headers.get("Content-MD5"))

    async def chunks(self) -> AsyncIterator[bytes]:
        received = 0
        if self.streaming:
            self._chunked = AwsChunkedReader(self.request.content, self.mode, self._auth, self.length)
            source = self._chunked.read_chunks()
        else:
            source = self.request.content.iter_chunked(READ_CHUNK_BYTES)
        with stall_guard(self.request, "receive") as guard:
            try:
                async for chunk in guard.each(source):
                    received += len(chunk)
                    if received > self.length:
                        raise s3error("IncompleteBody", "The request body is longer than its declared length")
                    metrics.bytes_in.inc(len(chunk))
                    yield chunk
            except (aiohttp.ClientPayloadError, ConnectionError, EOFError) as exc:
                raise _ended_early(guard, exc) from exc
        if received != self.length:
            raise s3error("IncompleteBody", f"Received {received} of {self.length} declared bytes")

    def verify(self, result: WriteResult) -> None:
        """Refuse the bytes (before commit) when a declared digest or checksum does not match."""
        if self.content_md5 is not None and self.content_md5 != result.etag:
            raise s3error("BadDigest")
        sha = result.checksums.pop("_sha256", None)
        if sha is not None and sha != self._sha256:
            raise sha256_mismatch(self.mode, sha)
        trailers = self._chunked.trailers if self._chunked else {}
        for algorithm, expected in self.declared.items():
            expected = expected or trailers.get(f"x-amz-checksum-{algorithm.lower()}")
            if expected is None:
                raise s3error("InvalidRequest", f"The trailing x-amz-checksum-{algorithm.lower()} was not sent")
            if expected != result.checksums.get(algorithm):
                raise s3error("BadDigest", f"The {algorithm} you specified did not match the calculated checksum.")


def stall_guard(request: web.Request, direction: str) -> StallGuard:
    """A guard on this request's connection for the client's stall timeout (``--client-timeout``)."""
    return StallGuard(request.transport, request.app[CLIENT_STALL_S], direction)


def _ended_early(guard: StallGuard, exc: BaseException) -> S3Error:
    """The error of a body cut short: by the client, or by us because it stopped sending (logged and counted
    as RequestTimeout, though the cut connection cannot carry the answer)."""
    if guard.stalled:
        return s3error("RequestTimeout")
    return s3error("IncompleteBody", f"The request body ended early: {exc}")


async def read_document(request: web.Request) -> bytes:
    """A whole XML request body, up to ``limits.xml_body_bytes_max``, checked against the payload hash the
    signature covers (a DeleteObjects body swapped in transit must not delete other keys).

    ``StreamReader.read(n)`` returns what has arrived so far, not n bytes: a CompleteMultipartUpload
    of thousands of parts spans many TCP reads, so read until the end of the body.
    """
    expected = _sha256_to_verify(content_sha256(request))
    chunks, size = [], 0
    with stall_guard(request, "receive") as guard:
        try:
            async for chunk in guard.each(request.content.iter_chunked(64 * 1024)):
                size += len(chunk)
                if size > limits.xml_body_bytes_max:
                    raise s3error("MalformedXML", f"The XML document is larger than {limits.xml_body_bytes_max} bytes")
                chunks.append(chunk)
        except (aiohttp.ClientPayloadError, ConnectionError, EOFError) as exc:
            raise _ended_early(guard, exc) from exc
    body = b"".join(chunks)
    if expected is not None and (computed := hashlib.sha256(body).hexdigest()) != expected:
        raise sha256_mismatch(expected, computed)
    return body


INT32_MAX = 2**31 - 1  # S3 reads max-keys, max-parts... as 32-bit integers


def count_param(raw: str | None, name: str, default: int, cap: int | None = None) -> int:
    """A non-negative integer query parameter or header (max-keys, max-parts...), capped like AWS caps it.

    AWS refuses anything but an integer in 0..2147483647 with 400 InvalidArgument ("Argument maxKeys must be
    an integer between 0 and 2147483647"); larger values are not capped silently."""
    if raw is None:
        return default
    value = plain_int(raw)
    if value is None or value > INT32_MAX:
        raise s3error("InvalidArgument", f"Argument {name} must be an integer between 0 and {INT32_MAX}",
                      ArgumentName=name, ArgumentValue=raw)  # fmt: skip
    return value if cap is None else min(value, cap)


def parse_content_md5(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise s3error("InvalidDigest") from exc
    if len(digest) != 16:
        raise s3error("InvalidDigest")
    return digest.hex()


def attrs_from_request(request: web.Request) -> ObjectAttrs:
    headers = request.headers
    user_meta = {}
    meta_bytes = 0
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("x-amz-meta-"):
            text = header_text.decode_value(value)
            user_meta[lower[len("x-amz-meta-") :]] = text
            meta_bytes += len(lower) - len("x-amz-meta-") + len(text.encode("utf-8", "surrogatepass"))
    if meta_bytes > limits.user_metadata_bytes_max:
        raise s3error("MetadataTooLarge",
                      "Your metadata headers exceed the maximum allowed metadata size")  # fmt: skip
    system = {name: headers[name] for name in SYSTEM_HEADERS if name in headers}
    encodings = [token.strip() for token in system.get("Content-Encoding", "").split(",")]
    if "aws-chunked" in (token.lower() for token in encodings):  # a transfer detail, never stored (as on AWS)
        kept = [token for token in encodings if token and token.lower() != "aws-chunked"]
        system.pop("Content-Encoding")
        if kept:
            system["Content-Encoding"] = ",".join(kept)
    tags = parse_tag_header(headers.get("x-amz-tagging", ""))
    return ObjectAttrs(headers.get("Content-Type", "binary/octet-stream"), system, user_meta, tags)


def parse_tag_header(value: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    if not value:
        return {}
    tags = dict(parse_qsl(value, keep_blank_values=True))
    validate_tags(tags)
    return tags


def object_headers(version: Version, request: web.Request | None = None) -> dict[str, str]:
    headers = {
        "ETag": f'"{version.etag}"',
        "Last-Modified": http_date(version.last_modified),
        "Content-Type": version.attrs.content_type or "binary/octet-stream",
        "Accept-Ranges": "bytes",
    }
    headers.update(version.attrs.headers)
    for name, value in version.attrs.user_meta.items():
        headers[f"x-amz-meta-{name}"] = header_text.encode_value(value)
    if version.version_id != "null":
        headers["x-amz-version-id"] = version.version_id
    if version.attrs.tags:
        headers["x-amz-tagging-count"] = str(len(version.attrs.tags))
    if request is not None and request.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
        for algorithm, value in version.attrs.checksums.items():
            if algorithm in ALGORITHMS:
                headers[f"x-amz-checksum-{algorithm.lower()}"] = value
                headers["x-amz-checksum-type"] = checksum_type_of(value)
    if version.parts and request is not None and "partNumber" in request.query:
        headers["x-amz-mp-parts-count"] = str(len(version.parts))  # AWS sends it only to partNumber reads
    return headers


def _parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/").strip('"') for c in header.split(",")]
    return "*" in candidates or etag in candidates


def check_read_conditions(request: web.Request, version: Version) -> None:
    """GET/HEAD preconditions with RFC 7232 / AWS precedence (If-Match beats If-Unmodified-Since...)."""
    headers = request.headers
    if_match, if_none_match = headers.get("If-Match"), headers.get("If-None-Match")
    modified = int(version.last_modified)
    if if_match is not None:
        if not _etag_matches(if_match, version.etag):
            raise _precondition(version)
    else:
        since = _parse_http_date(headers.get("If-Unmodified-Since"))
        if since is not None and modified > since:
            raise _precondition(version)
    if if_none_match is not None:
        if _etag_matches(if_none_match, version.etag):
            raise _not_modified(version)
    else:
        since = _parse_http_date(headers.get("If-Modified-Since"))
        if since is not None and modified <= since:
            raise _not_modified(version)


def _precondition(version: Version) -> S3Error:
    return s3error("PreconditionFailed", Condition="If-Match")


def _not_modified(version: Version) -> S3Error:
    error = s3error("NotModified")
    error.headers = {"ETag": f'"{version.etag}"', "Last-Modified": http_date(version.last_modified)}
    return error


_RANGE_RE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")  # ASCII digits (\d takes any script's), int-sized


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) or None for the whole object; an unsatisfiable range raises 416.

    Syntactically invalid or multi-range headers are ignored (whole object), as AWS does.
    """
    if value is None:
        return None
    match = _RANGE_RE.match(value.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise _invalid_range(size)
        return max(0, size - suffix), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        return None
    if start >= size:
        raise _invalid_range(size)
    return start, end


def _invalid_range(size: int) -> S3Error:
    error = s3error("InvalidRange", ActualObjectSize=str(size), RangeRequested="")
    error.headers = {"Content-Range": f"bytes */{size}"}
    return error


def url_encode(value: str, enabled: bool) -> str:
    return quote(value, safe="/") if enabled else value
