"""The access log: one line per S3 request, written in batches and never more than a second late.

Every line has the same eleven space-separated fields (METHOD and TARGET share one pair of double quotes),
so ``awk`` or one regular expression splits it; the process's log format puts time, level and the logger
name, ``apollo.access``, in front::

    REMOTE REQUEST-ID ACCESS-KEY "METHOD TARGET" STATUS OPERATION ERROR-CODE BYTES-IN BYTES-OUT DURATIONms
    127.0.0.1 00FCF618C550753D apollo-dev "PUT /obs/hello%20world.txt" 200 PutObject - 48213 221 18.9ms
    127.0.0.1 705E90C1EB07B3CE apollo-dev "GET /obs/missing" 404 GetObject NoSuchKey 0 405 0.6ms
    127.0.0.1 BF9D899E16D54877 - "GET /obs/k" 403 unknown AccessDenied 0 435 0.2ms

- No field holds a space, a double quote or a control character: those (and any non-ASCII character) are
  percent-encoded, as a URL carries them; a field without a value is ``-``.
- REQUEST-ID: the id the client got in ``x-amz-request-id`` (and in the XML of an error).
- ACCESS-KEY: the key the request was signed with, ``-`` for an anonymous one. On an authentication error
  (InvalidAccessKeyId, SignatureDoesNotMatch...) it is the key the request claimed, which nothing verified.
- TARGET: the path and query as sent, cut at 512 characters.
- OPERATION: the S3 operation (``GetObject``...); ``NotImplemented`` for an API Apollo does not serve,
  ``unknown`` for a request refused before routing (a bad signature).
- ERROR-CODE: the S3 error code of an error answer (``NoSuchKey``, ``AccessDenied``...), else ``-``: a status
  alone does not say what went wrong.
- BYTES-IN: request body bytes read from the connection, as sent (aws-chunked framing included).
- BYTES-OUT: bytes written to the connection for the answer: status line, headers and body (so a HEAD or a
  204 shows the size of its headers; a download the client broke off, what was written before it did).
- DURATION: milliseconds from the pipeline taking the request to the last byte of the answer handed to
  the connection.

Health checks and metric scrapes (unsigned GETs of ``/health/live``, ``/health/ready`` and ``/metrics``) are
not S3 requests: a load balancer and Prometheus would fill the log, and ``apollo_s3_requests_total``, with
lines about nothing, so neither logs nor counts them (``middleware.errors_middleware``).

A write per line cost ~6% of a small GET, so lines collect in a buffer of ``BUFFER_RECORDS``; every
app that serves S3 (the all-in-one server, ``apollo gateway``) flushes it every ``FLUSH_S`` and at
shutdown, so the log keeps up with traffic and a kill -9 loses at most a second of lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import re
from collections.abc import AsyncIterator

from aiohttp import web

access_log = logging.getLogger("apollo.access")
BUFFER_RECORDS = 256
FLUSH_S = 1.0
TARGET_CHARS_MAX = 512
_UNSAFE = re.compile(r"[^\x21\x23-\x7e]")  # all but printable ASCII other than the double quote


def write(request: web.Request, status: int, bytes_out: int, elapsed_s: float) -> None:
    """The line of one S3 request, from what the pipeline put in ``request``: ``request_id``, ``op``, and
    ``access_key`` and ``error_code`` if there are any."""
    access_log.info(
        '%s %s %s "%s %s" %d %s %s %d %d %.1fms',
        _field(request.remote), request["request_id"], _field(request.get("access_key")), request.method,
        _field(request.raw_path[:TARGET_CHARS_MAX]), status, request["op"], request.get("error_code", "-"),
        request.content.total_bytes, bytes_out, elapsed_s * 1000,
    )  # fmt: skip


def _field(text: str | None) -> str:
    """``text`` as one field of the line: never empty, nothing that splits it or ends the line."""
    if not text:
        return "-"
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m[0].encode("utf-8", "surrogatepass")), text)


def buffer_lines() -> None:
    """Send access-log lines through a buffer in front of the process's log handler (once per process)."""
    root_handlers = logging.getLogger().handlers
    if root_handlers and not access_log.handlers:
        access_log.addHandler(logging.handlers.MemoryHandler(BUFFER_RECORDS, logging.WARNING, root_handlers[0]))
        access_log.propagate = False


def _flush() -> None:
    for handler in access_log.handlers:
        handler.flush()


async def _flush_forever() -> None:
    while True:
        await asyncio.sleep(FLUSH_S)
        _flush()


async def flushing(app: web.Application) -> AsyncIterator[None]:
    """An app's ``cleanup_ctx``: flush every second while it serves, and once more when it stops."""
    task = asyncio.create_task(_flush_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    _flush()
