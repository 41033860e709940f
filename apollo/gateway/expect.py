"""``Expect: 100-continue``: the interim answer goes out only once a request is known to be accepted.

aiohttp answers ``100 Continue`` as soon as it has read the head, before any middleware runs; a client
then sends a body that a wrong signature or a denied action throws away (5 GiB, for a PUT). S3 answers
the final error instead, and so does the gateway: its expect handler only notes the expectation, and
``send_continue`` sends the interim answer when the request has passed authentication and authorization,
right before a handler reads the body. An error answered in its place closes the connection, since the
body that would follow was never asked for (RFC 9110 §10.1.1).
"""

from __future__ import annotations

from aiohttp import web

_AWAITING = "awaiting_continue"


async def defer_continue(request: web.Request) -> None:
    """The S3 route's expect handler: note a 100-continue expectation; any other is 417, as aiohttp's."""
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {request.headers.get('Expect')}")
    if request.version >= (1, 1):
        request[_AWAITING] = True


async def send_continue(request: web.Request) -> None:
    """Ask for the body now (once), if the client waits to be asked."""
    if request.pop(_AWAITING, False):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def close_if_body_unasked(request: web.Request, response: web.StreamResponse) -> None:
    """A final answer to a request whose body was never asked for says it ends its connection."""
    if request.get(_AWAITING):
        response.force_close()


def end_if_body_unasked(request: web.Request) -> None:
    """Once that answer is out, end the connection (aiohttp would otherwise wait up to 10 s for the body)."""
    if request.get(_AWAITING) and request.protocol is not None:
        request.protocol.force_close()  # the transport flushes the answer before it closes
