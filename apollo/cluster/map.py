"""The cluster map: storage nodes, their drives and failure domains, versioned by an epoch.

The metadata service builds it from the database (``ClusterOps.cluster_map``); gateways
and native clients cache it, refresh it every few seconds, and at once when a drive
they need is missing from it. Any change of membership, endpoint or drive state bumps
the epoch, so a cached map is known to be stale by comparing one integer.

A node is *alive* while its heartbeats are recent. Drives of a dead node stay in the
map (their shards are still placed there) but are not writable: new segments go
elsewhere, and reads of their shards fall back to parity at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apollo.meta.placement import Candidate


@dataclass
class NodeInfo:
    name: str
    endpoint: str  # http://host:port of its storage service
    rack: str  # failure domain above the node; "" when not set
    alive: bool
    heartbeat: float


@dataclass
class DriveInfo:
    drive_id: str
    node: str
    state: str  # online | offline | failed | draining | retired (apollo.cluster.drives)
    writable: bool  # online, on a live node, with free space above the reserve
    weight: float = 1.0


@dataclass
class ClusterMap:
    epoch: int
    nodes: list[NodeInfo] = field(default_factory=list)
    drives: list[DriveInfo] = field(default_factory=list)

    def failure_domain(self, node_name: str) -> str:
        """Placement spreads a segment's shards over racks when racks are labelled, else over nodes."""
        node = next((n for n in self.nodes if n.name == node_name), None)
        return node.rack if node is not None and node.rack else node_name

    def candidates(self) -> list[Candidate]:
        return [Candidate(d.drive_id, self.failure_domain(d.node), d.weight) for d in self.drives
                if d.state == "online"]  # fmt: skip

    def writable(self) -> set[str]:
        return {d.drive_id for d in self.drives if d.writable}
