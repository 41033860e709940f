"""The gateway pipeline, outermost first: errors+request id+access log, then authentication.

Order lives in ``PIPELINE`` only. Error translation is outermost so that
every failure, including authentication's, becomes an S3 XML error with a
request id and exactly one access-log line (format: ``accesslog``). Health
checks and metric scrapes pass through both layers untouched.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import re
import time

from aiohttp import web

from apollo import metrics
from apollo.gateway import accesslog, expect, sts
from apollo.gateway.admission import admission_middleware
from apollo.gateway.s3errors import S3Error, s3error, to_s3_error
from apollo.gateway.sigv2 import wire_bytes
from apollo.gateway.sigv4 import verify_request
from apollo.gateway.xml import error_body
from apollo.keycache import SecretCache
from apollo.proto.bucket_access import Caller
from apollo.proto.records import KeyRights

SECRETS = web.AppKey("secrets", SecretCache)
_CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/")
PUBLIC_PATHS = {"/health/live", "/health/ready", "/metrics"}


def _error_response(request: web.Request, error: S3Error) -> web.Response:
    request_id = request["request_id"]
    request["error_code"] = error.code  # for the access log: a 400 alone does not say what went wrong
    body = b"" if request.method == "HEAD" or error.status == 304 else error_body(error, request.path, request_id)
    headers = {"x-amz-request-id": request_id, "Content-Type": "application/xml", **error.headers}
    return web.Response(status=error.status, body=body, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    if is_public(request):  # health checks and scrapes: no S3 traffic, not to be counted or logged as such
        return await handler(request)
    request["request_id"] = os.urandom(8).hex().upper()
    request["op"] = "unknown"
    started = time.perf_counter()
    try:
        response = await handler(request)
    except S3Error as exc:
        response = sts.error_response(exc, request["request_id"]) if "sts_body" in request else \
            _error_response(request, exc)  # fmt: skip
    except web.HTTPException:
        raise
    except Exception as exc:  # core errors; a bug, or the environment failing (a full metadata disk)
        response = _error_response(request, to_s3_error(exc, f"{request.method} {request.path}"))
    response.headers.setdefault("x-amz-request-id", request["request_id"])
    expect.close_if_body_unasked(request, response)
    bytes_out = await _send(request, response)
    expect.end_if_body_unasked(request)
    elapsed = time.perf_counter() - started
    op = request["op"]
    metrics.requests_total.labels(op, str(response.status)).inc()
    metrics.request_seconds.labels(op).observe(elapsed)
    accesslog.write(request, response.status, bytes_out, elapsed)
    return response


async def _send(request: web.Request, response: web.StreamResponse) -> int:
    """Finish the answer here, as aiohttp would right after: the access log then has the bytes that went out.

    Returns the bytes written to the connection for it (a 100 Continue, status line, headers and body).
    """
    try:
        await response.prepare(request)  # nothing to do for an answer its handler streamed
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away; aiohttp drops the connection when it tries again
    return request.writer.output_size


def is_public(request: web.Request) -> bool:
    """An unsigned GET of a health or metrics path: answered without authentication, and no S3 request."""
    return request.path in PUBLIC_PATHS and request.method == "GET" and "Authorization" not in request.headers


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    if is_public(request):
        return await handler(request)
    access_key = _claimed_key(request)
    request["access_key"] = access_key  # the access log names it, also when the signature turns out wrong
    rights = await request.app[SECRETS].get(access_key) if access_key else None  # KeyRights
    secret = rights.secret if rights else None
    raw_path, _, raw_query = request.raw_path.partition("?")
    body_sha256 = None
    if sts.is_sts(request):  # STS signs its body's hash without sending it: read it first (16 KiB at most)
        request["sts_body"] = b""
        request["sts_body"] = await sts.read_body(request)
        body_sha256 = hashlib.sha256(request["sts_body"]).hexdigest()
    auth = verify_request(
        request.method, raw_path, raw_query, request.headers,
        lambda key: secret if key == access_key else None, datetime.datetime.now(datetime.UTC),
        sts_body_sha256=body_sha256,
    )  # fmt: skip
    request["auth"] = auth
    if auth is None:  # anonymous: only what a bucket policy grants to "*" (apollo.gateway.authorize)
        request["access_key"] = None  # whatever a stray query parameter claimed
    else:
        request["access_key"] = auth.access_key
        _check_session(request, rights)
        request["caller"] = Caller.of(auth.access_key, rights)
    if "%00" in request.raw_path:  # no metadata engine stores NUL in text (PostgreSQL refuses it outright)
        raise s3error("InvalidArgument", "Object keys and request parameters must not contain the NUL character")
    return await handler(request)


def _check_session(request: web.Request, rights: KeyRights) -> None:
    """A temporary key (``apollo.gateway.sts``) works with its session token until it expires; a token on a
    key that has none is as wrong as a wrong one (AWS: InvalidToken)."""
    query = request.query
    token = request.headers.get("x-amz-security-token") or query.get("X-Amz-Security-Token") or query.get(
        "x-amz-security-token")  # SigV2 presigned URLs spell it so  # fmt: skip
    if not rights.expires:
        if token:
            raise s3error("InvalidToken")
        return
    if token is None or not hmac.compare_digest(hashlib.sha256(wire_bytes(token)).hexdigest(), rights.token_digest):
        raise s3error("InvalidToken")
    if time.time() >= rights.expires:
        raise s3error("ExpiredToken")
    request["session_parent"] = rights.parent


def _claimed_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("AWS "):
        return header[4:].strip().rpartition(":")[0] or None
    match = _CREDENTIAL_RE.search(header)
    if match:
        return match.group(1)
    credential = request.query.get("X-Amz-Credential", "")
    return credential.split("/", 1)[0] or request.query.get("AWSAccessKeyId") or None


PIPELINE = [errors_middleware, auth_middleware, admission_middleware]
