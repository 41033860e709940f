"""Bucket-level S3 operations: bucket lifecycle, versioning, listings, batch delete."""

from __future__ import annotations

import base64
import hashlib

from aiohttp import web

from apollo import errors, limits
from apollo.gateway import acl
from apollo.gateway.authorize import ACCESS, caller, check, shown_buckets
from apollo.gateway.http import count_param, parse_content_md5, plain_int, read_document
from apollo.gateway.names import VERSION_ID, check_version_id, validate_key
from apollo.gateway.s3errors import S3Error, s3error, to_s3_error
from apollo.gateway.state import CLIENT, OWNER, xml_response
from apollo.gateway.xml import iso8601, parse_delete, parse_tagging, parse_versioning
from apollo.proto.policy import PolicyError, parse_policy
from apollo.proto.records import ListPage
from apollo.proto.s3_actions import required


def _max_keys(request: web.Request, name: str = "max-keys") -> int:
    return count_param(request.query.get(name), name, limits.list_keys_max, cap=limits.list_keys_max)


LIST_BUCKETS_PAGE_MAX = 10_000  # AWS's max-buckets bound, and its page size when paging is asked for


async def list_buckets(request: web.Request, bucket: str, key: str) -> web.Response:
    """All buckets, or one page of them: newer SDKs send prefix / max-buckets / continuation-token."""
    query = request.query
    prefix = query.get("prefix", "")
    raw_max = query.get("max-buckets", str(LIST_BUCKETS_PAGE_MAX))
    max_buckets = plain_int(raw_max)  # not str.isdigit(): it takes "²", which int() then refuses (a 500)
    if max_buckets is None or not 1 <= max_buckets <= LIST_BUCKETS_PAGE_MAX:
        raise s3error("InvalidArgument", "max-buckets must be between 1 and 10000", ArgumentName="max-buckets",
                      ArgumentValue=raw_max)  # fmt: skip
    after = _decode_token(query["continuation-token"]) if query.get("continuation-token") else ""
    buckets = sorted(await shown_buckets(request, await request.app[CLIENT].list_buckets()), key=lambda b: b.name)
    matching = [b for b in buckets if b.name.startswith(prefix) and b.name > after]
    page = matching[:max_buckets]
    body: dict = {
        "Owner": OWNER,
        "Buckets": {"Bucket": [{"Name": b.name, "CreationDate": iso8601(b.created), "BucketRegion": "us-east-1"}
                               for b in page]},
    }  # fmt: skip
    if len(matching) > len(page):
        body["ContinuationToken"] = _encode_token(page[-1].name)
    if "prefix" in query:
        body["Prefix"] = prefix
    return xml_response("ListAllMyBucketsResult", body)


async def create_bucket(request: web.Request, bucket: str, key: str) -> web.Response:
    await read_document(request)  # CreateBucketConfiguration: any region is accepted
    who = caller(request)
    request.app[ACCESS].forget(bucket)  # a name just deleted and made again: its old owner has no say
    try:
        await request.app[CLIENT].create_bucket(bucket, who.principal or "")  # a temporary key's: its parent's
    except errors.BucketExists:
        owner = (await request.app[CLIENT].get_bucket(bucket)).owner
        if who.is_root and not owner or who.principal is not None and owner == who.principal:
            raise s3error("BucketAlreadyOwnedByYou", BucketName=bucket) from None  # and it stays as it is
        raise s3error("BucketAlreadyExists", BucketName=bucket) from None
    return web.Response(headers={"Location": f"/{bucket}"})


async def head_bucket(request: web.Request, bucket: str, key: str) -> web.Response:
    await request.app[CLIENT].get_bucket(bucket)
    return web.Response(headers={"x-amz-bucket-region": "us-east-1"})


async def delete_bucket(request: web.Request, bucket: str, key: str) -> web.Response:
    await request.app[CLIENT].delete_bucket(bucket)
    request.app[ACCESS].forget(bucket)
    return web.Response(status=204)


async def get_location(request: web.Request, bucket: str, key: str) -> web.Response:
    await request.app[CLIENT].get_bucket(bucket)
    return xml_response("LocationConstraint", {})


async def get_versioning(request: web.Request, bucket: str, key: str) -> web.Response:
    status = await request.app[CLIENT].get_versioning(bucket)
    return xml_response("VersioningConfiguration", {"Status": status or None})


async def put_versioning(request: web.Request, bucket: str, key: str) -> web.Response:
    status = parse_versioning(await read_document(request))
    await request.app[CLIENT].set_versioning(bucket, status)
    return web.Response()


async def get_policy(request: web.Request, bucket: str, key: str) -> web.Response:
    policy = (await request.app[CLIENT].get_bucket(bucket)).policy
    if not policy:
        raise s3error("NoSuchBucketPolicy", BucketName=bucket)
    return web.Response(text=policy, content_type="application/json")


