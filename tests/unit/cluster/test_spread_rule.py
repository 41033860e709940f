"""The spread rule (``placement.FailureDomains``): no failure domain holds more shards of a segment than the
live domains force, on every path that places a shard. Pure functions: no I/O."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from apollo.proto.placement import (
    Candidate,
    FailureDomains,
    domain_limit,
    domain_shortfall,
    domains_survivable,
    place_drives,
    rank,
    spares,
)


def cluster(drives_per_node: dict[str, int]) -> list[Candidate]:
    """Online drives named after their node: node "a" with 3 drives is a0, a1, a2."""
    return [Candidate(f"{node}{i}", node) for node, n in drives_per_node.items() for i in range(n)]


def spread(domains: FailureDomains, drives) -> list[int]:
    return sorted(domains.counts(drives).values(), reverse=True)


@pytest.mark.parametrize(
    ("width", "sizes", "limit"),
    [
        (6, [3] * 6, 1),  # 4+2 over six nodes: one shard each, any two nodes may fail
        (6, [3] * 5, 2),
        (6, [3] * 4, 2),
        (6, [3] * 3, 2),  # three nodes: 2,2,2 and never 3,2,1
        (6, [3] * 2, 3),
        (6, [3, 3, 1], 3),  # a small domain takes what it can: 3,2,1 is the best there is
        (6, [2, 2, 1], 2),  # five drives for six shards: 2,2,1 and one shard without a drive
        (6, [1] * 6, 1),  # one server: each drive is its own domain
        (6, [1] * 4, 1),
        (3, [2, 2], 2),  # three replicas over two racks: n-1 in one
        (12, [4] * 4, 3),  # 8+4 over four racks: m in each
        (6, [], 6),  # no live domain: nothing to hold a layout against
    ],
)
def test_the_limit_is_the_most_even_spread_the_live_domains_allow(width, sizes, limit):
    assert domain_limit(width, sizes) == limit


def test_at_risk_means_a_domain_holds_more_than_the_live_domains_force():
    three = FailureDomains.of(cluster({"a": 3, "b": 3, "c": 3}))
    assert three.at_risk(["a0", "a1", "a2", "b0", "b1", "c0"])  # 3,2,1: losing node a loses 3 > m
    assert three.crowded(["a0", "a1", "a2", "b0", "b1", "c0"]) == {"a": 1}
    assert not three.at_risk(["a0", "a1", "b0", "b1", "c0", "c1"])
    assert not three.at_risk(["a0", "a1", "b0", "b1", "c0", ""])  # an unplaced shard is no shard
    six = FailureDomains.of(cluster({n: 2 for n in "abcdef"}))
    assert six.at_risk(["a0", "a1", "b0", "c0", "d0", "e0"])  # six nodes: any two must be able to fail
    five = FailureDomains.of(cluster({n: 2 for n in "abcde"}))
    assert not five.at_risk(["a0", "a1", "b0", "c0", "d0", "e0"])  # written while node f was away: fine


def test_a_drained_shard_goes_to_the_domain_with_room_whatever_the_ranking_says():
    """The operator's layout: node d drains; a and b already hold two shards each, so only c may take one."""
    domains = FailureDomains.of(cluster({"a": 3, "b": 3, "c": 3}), {"d0": "d", "d1": "d", "d2": "d"})
    layout = ["a0", "b0", "c0", "d0", "a2", "b1"]
    ranked = ["a1", "b2", "c1", "c2"]  # the group's ranking may well put a crowded node first
    assert domains.choose(layout, 3, ranked) == "c1"
    assert domains.targets(layout, 3, ranked) == ["c1", "c2"]
    layout[3] = "c1"
    assert spread(domains, layout) == [2, 2, 2]


def test_no_legal_drive_is_said_so_and_a_lost_shard_still_gets_the_least_crowded_drive():
    # c's other drive is online but full (not among the writable candidates the caller offers)
    domains = FailureDomains.of(cluster({"a": 3, "b": 3, "c": 2}))
    layout = ["a0", "a1", "b0", "b1", "c0", "failed-drive"]
    assert domains.choose(layout, 5, ["a2", "b2"]) is None
    assert domains.least_crowded(["a0", "a1", "b0", "c0", "c1", "x"], 5, ["a2", "b2", "b1"]) == "b2"


def test_rewriting_in_place_and_a_shard_already_placed_count_once():
    domains = FailureDomains.of(cluster({"a": 2, "b": 2, "c": 2}))
    layout = ["a0", "a1", "b0", "b1", "c0", "c1"]
    assert domains.choose(layout, 0, ["a0"]) == "a0"  # the same drive: legal
    assert domains.choose(layout, 0, ["b0", "c1"]) is None  # in the layout already, or in a full domain


