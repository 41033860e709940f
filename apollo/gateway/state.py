"""Typed application state of the gateway and small response helpers."""

from __future__ import annotations

from aiohttp import web

from apollo.client.engine import ObjectEngine
from apollo.gateway.xml import render

CLIENT = web.AppKey("client", ObjectEngine)  # the object engine: the only way handlers reach objects
CLIENT_STALL_S = web.AppKey("client_stall_s", float)  # a client that sends or reads nothing this long is cut off

OWNER = {"ID": "apollo", "DisplayName": "apollo"}


def xml_response(root: str, body: dict, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=render(root, body), content_type="application/xml", headers=headers)
