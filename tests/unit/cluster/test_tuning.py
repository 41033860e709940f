"""Knobs as operators type them, and the pacing they drive."""

from __future__ import annotations

import asyncio
import time

import pytest

from apollo.cluster.ratelimit import RateLimiter
from apollo.cluster.tuning import SETTING_PREFIX, Tuning, parse_rate


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("100MiB/s", 100 * 1024**2), ("1.5GB/s", 1.5e9), ("512k", 512_000), ("64 KiB", 65536), ("7", 7)],
)
def test_rates_parse_with_binary_and_decimal_units(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "-5MiB/s", "10 parsecs"])
def test_nonsense_rates_are_refused(text):
    with pytest.raises(ValueError, match="not a byte rate"):
        parse_rate(text)


def test_tuning_loads_stored_strings_into_typed_fields():
    stored = {SETTING_PREFIX + "repair_bytes_per_s": "1048576.0", SETTING_PREFIX + "repair_parallel": "8.0",
              SETTING_PREFIX + "scrub_mode": "shallow"}  # fmt: skip
    tuning = Tuning.load(stored)
    assert (tuning.repair_bytes_per_s, tuning.repair_parallel, tuning.scrub_mode) == (1048576.0, 8, "shallow")
    assert tuning.scrub_interval_s == Tuning().scrub_interval_s


def test_rate_limiter_paces_to_its_rate_and_zero_means_unlimited():
    async def spend(limiter: RateLimiter, takes: int, amount: float) -> float:
        start = time.monotonic()
        for _ in range(takes):
            await limiter.take(amount)
        return time.monotonic() - start

    # 50 takes of 10 units at 1000 units/s: 0.5 s of budget, less the 0.2 s burst allowance.
    paced = asyncio.run(spend(RateLimiter(1000, burst_s=0.2), 50, 10))
    assert paced >= 0.25
    assert asyncio.run(spend(RateLimiter(0), 1000, 10**9)) < 0.5