def test_a_moved_layout_then_drained_by_ranking_alone_goes_3_2_1_and_by_the_rule_2_2_2():
    """Why the rule and not the ranking: after a move inside a node, the next ranked drive may be in a domain
    that already holds two shards. Found for real groups of the ranking, then drained both ways."""
    candidates = cluster({"a": 3, "b": 3, "c": 3, "d": 3})
    live = [c for c in candidates if c.domain != "d"]
    domains = FailureDomains.of(live, {c.drive_id: c.domain for c in candidates})
    broken = fixed = 0
    for pg in range(200):
        layout = [c.drive_id for c in rank(pg, candidates)][:6]
        counts = Counter(d[0] for d in layout)
        crowded = next(n for n in "abc" if counts[n] == 2)
        second = next(d for d in layout if d[0] == crowded and d != layout[[x[0] for x in layout].index(crowded)])
        layout[layout.index(second)] = next(f"{crowded}{i}" for i in range(3) if f"{crowded}{i}" not in layout)
        ranked = [c.drive_id for c in rank(pg, live)]
        by_rank, by_rule = list(layout), list(layout)
        for index in [i for i, d in enumerate(layout) if d[0] == "d"]:
            by_rank[index] = next(d for d in ranked if d not in by_rank)
            by_rule[index] = domains.choose(by_rule, index, ranked)
        broken += spread(domains, by_rank) != [2, 2, 2]
        fixed += spread(domains, by_rule) == [2, 2, 2]
    assert broken > 0  # the old way, on the same layouts
    assert fixed == 200


def test_random_clusters_drained_domain_by_domain_never_break_the_rule():
    rng = random.Random(7)
    for _ in range(300):
        sizes = {f"n{i}": rng.randint(1, 4) for i in range(rng.randint(3, 8))}
        candidates = cluster(sizes)
        width = rng.choice([3, 5, 6, 12])
        pg = rng.randrange(1024)
        layout = [c.drive_id for c in rank(pg, candidates)][:width]
        layout += [""] * (width - len(layout))
        leaving = rng.choice(sorted(sizes))
        live = [c for c in candidates if c.domain != leaving]
        domains = FailureDomains.of(live, {c.drive_id: c.domain for c in candidates})
        ranked = [c.drive_id for c in rank(pg, live)]
        for index in [i for i, d in enumerate(layout) if d and domains.domain(d) == leaving]:
            layout[index] = domains.choose(layout, index, ranked) or ""
        assert not domains.at_risk(layout), (sizes, width, layout)
        assert len(set(filter(None, layout))) == len(list(filter(None, layout)))  # one shard per drive
        placed = sum(1 for d in layout if d)
        assert placed == min(width, len(live))  # the rule never leaves a shard out that a drive could take


def test_new_segments_spread_over_the_writable_drives_even_when_a_domain_s_best_drives_are_full():
    """Ranking every candidate and dropping the full ones afterwards (what ``MetaService.place`` does now)
    lets a domain whose best drives are full fall behind: 1,3,2 where 2,2,2 fits."""
    candidates = cluster({"a": 4, "b": 4, "c": 4})
    full = {"a0", "a1", "a2", "a3"}
    old_way_crowded = 0
    for pg in range(300):
        for nearly_full in ({"a0", "a1"}, {"b2", "b3"}, set(full - {"a3"})):
            writable = {c.drive_id for c in candidates} - nearly_full
            domains = FailureDomains.of([c for c in candidates if c.drive_id in writable])
            drives = place_drives(pg, candidates, writable, 6)
            assert not domains.at_risk(drives), (pg, drives)
            assert all(d in writable for d in drives)
            filtered = [c.drive_id for c in rank(pg, candidates) if c.drive_id in writable][:6]
            old_way_crowded += domains.at_risk(filtered)
    assert old_way_crowded > 0


def test_a_writer_s_spares_keep_the_rule_and_fall_back_to_the_least_crowded_domain():
    domains = FailureDomains.of(cluster({"a": 3, "b": 3, "c": 3}))
    layout = ["a0", "a1", "b0", "b1", "c0", "c1"]  # a0 refused the open
    ranked = ["b2", "c2", "a0", "a2"]  # a ranking that would put a third shard on b
    assert spares(layout, 0, domains, ranked, 3) == ["a2", "b2", "c2"]  # never the drive that refused
    assert spares(layout, 0, domains, ["b2", "c2"], 3) == ["b2", "c2"]  # node a dead: over the limit beats lost
    four = FailureDomains.of(cluster({"a": 3, "b": 3, "c": 3, "d": 3}))
    layout = ["a0", "a1", "b0", "b1", "c0", "d0"]  # a0 refused: node a may be down, so c and d come first
    assert spares(layout, 0, four, ["a2", "c1", "d1", "b2"], 4) == ["c1", "d1", "a2", "b2"]


def test_the_shortfall_is_said_the_same_way_everywhere():
    assert domain_shortfall(6, 2, [3] * 6) is None
    assert domain_shortfall(6, 2, [3] * 7) is None
    three = domain_shortfall(6, 2, [3, 3, 3])
    assert three == ("3 live failure domains for 6-wide segments: up to 2 shards of a segment share one, so only 1 "
                     "of them may fail at once, not 2 (surviving any 2 takes 6 failure domains)")  # fmt: skip
    assert "losing any one of them can make data unreadable" in domain_shortfall(6, 2, [3, 3])
    assert "1 finds no drive" in domain_shortfall(6, 2, [1] * 5, "drives")
    assert domains_survivable(6, 2, [3] * 4) == 1
    assert domains_survivable(6, 2, [3] * 6) == 2
    assert domains_survivable(3, 2, [1, 1, 1]) == 2  # three replicas on three nodes
