"""Protocol types shared by the metadata service, storage nodes and clients."""

from __future__ import annotations

from dataclasses import dataclass, field

from apollo.storage.ec import Scheme, fragment_payload_bytes


@dataclass(frozen=True)
class ShardRef:
    """Names one shard file: shard ``index`` of segment ``segment_id`` in placement group ``pg``."""

    pg: int
    segment_id: str
    index: int


@dataclass(frozen=True)
class SegmentLayout:
    """Where and how one contiguous piece of an object is stored.

    ``drives[i]`` holds shard ``i``; the list records the placement at write
    time, so later cluster-map changes never move a committed segment silently.
    """

    segment_id: str
    offset: int  # byte offset of this segment within the object
    length: int
    scheme: Scheme
    cell_size: int
    pg: int
    drives: tuple[str, ...]

    @property
    def stripe_bytes(self) -> int:
        return self.scheme.k * self.cell_size

    @property
    def stripe_count(self) -> int:
        return -(-self.length // self.stripe_bytes)

    def stripe_length(self, stripe: int) -> int:
        return min(self.stripe_bytes, self.length - stripe * self.stripe_bytes)

    def shard(self, index: int) -> ShardRef:
        return ShardRef(self.pg, self.segment_id, index)

    def cell_payload(self, stripe: int) -> int:
        return fragment_payload_bytes(self.stripe_length(stripe), self.scheme.k)

    def to_json(self) -> dict:
        return {
            "segment_id": self.segment_id,
            "offset": self.offset,
            "length": self.length,
            "scheme": str(self.scheme),
            "cell_size": self.cell_size,
            "pg": self.pg,
            "drives": list(self.drives),
        }

    @classmethod
    def from_json(cls, data: dict) -> SegmentLayout:
        return cls(
            segment_id=data["segment_id"],
            offset=data["offset"],
            length=data["length"],
            scheme=Scheme.parse(data["scheme"]),
            cell_size=data["cell_size"],
            pg=data["pg"],
            drives=tuple(data["drives"]),
        )


@dataclass
class ObjectData:
    """The bytes of a version: inline (small objects) or a list of segments."""

    size: int
    inline: bytes | None = None
    segments: list[SegmentLayout] = field(default_factory=list)
