"""Authorization of S3 requests: every request, once its signature is checked (or found absent: anonymous),
is checked before its handler runs against the caller's identity policies, the bucket's policy and owner,
with the decision the native path makes too (``apollo.proto.bucket_access``). A key whose policies grant
everything, or a bucket's owner, on a bucket without a policy, costs a dictionary lookup per request.
"""

from __future__ import annotations

import time

from aiohttp import web

from apollo.client.engine import ObjectEngine
from apollo.gateway.s3errors import S3Error, s3error
from apollo.proto.bucket_access import (
    ANONYMOUS,
    OWNER_ALWAYS,
    AccessDecider,
    Caller,
    keeps_policy_rights,
    request_context,  # fmt: skip
)
from apollo.proto.records import Bucket
from apollo.proto.s3_actions import ARN_PREFIX, extra_for_headers, required


def access_decider(engine: ObjectEngine) -> AccessDecider:
    return AccessDecider(engine.get_bucket, engine.head)


ACCESS = web.AppKey("access", AccessDecider)


def caller(request: web.Request) -> Caller:
    return request.get("caller", ANONYMOUS)


async def authorize(request: web.Request, op: str, bucket: str, key: str,
                    copy_source: tuple[str, str, str | None] | None = None) -> None:  # fmt: skip
    """Raise AccessDenied unless every (action, resource) ``op`` needs is allowed."""
    who = caller(request)
    if op in ("DeleteObjects", "GetBatch"):  # per key, in its handler
        return
    access = await request.app[ACCESS].access(bucket) if op != "CreateBucket" else None
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
    refused = await request.app[ACCESS].first_denial(who, pairs, _context(request), versions)
    if refused is not None:
        refused_check, decision = refused
        bucket = refused_check.resource.removeprefix(ARN_PREFIX).partition("/")[0]
        if refused_check.access is None and refused_check.resource != "*" and (
                refused_check.action.lower() != "s3:createbucket"):  # fmt: skip
            raise s3error("NoSuchBucket", BucketName=bucket)  # AWS tells anyone: bucket names are public
        request["policy_decision"] = f"{decision.outcome.name} {decision.source} {decision.sid or '-'}"
        name = "Anonymous access" if who.principal is None else f"Access key {who.principal}"
        raise s3error("AccessDenied", f"{name} is not allowed {refused_check.action} on {refused_check.resource}")


async def absent_key(request: web.Request, bucket: str, key: str) -> S3Error:
    """The answer for a key with no object: AWS says NoSuchKey only to a caller that may list the bucket
    (s3:ListBucket), which could learn it anyway; to others 403 AccessDenied, so that a grant to read
    ``public/*`` does not tell who asks which other keys exist."""
    missing = s3error("NoSuchKey", Key=key)
    if caller(request).needs_no_check(await request.app[ACCESS].access(bucket)):
        return missing
    try:
        await check(request, [("s3:ListBucket", ARN_PREFIX + bucket)])
    except S3Error as denied:
        return denied
    return missing


async def shown_buckets(request: web.Request, buckets: list[Bucket]) -> list[Bucket]:
    """The buckets ListBuckets shows the caller (``AccessDecider.visible``)."""
    return await request.app[ACCESS].visible(caller(request), buckets, _context(request))


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
