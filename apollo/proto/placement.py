"""Placement groups to drives by weighted rendezvous (highest-random-weight) hashing, and the spread rule.

Each (group, drive) pair gets a pseudo-random score scaled by the drive's
weight; a group takes the top ``width`` drives, spread evenly over failure
domains (racks, else nodes). Adding a drive moves only the groups it now wins, about
``1/n`` of them, which is what keeps rebalancing bounded.

Every other path that puts a shard somewhere (repair, drain, replace, rebalance, a
writer's spare) asks ``FailureDomains`` instead of the ranking alone: a shard may go
only where its domain stays within ``domain_limit``, the most even spread the live
failure domains allow. The ranking alone cannot promise that once a layout has been
changed (a move inside a node, a spare): its next drive may be in a domain that
already holds as many shards as the code can lose.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

CHOSEN_MAX = 1 << 16  # groups whose drives a process remembers (a few MB at most)


@dataclass(frozen=True)
class Candidate:
    drive_id: str
    domain: str  # failure domain: the rack (when labelled) or node in a cluster; the drive itself on one server
    weight: float = 1.0


class Placement:
    """Where this process may put new shards: the online drives placement ranks (``candidates``) and the
    ones that take writes now (``writable``).

    Created once per process and passed to whatever places or writes (``MetaService``, ``RemoteMeta``,
    writers). The drive probe, or the cluster map, replaces what it holds (``update``); a writer that
    found a drive full leaves it out until then (``leave_out``). Readers get immutable snapshots, so a
    ranking in progress never sees the sets change under it.
    """

    def __init__(self) -> None:
        self._candidates: tuple[Candidate, ...] = ()
        self._writable: frozenset[str] = frozenset()
        self.usable = 0  # candidates that are writable
        self._chosen: dict[tuple[int, int], list[str]] = {}  # (group, width) -> place_drives, for these sets

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        return self._candidates

    @property
    def writable(self) -> frozenset[str]:
        return self._writable

    def update(self, candidates: Iterable[Candidate], writable: Iterable[str]) -> None:
        candidates, writable = tuple(candidates), frozenset(writable)
        if (candidates, writable) != (self._candidates, self._writable):  # a map refresh mostly changes nothing
            self._set(candidates, writable)

    def leave_out(self, drive_id: str) -> None:
        if drive_id in self._writable:
            self._set(self._candidates, self._writable - {drive_id})

    def _set(self, candidates: tuple[Candidate, ...], writable: frozenset[str]) -> None:
        self._candidates, self._writable = candidates, writable
        self.usable = sum(c.drive_id in writable for c in candidates)
        self._chosen = {}

    def drives_for(self, pg: int, width: int) -> list[str]:
        """``place_drives`` for a group, remembered until the drives change: it ranks every candidate, which
        at 10,000 drives cost 23 ms for each new segment. At most ``CHOSEN_MAX`` groups are remembered."""
        chosen = self._chosen.get((pg, width))
        if chosen is None:
            if len(self._chosen) >= CHOSEN_MAX:
                self._chosen = {}
            chosen = self._chosen[(pg, width)] = place_drives(pg, self._candidates, self._writable, width)
        return chosen


def _score(pg: int, drive_id: str, weight: float) -> float:
    digest = hashlib.blake2b(f"{pg}:{drive_id}".encode(), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
    return -weight / math.log(unit)


def rank(pg: int, candidates: Iterable[Candidate]) -> list[Candidate]:
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


# The spread rule: one function decides, for every path that places a shard -------------------------


def domain_limit(width: int, drives_per_domain: Iterable[int]) -> int:
    """The most shards of one ``width``-wide segment a failure domain may hold: as few as the live domains allow.

    That is the smallest ``n`` for which the live domains, each taking at most ``n`` shards and at most one
    per drive, can hold every shard (or every drive there is, when there are fewer drives than shards).
    With equal domains it is ``ceil(width / domains)``: 4+2 over six nodes 1, over four or three nodes 2,
    over two nodes 3. A domain with fewer drives takes what it can and the others take the rest, so
    no configuration is left without a legal spread. With no live domain at all nothing can be placed,
    and nothing is held against a layout: the limit is the width.
    """
    sizes = [n for n in drives_per_domain if n > 0]
    wanted = min(width, sum(sizes))
    if wanted == 0:
        return max(1, width)
    limit = 1
    while sum(min(limit, n) for n in sizes) < wanted:
        limit += 1
    return limit


def domains_survivable(width: int, parity: int, drives_per_domain: Iterable[int]) -> int:
    """How many live failure domains may fail at once without losing a segment spread by the rule.

    Each domain holds at most ``domain_limit`` shards, and a segment can lose ``parity`` of them (m for
    k+m, n-1 for n replicas), less the shards that found no drive at all (fewer drives than ``width``).
    """
    sizes = [n for n in drives_per_domain if n > 0]
    unplaced = max(0, width - sum(sizes))
    return max(0, parity - unplaced) // domain_limit(width, sizes)


def domain_shortfall(width: int, parity: int, drives_per_domain: Iterable[int], unit: str = "failure domains"
                     ) -> str | None:  # fmt: skip
    """None when there are at least ``width`` live failure domains (one shard of a segment in each, so any
    ``parity`` of them may fail); otherwise what the spread costs, in the words every check uses: the
    drain refusal (``apollo admin node|drive drain``), the lease holder's warning, docs/deploy.md "Sizing".
    ``unit`` names the domains for the reader ("drives" on one server, where each drive is one)."""
    sizes = [n for n in drives_per_domain if n > 0]
    if len(sizes) >= width:
        return None
    limit = domain_limit(width, sizes)
    survivable = domains_survivable(width, parity, sizes)
    unplaced = max(0, width - sum(sizes))
    crowding = f"up to {limit} shards of a segment share one" if limit > 1 else "each holds one shard of a segment"
    if unplaced:
        crowding += f" and {unplaced} find{'s' * (unplaced == 1)} no drive"
    losing = (f"only {survivable} of them may fail at once, not {parity}" if survivable
              else "losing any one of them can make data unreadable")  # fmt: skip
    return (
        f"{len(sizes)} live {unit} for {width}-wide segments: {crowding}, so {losing} "
        f"(surviving any {parity} takes {width} {unit})"
    )


@dataclass(frozen=True)
class FailureDomains:
    """Which failure domain every drive is in, and how many online drives each live domain offers.

    The rule (``limit``): no domain holds more shards of a segment than the live domains force it to,
    ``domain_limit``. A layout that breaks it is *at risk*: losing one crowded domain costs more
    shards than it would have to. Repair, drain, replace and the rebalancer all choose targets
    through ``choose``; write placement (``rank``) already spreads round by round.
    """

    domain_of: Mapping[str, str]  # drive id -> failure domain, for every drive a layout may still name
    live: Mapping[str, int]  # live failure domain -> its online drives (what placement can spread over)
    _limits: dict[int, int] = field(default_factory=dict, compare=False, repr=False)  # by width: walks ask per segment

    @classmethod
    def of(cls, candidates: Iterable[Candidate], domain_of: Mapping[str, str] | None = None) -> FailureDomains:
        """From the placement candidates (online drives) and the domains of the other known drives."""
        domains = dict(domain_of or {})
        live: dict[str, int] = {}
        for cand in candidates:
            domains[cand.drive_id] = cand.domain
            live[cand.domain] = live.get(cand.domain, 0) + 1
        return cls(domains, live)

    def domain(self, drive_id: str) -> str:
        """A drive nobody knows the domain of (forgotten since) fails alone."""
        return self.domain_of.get(drive_id, drive_id)

    def limit(self, width: int) -> int:
        if width not in self._limits:
            self._limits[width] = domain_limit(width, self.live.values())
        return self._limits[width]

    def counts(self, drives: Sequence[str], skip: Collection[int] = ()) -> Counter[str]:
        """Shards per domain, over placed shards (``""`` slots hold none) except the indices in ``skip``."""
        return Counter(self.domain(d) for i, d in enumerate(drives) if d and i not in skip)

    def crowded(self, drives: Sequence[str]) -> dict[str, int]:
        """Domains holding more shards than the rule allows, with how many too many."""
        limit = self.limit(len(drives))
        return {domain: n - limit for domain, n in self.counts(drives).items() if n > limit}

    def at_risk(self, drives: Sequence[str]) -> bool:
        return bool(self.crowded(drives))

    def targets(self, drives: Sequence[str], index: int, candidates: Iterable[str]) -> list[str]:
        """The ``candidates`` that may take shard ``index`` of a layout now on ``drives``: not holding another
        shard of it, and in a domain that stays within the limit; the least crowded domains first, the
        caller's order (its preference, e.g. the group's ranking) within each."""
        others = self.counts(drives, skip=(index,))
        limit = self.limit(len(drives))
        held = {d for i, d in enumerate(drives) if i != index}
        legal = [d for d in candidates if d and d not in held and others[self.domain(d)] < limit]
        return sorted(legal, key=lambda d: others[self.domain(d)])  # stable: the caller's order within a count

    def choose(self, drives: Sequence[str], index: int, candidates: Iterable[str]) -> str | None:
        """Where shard ``index`` should go among ``candidates``; None when no choice keeps the spread legal."""
        legal = self.targets(drives, index, candidates)
        return legal[0] if legal else None

    def least_crowded(self, drives: Sequence[str], index: int, candidates: Iterable[str]) -> str | None:
        """A last resort for a shard that is *lost* (not one that is only moving) when ``choose`` finds no legal
        drive: the candidate in the least crowded domain. A shard over the limit still survives every
        failure the missing shard would not, and the rebalancer moves it once a legal drive appears."""
        others = self.counts(drives, skip=(index,))
        held = {d for i, d in enumerate(drives) if i != index}
        free = [d for d in candidates if d and d not in held]
        return min(free, key=lambda d: others[self.domain(d)], default=None)


def place_drives(pg: int, candidates: Iterable[Candidate], writable: Collection[str], width: int) -> list[str]:
    """A new segment's drives: the writable candidates ranked among themselves, then the others as fillers.

    Ranking only the writable drives keeps the round-by-round spread over what can really be written:
    ranked among all candidates and filtered afterwards, a domain whose best drives are full falls
    behind, and 4+2 over three domains could become 3,2,1 where 2,2,2 was possible. Fillers are the
    drives ``MetaService.place`` pads with, which the writer replaces by spares or reports lost.
    """
    usable = [c.drive_id for c in rank(pg, [c for c in candidates if c.drive_id in writable])]
    fillers = [c.drive_id for c in rank(pg, [c for c in candidates if c.drive_id not in writable])]
    return (usable + fillers)[:width]


def spares(drives: Sequence[str], index: int, domains: FailureDomains, ranked: Sequence[str], count: int) -> list[str]:
    """Drives a writer may try for shard ``index`` whose drive refused the open, best first, at most ``count``.

    Legal drives first (``FailureDomains.targets``: least crowded domains first, in the group's ranking),
    those in the refusing drive's own domain after the others (a refusal often means its whole node is
    unreachable), then, rather than lose the shard, drives over the limit, least crowded domain first.
    """
    refused = drives[index]
    legal = [d for d in domains.targets(drives, index, ranked) if d != refused]
    legal.sort(key=lambda d: domains.domain(d) == domains.domain(refused))  # stable: keeps the order within
    others = domains.counts(drives, skip=(index,))
    rest = sorted((d for d in ranked if d not in legal and d not in drives), key=lambda d: others[domains.domain(d)])
    return (legal + rest)[:count]
