"""Policies on the native path: a metadata call by a native client's key is checked as the S3 request it
stands for would be (``apollo.proto.s3_actions``, ``apollo.proto.policy``), against the key's identity
policies and the bucket's policy and owner, so a key cannot read, write or list around the S3 gateway what
S3 would refuse it. Capability tokens come only with a call that passed.

Root keys are the deployment's roles and operators: gateways check their own callers before they call,
repair and GC act for the cluster. Their calls are not checked here. The decision and the bucket cache
are the gateway's (``apollo.proto.bucket_access``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import time
from collections.abc import Callable

from apollo import errors, ids, limits
from apollo.meta.service import MetaService
from apollo.meta.sql_shared_commits import checked_commits
from apollo.proto.bucket_access import OWNER_ALWAYS, AccessDecider, Caller, keeps_policy_rights, request_context
from apollo.proto.records import Bucket, Lookup
from apollo.proto.s3_actions import OPERATIONS, Target, object_arn, required

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
    "list_tar_members": "GetObject",
    "delete_object": "DeleteObject",
    "rename_object": "DeleteObject",  # and GetObject of the key, PutObject of the new one (``check``)
    "set_tags": "PutObjectTagging",
    "list_objects": "ListObjects",
    "list_versions": "ListObjectVersions",
    # A snapshot shows and pins the keys under its prefix: a listing's right. Reading through one is held to
    # GetObject item by item (``filter``); deleting one, also to having taken it (``SnapshotOps``).
    "create_snapshot": "ListObjects",
    "get_snapshot": "ListObjects",
    "list_snapshots": "ListObjects",
    "list_snapshot": "ListObjects",
    "delete_snapshot": "ListObjects",
    # Transactions: staging a put or a delete is held to what the put or delete itself would be; beginning
    # one conditioned on a prefix shows whether objects exist there (a listing's right), else only that the
    # bucket exists. Commit, abort and lookup are the beginning key's only (``TxnOps``), checked there.
    "begin_txn": "ListObjects",
    "stage_put": "PutObject",
    "stage_delete": "DeleteObject",
    # KV namespaces: the budget and TTL decide when objects go (a lifecycle's right); whether keys hold values
    # is a listing's right; ``kv_lookup`` is held to GetObject on every key it names, before it runs
    # (``_all_readable``): it ranks the values it finds as just read.
    "create_kv_namespace": "CreateBucket",
    "set_kv_namespace": "PutBucketLifecycleConfiguration",
    "get_kv_namespace": "HeadBucket",
    "kv_prefix_hits": "ListObjects",
    "create_upload": "CreateMultipartUpload",
    "get_upload": "UploadPart",
    "list_uploads": "ListMultipartUploads",
    "abort_upload": "AbortMultipartUpload",
    "complete_upload": "CompleteMultipartUpload",
}


def _context(bound: dict, source_ip: str, secure: bool) -> dict[str, str]:
    """The condition keys the S3 request would carry: the global ones and, from the call's arguments, the
    listing's (``s3:prefix``, ``s3:delimiter``, ``s3:max-keys``) and ``s3:VersionId``."""
    context = request_context(source_ip, secure, time.time())
    for name, argument in (("s3:prefix", "prefix"), ("s3:prefix", "if_prefix_absent"), ("s3:delimiter", "delimiter"),
                           ("s3:max-keys", "max_keys"), ("s3:VersionId", "version_id")):  # fmt: skip
        value = bound.get(argument)
        if isinstance(value, str | int) and not isinstance(value, bool) and (value or name == "s3:prefix"):
            context[name] = str(value)
    return context


@functools.cache
def signature_of(target: Callable) -> inspect.Signature:
    """Once per service method (bound methods of one object compare equal): a signature costs more than
    the check it serves, and every metadata call binds its arguments to one."""
    return inspect.signature(target)


def bind(target: Callable, args: list, kwargs: dict) -> dict:
    """A call's arguments by parameter name. :raises TypeError: arguments the method does not take."""
    return signature_of(target).bind_partial(*args, **kwargs).arguments


