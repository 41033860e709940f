"""Multipart upload operations."""

from __future__ import annotations

from aiohttp import web

from apollo import limits
from apollo.gateway.checksums import (
    ALGORITHMS,
    checksum_from_headers,
    checksum_type_of,
    combine_part_checksums,
    multipart_checksum_type,
    new_checksummer,
)
from apollo.gateway.handlers_bucket import _encoder
from apollo.gateway.handlers_object import check_copy_conditions, parse_copy_source, resolve, write_conditions
from apollo.gateway.http import RequestBody, attrs_from_request, count_param, plain_int, read_document
from apollo.gateway.names import part_number, validate_key
from apollo.gateway.s3errors import s3error
from apollo.gateway.state import CLIENT, OWNER, xml_response
from apollo.gateway.xml import iso8601, parse_complete
from apollo.proto.records import Part, Upload


async def create_upload(request: web.Request, bucket: str, key: str) -> web.Response:
    validate_key(key)
    attrs = attrs_from_request(request)
    algorithm = request.headers.get("x-amz-checksum-algorithm", "").upper()
    requested_type = request.headers.get("x-amz-checksum-type")
    if algorithm and algorithm not in ALGORITHMS:
        raise s3error("InvalidRequest", f"Checksum algorithm {algorithm} is not supported")
    if requested_type and not algorithm:
        raise s3error("InvalidRequest", "x-amz-checksum-type requires x-amz-checksum-algorithm")
    checksum_type = multipart_checksum_type(algorithm, requested_type) if algorithm else ""
    upload_id = await request.app[CLIENT].create_upload(bucket, key, attrs, checksum_algorithm=algorithm,
                                                        checksum_type=checksum_type)  # fmt: skip
    headers = {}
    if algorithm:  # SDKs read them back, as from AWS
        headers = {"x-amz-checksum-algorithm": algorithm, "x-amz-checksum-type": checksum_type}
    return xml_response("InitiateMultipartUploadResult", {"Bucket": bucket, "Key": key, "UploadId": upload_id},
                        headers=headers)  # fmt: skip


async def upload_part(request: web.Request, bucket: str, key: str) -> web.Response:
    number = part_number(request.query["partNumber"])
    upload_id = request.query["uploadId"]
    if "x-amz-copy-source" in request.headers:
        return await _upload_part_copy(request, bucket, key, upload_id, number)
    body = RequestBody(request, limits.part_size_bytes_max)
    part = await request.app[CLIENT].upload_part(bucket, key, upload_id, number, body.chunks(),
                                                 checksummers=body.checksummers, verify=body.verify)  # fmt: skip
    headers = {"ETag": f'"{part.etag}"'}
    for algorithm, value in part.checksums.items():
        headers[f"x-amz-checksum-{algorithm.lower()}"] = value
    return web.Response(headers=headers)


async def _upload_part_copy(request: web.Request, bucket: str, key: str, upload_id: str, number: int) -> web.Response:
    src_bucket, src_key, src_version = parse_copy_source(request)
    source = await resolve(request, src_bucket, src_key, src_version)
    check_copy_conditions(request, source)
    start, end = 0, source.size
    spec = request.headers.get("x-amz-copy-source-range")
    if spec is not None:
        unit, _, span = spec.partition("=")
        first, _, last = span.partition("-")
        first_byte, last_byte = plain_int(first), plain_int(last)
        if unit != "bytes" or first_byte is None or last_byte is None:
            raise s3error("InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last",
                          ArgumentName="x-amz-copy-source-range")  # fmt: skip
        start, end = first_byte, last_byte + 1
        if start >= end or end > source.size:  # AWS: 400 InvalidArgument with this message (not GET's 416)
            raise s3error("InvalidArgument", f"Range specified is not valid for source object of size: {source.size}",
                          ArgumentName="x-amz-copy-source-range", ArgumentValue=spec)  # fmt: skip
    engine = request.app[CLIENT]
    upload = await engine.get_upload(bucket, key, upload_id)
    algorithm = upload.checksum_algorithm
    checksummers = {algorithm: new_checksummer(algorithm)} if algorithm else None  # so Complete can combine
    part = await engine.copy_part(source, upload, number, start, end, checksummers=checksummers)
    body = {"LastModified": iso8601(part.last_modified), "ETag": f'"{part.etag}"', **_part_checksums(part.checksums)}
    return xml_response("CopyPartResult", body)


