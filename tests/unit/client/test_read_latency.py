"""``ReadLatency.read_around``: a read goes around a slow drive only when enough of its segment's drives are not
slow to read the stripe without it; when too many are, parity is as slow as the data it would replace."""

from __future__ import annotations

from apollo.client.context import ReadLatency

DRIVES = tuple(f"d{n}" for n in range(6))  # 4+2


def test_a_read_goes_around_slow_drives_only_while_k_others_are_not():
    now = [0.0]
    latency = ReadLatency(clock=lambda: now[0])
    assert not latency.read_around(["d0", "d1"], DRIVES, 4)  # nothing slow
    latency.note_slow("d0")
    assert latency.read_around(["d0", "d1"], DRIVES, 4)
    assert not latency.read_around(["d1", "d2"], DRIVES, 4)  # the slow one is not needed
    latency.note_slow("d5")
    assert latency.read_around(["d0"], DRIVES, 4)  # 4 not slow: still k
    latency.note_slow("d4")
    assert not latency.read_around(["d0"], DRIVES, 4)  # 3 not slow: reading around would wait on slow ones too
    now[0] += 60  # slow marks end
    assert not latency.read_around(["d0"], DRIVES, 4) and not latency.is_slow("d0")
