"""Policies on the native path: a metadata call by a native client's key is checked as the S3 request it
stands for would be (``apollo.proto.s3_actions``, ``apollo.proto.policy``), against the key's identity
policies and the bucket's policy and owner, so a key cannot read, write or list around the S3 gateway what
S3 would refuse it. Capability tokens come only with a call that passed.

Root keys are the deployment's roles and operators: gateways check their own callers before they call,
repair and GC act for the cluster. Their calls are not checked here. The decision and the bucket cache
are the gateway's (``apollo.proto.bucket_access``).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable

from apollo import errors
from apollo.meta.service import MetaService
from apollo.proto.bucket_access import (
    BucketAccess,
    BucketAccessCache,
    Caller,
    existing_tags,
    first_denial,
    request_context,
    visible_buckets,
)
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
    "set_bucket_tags": "PutBucketTagging",
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


OWNER_ALWAYS = {"PutBucketPolicy", "DeleteBucketPolicy"}  # as on AWS: the owner is never locked out


@functools.cache
def _signature(target: Callable) -> inspect.Signature:
    """Once per service method (bound methods of one object compare equal): a signature costs more than
    the check it serves."""
    return inspect.signature(target)


class CallPolicy:
    def __init__(self, meta: MetaService) -> None:
        self._meta = meta
        self._buckets = BucketAccessCache(meta.get_bucket)

    async def _access(self, bucket: str | None) -> BucketAccess | None:
        try:
            return await self._buckets.get(bucket) if bucket else None
        except errors.BucketNotFound:
            return None  # the call itself says so, or creates it

    async def check(self, method: str, target: Callable, args: list, kwargs: dict, caller: Caller,
                    source_ip: str, secure: bool) -> None:  # fmt: skip
        """:raises AccessDenied: the S3 operation this call stands for is not allowed to ``caller``."""
        op = CALL_OPS.get(method)
        if op is None:
            return
        bound = _signature(target).bind_partial(*args, **kwargs).arguments
        bucket = bound.get("bucket", bound.get("name"))
        if op == "PutBucketPolicy" and not bound.get("policy"):
            op = "DeleteBucketPolicy"
        access = await self._access(bucket) if op != "CreateBucket" else None
        if caller.needs_no_check(access) or op in OWNER_ALWAYS and caller.owns(access):
            return
        if bucket and access is None and op != "CreateBucket":
            return  # no such bucket: the call says so
        key, version_id = bound.get("key"), bound.get("version_id")
        refused = await first_denial(caller, required(op, bucket, key, version_id),
                                     request_context(source_ip, secure, time.time()), self._access,
                                     functools.partial(existing_tags, self._meta.get_version),
                                     (bucket, key, version_id))  # fmt: skip
        if refused is not None:
            check, _ = refused
            raise errors.AccessDenied(f"Access key {caller.principal} is not allowed {check.action} on "
                                      f"{check.resource}")  # fmt: skip

    async def filter(self, method: str, result: object, caller: Caller, source_ip: str, secure: bool) -> object:
        """The part of a call's answer the caller may see: ListBuckets shows a key the buckets it owns or may
        list, as the gateway's does (``apollo.proto.bucket_access.visible_buckets``)."""
        if method != "list_buckets" or not isinstance(result, list):
            return result
        return await visible_buckets(caller, result, request_context(source_ip, secure, time.time()), self._access)
