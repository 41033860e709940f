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

import enum
from dataclasses import dataclass, field

from apollo.proto.placement import Candidate

NODE_NAME = "local"  # the node of the all-in-one server's drives


class DriveState(enum.StrEnum):
    """A drive's life (``apollo.cluster.lifecycle`` moves it between states)."""

    ONLINE = "online"  # in service: reads, and writes while it has room
    OFFLINE = "offline"  # unreachable within its grace: it may come back with every shard
    FAILED = "failed"  # gone: its shards are rebuilt elsewhere
    DRAINING = "draining"  # readable, taking no new shards, being emptied
    RETIRED = "retired"  # emptied (or rebuilt elsewhere): no longer served


SERVING_STATES = (DriveState.ONLINE, DriveState.OFFLINE, DriveState.DRAINING)  # drives a server keeps attached


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

    def domains(self) -> dict[str, str]:
        """Each node's failure domain, by name: placement spreads a segment's shards over racks when racks are
        labelled, else over nodes. One dict, so that each drive costs a lookup, not a walk of the nodes (10,000
        drives in 500 nodes made every map refresh of a client scan 5 million entries: ``scale_sim.py``)."""
        return {n.name: n.rack or n.name for n in self.nodes}

    def candidates(self) -> list[Candidate]:
        domains = self.domains()
        return [Candidate(d.drive_id, domains.get(d.node, d.node), d.weight) for d in self.drives
                if d.state == "online"]  # fmt: skip

    def writable(self) -> set[str]:
        return {d.drive_id for d in self.drives if d.writable}


@dataclass
class DriveRecord:
    drive_id: str
    node: str
    path: str
    state: str
    weight: float
    replaced_by: str = ""  # the drive that took this one's place (``apollo admin drive replace``)
    state_since: float = 0.0
    free_bytes: int = 0
    total_bytes: int = 0
    health: str = "ok"  # as its storage node last reported it (cluster mode)
    filesystem: str = ""  # the filesystem holding it on its node, as the node reported it ("": not yet)
