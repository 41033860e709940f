"""Signed calls to the metadata service, with the same access keys as S3.

A request carries ``X-Apollo-Date`` (unix seconds) and
``Authorization: APOLLO-HMAC-SHA256 <access key>:<hex signature>``, where the signature
is HMAC-SHA256 under the key's secret of ``method \\n path \\n date \\n sha256(body)``.
That is SigV4's idea without its canonicalisation (both ends are Apollo, and the body
hash covers every argument). A request more than ``SKEW_S`` away from the server's
clock is refused, which bounds replays; mutual TLS between the roles (``--certs`` with the cluster CA,
``apollo.roles.tls``) keeps calls from being captured and replayed within that window.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from apollo.errors import AccessDenied

SCHEME = "APOLLO-HMAC-SHA256"
DATE_HEADER = "X-Apollo-Date"
SKEW_S = 300.0


def _signature(secret: str, method: str, path: str, date: str, body: bytes) -> str:
    text = f"{method}\n{path}\n{date}\n{hashlib.sha256(body).hexdigest()}"
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def sign(method: str, path: str, body: bytes, access_key: str, secret: str, now: float | None = None) -> dict:
    date = str(int(time.time() if now is None else now))
    return {DATE_HEADER: date, "Authorization": f"{SCHEME} {access_key}:{_signature(secret, method, path, date, body)}"}


def claimed_key(headers: Mapping[str, str]) -> str:
    scheme, _, credential = headers.get("Authorization", "").partition(" ")
    if scheme != SCHEME or ":" not in credential:
        raise AccessDenied(f"sign metadata calls with {SCHEME} and an access key")
    return credential.partition(":")[0]


def check_headers(headers: Mapping[str, str], secret: str | None, now: float | None = None) -> None:
    """What can be checked before reading a body: a known key, a date within ``SKEW_S`` of now.

    :raises AccessDenied:
    """
    if secret is None:
        raise AccessDenied("unknown access key")
    date = headers.get(DATE_HEADER, "")
    try:
        skew = abs((time.time() if now is None else now) - int(date))
    except ValueError:
        raise AccessDenied(f"missing or malformed {DATE_HEADER}") from None
    if skew > SKEW_S:
        raise AccessDenied(f"request date is {skew:.0f} s away from the server's clock (limit {SKEW_S:.0f} s)")


def verify(method: str, path: str, headers: Mapping[str, str], body: bytes, secret: str | None,
           now: float | None = None) -> None:  # fmt: skip
    """:raises AccessDenied: unknown key, bad signature, or a date too far from now."""
    check_headers(headers, secret, now)
    given = headers.get("Authorization", "").partition(":")[2]
    if not hmac.compare_digest(given, _signature(secret, method, path, headers[DATE_HEADER], body)):
        raise AccessDenied("signature does not match: wrong secret key, or the request was altered")
