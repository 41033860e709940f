"""Capability tokens: the metadata service's signed permission to touch specific shards.

A client asks the metadata service once (begin a write, look a version up) and gets,
with each segment's layout, a token naming the operation, the segment and an expiry,
signed with HMAC-SHA256 under one of the deployment's token keys. Storage nodes hold
the same keys (``Keyring``, refreshed with their heartbeat) and check every request
locally, so the data path never calls the metadata service.

Format: ``v1.<key id>.<base64url payload>.<base64url mac>``; the payload is compact
JSON ``{"o": op, "s": segment id or "*", "e": expiry (unix s)}``. ``"*"`` (every
segment) is issued only to the deployment's own services: gateways, the repair worker.
``list`` (a drive's placement groups and shard files, for the orphan sweep) names no
segment, so only a ``"*"`` token allows it.

Keys rotate: the manager adds a key every ``ROTATE_S`` and drops keys once no token
signed by them can still be valid. A new key is used for signing only after
``PUBLISH_S``, so every storage node has fetched it before the first token it signs
arrives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from apollo import limits
from apollo.errors import TokenError

READ, WRITE, DELETE, LIST = "read", "write", "delete", "list"
OPS = (READ, WRITE, DELETE, LIST)
# A storage node rebuilds shards of a segment for the manager (``/_apollo/rebuild``): only the metadata
# service's own tokens carry it, never those it hands to gateways or clients (``OPS``).
REPAIR = "repair"
ANY_SEGMENT = "*"
ROTATE_S = 24 * 3600.0
PUBLISH_S = limits.token_key_publish_s  # a new key signs nothing before storage nodes and services hold it
TOKEN_TTL_S = 3600.0  # a lookup's tokens outlive any read of the version it returned
SERVICE_TOKEN_TTL_S = 600.0
TOKEN_CHARS_MAX = 512  # an issued token is ~150 characters; a longer one is refused before any HMAC over it


@dataclass(frozen=True)
class TokenKey:
    key_id: str
    secret: bytes
    created: float


def new_key(now: float) -> TokenKey:
    return TokenKey(secrets.token_hex(4), secrets.token_bytes(32), now)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, signed: str) -> bytes:
    return hmac.new(secret, signed.encode(), hashlib.sha256).digest()


def covers(segments: str, segment_id: str) -> None:
    """:raises TokenError: a token covering ``segments`` (``Keyring.segments_of``) does not cover this one."""
    if segments not in (segment_id, ANY_SEGMENT):
        raise TokenError(f"capability token does not cover segment {segment_id}")


class Keyring:
    """The token keys a process knows: every one verifies, the newest published one signs."""

    def __init__(self, keys: list[TokenKey] | None = None) -> None:
        self._keys: dict[str, TokenKey] = {}
        self.replace(keys or [])

    def replace(self, keys: list[TokenKey]) -> None:
        self._keys = {key.key_id: key for key in keys}

    def to_json(self) -> list[dict]:
        """The keys as JSON values: how the metadata service hands them to storage nodes."""
        return [{"key_id": k.key_id, "secret": k.secret.hex(), "created": k.created} for k in self.by_age()]

    def replace_from_json(self, keys: list[dict]) -> None:
        self.replace([TokenKey(k["key_id"], bytes.fromhex(k["secret"]), k["created"]) for k in keys])

    def by_age(self) -> list[TokenKey]:
        return sorted(self._keys.values(), key=lambda k: k.created)

    def signing_key(self, now: float) -> TokenKey:
        published = [k for k in self.by_age() if k.created <= now - PUBLISH_S]
        chosen = published[-1] if published else (self.by_age() or [None])[0]  # a new deployment: its first key
        if chosen is None:
            raise TokenError("no token keys yet: the metadata service has not started")
        return chosen

    def issue(self, op: str, segment_id: str, ttl_s: float, now: float | None = None) -> str:
        now = time.time() if now is None else now
        key = self.signing_key(now)
        payload = _b64(json.dumps({"o": op, "s": segment_id, "e": int(now + ttl_s)}, separators=(",", ":")).encode())
        signed = f"v1.{key.key_id}.{payload}"
        return f"{signed}.{_b64(_mac(key.secret, signed))}"

    def check(self, token: str | None, op: str, segment_id: str, now: float | None = None) -> None:
        """:raises TokenError: saying which rule the token broke."""
        covers(self.segments_of(token, op, now), segment_id)

    def segments_of(self, token: str | None, op: str, now: float | None = None) -> str:
        """The segment a genuine, unexpired token for ``op`` covers (``ANY_SEGMENT``: every one): what a batch
        of reads checks once per distinct token, then per read with ``covers``.

        :raises TokenError: saying which rule the token broke."""
        if not token:
            raise TokenError("no capability token: ask the metadata service for one")
        if len(token) > TOKEN_CHARS_MAX:
            raise TokenError("malformed capability token (too long)")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "v1":
            raise TokenError("malformed capability token")
        _, key_id, payload, mac = parts
        key = self._keys.get(key_id)
        if key is None:
            raise TokenError(f"capability token signed with unknown key {key_id!r} (forged, or the key was retired)")
        try:
            valid = hmac.compare_digest(_mac(key.secret, f"v1.{key_id}.{payload}"), _unb64(mac))
            claims = json.loads(_unb64(payload)) if valid else None
        except ValueError:
            raise TokenError("malformed capability token") from None
        if not valid or not isinstance(claims, dict):
            raise TokenError("capability token signature does not match (forged or altered)")
        if claims.get("e", 0) < (time.time() if now is None else now):
            raise TokenError("capability token expired: look the object up again")
        if claims.get("o") != op:
            raise TokenError(f"capability token allows {claims.get('o')}, not {op}")
        return str(claims.get("s"))
