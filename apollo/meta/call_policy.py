"""Bucket policies on the native path: a metadata call by a native client's key is checked as the S3 request
it stands for would be (``apollo.proto.s3_actions``, ``apollo.proto.policy``), so a key a policy denies
cannot read, write or list around the S3 gateway. Capability tokens come only with a call that passed.

Root keys are the deployment's roles and operators: gateways check their own callers before they call,
repair and GC act for the cluster. Their calls are not checked here. The decision and the policy cache
are the gateway's (``apollo.proto.bucket_access``).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable

from apollo import errors
from apollo.meta.service import MetaService
from apollo.proto.bucket_access import BucketPolicies, denial, request_context
from apollo.proto.s3_actions import required

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


@functools.cache
def _signature(target: Callable) -> inspect.Signature:
    """Once per service method (bound methods of one object compare equal): a signature costs more than
    the check it serves."""
    return inspect.signature(target)


class CallPolicy:
    def __init__(self, meta: MetaService) -> None:
        async def policy_text(bucket: str) -> str:
            return (await meta.get_bucket(bucket)).policy

        self._policies = BucketPolicies(policy_text)

    async def check(self, method: str, target: Callable, args: list, kwargs: dict, access_key: str,
                    source_ip: str, secure: bool) -> None:  # fmt: skip
        """:raises AccessDenied: the S3 operation this call stands for is not allowed to ``access_key``."""
        op = CALL_OPS.get(method)
        if op is None:
            return
        bound = _signature(target).bind_partial(*args, **kwargs).arguments
        bucket = bound.get("bucket", bound.get("name"))
        if op == "PutBucketPolicy" and not bound.get("policy"):
            op = "DeleteBucketPolicy"
        try:
            policy = await self._policies.get(bucket) if bucket else None
        except errors.BucketNotFound:
            return  # the call itself says so
        if bucket and policy is None or op == "CreateBucket":
            return  # a signed key, and no policy that could deny it
        pairs = required(op, bucket, bound.get("key"), bound.get("version_id"))
        context = request_context(source_ip, secure, time.time())
        refused = denial(access_key, False, context, [(action, resource, policy) for action, resource in pairs])
        if refused is not None:
            action, resource, _ = refused
            raise errors.AccessDenied(f"Access key {access_key} is not allowed {action} on {resource}")
