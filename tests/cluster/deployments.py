"""A deployment for tests that run on a cluster and on the all-in-one server alike (``deployment``)."""

from __future__ import annotations

import re
import ssl
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apollo.client import Client
from apollo.meta.location import DB_FILE
from apollo.meta.store import SqlStore
from apollo.testing.cluster import LocalCluster


@dataclass
class Target:
    """What the tests need of a deployment, whichever kind it is."""

    meta_urls: str  # what the native client is given
    database: str  # what SqlStore opens
    where: dict  # how `apollo admin` finds the metadata: database=... or meta_dir=...
    native: Callable[..., Client]
    s3: Callable[[], Any]
    cluster: LocalCluster | None = None  # its storage nodes, on a cluster
    options: dict = field(default_factory=dict)  # what an AsyncClient is given besides its keys (certs=)
    ssl_context: ssl.SSLContext | None = None  # what a RemoteMeta is given under TLS
    shard_files: Callable[[], list[Path]] = list  # every shard file on its drives


def deployment(kind: str, make_cluster, make_server, *key: str, meta_args: tuple[str, ...] = ()) -> Target:
    """``kind``: "cluster" (6 storage nodes on PostgreSQL), "cluster-tls" (the same under mutual TLS) or
    "server" (``apollo server`` on SQLite); ``key``: an ordinary access key and secret made for the test (no
    service rights: tokens per segment), with the built-in readwrite policy. ``meta_args``: options of the
    metadata service (``apollo meta``, or the server's own), e.g. ``("--gc-delay", "0")``."""
    if kind.startswith("cluster"):
        started = make_cluster(nodes=6, tls=kind == "cluster-tls", meta_args=meta_args)
        target = Target(started.meta_urls, started.database, {"database": started.database},
                        started.native, started.s3, started, started.native_options(),
                        started.ssl_context, started.shard_files)  # fmt: skip
    else:
        server = make_server(extra_args=list(meta_args))
        target = Target(server.endpoint, str(server.meta_dir / DB_FILE), {"meta_dir": server.meta_dir},
                        lambda *keys, **options: Client(server.endpoint, *keys, **options), server.s3,
                        shard_files=server.shard_files)  # fmt: skip
    store = SqlStore(target.database)
    store.put_key(*key, time.time(), policies=["readwrite"])
    store.close()
    return target


def metadata_calls(target: Target, method: str) -> float:
    """How many ``method`` calls the (first) metadata service has answered, from its /metrics."""
    url = target.meta_urls.split(",")[0] + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    pattern = rf'^apollo_meta_rpc_total{{method="{method}",outcome="ok"}} ([0-9.e+]+)$'
    return sum(float(match) for match in re.findall(pattern, text, re.MULTILINE))
