"""Login, logout and the guard every other console route passes through.

Login checks an access key and secret key against the key store, the same lookup S3 signatures
use; a right pair opens a session in the metadata store (``sessions.py``) whose random token goes in an
HttpOnly, SameSite=Strict cookie, good at every gateway and worker until it expires or is logged out. A
wrong pair gets one message whatever part was wrong, half a second late, and an address with five failures
in a minute waits out the minute (429) before its next try is even checked.

CSRF: every state-changing form carries the session's token, checked on POST (missing or wrong: 403).
The login form, which has no session yet, carries a token also set as a cookie (double submit), so
another site cannot log a browser in under the attacker's key.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from apollo import errors
from apollo.console.render import PREFIX, esc, page, redirect, template, url
from apollo.console.sessions import LOGIN_FAILURE_DELAY_S, Session
from apollo.console.state import LOGIN_COOKIE, SESSION_COOKIE, Console, cookie_flags

View = Callable[[Console, web.Request, Session], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CREDENTIAL_CHARS_MAX = 256  # longer than any key or secret Apollo makes; a bigger form field is refused
LOGIN_TOKEN_TTL_S = 3600.0
WRONG_PAIR = "Access key or secret key is wrong."
TEMPORARY_KEY = "A temporary key (STS) cannot log in to the console: log in with the key it was made for."


def safe_next(target: str) -> str:
    """Where to go after login: a console page only, never another site (``//evil`` or a full URL)."""
    if target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return url("/")


def _login_page(request: web.Request, message: str = "", status: int = 200, next_url: str = "") -> web.Response:
    token = secrets.token_urlsafe(32)
    note = f'<p class="error" id="login-error">{esc(message)}</p>' if message else ""
    body = template("login.html").substitute(message=note, action=esc(url("/login")), csrf=esc(token),
                                             next=esc(safe_next(next_url)))  # fmt: skip
    response = page("Log in", body, status=status)
    response.set_cookie(LOGIN_COOKIE, token, **cookie_flags(request, LOGIN_TOKEN_TTL_S))
    return response


async def login_form(console: Console, request: web.Request) -> web.StreamResponse:
    if await console.session(request) is not None:
        raise redirect(safe_next(request.query.get("next", "")))
    return _login_page(request, next_url=request.query.get("next", ""))


async def login(console: Console, request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token, cookie = str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")
    if not token or not secrets.compare_digest(token.encode(), cookie.encode()):
        raise web.HTTPForbidden(text="The login form expired or came from another site: reload the login page.")
    next_url = str(form.get("next", ""))
    address = request.remote or "unknown"
    wait_s = console.throttle.refused(address)
    if wait_s > 0:
        return _login_page(request, f"Too many failed logins from this address: try again in {wait_s:.0f} s.",
                           429, next_url)  # fmt: skip
    access_key, secret_key = str(form.get("access_key", "")), str(form.get("secret_key", ""))
    checked = None
    if 0 < len(access_key) <= CREDENTIAL_CHARS_MAX and len(secret_key) <= CREDENTIAL_CHARS_MAX:
        checked = await console.check_pair(access_key, secret_key)
    if checked is None:
        console.throttle.failed(address)
        await asyncio.sleep(LOGIN_FAILURE_DELAY_S)
        return _login_page(request, WRONG_PAIR, 401, next_url)
    digest, rights = checked
    if rights.expires:  # no session token to present here
        return _login_page(request, TEMPORARY_KEY, 403, next_url)
    try:
        session = await console.sessions.open(access_key, digest)
    except errors.NotFound:  # deleted since the key cache read it: a wrong pair now
        return _login_page(request, WRONG_PAIR, 401, next_url)
    response = redirect(safe_next(next_url))
    response.set_cookie(SESSION_COOKIE, session.token, **cookie_flags(request, console.sessions.ttl_s))
    response.del_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


async def logout(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    await console.sessions.close(session)
    response = redirect(url("/login"))
    response.del_cookie(SESSION_COOKIE, path=PREFIX)
    return response


def guarded(console: Console, view: View, csrf: str = "form") -> Handler:
    """``view`` behind a live session. GET without one redirects to the login form; POST without one is 403.

    ``csrf``: ``"form"`` checks the token of a urlencoded POST here; ``"stream"`` leaves it to a view that
    streams a multipart body (it must check the token field before it reads the file).
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        session = await console.session(request)
        if request.method == "GET":
            if session is None:
                raise redirect(url("/login", next=request.path_qs))
            return await view(console, request, session)
        if session is None:
            raise web.HTTPForbidden(text="Not logged in: log in to the console first.")
        if csrf == "form":
            form = await request.post()
            if not session.csrf_matches(str(form.get("csrf", ""))):
                raise web.HTTPForbidden(text="Missing or wrong CSRF token: reload the page and try again.")
        return await view(console, request, session)

    return handler
