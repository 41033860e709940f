"""Console sessions on a cluster: kept in the metadata store, so two gateways behind one load balancer need
no sticky sessions; a login at one holds at the other and across restarts, a logout at either ends it at both."""

from __future__ import annotations

import asyncio

import console_http
from console_http import csrf_of, new_http

from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY


def test_a_login_at_gateway_a_holds_at_b_and_a_logout_at_b_ends_it_at_a(make_cluster):
    cluster = make_cluster(nodes=3, ec="2+1", gateways=2)
    a, b = cluster.gateways

    async def log_in_at_a_use_at_b() -> str:
        async with new_http() as http:
            token = await console_http.login(http, a.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY)
            status, page = await console_http.get(http, b.endpoint, "/buckets", token)
            assert status == 200 and DEV_ACCESS_KEY in page, page  # logged in at B, which never saw the login
            return token

    token = asyncio.run(log_in_at_a_use_at_b())
    # Restart A: the session is the database's, not the process's.
    a.stop()
    a.start(ready="/health/ready")

    async def log_out_at_b() -> None:
        async with new_http() as http:
            status, page = await console_http.get(http, a.endpoint, "/buckets", token)
            assert status == 200, page
            status, page = await console_http.get(http, b.endpoint, "/buckets", token)
            assert await console_http.post(http, b.endpoint, "/logout", token, {"csrf": csrf_of(page)}) == 303
            for gateway in (a, b):  # ended at both, at once: back to the login form
                status, page = await console_http.get(http, gateway.endpoint, "/buckets", token)
                assert status == 303, (gateway.name, status, page)
                assert await console_http.post(http, gateway.endpoint, "/logout", token, {"csrf": "x"}) == 403
            # A fresh login still works at A afterwards.
            again = await console_http.login(http, a.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY)
            assert again != token
            assert (await console_http.get(http, b.endpoint, "/", again))[0] == 200

    asyncio.run(log_out_at_b())
