"""Capability-token keys in step with the database, for every process that issues or checks tokens.

The keys live in the metadata database (``token_keys``). A deployment gets its first key when
its first metadata-serving process starts (``ensure_first_key``); every such process follows
the table (``TokenKeys.refresh``, so a key another process added verifies here within
``limits.keyring_refresh_s``); the holder of the manager lease adds a new key every
``tokens.ROTATE_S`` and drops the keys no valid token can still be signed with
(``TokenKeys.rotate``). Storage nodes get the keys with every heartbeat answer instead.
"""

from __future__ import annotations

import logging
import time
from functools import partial

from apollo import limits, tokens
from apollo.eventloop import every
from apollo.meta.sealing import SealingError
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore

log = logging.getLogger("apollo.keys")
KEY_ROTATION_CHECK_S = 60.0


def install_root_key(store: SqlStore, access_key: str, secret_key: str) -> None:
    """At start: the root key the process was given becomes the only one (``SqlStore.set_root_key``), sealed
    like every secret: the sealing is checked first, so that a start without its secrets key never writes
    the root secret in clear beside sealed ones."""
    seal_secrets(store)
    for old in store.set_root_key(access_key, secret_key, time.time()):
        log.warning("root key %s is no longer valid: %s is the root key now", old, access_key)


def ensure_first_key(store: SqlStore) -> None:
    """At start, before serving: every secret sealed (``seal_secrets``), and a deployment without a token
    key gets one (racing starts may add two: harmless)."""
    seal_secrets(store)
    if not store.token_keys():
        store.add_token_key(tokens.new_key(time.time()))


def seal_secrets(store: SqlStore) -> None:
    """Every secret sealed with the current ``APOLLO_SECRETS_KEY`` (``apollo.meta.sealing``); a secret that
    does not open, or sealed ones and no key, stop the start with one line. Once per store."""
    if getattr(store, "secrets_sealed", False):
        return
    try:
        resealed = store.reseal_secrets()
    except SealingError as exc:
        raise SystemExit(f"apollo: {exc}") from None
    if resealed:
        log.info("sealed %d secrets with the secrets key %s", resealed, store.sealer.current)
    elif not store.sealer.enabled:
        log.warning("secrets are stored in clear in the metadata database (file modes protect them): set "
                    "APOLLO_SECRETS_KEY to seal them (docs/security.md)")  # fmt: skip
    store.secrets_sealed = True


class TokenKeys:
    def __init__(self, meta: MetaService, keyring: tokens.Keyring) -> None:
        self.meta = meta
        self.keyring = keyring

    async def refresh(self) -> None:
        self.keyring.replace(await self.meta.token_keys())

    def refresh_forever(self):
        """Every process that issues or checks tokens: follow the table."""
        return every(limits.keyring_refresh_s, self.refresh, "token keyring refresh")

    async def rotate(self) -> None:
        now = time.time()
        newest = max((k.created for k in self.keyring.by_age()), default=0.0)
        if now - newest >= tokens.ROTATE_S:
            await self.meta.add_token_key(tokens.new_key(now))
            log.info("added a new capability token key")
        # A key is superseded PUBLISH_S after its successor is made, and its last tokens live TOKEN_TTL_S more.
        await self.meta.drop_token_keys(now - tokens.ROTATE_S - tokens.PUBLISH_S - tokens.TOKEN_TTL_S)
        await self.refresh()

    def rotation_duty(self):
        """The lease holder's duty (``ManagerDuties.add``)."""
        return partial(every, KEY_ROTATION_CHECK_S, self.rotate, "token key rotation", at_once=True)
