"""Secrets at rest: access keys' secrets and capability-token keys are sealed in the metadata database with a
key kept outside it (``APOLLO_SECRETS_KEY``), so that the database, its backups, its WAL, and the journal and
checkpoints on data drives (a retired drive) reveal none of them.

AES-256-GCM (the ``cryptography`` package, OpenSSL underneath: no cipher is written here). Each value is
sealed with the name of its row as associated data, so a sealed secret copied into another key's row does
not open. A stored value reads ``sealed1:<key id>:<base64 of nonce and ciphertext>``; the key id (the first
8 hex digits of the key's SHA-256) says which key sealed it.

``APOLLO_SECRETS_KEY`` holds one or more base64 keys of 32 bytes, comma-separated (``openssl rand -base64 32``):
the first seals, every one opens, so a key is rotated by starting with ``NEW,OLD`` once (the start reseals
every secret with ``NEW``) and then with ``NEW`` alone. ``APOLLO_SECRETS_KEY_FILE`` names a file holding that
text instead (a secret mounted by the orchestrator). Without a key, secrets are stored in clear, protected
by file modes only; a database whose secrets are sealed does not serve without its key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from apollo import errors

PREFIX = "sealed1:"
KEY_BYTES = 32
NONCE_BYTES = 12
ENV_KEY, ENV_KEY_FILE = "APOLLO_SECRETS_KEY", "APOLLO_SECRETS_KEY_FILE"


class SealingError(errors.ApolloError):
    """Secrets that cannot be sealed or opened with the keys given; one line for an operator."""


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class Sealer:
    def __init__(self, keys: list[bytes]) -> None:
        self._keys = {_key_id(key): AESGCM(key) for key in keys}
        self.current = _key_id(keys[0]) if keys else None

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Sealer:
        """:raises SealingError: a key that is not base64 of 32 bytes, or a key file that cannot be read."""
        environ = os.environ if environ is None else environ
        text = environ.get(ENV_KEY, "")
        if not text and environ.get(ENV_KEY_FILE):
            try:
                text = Path(environ[ENV_KEY_FILE]).read_text().strip()
            except OSError as exc:
                raise SealingError(f"{ENV_KEY_FILE}: cannot read {environ[ENV_KEY_FILE]}: {exc.strerror}") from None
        keys = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            try:
                key = base64.b64decode(part, validate=True)
            except binascii.Error:
                key = b""
            if len(key) != KEY_BYTES:
                raise SealingError(f"{ENV_KEY} must be base64 of {KEY_BYTES} bytes (openssl rand -base64 32), "
                                   "comma-separated when there are several")  # fmt: skip
            keys.append(key)
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return self.current is not None

    def seal(self, value: str, row: str) -> str:
        """``value`` sealed for the row named ``row`` (in clear when no key is configured)."""
        if self.current is None:
            return value
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current].encrypt(nonce, value.encode(), row.encode())
        return f"{PREFIX}{self.current}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, stored: str, row: str) -> str:
        """:raises SealingError: a sealed value and no key that opens it."""
        if not stored.startswith(PREFIX):
            return stored  # stored in clear (no key then, or before there was one)
        key_id, _, data = stored[len(PREFIX) :].partition(":")
        cipher = self._keys.get(key_id)
        if cipher is None:
            raise SealingError(f"secrets in the metadata database are sealed with key {key_id}, which "
                               f"{ENV_KEY} does not hold: start with the key the deployment uses")  # fmt: skip
        raw = base64.b64decode(data)
        try:
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], row.encode()).decode()
        except InvalidTag:
            raise SealingError(f"the sealed secret of {row} does not open: altered, or moved from another row") \
                from None  # fmt: skip

    def needs_resealing(self, stored: str) -> bool:
        """Whether a stored value is not sealed with the current key (in clear, or with an older key)."""
        if self.current is None:
            return False
        return not stored.startswith(f"{PREFIX}{self.current}:")

    def seal_bytes(self, value: bytes, row: str) -> bytes:
        """For BLOB columns (token keys): base64 inside, the same format as text."""
        return self.seal(base64.b64encode(value).decode(), row).encode() if self.enabled else value

    def open_bytes(self, stored: bytes, row: str) -> bytes:
        if not stored.startswith(PREFIX.encode()):
            return stored
        return base64.b64decode(self.open(stored.decode(), row))