async def put_policy(request: web.Request, bucket: str, key: str) -> web.Response:
    """Stored as sent, once ``apollo.proto.policy`` accepts it for this bucket (AWS's grammar and limits)."""
    document = await read_document(request)
    try:
        parse_policy(document, kind="bucket", bucket=bucket)
        text = document.decode("utf-8")
    except (PolicyError, UnicodeDecodeError) as exc:
        raise s3error("MalformedPolicy", str(exc)) from exc
    await request.app[CLIENT].set_bucket_policy(bucket, text)
    request.app[ACCESS].forget(bucket)
    return web.Response(status=204)


async def delete_policy(request: web.Request, bucket: str, key: str) -> web.Response:
    await request.app[CLIENT].set_bucket_policy(bucket, "")
    request.app[ACCESS].forget(bucket)
    return web.Response(status=204)


async def get_bucket_tagging(request: web.Request, bucket: str, key: str) -> web.Response:
    tags = (await request.app[CLIENT].get_bucket(bucket)).tags
    if not tags:
        raise s3error("NoSuchTagSet", BucketName=bucket)
    return xml_response("Tagging", {"TagSet": {"Tag": [{"Key": k, "Value": v} for k, v in tags.items()]}})


async def put_bucket_tagging(request: web.Request, bucket: str, key: str) -> web.Response:
    tags = parse_tagging(await read_document(request), limits.tags_per_bucket_max, "Bucket")
    await request.app[CLIENT].set_bucket_tags(bucket, tags)
    return web.Response(status=204)


async def delete_bucket_tagging(request: web.Request, bucket: str, key: str) -> web.Response:
    await request.app[CLIENT].set_bucket_tags(bucket, {})
    return web.Response(status=204)


async def get_bucket_acl(request: web.Request, bucket: str, key: str) -> web.Response:
    await request.app[CLIENT].get_bucket(bucket)
    return acl.acl_response()


async def get_ownership_controls(request: web.Request, bucket: str, key: str) -> web.Response:
    await request.app[CLIENT].get_bucket(bucket)
    return acl.ownership_controls_response()


def _entry(version, fetch_owner: bool, encode) -> dict:
    entry = {
        "Key": encode(version.key),
        "LastModified": iso8601(version.last_modified),
        "ETag": f'"{version.etag}"',
        "Size": version.size,
        "StorageClass": "STANDARD",
    }
    if fetch_owner:
        entry["Owner"] = OWNER
    return entry


def _encoder(request: web.Request):
    from urllib.parse import quote

    encoding = request.query.get("encoding-type")
    if encoding not in (None, "url"):
        raise s3error("InvalidArgument", "Invalid Encoding Method specified in Request", ArgumentName="encoding-type")
    return (lambda s: quote(s, safe="/")) if encoding == "url" else (lambda s: s), encoding


async def list_objects(request: web.Request, bucket: str, key: str) -> web.Response:
    query = request.query
    v2 = query.get("list-type") == "2"
    encode, encoding = _encoder(request)
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    max_keys = _max_keys(request)
    if v2:
        token = query.get("continuation-token")
        after = _decode_token(token) if token is not None else query.get("start-after", "")
    else:
        after = query.get("marker", "")
    page: ListPage = await request.app[CLIENT].list_objects(bucket, prefix, delimiter, after, max_keys)
    # ListObjects (v1) sends its Prefix as given even with encoding-type=url (botocore decodes every other
    # key field of it, and ceph's s3-tests read back a prefix of "\n" unencoded); v2 encodes it.
    body: dict = {"Name": bucket, "Prefix": encode(prefix) if v2 else prefix}
    fetch_owner = not v2 or query.get("fetch-owner") == "true"
    if v2:
        if "continuation-token" in query:
            body["ContinuationToken"] = query["continuation-token"]
        if "start-after" in query:
            body["StartAfter"] = encode(query["start-after"])
        body["KeyCount"] = len(page.entries) + len(page.prefixes)
    else:
        body["Marker"] = encode(after)
    body["MaxKeys"] = max_keys
    if delimiter:
        body["Delimiter"] = encode(delimiter)
    if encoding:
        body["EncodingType"] = encoding
    body["IsTruncated"] = page.truncated
    if page.truncated and page.next_marker is not None:
        if v2:
            body["NextContinuationToken"] = _encode_token(page.next_marker)
        elif delimiter or not page.entries or page.next_marker != page.entries[-1].key:
            # v1 clients resume after the last Key when NextMarker is absent (AWS sends it only with a
            # delimiter); a page that stopped elsewhere (past rows it does not show) must say where.
            body["NextMarker"] = encode(page.next_marker)
    body["Contents"] = [_entry(v, fetch_owner, encode) for v in page.entries]
    body["CommonPrefixes"] = [{"Prefix": encode(p)} for p in page.prefixes]
    return xml_response("ListBucketResult", body)


