"""Bucket policies on the native path: a metadata call by a native client's key is checked as the S3 request
it stands for would be (``apollo.proto.s3_actions``, ``apollo.proto.policy``), so a key a policy denies
cannot read, write or list around the S3 gateway. Capability tokens come only with a call that passed.

Root keys are the deployment's roles and operators: gateways check their own callers before they call,
repair and GC act for the cluster. Their calls are not checked here. Bucket policies are read through
the service and kept ``POLICY_TTL_S`` (the gateways' rule).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable

from apollo import errors
from apollo.meta.service import MetaService
from apollo.proto.policy import SIGNED_KEY_POLICY, Policy, Request, evaluate, parse_policy, request_context
from apollo.proto.s3_actions import required

POLICY_TTL_S = 2.0

# Metadata call -> the S3 operation it stands for. Calls that name no bucket (a part of an upload, the
# cluster map, damage reports) carry nothing a bucket policy speaks of: the call before them was checked.
CALL_OPS: dict[str, str] = {
    "create_bucket": "CreateBucket",
    "get_bucket": "HeadBucket",
    "list_buckets": "ListBuckets",
    "delete_bucket": "DeleteBucket",
    "set_bucket_policy": "PutBucketPolicy",
    "set_versioning": "PutBucketVersioning",
    "commit_version": "PutObject",
    "get_version": "GetObject",
    "delete_object": "DeleteObject",
    "set_tags": "PutObjectTagging",
    "list_objects": "ListObjects",
    "list_versions": "ListObjectVersions",
    "create_upload": "CreateMultipartUpload",
    "get_upload": "UploadPart",
    "list_uploads": "ListMultipartUploads",
    "abort_upload": "AbortMultipartUpload",
    "complete_upload": "CompleteMultipartUpload",
}


@functools.lru_cache(maxsize=1024)
def _parsed(text: str, bucket: str) -> Policy:
    return parse_policy(text, kind="bucket", bucket=bucket)


class CallPolicy:
    def __init__(self, meta: MetaService, clock: Callable[[], float] = time.monotonic) -> None:
        self._meta = meta
        self._clock = clock
        self._texts: dict[str, tuple[float, str]] = {}  # bucket -> (read at, policy text)

    async def _policy(self, bucket: str) -> Policy | None:
        now = self._clock()
        hit = self._texts.get(bucket)
        if hit is None or now - hit[0] >= POLICY_TTL_S:
            try:
                text = (await self._meta.get_bucket(bucket)).policy
            except errors.BucketNotFound:
                return None  # the call itself says so
            if len(self._texts) > 100_000:
                self._texts.clear()
            hit = self._texts[bucket] = (now, text)
        return _parsed(hit[1], bucket) if hit[1] else None

    async def check(self, method: str, target: Callable, args: list, kwargs: dict, access_key: str,
                    source_ip: str, secure: bool) -> None:  # fmt: skip
        """:raises AccessDenied: the S3 operation this call stands for is not allowed to ``access_key``."""
        op = CALL_OPS.get(method)
        if op is None:
            return
        bound = inspect.signature(target).bind_partial(*args, **kwargs).arguments
        bucket = bound.get("bucket", bound.get("name"))
        if op == "PutBucketPolicy" and not bound.get("policy"):
            op = "DeleteBucketPolicy"
        policy = await self._policy(bucket) if bucket else None
        if bucket and policy is None or op == "CreateBucket":
            return  # a signed key, and no policy that could deny it
        key, version_id = bound.get("key"), bound.get("version_id")
        context = request_context(source_ip, secure, time.time())
        for action, resource in required(op, bucket, key, version_id):
            decision = evaluate(Request(principal=access_key, action=action, resource=resource, context=context),
                                [SIGNED_KEY_POLICY], policy)  # fmt: skip
            if not decision.allowed:
                raise errors.AccessDenied(f"Access key {access_key} is not allowed {action} on {resource}")
