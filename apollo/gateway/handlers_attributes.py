"""GetObjectAttributes: an object's ETag, checksum, size and parts without its bytes.

Tools (the AWS CLI's ``s3api get-object-attributes``, checksum-validating
downloaders) call it to learn the part layout of a multipart object before a
parallel, per-part verified download.
"""

from __future__ import annotations

from aiohttp import web

from apollo.gateway.checksums import ALGORITHMS, checksum_type_of
from apollo.gateway.handlers_object import resolve
from apollo.gateway.http import check_read_conditions, count_param
from apollo.gateway.s3errors import s3error
from apollo.gateway.state import xml_response
from apollo.gateway.xml import http_date

ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
MAX_PARTS_DEFAULT = 1000


async def get_object_attributes(request: web.Request, bucket: str, key: str) -> web.Response:
    wanted = [a.strip() for a in request.headers.get("x-amz-object-attributes", "").split(",") if a.strip()]
    if not wanted:
        raise s3error("InvalidArgument", "The x-amz-object-attributes header specifying the attributes to be "
                      "retrieved is either missing or empty", ArgumentName="x-amz-object-attributes")  # fmt: skip
    unknown = [a for a in wanted if a not in ATTRIBUTES]
    if unknown:
        raise s3error("InvalidArgument", f"Invalid attribute name specified: {unknown[0]}",
                      ArgumentName="x-amz-object-attributes")  # fmt: skip
    version = await resolve(request, bucket, key)
    check_read_conditions(request, version)
    body: dict = {}
    if "ETag" in wanted:
        body["ETag"] = version.etag
    checksums = {alg: value for alg, value in version.attrs.checksums.items() if alg in ALGORITHMS}
    if "Checksum" in wanted and checksums:
        body["Checksum"] = {**{f"Checksum{alg}": value for alg, value in sorted(checksums.items())},
                            "ChecksumType": checksum_type_of(next(iter(checksums.values())))}  # fmt: skip
    if "ObjectParts" in wanted and version.parts:
        algorithm = next(iter(checksums), "") if version.part_checksums else ""
        body["ObjectParts"] = _parts(request, version.parts, algorithm, version.part_checksums)
    if "StorageClass" in wanted:
        body["StorageClass"] = "STANDARD"
    if "ObjectSize" in wanted:
        body["ObjectSize"] = version.size
    headers = {"Last-Modified": http_date(version.last_modified)}
    if version.version_id != "null":
        headers["x-amz-version-id"] = version.version_id
    return xml_response("GetObjectAttributesResponse", body, headers=headers)


def _parts(request: web.Request, sizes: list[int], algorithm: str, checksums: list[str]) -> dict:
    """A page of the parts; each with its checksum when the upload had one (``algorithm``)."""
    headers = request.headers
    max_parts = count_param(headers.get("x-amz-max-parts"), "x-amz-max-parts", MAX_PARTS_DEFAULT, MAX_PARTS_DEFAULT)
    marker = count_param(headers.get("x-amz-part-number-marker"), "x-amz-part-number-marker", 0)
    numbers = list(range(marker + 1, len(sizes) + 1))
    page = numbers[:max_parts]
    truncated = len(numbers) > len(page)
    return {
        "PartsCount": len(sizes),  # boto3 calls it TotalPartsCount; the XML element is PartsCount
        "PartNumberMarker": marker,
        "NextPartNumberMarker": page[-1] if page else marker,
        "MaxParts": max_parts,
        "IsTruncated": truncated,
        "Part": [{"PartNumber": n, "Size": sizes[n - 1],
                  **({f"Checksum{algorithm}": checksums[n - 1]} if algorithm else {})} for n in page],  # fmt: skip
    }