def _encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise s3error("InvalidArgument", "The continuation token provided is incorrect",
                      ArgumentName="continuation-token") from exc  # fmt: skip


async def list_versions(request: web.Request, bucket: str, key: str) -> web.Response:
    query = request.query
    encode, encoding = _encoder(request)
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    key_marker, version_marker = query.get("key-marker", ""), query.get("version-id-marker", "")
    max_keys = _max_keys(request)
    if "version-id-marker" in query:  # a position in the listing: it need not exist any more (a cleanup tool
        if not key_marker:            # deleted it), but it must be of a form Apollo issues
            raise s3error("InvalidArgument", "A version-id marker cannot be specified without a key marker.",
                          ArgumentName="version-id-marker", ArgumentValue=version_marker)  # fmt: skip
        if not VERSION_ID.fullmatch(version_marker):
            raise s3error("InvalidArgument", "Invalid version id specified", ArgumentName="version-id-marker",
                          ArgumentValue=version_marker)  # fmt: skip
    page = await request.app[CLIENT].list_versions(bucket, prefix, delimiter, key_marker, version_marker, max_keys)
    versions, markers = [], []
    for v in page.entries:
        item = {"Key": encode(v.key), "VersionId": v.version_id, "IsLatest": v.is_latest,
                "LastModified": iso8601(v.last_modified)}  # fmt: skip
        if v.delete_marker:
            markers.append({**item, "Owner": OWNER})
        else:
            versions.append({**item, "ETag": f'"{v.etag}"', "Size": v.size, "StorageClass": "STANDARD",
                             "Owner": OWNER})  # fmt: skip
    body = {
        "Name": bucket, "Prefix": encode(prefix), "KeyMarker": encode(key_marker),
        "VersionIdMarker": version_marker, "MaxKeys": max_keys,
        "Delimiter": encode(delimiter) if delimiter else None, "EncodingType": encoding,
        "IsTruncated": page.truncated,
        "NextKeyMarker": encode(page.next_marker) if page.truncated and page.next_marker else None,
        "NextVersionIdMarker": page.next_version_marker if page.truncated else None,
        "Version": versions, "DeleteMarker": markers,
        "CommonPrefixes": [{"Prefix": encode(p)} for p in page.prefixes],
    }  # fmt: skip
    return xml_response("ListVersionsResult", body)


async def _denied(request: web.Request, bucket: str, key: str, version_id: str | None) -> S3Error | None:
    """A key of a DeleteObjects this caller may not delete: S3 checks s3:DeleteObject per key and answers
    AccessDenied for that key alone."""
    try:
        await check(request, required("DeleteObjects", bucket, key, version_id))
    except S3Error as exc:
        return exc
    return None


def _refusal(key: str, version_id: str | None) -> S3Error | None:
    """Why one entry of a DeleteObjects names nothing that could exist, or None: the key rules PutObject
    applies (at most 1024 bytes of UTF-8, not empty, no NUL) and the version ids this gateway issues.
    S3 answers for every key of the request in its own ``<Error>`` (the DeleteObjects reference: "For each
    key, Amazon S3 performs a delete action and returns the result of that delete, success, or failure";
    MinIO does so for keys and version ids it refuses), so a bad entry does not fail the others."""
    try:
        validate_key(key)
        check_version_id(version_id)
    except S3Error as exc:
        return exc
    return None


def _failure(name: str, version_id: str | None, error: S3Error) -> dict:
    entry = {"Key": name, "Code": error.code, "Message": error.message}
    return {**entry, "VersionId": version_id} if version_id else entry


async def delete_objects(request: web.Request, bucket: str, key: str) -> web.Response:
    body = await read_document(request)
    declared = parse_content_md5(request.headers.get("Content-MD5"))
    if declared is not None and hashlib.md5(body).hexdigest() != declared:
        raise s3error("BadDigest")
    objects, quiet = parse_delete(body)
    refused = [_refusal(name, version_id) or await _denied(request, bucket, name, version_id)
               for name, version_id in objects]  # fmt: skip
    valid = [entry for entry, refusal in zip(objects, refused, strict=True) if refusal is None]
    outcomes = iter(await request.app[CLIENT].delete_objects(bucket, valid))
    deleted, failed = [], []
    for (name, version_id), refusal in zip(objects, refused, strict=True):
        result = refusal or next(outcomes)
        if isinstance(result, S3Error):
            failed.append(_failure(name, version_id, result))
            continue
        if isinstance(result, Exception):
            failed.append(_failure(name, version_id, to_s3_error(result, f"DeleteObjects of {name!r}")))
            continue
        if quiet:
            continue
        item: dict = {"Key": name}
        if version_id:
            item["VersionId"] = version_id
        if result.delete_marker:
            item["DeleteMarker"] = True
            item["DeleteMarkerVersionId"] = result.version_id
        deleted.append(item)
    return xml_response("DeleteResult", {"Deleted": deleted, "Error": failed})
