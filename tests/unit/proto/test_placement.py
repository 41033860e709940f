"""Placement by weighted rendezvous hashing (``apollo.proto.placement``): the ranking spreads round by round
over failure domains, follows the weights, moves little when a drive joins, and segment ids map to the same
placement group forever. (The spread rule for every other path that places a shard is
tests/unit/cluster/test_spread_rule.py's.)"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from apollo.proto.placement import Candidate, Placement, pg_of, place_drives, rank

PGS = range(2000)


def drives(domains: dict[str, int], weight: float = 1.0) -> list[Candidate]:
    """Node "a" with 3 drives is a0, a1, a2."""
    return [Candidate(f"{domain}{i}", domain, weight) for domain, n in domains.items() for i in range(n)]


def singles(n: int) -> list[Candidate]:
    """One server: every drive is its own failure domain."""
    return [Candidate(f"d{i:02d}", f"d{i:02d}") for i in range(n)]


def test_the_ranking_is_every_candidate_once_whatever_order_they_come_in():
    candidates = drives({"a": 3, "b": 2, "c": 4})
    for pg in range(50):
        ranked = rank(pg, candidates)
        assert sorted(c.drive_id for c in ranked) == sorted(c.drive_id for c in candidates)
        assert rank(pg, list(reversed(candidates))) == ranked
    assert len({tuple(c.drive_id for c in rank(pg, candidates)) for pg in range(50)}) > 10  # groups differ


@pytest.mark.parametrize("sizes", [{"a": 3, "b": 3, "c": 3}, {"a": 4, "b": 2, "c": 1}, {"r1": 5, "r2": 5}])
def test_each_round_takes_the_next_best_drive_of_every_domain_that_has_one_left(sizes):
    candidates = drives(sizes)
    for pg in PGS[:300]:
        domains = [c.domain for c in rank(pg, candidates)]
        left = dict(sizes)
        position = 0
        while position < len(domains):
            in_round = sorted(d for d, n in left.items() if n > 0)
            assert sorted(domains[position : position + len(in_round)]) == in_round, (pg, domains)
            for domain in in_round:
                left[domain] -= 1
            position += len(in_round)


def test_within_a_domain_drives_keep_the_order_they_have_on_their_own():
    """Spreading reorders domains, never the drives inside one: a domain's best drive comes first."""
    candidates = drives({"a": 4, "b": 4, "c": 4})
    for pg in PGS[:300]:
        ranked = rank(pg, candidates)
        for domain in "abc":
            alone = [c for c in rank(pg, [Candidate(c.drive_id, "one") for c in candidates]) if c.drive_id[0] == domain]
            assert [c.drive_id for c in ranked if c.domain == domain] == [c.drive_id for c in alone]


def test_four_plus_two_over_three_racks_puts_two_shards_in_each():
    candidates = drives({"r1": 4, "r2": 4, "r3": 4})
    for pg in PGS[:500]:
        assert sorted(Counter(c.domain for c in rank(pg, candidates)[:6]).values()) == [2, 2, 2]


def test_first_choices_spread_evenly_over_equal_drives():
    candidates = singles(10)
    firsts = Counter(rank(pg, candidates)[0].drive_id for pg in PGS)
    assert len(firsts) == 10
    assert max(firsts.values()) < 1.35 * len(PGS) / 10 and min(firsts.values()) > 0.65 * len(PGS) / 10


def test_a_drive_of_twice_the_weight_is_chosen_about_twice_as_often():
    candidates = [*singles(9), Candidate("heavy", "heavy", 2.0)]
    firsts = Counter(rank(pg, candidates)[0].drive_id for pg in PGS)
    others = (len(PGS) - firsts["heavy"]) / 9
    assert 1.6 < firsts["heavy"] / others < 2.4, firsts


def test_a_drive_of_weight_zero_comes_last_in_every_group():
    candidates = [*singles(6), Candidate("empty", "empty", 0.0)]
    assert all(rank(pg, candidates)[-1].drive_id == "empty" for pg in PGS[:500])


def test_a_new_drive_takes_about_its_share_of_groups_and_nothing_else_moves():
    before = singles(10)
    after = [*before, Candidate("new", "new")]
    moved = 0
    for pg in PGS:
        old, new = [c.drive_id for c in rank(pg, before)], [c.drive_id for c in rank(pg, after)]
        assert [d for d in new if d != "new"] == old  # the others keep their relative order
        if new[0] != old[0]:
            assert new[0] == "new"  # a group's first choice changes only to the new drive
            moved += 1
    assert 0.6 / 11 < moved / len(PGS) < 1.4 / 11


def test_segment_ids_map_to_the_same_placement_group_forever():
    """Shard files live under their group's directory: a different mapping would lose every shard."""
    assert pg_of("0" * 32, 256) == 177
    assert pg_of("f" * 32, 256) == 181
    assert pg_of("0123456789abcdef0123456789abcdef", 256) == 83
    assert pg_of("0123456789abcdef0123456789abcdef", 4096) == 851
    assert pg_of("anything", 1) == 0


def test_placement_groups_are_used_evenly():
    counts = Counter(pg_of(uuid.UUID(int=n).hex, 64) for n in range(6400))
    assert set(counts) == set(range(64))
    assert max(counts.values()) < 150 and min(counts.values()) > 50  # 100 each on average


def test_a_processs_placement_remembers_each_groups_drives_until_the_drives_change():
    """``Placement.drives_for`` is ``place_drives`` remembered: the same answer, computed again only when the
    candidates or the writable drives change (a map refresh that changes nothing keeps what it knows)."""
    drives = [Candidate(f"{n:016x}", f"rack{n % 5}") for n in range(40)]
    placement = Placement()
    placement.update(drives, [d.drive_id for d in drives])
    assert placement.usable == 40
    for pg in range(50):
        assert placement.drives_for(pg, 6) == place_drives(pg, drives, placement.writable, 6)
    remembered = placement.drives_for(7, 6)
    placement.update(list(drives), [d.drive_id for d in drives])  # the same sets, as a refresh brings them
    assert placement.drives_for(7, 6) is remembered
    placement.leave_out(remembered[0])  # a writer found it full
    assert placement.usable == 39 and remembered[0] not in placement.drives_for(7, 6)
    assert placement.drives_for(7, 6) == place_drives(7, drives, placement.writable, 6)
    placement.update(drives[:-1], [d.drive_id for d in drives[:-1]])
    assert all(placement.drives_for(pg, 6) == place_drives(pg, drives[:-1], placement.writable, 6) for pg in range(50))