async def complete_upload(request: web.Request, bucket: str, key: str) -> web.Response:
    parts = parse_complete(await read_document(request))  # an empty part list is MalformedXML, as on AWS
    if len(parts) > limits.part_number_max:
        raise s3error("InvalidArgument", "Too many parts", ArgumentName="Part")
    declared = checksum_from_headers(request.headers)
    version = await request.app[CLIENT].complete_upload(
        bucket, key, request.query["uploadId"], parts, conditions=write_conditions(request),
        checksum_of=lambda upload, chosen: _object_checksums(upload, chosen, declared),
    )  # fmt: skip
    headers = {"x-amz-version-id": version.version_id} if version.version_id != "null" else {}
    body = {"Location": f"/{bucket}/{key}", "Bucket": bucket, "Key": key, "ETag": f'"{version.etag}"',
            **_part_checksums(version.attrs.checksums)}  # fmt: skip
    if version.attrs.checksums:
        body["ChecksumType"] = checksum_type_of(next(iter(version.attrs.checksums.values())))
    return xml_response("CompleteMultipartUploadResult", body, headers=headers)


def _object_checksums(upload: Upload, chosen: list[Part], declared: tuple[str, str | None] | None) -> dict[str, str]:
    """The completed object's checksum, combined from its parts'; checked against one the client sent.

    Parts uploaded without the upload's algorithm (older clients) leave the object without a checksum
    rather than with a wrong one."""
    algorithm = upload.checksum_algorithm
    if not algorithm or any(algorithm not in part.checksums for part in chosen):
        return {}
    value = combine_part_checksums(algorithm, upload.checksum_type,
                                   [(part.checksums[algorithm], part.size) for part in chosen])  # fmt: skip
    if (
        declared is not None
        and declared[1] is not None
        and (declared[0] != algorithm or declared[1].split("-")[0] != value.split("-")[0])
    ):
        raise s3error("BadDigest", f"The {declared[0]} you specified did not match the calculated checksum.")
    return {algorithm: value}


async def abort_upload(request: web.Request, bucket: str, key: str) -> web.Response:
    await request.app[CLIENT].abort_upload(bucket, key, request.query["uploadId"])
    return web.Response(status=204)


async def list_parts(request: web.Request, bucket: str, key: str) -> web.Response:
    upload_id = request.query["uploadId"]
    engine = request.app[CLIENT]
    upload = await engine.get_upload(bucket, key, upload_id)
    marker = count_param(request.query.get("part-number-marker"), "part-number-marker", 0)
    max_parts = count_param(request.query.get("max-parts"), "max-parts", 1000, cap=1000)
    parts, truncated = await engine.list_parts(upload, marker, max_parts)
    body = {
        "Bucket": bucket, "Key": key, "UploadId": upload_id, "Initiator": OWNER, "Owner": OWNER,
        "StorageClass": "STANDARD", "ChecksumAlgorithm": upload.checksum_algorithm or None,
        "ChecksumType": upload.checksum_type or None, "PartNumberMarker": marker,
        "NextPartNumberMarker": parts[-1].part_number if parts else marker, "MaxParts": max_parts,
        "IsTruncated": truncated,
        "Part": [{"PartNumber": p.part_number, "LastModified": iso8601(p.last_modified), "ETag": f'"{p.etag}"',
                  "Size": p.size, **_part_checksums(p.checksums)} for p in parts],
    }  # fmt: skip
    return xml_response("ListPartsResult", body)


def _part_checksums(checksums: dict[str, str]) -> dict[str, str]:
    """A part's stored x-amz-checksum-* values as ListParts elements (ChecksumSHA256...)."""
    return {f"Checksum{name}": value for name, value in checksums.items() if name in ALGORITHMS}


async def list_uploads(request: web.Request, bucket: str, key: str) -> web.Response:
    query = request.query
    encode, encoding = _encoder(request)
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    key_marker, upload_marker = query.get("key-marker", ""), query.get("upload-id-marker", "")
    max_uploads = count_param(query.get("max-uploads"), "max-uploads", 1000, cap=1000)
    page = await request.app[CLIENT].list_uploads(bucket, prefix, delimiter, key_marker, upload_marker,
                                                  max_uploads)  # fmt: skip
    body = {
        "Bucket": bucket, "KeyMarker": encode(key_marker), "UploadIdMarker": upload_marker,
        "NextKeyMarker": encode(page.next_marker) if page.next_marker else None,
        "NextUploadIdMarker": page.next_version_marker, "Prefix": encode(prefix),
        "Delimiter": encode(delimiter) if delimiter else None, "MaxUploads": max_uploads,
        "EncodingType": encoding, "IsTruncated": page.truncated,
        "Upload": [{"Key": encode(u.key), "UploadId": u.upload_id, "Initiator": OWNER, "Owner": OWNER,
                    "StorageClass": "STANDARD", "Initiated": iso8601(u.created)} for u in page.entries],
        "CommonPrefixes": [{"Prefix": encode(p)} for p in page.prefixes],
    }  # fmt: skip
    return xml_response("ListMultipartUploadsResult", body)
