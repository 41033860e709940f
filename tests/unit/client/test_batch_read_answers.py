"""A storage node's framed answer to a batch of reads, read back by the client (``remote_storage._outcomes``):
a part of a cell carries its CRC32C, and a part that changed on its way is that read's failure, not a
wrong byte handed to the reader; an answer that does not fit the reads asked for is refused whole."""

from __future__ import annotations

import crc32c
import pytest

from apollo.client.remote_storage import _outcomes
from apollo.errors import ChecksumMismatch
from apollo.proto.layout import ShardRef
from apollo.proto.storage_api import frame_head
from apollo.storage.node import ShardRead

SHARD = ShardRef(0, "0" * 32, 0)
WHOLE = ShardRead("0" * 16, SHARD, 4096, 100)
PART = ShardRead("0" * 16, SHARD, 4096, 100, (10, 14))


def test_a_part_is_checked_against_the_crc32c_it_came_with():
    good, whole = b"abcd", bytes(range(100))
    answer = frame_head([[4, crc32c.crc32c(good)], 100]) + good + whole
    assert [bytes(o) for o in _outcomes(bytearray(answer), [PART, WHOLE])] == [good, whole]
    tampered = frame_head([[4, crc32c.crc32c(good)], 100]) + b"abce" + whole
    changed, kept = _outcomes(bytearray(tampered), [PART, WHOLE])
    assert isinstance(changed, ChecksumMismatch) and bytes(kept) == whole


@pytest.mark.parametrize("outcomes", [[4], [[4]], [[5, 0]], [["4", 0]], [[4, "0"]]])
def test_a_part_answered_in_another_form_refuses_the_answer(outcomes):
    with pytest.raises(ValueError):
        _outcomes(bytearray(frame_head(outcomes) + b"abcd"), [PART])
