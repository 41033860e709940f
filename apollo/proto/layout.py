"""How an object's bytes are laid out: durability schemes, segments, shards and their references.

Shared by every layer: the metadata service allocates and stores layouts, storage nodes
name shard files after ``ShardRef``, clients read and write by them. Every identifier in a
``ShardRef`` or ``SegmentLayout`` is checked by format where one is built (``apollo.ids``),
because layouts and shard references arrive from the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apollo import ids, limits


@dataclass(frozen=True)
class Scheme:
    """Durability scheme of a segment: ``ec`` with k data + m parity, or ``rep`` with k=1 and m extra copies."""

    kind: str  # "ec" or "rep"
    k: int
    m: int

    @property
    def width(self) -> int:
        return self.k + self.m

    def __str__(self) -> str:
        return f"{self.k}+{self.m}" if self.kind == "ec" else f"rep{self.width}"

    @classmethod
    def parse(cls, text: str) -> Scheme:
        """Parse ``4+2`` or ``rep3``."""
        if text.startswith("rep"):
            copies = int(text[3:])
            if not 1 <= copies <= 32:
                raise ValueError(f"replication takes 1 to 32 copies: {text!r}")
            return cls("rep", 1, copies - 1)
        k_text, plus, m_text = text.partition("+")
        if not plus:
            raise ValueError(f"erasure code must look like K+M, got {text!r}")
        k, m = int(k_text), int(m_text)
        if k < 2 or m < 1 or k + m > 32:
            raise ValueError(f"unsupported erasure code {text!r} (need k>=2, m>=1, k+m<=32)")
        return cls("ec", k, m)


def fragment_payload_bytes(stripe_bytes: int, k: int) -> int:
    """Payload bytes each fragment carries for a stripe of ``stripe_bytes`` data."""
    return -(-stripe_bytes // k)

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