class CallPolicy:
    def __init__(self, meta: MetaService) -> None:
        self._meta = meta
        self._decider = AccessDecider(meta.get_bucket, meta.get_version)

    async def check(self, method: str, target: Callable, args: list, kwargs: dict, caller: Caller,
                    source_ip: str, secure: bool) -> None:  # fmt: skip
        """:raises AccessDenied: the S3 operation this call stands for is not allowed to ``caller``."""
        if method == "kv_lookup":
            await self._all_readable(target, args, kwargs, caller, source_ip, secure)
            return
        if method == "commit_versions":  # each commit as if alone; a malformed batch is refused first
            for commit in checked_commits(bind(target, args, kwargs).get("commits")):
                await self.check("commit_version", self._meta.commit_version, [], commit, caller, source_ip, secure)
            return
        op = CALL_OPS.get(method)
        if op is None:
            return
        bound = bind(target, args, kwargs)
        bucket = bound.get("bucket", bound.get("name"))
        if op == "PutBucketPolicy" and not bound.get("policy"):
            op = "DeleteBucketPolicy"
        if method == "begin_txn" and bound.get("if_prefix_absent") is None:
            op = "HeadBucket"
        if op == "CreateBucket":  # the gateway checks its callers' names; a native client's, here
            ids.bucket_name(bucket)
        access = await self._decider.access(bucket) if op != "CreateBucket" else None
        context = _context(bound, source_ip, secure)
        if op in OWNER_ALWAYS and keeps_policy_rights(caller, access, *required(op, bucket, None, None)[0], context):
            return
        tags = getattr(bound.get("attrs"), "tags", None)  # a write that sets tags also needs s3:PutObjectTagging
        if caller.needs_no_check(access) and not tags:
            return
        if bucket and access is None and op != "CreateBucket":
            return  # no such bucket: the call says so
        key, version_id = bound.get("key"), bound.get("version_id")
        if any(need.target is not Target.BUCKET and need.target is not Target.SERVICE for need in OPERATIONS[op]) \
                and not (isinstance(key, str) and key):  # fmt: skip
            raise errors.InvalidRequest(f"{method} names an object: give its key")
        pairs = required(op, bucket, key, version_id)
        if method == "rename_object":  # a copy and a delete, in one
            dest_key = bound.get("dest_key")
            if not (isinstance(dest_key, str) and dest_key):
                raise errors.InvalidRequest("rename_object names the new key")
            pairs += required("GetObject", bucket, key, None) + required("PutObject", bucket, dest_key, None)
        if tags:
            pairs.append(("s3:PutObjectTagging", object_arn(bucket, key)))
        refused = await self._decider.first_denial(caller, pairs, context, {(bucket, key): version_id})
        if refused is not None:
            check, _ = refused
            raise errors.AccessDenied(f"Access key {caller.principal} is not allowed {check.action} on "
                                      f"{check.resource}")  # fmt: skip

    async def _all_readable(self, target: Callable, args: list, kwargs: dict, caller: Caller, source_ip: str,
                            secure: bool) -> None:  # fmt: skip
        """A KV lookup is refused whole, before it runs, if any key it names is not readable: it records each
        value found as read (``MetaService.kv_lookup``), and a key must not rank values it may not read to be
        kept from eviction. :raises AccessDenied:"""
        bound = bind(target, args, kwargs)
        bucket, keys = bound.get("bucket"), bound.get("keys")
        if not (isinstance(bucket, str) and isinstance(keys, list) and len(keys) <= limits.batch_lookup_items_max
                and all(isinstance(k, str) for k in keys)):  # fmt: skip
            return  # the store refuses the malformed call, before any work
        context = request_context(source_ip, secure, time.time())
        shown = await self._readable([(bucket, key, None) for key in keys], [Lookup() for _ in keys], caller, context)
        refused = next((lookup for lookup in shown if lookup.error), None)
        if refused is not None:
            raise errors.AccessDenied(refused.message)

    async def _readable(self, items: list, lookups: list[Lookup], caller: Caller, context: dict[str, str]
                        ) -> list[Lookup]:  # fmt: skip
        """Each item of a batch lookup held to what ``get_version`` of it alone is held to (GetObject, or
        GetObjectVersion with an id; existing-tag conditions read its tags): a refused one is AccessDenied
        in its own ``Lookup``, without its version (and so without read tokens), found or not."""
        shown = []
        for (bucket, key, version_id), lookup in zip(items, lookups, strict=True):
            access = await self._decider.access(bucket)
            if access is None or caller.needs_no_check(access):  # no bucket: the lookup says so
                shown.append(lookup)
                continue
            item_context = {**context, "s3:VersionId": version_id} if version_id else context
            refused = await self._decider.first_denial(caller, required("GetObject", bucket, key, version_id),
                                                       item_context, {(bucket, key): version_id})  # fmt: skip
            if refused is None:
                shown.append(lookup)
            else:
                shown.append(Lookup(error="AccessDenied", message=f"Access key {caller.principal} is not allowed "
                                    f"{refused[0].action} on {refused[0].resource}"))  # fmt: skip
        return shown

    async def filter_bucket(self, bucket: Bucket, caller: Caller) -> Bucket:
        """What of a bucket record a key that is not its owner sees: not its policy or tags (S3 answers those
        only to GetBucketPolicy and GetBucketTagging), nor who owns it."""
        if caller.owns(await self._decider.access(bucket.name)):
            return bucket
        return dataclasses.replace(bucket, policy="", tags={}, owner="")

    async def filter(self, method: str, result: object, caller: Caller, source_ip: str, secure: bool,
                     bound: dict | None = None) -> object:  # fmt: skip
        """The part of a call's answer the caller may see: ListBuckets shows a key the buckets it owns or may
        list, as the gateway's does (``AccessDecider.visible``); a batch lookup, the objects it may read."""
        if method == "get_bucket" and isinstance(result, Bucket):
            return await self.filter_bucket(result, caller)
        if method in ("get_versions", "get_snapshot_versions") and isinstance(result, list) and bound:
            context = request_context(source_ip, secure, time.time())
            items = bound["items"] if method == "get_versions" else [(bound["bucket"], key, None)
                                                                      for key in bound["keys"]]  # fmt: skip
            return await self._readable(items, result, caller, context)
        if method == "get_tar_members" and isinstance(result, list) and bound:  # a refused item: no member
            context = request_context(source_ip, secure, time.time())
            looked = [Lookup() for _ in result]
            items = [(bound["bucket"], key, None) for key, _, _ in bound["items"]]
            shown = await self._readable(items, looked, caller, context)
            return [span if not refusal.error else None for span, refusal in zip(result, shown, strict=True)]
        if method != "list_buckets" or not isinstance(result, list):
            return result
        shown = await self._decider.visible(caller, result, request_context(source_ip, secure, time.time()))
        return [await self.filter_bucket(bucket, caller) for bucket in shown]
