"""Object-level S3 operations: PUT/GET/HEAD/DELETE, copy, tagging."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote, unquote

from aiohttp import web

from apollo import limits, metrics
from apollo.gateway import acl
from apollo.gateway.authorize import absent_key
from apollo.gateway.checksums import ALGORITHMS, new_checksummer
from apollo.gateway.http import (
    RequestBody,
    attrs_from_request,
    check_read_conditions,
    object_headers,
    parse_range,
    parse_tag_header,
    read_document,
    stall_guard,
)
from apollo.gateway.names import check_version_id, part_number, validate_bucket, validate_key
from apollo.gateway.s3errors import S3Error, s3error
from apollo.gateway.state import CLIENT, xml_response
from apollo.gateway.xml import http_date, iso8601, parse_tagging
from apollo.proto.records import Conditions, Version

# Apollo's: a PUT that asks for the member index of the tar archive it writes (refused if the body is none);
# a GET of ``?archpath=NAME`` (AIStore's name) answers that member, naming it in the second header.
TAR_INDEX_HEADER = "x-apollo-tar-index"
TAR_MEMBER_HEADER = "x-apollo-archpath"

RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def write_conditions(request: web.Request) -> Conditions:
    """PutObject's and CompleteMultipartUpload's conditions, in the forms AWS implements: ``If-None-Match: *``
    (the key must not exist: else 412) or ``If-Match`` (an ETag, or ``*``: the key must exist, else 404
    NoSuchKey; a different ETag: 412). AWS answers the rest 501 NotImplemented, and so does Apollo: an ETag in
    If-None-Match, and both headers at once."""
    if_none_match, if_match = request.headers.get("If-None-Match"), request.headers.get("If-Match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise s3error("NotImplemented", "If-None-Match on writes supports only '*'")
    if if_none_match is not None and if_match is not None:
        raise s3error("NotImplemented", "If-Match and If-None-Match cannot be combined on a write")
    return Conditions(if_none_match_star=if_none_match is not None, if_match=if_match)


async def put_object(request: web.Request, bucket: str, key: str) -> web.Response:
    validate_key(key)
    body = RequestBody(request, limits.put_object_size_bytes_max)
    attrs = attrs_from_request(request)
    tar_index = request.headers.get(TAR_INDEX_HEADER, "").lower()
    if tar_index not in ("", "true", "false"):
        raise s3error("InvalidArgument", f"{TAR_INDEX_HEADER} is true or false", ArgumentName=TAR_INDEX_HEADER)
    version, result = await request.app[CLIENT].put_object(
        bucket, key, body.chunks(), attrs, conditions=write_conditions(request),
        checksummers=body.checksummers, verify=body.verify, tar_index=tar_index == "true",
    )  # fmt: skip
    headers = {"ETag": f'"{version.etag}"'}
    if version.version_id != "null":
        headers["x-amz-version-id"] = version.version_id
    for algorithm, value in result.checksums.items():
        headers[f"x-amz-checksum-{algorithm.lower()}"] = value
        headers["x-amz-checksum-type"] = "FULL_OBJECT"  # a single PUT's checksum covers the whole object
    return web.Response(headers=headers)


async def resolve(request: web.Request, bucket: str, key: str, version_id: str | None = None) -> Version:
    """The version a read names; delete markers answer as S3 does (404, or 405 when asked by id)."""
    version_id = check_version_id(version_id if version_id is not None else request.query.get("versionId"))
    version = await request.app[CLIENT].head(bucket, key, version_id)
    if version is None:
        if version_id is not None:
            raise s3error("NoSuchVersion", Key=key, VersionId=version_id)
        raise await _absent(request, bucket, key)
    if version.delete_marker:
        error = s3error("MethodNotAllowed", Key=key) if version_id else await _absent(request, bucket, key)
        if error.code == "AccessDenied":  # says nothing of the marker either
            raise error
        error.headers = {"x-amz-delete-marker": "true", "x-amz-version-id": version.version_id}
        if version_id:
            error.headers["Allow"] = "DELETE"
            error.headers["Last-Modified"] = http_date(version.last_modified)
        raise error
    return version


async def _absent(request: web.Request, bucket: str, key: str) -> S3Error:
    """NoSuchKey, or for the reads AWS documents it for, AccessDenied to a caller who may not list."""
    if request.get("op") in ("GetObject", "HeadObject", "GetObjectAttributes"):
        return await absent_key(request, bucket, key)
    return s3error("NoSuchKey", Key=key)


def _part_range(request: web.Request, version: Version) -> tuple[int, int] | None:
    raw = request.query.get("partNumber")
    if raw is None:
        return None
    number = part_number(raw)
    sizes = version.parts or [version.size]
    if number > len(sizes):
        raise s3error("InvalidPart", "The requested partnumber is not satisfiable")  # AWS: 400 for either kind
    start = sum(sizes[: number - 1])
    return start, start + sizes[number - 1]


# Characters a header value cannot carry: CR and LF would end it (and let the rest pose as further headers),
# the other controls are not field content either (RFC 9110 5.5). HTAB is allowed.
_NOT_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def response_overrides(query: Mapping[str, str]) -> dict[str, str]:
    """The response headers the ``response-*`` query parameters ask for, refused (400 InvalidArgument) when a
    value is no valid header value: it would be a header injection, and aiohttp refuses to send it (500)."""
    headers = {}
    for param, header in RESPONSE_OVERRIDES.items():
        value = query.get(param)
        if value is None:
            continue
        if _NOT_HEADER_VALUE.search(value):
            raise s3error("InvalidArgument", f"{param} must not contain control characters", ArgumentName=param)
        headers[header] = value
    return headers


async def get_object(request: web.Request, bucket: str, key: str) -> web.StreamResponse:
    overrides = response_overrides(request.query)
    version = await resolve(request, bucket, key)
    check_read_conditions(request, version)
    headers = object_headers(version, request)
    base, size = 0, version.size
    member = request.query.get("archpath")
    if member is not None:  # AIStore's: one member of a tar archive indexed when written, as an object
        base, size = await _member_span(request, bucket, key, version, member)
        headers = {k: v for k, v in headers.items() if k.lower() not in ("etag", "content-type")
                   and not k.startswith("x-amz-checksum-")}  # the archive's, not the member's  # fmt: skip
        headers.update({"Content-Type": "application/octet-stream", TAR_MEMBER_HEADER: quote(member)})
    part = _part_range(request, version) if member is None else None
    span = part or parse_range(request.headers.get("Range"), size)
    headers.update(overrides)
    if span:  # a stored checksum covers the whole object only; AWS omits it for ranges and parts
        headers = {k: v for k, v in headers.items() if not k.startswith("x-amz-checksum-")}
    start, end = span if span else (0, size)
    status = 206 if span and (part is None or version.parts) else 200
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return web.Response(status=status, headers=headers)
    return await _stream(request, status, headers, request.app[CLIENT].read(version, base + start, base + end))


async def _member_span(request: web.Request, bucket: str, key: str, version: Version, member: str
                       ) -> tuple[int, int]:  # fmt: skip
    """(offset, size) of a tar member. :raises S3Error: NoSuchKey (no such member, or no index), or a part
    number asked of it."""
    if "partNumber" in request.query:
        raise s3error("InvalidArgument", "partNumber and archpath cannot be combined", ArgumentName="archpath")
    spans = await request.app[CLIENT].tar_member_spans(bucket, [(key, version.seq, member)])
    if spans[0] is None:
        raise s3error("NoSuchKey", f"{key} has no tar member {member!r} (or was written without its index: "
                                   f"{TAR_INDEX_HEADER}: true)")  # fmt: skip
    return spans[0][0], spans[0][1]


async def _stream(request: web.Request, status: int, headers: dict, chunks: AsyncIterator[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(status=status, headers=headers)
    async with contextlib.aclosing(aiter(chunks)) as iterator:  # closed at once: it holds read-ahead
        first = await anext(iterator, b"")  # errors before the first byte still become S3 errors
        await response.prepare(request)
        with stall_guard(request, "send") as guard:
            try:
                if first:
                    await guard.wait(response.write(first))
                    metrics.bytes_out.inc(len(first))
                async for chunk in iterator:
                    await guard.wait(response.write(chunk))  # waits for the socket to drain: backpressure
                    metrics.bytes_out.inc(len(chunk))
            except ConnectionError:
                pass  # the client went away, or stopped reading and was cut off; nothing to tell it
    return response


async def head_object(request: web.Request, bucket: str, key: str) -> web.StreamResponse:
    return await get_object(request, bucket, key)


async def delete_object(request: web.Request, bucket: str, key: str) -> web.Response:
    version_id = check_version_id(request.query.get("versionId"))
    result = await request.app[CLIENT].delete_object(bucket, key, version_id)
    headers = {"x-amz-delete-marker": "true" if result.delete_marker else "false"}  # AWS says either
    if result.version_id:
        headers["x-amz-version-id"] = result.version_id
    return web.Response(status=204, headers=headers)


def parse_copy_source(request: web.Request) -> tuple[str, str, str | None]:
    raw = request.headers["x-amz-copy-source"]
    path, _, query = raw.partition("?")
    try:  # strict: with the default errors="replace", %FF would name the key U+FFFD
        source = unquote(path, errors="strict").lstrip("/")
    except UnicodeDecodeError as exc:
        raise s3error("InvalidArgument", "Copy Source must be UTF-8 once percent-decoded",
                      ArgumentName="x-amz-copy-source") from exc  # fmt: skip
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise s3error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                      ArgumentName="x-amz-copy-source")  # fmt: skip
    validate_bucket(bucket)
    validate_key(key)  # the source key follows the key rules too: a NUL would reach the metadata engine
    version_id = query[len("versionId=") :] if query.startswith("versionId=") else None
    return bucket, key, version_id


def check_copy_conditions(request: web.Request, source: Version) -> None:
    """x-amz-copy-source-if-* follow the GET rules, but every failure is a 412."""
    from apollo.gateway.http import _etag_matches, _parse_http_date

    headers = request.headers
    modified = int(source.last_modified)
    if_match = headers.get("x-amz-copy-source-if-match")
    if_none_match = headers.get("x-amz-copy-source-if-none-match")
    unmodified = _parse_http_date(headers.get("x-amz-copy-source-if-unmodified-since"))
    modified_since = _parse_http_date(headers.get("x-amz-copy-source-if-modified-since"))
    failed = (
        (if_match is not None and not _etag_matches(if_match, source.etag))
        or (if_match is None and unmodified is not None and modified > unmodified)
        or (if_none_match is not None and _etag_matches(if_none_match, source.etag))
        or (if_none_match is None and modified_since is not None and modified <= modified_since)
    )
    if failed:
        raise s3error("PreconditionFailed", Condition="x-amz-copy-source-If")


async def copy_object(request: web.Request, bucket: str, key: str) -> web.Response:
    validate_key(key)
    src_bucket, src_key, src_version = parse_copy_source(request)
    source = await resolve(request, src_bucket, src_key, src_version)
    check_copy_conditions(request, source)
    directive = request.headers.get("x-amz-metadata-directive", "COPY").upper()
    tagging_directive = request.headers.get("x-amz-tagging-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE") or tagging_directive not in ("COPY", "REPLACE"):
        raise s3error("InvalidArgument", "Unknown metadata directive.")
    same = (src_bucket, src_key) == (bucket, key) and src_version in (None, source.version_id)
    if same and directive == "COPY" and "x-amz-storage-class" not in request.headers:
        raise s3error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to itself "
                      "without changing the object's metadata, storage class, website redirect location or "
                      "encryption attributes.")  # fmt: skip
    # AWS keeps the source's checksum algorithm unless x-amz-checksum-algorithm names another; the value is
    # recomputed over the copied bytes (a multipart source's checksum-of-parts cannot be reused anyway).
    requested = request.headers.get("x-amz-checksum-algorithm", "").upper()
    algorithms = [requested] if requested else [a for a in source.attrs.checksums if a in ALGORITHMS]
    checksummers = {algorithm: new_checksummer(algorithm) for algorithm in algorithms}
    attrs = attrs_from_request(request) if directive == "REPLACE" else dataclasses.replace(source.attrs)
    attrs.checksums = {}  # a copy, never the source's record: the copy gets its own checksums and tags
    attrs.tags = (
        parse_tag_header(request.headers.get("x-amz-tagging", "")) if tagging_directive == "REPLACE"
        else dict(source.attrs.tags)
    )  # fmt: skip
    version, result = await request.app[CLIENT].copy_object(
        source, bucket, key, attrs, conditions=write_conditions(request), checksummers=checksummers
    )
    headers = {"x-amz-version-id": version.version_id} if version.version_id != "null" else {}
    if source.version_id != "null":
        headers["x-amz-copy-source-version-id"] = source.version_id
    body = {"LastModified": iso8601(version.last_modified), "ETag": f'"{version.etag}"'}
    body.update({f"Checksum{algorithm}": value for algorithm, value in result.checksums.items()})
    if result.checksums:
        body["ChecksumType"] = "FULL_OBJECT"  # computed over the copy's bytes
    return xml_response("CopyObjectResult", body, headers=headers)


async def get_tagging(request: web.Request, bucket: str, key: str) -> web.Response:
    version = await resolve(request, bucket, key)
    tags = [{"Key": k, "Value": v} for k, v in version.attrs.tags.items()]
    headers = {"x-amz-version-id": version.version_id} if version.version_id != "null" else {}
    return xml_response("Tagging", {"TagSet": {"Tag": tags}}, headers=headers)


async def put_tagging(request: web.Request, bucket: str, key: str) -> web.Response:
    tags = parse_tagging(await read_document(request))
    version_id = await request.app[CLIENT].set_tags(bucket, key, request.query.get("versionId"), tags)
    return web.Response(headers={"x-amz-version-id": version_id} if version_id != "null" else {})


async def delete_tagging(request: web.Request, bucket: str, key: str) -> web.Response:
    version_id = await request.app[CLIENT].clear_tags(bucket, key, request.query.get("versionId"))
    return web.Response(status=204, headers={"x-amz-version-id": version_id} if version_id != "null" else {})


async def get_object_acl(request: web.Request, bucket: str, key: str) -> web.Response:
    await resolve(request, bucket, key)
    return acl.acl_response()


async def put_acl(request: web.Request, bucket: str, key: str) -> web.Response:
    """Accepted when it sets what there is: the owner's full control (``apollo.gateway.acl``); the ACL
    headers were checked before the handler ran."""
    document = await read_document(request)
    if document.strip():
        acl.check_acl_document(document)
    if key:
        await resolve(request, bucket, key)
    else:
        await request.app[CLIENT].get_bucket(bucket)
    return web.Response()
