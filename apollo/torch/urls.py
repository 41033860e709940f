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


def split_prefix_url(url: str) -> tuple[str, str]:
    """``apollo://bucket/some/dir`` -> ``("bucket", "some/dir/")``: a "directory" of objects, such as a
    distributed checkpoint. :raises ValueError: anything else."""
    prefix = f"{SCHEME}://"
    bucket, _, path = url[len(prefix) :].partition("/")
    path = path.strip("/")
    if not url.startswith(prefix) or not bucket or not path:
        raise ValueError(f"{url!r} is not a prefix URL: expected {SCHEME}://bucket/prefix")
    return bucket, path + "/"


def is_prefix_url(value: object) -> bool:
    """Whether ``value`` (a str or path-like) is what ``split_prefix_url`` takes: how torch asks a checkpoint
    storage whether an id is its own."""
    try:
        split_prefix_url(os.fspath(value))
    except (TypeError, ValueError):
        return False
    return True


def environment_client() -> Client:
    """This process's client for the environment's endpoint and keys. :raises ValueError: one is not set."""
    return client_for()


def client_for(endpoint: str | None = None, access_key: str | None = None, secret_key: str | None = None) -> Client:
    """This process's client for these settings, each defaulting to the environment's.

    :raises ValueError: one is neither given nor set."""
    endpoint = endpoint or os.environ.get("APOLLO_ENDPOINT") or os.environ.get("APOLLO_META_URL")
    access_key = access_key or os.environ.get("APOLLO_ACCESS_KEY")
    secret_key = secret_key or os.environ.get("APOLLO_SECRET_KEY")
    if not (endpoint and access_key and secret_key):
        raise ValueError("apollo:// needs APOLLO_ENDPOINT, APOLLO_ACCESS_KEY and APOLLO_SECRET_KEY in the environment"
                         " (or an endpoint and keys given)")  # fmt: skip
    key = (os.getpid(), endpoint, access_key, secret_key)
    with _LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = Client(endpoint, access_key, secret_key)
        return _CLIENTS[key]
