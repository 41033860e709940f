"""Runtime-adjustable knobs of background work, kept in the metadata ``settings`` table.

``apollo admin repair|scrub --rate ...`` writes them; the server rereads them every few
seconds, so a change takes effect without a restart (and reaches every worker process).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

MIB = 1024**2
SETTING_PREFIX = "tuning."


@dataclass
class Tuning:
    repair_bytes_per_s: float = 128 * MIB  # bytes read + written by repair; 0 = unlimited
    repair_ops_per_s: float = 2000  # shard reads + writes by repair; 0 = unlimited
    repair_parallel: int = 4  # segments repaired at once
    repair_paused: int = 0  # 1: the queue keeps filling but nothing is rebuilt (maintenance, investigations)
    scrub_bytes_per_s: float = 32 * MIB  # bytes read by scrub (deep) or shard files checked x 4 KiB (shallow)
    scrub_mode: str = "deep"  # deep: every cell CRC; shallow: presence, size and footer of every shard
    scrub_interval_s: float = 7 * 24 * 3600.0  # a new pass starts this long after the previous one started
    orphan_interval_s: float = 24 * 3600.0  # a new orphan sweep starts this long after the previous one started
    orphan_min_age_s: float = 3600.0  # younger unreferenced files may be writes about to commit: kept
    rebalance_interval_s: float = 6 * 3600.0  # also runs whenever the set of online drives changes
    rebalance_tolerance: float = 0.05  # a drive may hold up to half this fraction more or less than its share
    drive_offline_grace_s: float = 600.0  # an unreachable drive is declared failed (and rebuilt) after this

    @classmethod
    def load(cls, settings: dict[str, str]) -> Tuning:
        tuning = cls()
        for item in fields(cls):
            raw = settings.get(SETTING_PREFIX + item.name)
            if raw is not None:
                setattr(tuning, item.name, _PARSERS[str(item.type)](raw))
        return tuning

    @staticmethod
    def names() -> list[str]:
        return [item.name for item in fields(Tuning)]


_PARSERS = {"float": float, "int": lambda raw: int(float(raw)), "str": str}
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kmgt]i?b?|b)?\s*(/s)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_rate(text: str) -> float:
    """``100MiB/s``, ``1.5GB/s``, ``0`` (unlimited) -> bytes per second."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a byte rate: {text!r} (examples: 100MiB/s, 1GB/s, 0 for unlimited)")
    unit = (match.group(2) or "").lower()
    scale = _UNITS[unit[:1]] if "i" not in unit else 1024 ** " kmgt".index(unit[0])
    return float(match.group(1)) * scale
