"""build_app: the S3 gateway as an aiohttp application over the object engine (``ObjectEngine``).

Routing is one table, ``ROUTES``: (method, target, sub-resource) -> handler.
The target is ``service`` (no bucket), ``bucket`` or ``object``; the
sub-resource is the first query parameter that names one (``uploads``,
``versioning``...), or ``""``. Anything not in the table answers
NotImplemented, so unsupported APIs fail loudly instead of acting as a GET.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from aiohttp import web

from apollo import limits, metrics
from apollo.client.engine import ObjectEngine
from apollo.eventloop import ByteBudget
from apollo.gateway import accesslog, acl, expect, handlers_attributes, handlers_batch, sts
from apollo.gateway import handlers_bucket as hb
from apollo.gateway import handlers_multipart as hm
from apollo.gateway import handlers_object as ho
from apollo.gateway.admission import ADMISSION, Admission
from apollo.gateway.authorize import ACCESS, access_decider, authorize
from apollo.gateway.middleware import PIPELINE, SECRETS
from apollo.gateway.names import host_bucket, split_target, validate_bucket
from apollo.gateway.s3errors import s3error
from apollo.gateway.state import CLIENT, CLIENT_STALL_S
from apollo.keycache import SecretCache
from apollo.proto import routes

DOMAIN = web.AppKey("domain", str)
READY = web.AppKey("ready", list)

SUBRESOURCES = (
    "uploads", "uploadId", "versioning", "versions", "location", "tagging", "acl", "delete", "attributes",
    "policy", "lifecycle", "cors", "encryption", "website", "notification", "logging", "replication",
    "object-lock", "retention", "legal-hold", "ownershipControls", "publicAccessBlock", "accelerate",
    "requestPayment", "analytics", "metrics", "inventory", "intelligent-tiering", "select", "restore", "torrent",
    "batch",
)  # fmt: skip

# The calls that may carry ACL headers (x-amz-acl, x-amz-grant-*): held to the owner's full control.
ACL_CARRIERS = frozenset({"CreateBucket", "PutObject", "CopyObject", "CreateMultipartUpload", "PutBucketAcl",
                          "PutObjectAcl"})  # fmt: skip

ROUTES = {
    ("GET", "service", ""): ("ListBuckets", hb.list_buckets),
    ("PUT", "bucket", ""): ("CreateBucket", hb.create_bucket),
    ("HEAD", "bucket", ""): ("HeadBucket", hb.head_bucket),
    ("DELETE", "bucket", ""): ("DeleteBucket", hb.delete_bucket),
    ("GET", "bucket", ""): ("ListObjects", hb.list_objects),
    ("GET", "bucket", "location"): ("GetBucketLocation", hb.get_location),
    ("GET", "bucket", "versioning"): ("GetBucketVersioning", hb.get_versioning),
    ("PUT", "bucket", "versioning"): ("PutBucketVersioning", hb.put_versioning),
    ("GET", "bucket", "versions"): ("ListObjectVersions", hb.list_versions),
    ("GET", "bucket", "uploads"): ("ListMultipartUploads", hm.list_uploads),
    ("GET", "bucket", "policy"): ("GetBucketPolicy", hb.get_policy),
    ("PUT", "bucket", "policy"): ("PutBucketPolicy", hb.put_policy),
    ("DELETE", "bucket", "policy"): ("DeleteBucketPolicy", hb.delete_policy),
    ("GET", "bucket", "acl"): ("GetBucketAcl", hb.get_bucket_acl),
    ("GET", "bucket", "ownershipControls"): ("GetBucketOwnershipControls", hb.get_ownership_controls),
    ("GET", "bucket", "tagging"): ("GetBucketTagging", hb.get_bucket_tagging),
    ("PUT", "bucket", "tagging"): ("PutBucketTagging", hb.put_bucket_tagging),
    ("DELETE", "bucket", "tagging"): ("DeleteBucketTagging", hb.delete_bucket_tagging),
    ("PUT", "bucket", "acl"): ("PutBucketAcl", ho.put_acl),
    ("POST", "bucket", "delete"): ("DeleteObjects", hb.delete_objects),
    ("POST", "bucket", "batch"): ("GetBatch", handlers_batch.get_batch),  # Apollo's, AIStore's GetBatch
    ("PUT", "object", ""): ("PutObject", ho.put_object),
    ("GET", "object", ""): ("GetObject", ho.get_object),
    ("HEAD", "object", ""): ("HeadObject", ho.head_object),
    ("DELETE", "object", ""): ("DeleteObject", ho.delete_object),
    ("GET", "object", "tagging"): ("GetObjectTagging", ho.get_tagging),
    ("PUT", "object", "tagging"): ("PutObjectTagging", ho.put_tagging),
    ("DELETE", "object", "tagging"): ("DeleteObjectTagging", ho.delete_tagging),
    ("GET", "object", "acl"): ("GetObjectAcl", ho.get_object_acl),
    ("GET", "object", "attributes"): ("GetObjectAttributes", handlers_attributes.get_object_attributes),
    ("PUT", "object", "acl"): ("PutObjectAcl", ho.put_acl),
    ("POST", "object", "uploads"): ("CreateMultipartUpload", hm.create_upload),
    ("PUT", "object", "uploadId"): ("UploadPart", hm.upload_part),
    ("POST", "object", "uploadId"): ("CompleteMultipartUpload", hm.complete_upload),
    ("DELETE", "object", "uploadId"): ("AbortMultipartUpload", hm.abort_upload),
    ("GET", "object", "uploadId"): ("ListParts", hm.list_parts),
}


def _subresource(request: web.Request) -> str:
    for name in SUBRESOURCES:
        if name in request.query:
            return name
    return ""


async def dispatch(request: web.Request) -> web.StreamResponse:
    if request.method == "GET" and "auth" not in request:
        return await _public(request)
    try:
        bucket, key = split_target(request.raw_path, request.host, request.app[DOMAIN] or None)
    except UnicodeDecodeError as exc:
        raise s3error("InvalidURI", "Couldn't parse the specified URI.") from exc
    if request.get("sts_body") is not None:  # signed for STS: the service's one call, at the service's root
        request["op"] = "AssumeRole"
        if bucket or key:
            raise s3error("InvalidRequest", "STS calls go to the service's root, /")
        return await sts.assume_role(request, bucket, key)
    target = "object" if key else ("bucket" if bucket else "service")
    sub = _subresource(request)
    copy_source = None
    if target == "object" and request.method == "PUT" and sub == "" and "x-amz-copy-source" in request.headers:
        request["op"] = "CopyObject"
        handler = ho.copy_object
        copy_source = ho.parse_copy_source(request)
    else:
        op, handler = ROUTES.get((request.method, target, sub), (None, None))
        if handler is None:
            request["op"] = "NotImplemented"
            raise s3error("NotImplemented", f"{request.method} on {target} ?{sub} is not implemented")
        request["op"] = op
    if bucket:
        validate_bucket(bucket)
    if request["op"] == "UploadPart" and "x-amz-copy-source" in request.headers:
        copy_source = ho.parse_copy_source(request)
        await authorize(request, "UploadPartCopy", bucket, key, copy_source)
    else:
        await authorize(request, request["op"], bucket, key, copy_source)
    acl.check_expected_owner(request)
    if request["op"] in ACL_CARRIERS:
        acl.check_acl_headers(request, creating_bucket=request["op"] == "CreateBucket")
    await expect.send_continue(request)
    return await handler(request, bucket, key)


async def _public(request: web.Request) -> web.Response:
    request["op"] = "Health"
    if request.path == "/health/live":
        return web.Response(text="ok\n")
    if request.path == "/health/ready":
        ready = request.app[READY]
        return web.Response(text="ready\n") if ready and ready[0] else web.Response(status=503, text="starting\n")
    request["op"] = "Metrics"
    return metrics.response()


def _s3_handler() -> routes.Handler:
    """``dispatch`` inside the pipeline, outermost first. The pipeline wraps the S3 route rather than the
    app, so that Apollo's own routes, which a server may serve beside S3, have their own edges."""
    handler: routes.Handler = dispatch
    for middleware in reversed(PIPELINE):
        handler = functools.partial(middleware, handler=handler)
    return handler


