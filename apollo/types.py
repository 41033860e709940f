"""Protocol types shared by the metadata service, storage nodes and clients."""

from __future__ import annotations

from dataclasses import dataclass, field

from apollo import ids, limits
from apollo.storage.ec import Scheme, fragment_payload_bytes

NO_DRIVE = ""  # layout slot of a shard that could not be placed (fewer drives in service than the width)


def batch_bytes(stripe_bytes: int) -> int:
    """Data bytes a writer encodes and sends at a time: whole stripes, about ``limits.io_batch_bytes``."""
    return max(1, limits.io_batch_bytes // stripe_bytes) * stripe_bytes


def segment_bytes_max(stripe_bytes: int) -> int:
    """The longest segment a writer makes: whole batches, about ``limits.segment_size_bytes_max``."""
    batch = batch_bytes(stripe_bytes)
    return max(1, limits.segment_size_bytes_max // batch) * batch


@dataclass(frozen=True)
class ShardRef:
    """Names one shard file: shard ``index`` of segment ``segment_id`` in placement group ``pg``."""

    pg: int
    segment_id: str
    index: int

    def __post_init__(self) -> None:
        """A shard names a file on a storage node: every part is checked where the reference is made."""
        ids.placement_group(self.pg)
        ids.segment_id(self.segment_id)
        ids.shard_index(self.index)


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

    def __post_init__(self) -> None:
        """Layouts arrive from the network and from the database: one that names a path Apollo would
        never generate, or has an impossible geometry, is refused wherever it is built."""
        ids.segment_id(self.segment_id)
        ids.placement_group(self.pg)
        for drive in self.drives:
            if drive != NO_DRIVE:
                ids.drive_id(drive)
        if len(self.drives) != self.scheme.width:
            raise ids.BadIdentifier(f"layout of a {self.scheme} segment names {len(self.drives)} drives")
        if type(self.offset) is not int or type(self.length) is not int or self.offset < 0 or self.length < 0:
            raise ids.BadIdentifier(f"bad segment offset {self.offset!r} or length {self.length!r}")
        low, high = limits.cell_size_bytes_min, limits.cell_size_bytes_max
        if type(self.cell_size) is not int or not low <= self.cell_size <= high:
            raise ids.BadIdentifier(f"cell size {self.cell_size!r} is outside {low}..{high}")

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
