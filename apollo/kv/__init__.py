"""The inference KV-cache tier: ``KVStore`` over a KV namespace (``apollo.meta.sql_kv``), and LMCache's remote
connector on it (``apollo.kv.lmcache``, which needs torch)."""

from apollo.kv.store import KVStore

__all__ = ["KVStore"]
