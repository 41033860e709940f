"""``apollo://bucket/key`` URLs for PyTorch-side code (WebDataset's ``gopen``, single-file checkpoints), and
the native client they use: configured from the environment as ``fsspec.filesystem("apollo")`` is
(``APOLLO_ENDPOINT`` or ``APOLLO_META_URL``, ``APOLLO_ACCESS_KEY``, ``APOLLO_SECRET_KEY``), one per process,
made on first use and again after a fork, so forked DataLoader workers never use the parent's loop or sockets.
"""

from __future__ import annotations

import os
import threading

from apollo.client import Client

SCHEME = "apollo"

_CLIENTS: dict[tuple[int, str, str, str], Client] = {}  # (pid, endpoint, access key, secret key): this process's
_LOCK = threading.Lock()


def split_url(url: str) -> tuple[str, str]:
    """``apollo://bucket/some/key`` -> ``("bucket", "some/key")``. :raises ValueError: anything else."""
    prefix = f"{SCHEME}://"
    bucket, _, key = url[len(prefix) :].partition("/")
    if not url.startswith(prefix) or not bucket or not key or key.endswith("/"):
        raise ValueError(f"{url!r} is not an object URL: expected {SCHEME}://bucket/key")
    return bucket, key


def environment_client() -> Client:
    """This process's client for the environment's endpoint and keys. :raises ValueError: one is not set."""
    endpoint = os.environ.get("APOLLO_ENDPOINT") or os.environ.get("APOLLO_META_URL")
    access_key, secret_key = os.environ.get("APOLLO_ACCESS_KEY"), os.environ.get("APOLLO_SECRET_KEY")
    if not (endpoint and access_key and secret_key):
        raise ValueError("apollo:// needs APOLLO_ENDPOINT, APOLLO_ACCESS_KEY and APOLLO_SECRET_KEY in the environment")
    key = (os.getpid(), endpoint, access_key, secret_key)
    with _LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = Client(endpoint, access_key, secret_key)
        return _CLIENTS[key]
