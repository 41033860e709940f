"""Placement groups to drives by weighted rendezvous (highest-random-weight) hashing.

Each (group, drive) pair gets a pseudo-random score scaled by the drive's
weight; a group takes the top ``width`` drives, spread evenly over failure
domains (racks, else nodes). Adding a drive moves only the groups it now wins, about
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
    """All candidates in preference order for ``pg``, spread over failure domains as evenly as possible.

    Round by round: the best drive of every domain, then the second best of every domain,
    and so on. So 4+2 over three racks puts two shards in each (a lost rack costs m), and
    over six nodes one on each.
    """
    ordered = sorted(candidates, key=lambda c: _score(pg, c.drive_id, c.weight), reverse=True)
    rounds: list[list[Candidate]] = []
    taken: dict[str, int] = {}
    for cand in ordered:
        depth = taken.get(cand.domain, 0)
        taken[cand.domain] = depth + 1
        if depth == len(rounds):
            rounds.append([])
        rounds[depth].append(cand)
    return [cand for round_ in rounds for cand in round_]


def pg_of(segment_id: str, pg_count: int) -> int:
    return int.from_bytes(hashlib.blake2b(segment_id.encode(), digest_size=8).digest(), "big") % pg_count
