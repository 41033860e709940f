"""A browser's part in a console login, over aiohttp with cookies carried by hand: the real login form, its
CSRF token (double submit: a form field and a cookie), then the session cookie on every request."""

from __future__ import annotations

import re

import aiohttp

CONSOLE = "/_apollo/console"
SESSION_COOKIE, LOGIN_COOKIE = "apollo_console", "apollo_console_login"


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


async def login(http: aiohttp.ClientSession, endpoint: str, access_key: str, secret_key: str) -> str:
    """The session token the console sets after the login form is posted with ``access_key``'s pair."""
    async with http.get(endpoint + CONSOLE + "/login") as form:
        assert form.status == 200
        csrf, login_cookie = csrf_of(await form.text()), form.cookies[LOGIN_COOKIE].value
    fields = {"csrf": csrf, "next": CONSOLE + "/buckets", "access_key": access_key, "secret_key": secret_key}
    async with http.post(endpoint + CONSOLE + "/login", data=fields, allow_redirects=False,
                         headers={"Cookie": f"{LOGIN_COOKIE}={login_cookie}"}) as answer:  # fmt: skip
        assert answer.status == 303, await answer.text()
        return answer.cookies[SESSION_COOKIE].value


async def get(http: aiohttp.ClientSession, endpoint: str, path: str, token: str) -> tuple[int, str]:
    """(status, body) of a console page asked for with the session cookie ``token``; redirects not followed."""
    async with http.get(endpoint + CONSOLE + path, allow_redirects=False,
                        headers={"Cookie": f"{SESSION_COOKIE}={token}"}) as answer:  # fmt: skip
        return answer.status, await answer.text()


async def post(http: aiohttp.ClientSession, endpoint: str, path: str, token: str, fields: dict[str, str]) -> int:
    async with http.post(endpoint + CONSOLE + path, data=fields, allow_redirects=False,
                         headers={"Cookie": f"{SESSION_COOKIE}={token}"}) as answer:  # fmt: skip
        return answer.status


def new_http() -> aiohttp.ClientSession:
    """A client that keeps no cookies of its own: each request carries exactly the cookie the test names."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
