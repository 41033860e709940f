"""Which storage node serves each drive, as the cluster map says: one ``RemoteStorageNode`` per endpoint."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import aiohttp

from apollo.client.remote_storage import RemoteStorageNode, Timeouts, TokenSource
from apollo.proto.cluster_map import ClusterMap


class NodeDirectory:
    def __init__(self, session: aiohttp.ClientSession, token_for: TokenSource, timeouts: Timeouts,
                 on_epoch: Callable[[int], None] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:  # fmt: skip
        """``ssl_context``: the TLS context every node is called with (``RemoteStorageNode``)."""
        self.session = session
        self.ssl_context = ssl_context
        self.token_for = token_for
        self.timeouts = timeouts
        self.on_epoch = on_epoch
        self.nodes: dict[str, RemoteStorageNode] = {}  # drive id -> node; updated in place, callers keep the dict
        self._by_endpoint: dict[str, RemoteStorageNode] = {}

    def update(self, cluster: ClusterMap) -> None:
        """Follow the map: a node's connections (and what it learnt about its health) survive map changes."""
        endpoints = {node.name: node.endpoint for node in cluster.nodes}
        for endpoint in endpoints.values():
            if endpoint not in self._by_endpoint:
                self._by_endpoint[endpoint] = RemoteStorageNode(endpoint, [], self.token_for, self.session,
                                                                self.timeouts, self.on_epoch,
                                                                self.ssl_context)  # fmt: skip
        for drive in cluster.drives:
            endpoint = endpoints.get(drive.node)
            if endpoint is not None:
                self.nodes[drive.drive_id] = self._by_endpoint[endpoint]

    def close(self) -> None:
        """Close the nodes' kept-alive read connections (the aiohttp session is its owner's to close)."""
        for node in self._by_endpoint.values():
            node.close()
