"""Placement groups to drives by weighted rendezvous (highest-random-weight) hashing.

Each (group, drive) pair gets a pseudo-random score scaled by the drive's
weight; a group takes the top ``width`` drives, preferring distinct failure
domains (nodes). Adding a drive moves only the groups it now wins, about
``1/n`` of them, which is what keeps rebalancing bounded.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    drive_id: str
    domain: str  # failure domain: node name in a cluster, one value on a single server
    weight: float = 1.0


def _score(pg: int, drive_id: str, weight: float) -> float:
    digest = hashlib.blake2b(f"{pg}:{drive_id}".encode(), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
    return -weight / math.log(unit)


def rank(pg: int, candidates: list[Candidate]) -> list[Candidate]:
    """All candidates in preference order for ``pg``: distinct domains first, then the rest."""
    ordered = sorted(candidates, key=lambda c: _score(pg, c.drive_id, c.weight), reverse=True)
    first, rest, seen = [], [], set()
    for cand in ordered:
        (rest if cand.domain in seen else first).append(cand)
        seen.add(cand.domain)
    return first + rest


def pg_of(segment_id: str, pg_count: int) -> int:
    return int.from_bytes(hashlib.blake2b(segment_id.encode(), digest_size=8).digest(), "big") % pg_count