def _paths_only(s3: routes.Handler) -> routes.Wrap:
    """Apollo's routes answer path-style requests only: with virtual hosts, ``/_apollo/...`` under
    ``bucket.domain`` is an S3 key like any other."""

    def wrap(handler: routes.Handler) -> routes.Handler:
        async def route(request: web.Request) -> web.StreamResponse:
            if host_bucket(request.host, request.app[DOMAIN] or None):
                return await s3(request)
            return await handler(request)

        return route

    return wrap


ApolloRoutes = Callable[[web.Application, routes.Wrap], None]  # adds Apollo's own routes to an app


def build_app(client: ObjectEngine, domain: str | None = None, apollo_routes: ApolloRoutes | None = None,
              client_limits: limits.ClientLimits | None = None) -> web.Application:  # fmt: skip
    """The S3 app; ``apollo_routes(app, wrap)`` adds Apollo's own APIs beside it (the all-in-one server)."""
    # auto_decompress off: Content-Encoding on a PUT is object metadata; S3 stores the body bytes as sent.
    handler_args = {"max_field_size": 16384, "auto_decompress": False}
    app = web.Application(client_max_size=1024**2, handler_args=handler_args)
    app[CLIENT] = client
    app[SECRETS] = SecretCache(client.key_rights)
    app[DOMAIN] = domain or ""
    app[READY] = [True]
    client_limits = client_limits or limits.ClientLimits()
    app[CLIENT_STALL_S] = client_limits.stall_s
    app[ADMISSION] = Admission(client_limits.requests_per_key_max, client_limits.requests_max)
    app[ACCESS] = access_decider(client)
    app[handlers_batch.BUDGET] = ByteBudget(limits.batch_inflight_bytes_max)
    accesslog.buffer_lines()
    app.cleanup_ctx.append(accesslog.flushing)
    s3 = _s3_handler()
    if apollo_routes is not None:  # before the S3 route, which matches every path
        apollo_routes(app, _paths_only(s3))
    # [\s\S], not ".": keys may hold newlines and other control characters, which "." would not match.
    app.router.add_route("*", r"/{tail:[\s\S]*}", s3, expect_handler=expect.defer_continue)
    return app
