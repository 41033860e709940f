"""Authorization of S3 requests by bucket policies (AWS's JSON policy language, ``apollo.proto.policy``).

Every request, once its signature is checked (or found absent: anonymous), is checked before its
handler runs: the (action, resource) pairs its operation needs (``apollo.proto.s3_actions``) are
evaluated against the policy of the bucket each resource is in, with AWS's precedence (an explicit
Deny wins, then an Allow). What a signed key may do besides is, until identity policies exist, what
it could always do: everything its buckets' policies do not deny (``SIGNED_KEY_POLICY``). Anonymous
requests get only what a bucket policy grants to ``"*"``.

Bucket policies are parsed once and kept ``POLICY_TTL_S``: a policy changed on one gateway applies on
every other one within that (on this one at once). A bucket without a policy costs a dictionary lookup
per request for a signed key: the evaluator runs only where a policy could say no.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from apollo import errors
from apollo.client.engine import ObjectEngine
from apollo.gateway.s3errors import s3error
from apollo.proto.policy import SIGNED_KEY_POLICY, Policy, Request, evaluate, parse_policy, request_context
from apollo.proto.s3_actions import extra_for_headers, required

POLICY_TTL_S = 2.0
ALWAYS_ROOTS = {"GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"}  # as on AWS: never locked out


class BucketPolicies:
    """Parsed bucket policies, each kept ``ttl_s`` (a bucket without one too: None)."""

    def __init__(self, engine: ObjectEngine, ttl_s: float = POLICY_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._engine = engine
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Policy | None]] = {}

    async def get(self, bucket: str) -> Policy | None:
        """:raises BucketNotFound:"""
        now = self._clock()
        hit = self._cache.get(bucket)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        text = (await self._engine.get_bucket(bucket)).policy
        policy = parse_policy(text, kind="bucket", bucket=bucket) if text else None
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[bucket] = (now, policy)
        return policy

    def forget(self, bucket: str) -> None:
        self._cache.pop(bucket, None)


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
    identity = [SIGNED_KEY_POLICY] if principal is not None else []
    context = _context(request)
    policies = request.app[POLICIES]
    for action, resource in pairs:
        bucket = _bucket_of(resource)
        try:
            policy = await policies.get(bucket) if bucket else None
        except errors.BucketNotFound:
            policy = None  # CreateBucket, or a copy source that is gone: the handler says which
        decision = evaluate(Request(principal=principal, action=action, resource=resource, context=context,
                                    is_root=bool(request.get("is_root"))), identity, policy)  # fmt: skip
        if not decision.allowed:
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
