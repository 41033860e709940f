"""Authorization of S3 requests by bucket policies: every request, once its signature is checked (or
found absent: anonymous), is checked before its handler runs, with the decision the native path makes
too (``apollo.proto.bucket_access``). A bucket without a policy costs a signed key a dictionary lookup
per request: the evaluator runs only where a policy could say no.
"""

from __future__ import annotations

import time

from aiohttp import web

from apollo import errors
from apollo.client.engine import ObjectEngine
from apollo.gateway.s3errors import s3error
from apollo.proto.bucket_access import BucketPolicies, denial, request_context
from apollo.proto.s3_actions import extra_for_headers, required

ALWAYS_ROOTS = {"GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"}  # as on AWS: never locked out


def bucket_policies(engine: ObjectEngine) -> BucketPolicies:
    async def policy_text(bucket: str) -> str:
        return (await engine.get_bucket(bucket)).policy

    return BucketPolicies(policy_text)


POLICIES = web.AppKey("policies", BucketPolicies)


async def authorize(request: web.Request, op: str, bucket: str, key: str,
                    copy_source: tuple[str, str, str | None] | None = None) -> None:  # fmt: skip
    """Raise AccessDenied unless every (action, resource) ``op`` needs is allowed."""
    principal = request.get("access_key")
    is_root = bool(request.get("is_root"))
    if is_root and op in ALWAYS_ROOTS or op == "DeleteObjects":  # DeleteObjects: per key, in its handler
        return
    policies = request.app[POLICIES]
    if principal is not None and not copy_source and (not bucket or op == "CreateBucket"
                                                       or await policies.get(bucket) is None):  # fmt: skip
        return  # a signed key, and no policy that could deny it
    pairs = required(op, bucket or None, key or None, request.query.get("versionId"), copy_source=copy_source)
    pairs += extra_for_headers(op, bucket, key, frozenset(name.lower() for name in request.headers))
    await check(request, pairs)


async def check(request: web.Request, pairs: list[tuple[str, str]]) -> None:
    """Evaluate each pair against its bucket's policy; the first one refused is the answer."""
    principal = request.get("access_key")
    policies = request.app[POLICIES]
    checks = []
    for action, resource in pairs:
        bucket = _bucket_of(resource)
        try:
            policy = await policies.get(bucket) if bucket else None
        except errors.BucketNotFound:
            policy = None  # CreateBucket, or a copy source that is gone: the handler says which
        checks.append((action, resource, policy))
    refused = denial(principal, bool(request.get("is_root")), _context(request), checks)
    if refused is not None:
        action, resource, decision = refused
        request["policy_decision"] = f"{decision.outcome.name} {decision.source} {decision.sid or '-'}"
        who = "Anonymous access" if principal is None else f"Access key {principal}"
        raise s3error("AccessDenied", f"{who} is not allowed {action} on {resource}")


def _bucket_of(resource: str) -> str:
    """The bucket of ``arn:aws:s3:::bucket[/key]``; "" for ``*`` (ListAllMyBuckets)."""
    prefix = "arn:aws:s3:::"
    return resource[len(prefix) :].partition("/")[0] if resource.startswith(prefix) else ""


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
