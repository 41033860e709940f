"""Access-key secrets (S3 gateway) or key records (metadata RPC), looked up in the metadata store and cached."""

from __future__ import annotations

import time

SECRET_TTL_S = 10.0  # a deleted key stops working within this time


class SecretCache:
    """Known keys are cached for ``ttl_s``; unknown ones are not, so a key created with
    ``apollo admin key create`` works on its very first request."""

    def __init__(self, lookup, ttl_s: float = SECRET_TTL_S) -> None:
        self._lookup = lookup  # async (access_key) -> secret (or any record of the key) | None
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, object]] = {}

    async def get(self, access_key: str):
        now = time.monotonic()
        hit = self._cache.get(access_key)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        secret = await self._lookup(access_key)
        if secret is None:
            self._cache.pop(access_key, None)
            return None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[access_key] = (now, secret)
        return secret
