"""Where the cell records of a segment's shards lie, and how to cut a read of them into cells.

Every full-stripe record has the same size (codec header + cell + CRC32C), so
stripe ``s`` starts at ``HEADER_BYTES + s * full_record``; only the last stripe
of a segment may be shorter. Readers, the scrubber and the repairer all use this.
"""

from __future__ import annotations

from apollo import limits
from apollo.errors import ChecksumMismatch, InsufficientFragments
from apollo.proto.layout import SegmentLayout
from apollo.storage.ec import codec_for
from apollo.storage.shardfile import CRC_BYTES, HEADER_BYTES, open_record, seal_record


class ShardGeometry:
    """Where the cell records of a segment's shards lie."""

    def __init__(self, layout: SegmentLayout) -> None:
        self.layout = layout
        self.codec = codec_for(layout.scheme)
        self.full_record = self.codec.header_bytes + layout.cell_size + CRC_BYTES
        self.batch_stripes = max(1, limits.io_batch_bytes // layout.stripe_bytes)

    def record_bytes(self, stripe: int) -> int:
        return self.codec.header_bytes + self.layout.cell_payload(stripe) + CRC_BYTES

    def span(self, s0: int, s1: int) -> tuple[int, int]:
        """(file offset, length) of the records of stripes ``[s0, s1)``."""
        return HEADER_BYTES + s0 * self.full_record, sum(self.record_bytes(s) for s in range(s0, s1))

    @property
    def records_end(self) -> int:
        offset, length = self.span(self.layout.stripe_count - 1, self.layout.stripe_count)
        return offset + length

    def batches(self) -> list[tuple[int, int]]:
        count = self.layout.stripe_count
        return [(s, min(s + self.batch_stripes, count)) for s in range(0, count, self.batch_stripes)]

    def split(self, raw: bytes | bytearray, s0: int, s1: int) -> list[memoryview | None]:
        """Per stripe, the verified fragment (None where the CRC fails or the read came up short)."""
        view, pos, out = memoryview(raw).toreadonly(), 0, []  # a remote read's buffer is a bytearray
        for stripe in range(s0, s1):
            size = self.record_bytes(stripe)
            try:
                out.append(open_record(view[pos : pos + size]) if pos + size <= len(view) else None)
            except ChecksumMismatch:
                out.append(None)
            pos += size
        return out

    def rebuild_records(self, cells: dict[int, list], missing: list[int], stripes: int) -> dict[int, list[bytes]]:
        """Cell records of shards ``missing`` for ``stripes`` stripes, from ``cells`` (shard -> verified fragment
        per stripe, None where one failed). A shard in both keeps its good cells as they are (a move copies
        what it can) and only its bad ones are decoded, from any k good cells of the stripe.

        :raises InsufficientFragments: a stripe with fewer than k good cells.
        """
        k = self.layout.scheme.k
        out: dict[int, list[bytes]] = {index: [] for index in missing}
        for n in range(stripes):
            good = {i: bytes(c[n]) for i, c in cells.items() if c[n] is not None}
            if len(good) < k:
                raise InsufficientFragments(
                    f"segment {self.layout.segment_id}: only {len(good)} good cells in a stripe, need {k}"
                )
            lost = [i for i in missing if i not in good]
            chosen = dict(list(good.items())[:k])
            fragments = {**{i: good[i] for i in missing if i in good}, **self.codec.rebuild(chosen, lost)}
            for index in missing:
                out[index].append(seal_record(fragments[index]))
        return out
