"""Authorization of S3 requests: every request, once its signature is checked (or found absent: anonymous),
is checked before its handler runs against the caller's identity policies, the bucket's policy and owner,
with the decision the native path makes too (``apollo.proto.bucket_access``). A key whose policies grant
everything, or a bucket's owner, on a bucket without a policy, costs a dictionary lookup per request.
"""

from __future__ import annotations

import functools
import time

from aiohttp import web

from apollo import errors
from apollo.client.engine import ObjectEngine
from apollo.gateway.s3errors import s3error
from apollo.gateway.state import CLIENT
from apollo.proto.bucket_access import (
    ANONYMOUS,
    BucketAccess,
    BucketAccessCache,
    Caller,
    existing_tags,
    first_denial,
    keeps_policy_rights,
    request_context,
    visible_buckets,
)
from apollo.proto.records import Bucket
from apollo.proto.s3_actions import extra_for_headers, required

# As on AWS, the bucket owner (and root) can always read, change and delete the bucket policy: never locked out.
OWNER_ALWAYS = {"GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"}


def bucket_access(engine: ObjectEngine) -> BucketAccessCache:
    return BucketAccessCache(engine.get_bucket)


ACCESS = web.AppKey("bucket_access", BucketAccessCache)


def caller(request: web.Request) -> Caller:
    return request.get("caller", ANONYMOUS)


async def _access(request: web.Request, bucket: str) -> BucketAccess | None:
    """The bucket's access, None when there is no bucket (CreateBucket, or a copy source that is gone: the
    handler says which)."""
    try:
        return await request.app[ACCESS].get(bucket) if bucket else None
    except errors.BucketNotFound:
        return None


async def authorize(request: web.Request, op: str, bucket: str, key: str,
                    copy_source: tuple[str, str, str | None] | None = None) -> None:  # fmt: skip
    """Raise AccessDenied unless every (action, resource) ``op`` needs is allowed."""
    who = caller(request)
    if op == "DeleteObjects":  # per key, in its handler
        return
    access = await _access(request, bucket) if op != "CreateBucket" else None
    if op in OWNER_ALWAYS and keeps_policy_rights(who, access, *required(op, bucket, None, None)[0],
                                                  _context(request)):  # fmt: skip
        return
    if not copy_source and who.needs_no_check(access):
        return
    version_id = request.query.get("versionId")
    pairs = required(op, bucket or None, key or None, version_id, copy_source=copy_source)
    pairs += extra_for_headers(op, bucket, key, frozenset(name.lower() for name in request.headers))
    versions = {(bucket, key): version_id}
    if copy_source:  # tag conditions on the source read the version copied
        versions[copy_source[:2]] = copy_source[2]
    await check(request, pairs, versions)


async def check(request: web.Request, pairs: list[tuple[str, str]],
                versions: dict[tuple[str, str], str | None] | None = None) -> None:  # fmt: skip
    """Evaluate each pair for the caller against its bucket; the first one refused is the answer.
    ``versions``: (bucket, key) -> the version the request names of that object, whose tags conditions read."""
    who = caller(request)
    refused = await first_denial(who, pairs, _context(request), lambda name: _access(request, name),
                                 functools.partial(existing_tags, request.app[CLIENT].head), versions)  # fmt: skip
    if refused is not None:
        refused_check, decision = refused
        request["policy_decision"] = f"{decision.outcome.name} {decision.source} {decision.sid or '-'}"
        name = "Anonymous access" if who.principal is None else f"Access key {who.principal}"
        raise s3error("AccessDenied", f"{name} is not allowed {refused_check.action} on {refused_check.resource}")


async def shown_buckets(request: web.Request, buckets: list[Bucket]) -> list[Bucket]:
    """The buckets ListBuckets shows the caller (``apollo.proto.bucket_access.visible_buckets``)."""
    return await visible_buckets(caller(request), buckets, _context(request), lambda name: _access(request, name))


def _context(request: web.Request) -> dict[str, str]:
    """The condition keys a request carries (AWS's global and S3 keys); absent ones are left out, which
    the evaluator treats as AWS does."""
    query = request.query
    context = request_context(request.remote or "", request.secure, time.time())
    for name in ("prefix", "delimiter", "max-keys"):
        if name in query:
            context[f"s3:{name}"] = query[name]
    if "versionId" in query:
        context["s3:VersionId"] = query["versionId"]
    if "x-amz-acl" in request.headers:
        context["s3:x-amz-acl"] = request.headers["x-amz-acl"]
    return context
