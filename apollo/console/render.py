"""HTML out of the console's templates: ``string.Template`` files with every value escaped by the caller.

No template engine is installed with Apollo and the pages are a few tables, so each template is a
``$name`` skeleton and the views build the rows. Values reach a template only through :func:`esc`
(text) or as markup this module or a view built from escaped parts, so an object key such as
``<script>`` shows as text. The layout puts every page in one frame with the navigation and the
logout form, which carries the session's CSRF token like every other form.
"""

from __future__ import annotations

import datetime
import html
from functools import cache
from importlib import resources
from string import Template
from urllib.parse import urlencode

from aiohttp import web

PREFIX = "/_apollo/console"  # under Apollo's own routes: no path-style S3 request can start with "_"

# Every console answer: no framing (clickjacking), no sniffing, nothing cached (pages hold cluster state),
# and only this origin's style sheet may load: no inline script can run even if escaping were missed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}  # fmt: skip


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def url(path: str = "/", **query: str) -> str:
    """A console URL with its query; empty values are left out. Escape it with :func:`esc` for HTML."""
    query = {k: v for k, v in query.items() if v}
    return PREFIX + path + ("?" + urlencode(query) if query else "")


@cache
def template(name: str) -> Template:
    return Template(resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8"))


@cache
def static(name: str) -> bytes | None:
    """A file of ``static/`` by its plain name, or None (no paths: nothing outside the folder is reachable)."""
    if "/" in name or name.startswith("."):
        return None
    path = resources.files(__package__).joinpath("static", name)
    return path.read_bytes() if path.is_file() else None


def page(title: str, body: str, csrf: str = "", user: str = "", status: int = 200,
         headers: dict[str, str] | None = None) -> web.Response:  # fmt: skip
    """A whole page: ``body`` is markup; the navigation and logout form appear when ``user`` is logged in."""
    nav = ""
    if user:
        nav = template("nav.html").substitute(
            overview=esc(url("/")), buckets=esc(url("/buckets")), activity=esc(url("/activity")),
            keys=esc(url("/keys")), logout=esc(url("/logout")), csrf=esc(csrf),
            user=esc(user),
        )  # fmt: skip
    text = template("layout.html").substitute(title=esc(title), nav=nav, body=body, css=esc(url("/static/console.css")))
    return web.Response(text=text, content_type="text/html", charset="utf-8", status=status,
                        headers={**SECURITY_HEADERS, **(headers or {})})  # fmt: skip


def redirect(location: str) -> web.HTTPSeeOther:
    """303: after a POST the browser GETs the new page, so a reload does not repeat the form."""
    return web.HTTPSeeOther(location, headers=SECURITY_HEADERS)


def table(headers: list[str], rows: list[list[str]], empty: str = "none") -> str:
    """A table of markup cells (escape text before passing it)."""
    if not rows:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # not reached


def when(timestamp: float) -> str:
    """UTC, to the second: what ``apollo admin status`` and S3 listings show, so they can be compared."""
    if not timestamp:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
