"""The metadata API's answer formats, chosen by the caller's ``Accept``: JSON, framed, or framed with lists of
records as columns. A native client of an older version names only the framed one and must keep getting
it; the same lookups decode to the same records whichever way they came."""

from __future__ import annotations

import urllib.request

from apollo.proto import codec, routes, signing
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

PATH = routes.RPC_PREFIX + "get_versions"
ITEMS = [["no-such-bucket", f"k{n}", None] for n in range(12)]


def _call(server, accept: str | None) -> tuple[str, bytes]:
    body = codec.dumps({"args": [ITEMS], "kwargs": {}})
    headers = signing.sign("POST", PATH, body, DEV_ACCESS_KEY, DEV_SECRET_KEY)
    if accept is not None:
        headers["Accept"] = accept
    request = urllib.request.Request(server.endpoint + PATH, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers.get_content_type(), response.read()


def test_answers_come_as_the_caller_accepts_them(server):
    kind, plain = _call(server, None)
    assert kind == "application/json"
    kind, framed = _call(server, codec.FRAMED)  # what a client before columns sends
    assert kind == codec.FRAMED and b'"@c"' not in framed
    kind, columns = _call(server, f"{codec.FRAMED_COLUMNS}, {codec.FRAMED}")
    assert kind == codec.FRAMED_COLUMNS and b'"@c":"Lookup"' in columns
    lookups = codec.loads(plain)["result"]
    assert [lookup.error for lookup in lookups] == ["BucketNotFound"] * len(ITEMS)
    assert codec.loads_framed(framed)["result"] == codec.loads_framed(columns)["result"] == lookups
