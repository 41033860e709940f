"""Stripe codecs (``apollo.storage.ec``): any ``m`` fragments of a stripe may be lost, data fragments carry the
stripe verbatim (systematic), and fewer than ``k`` fragments are refused. Pure: no drives, no processes."""

from __future__ import annotations

import itertools
import random

import pytest

from apollo.errors import InsufficientFragments
from apollo.proto.layout import Scheme, fragment_payload_bytes
from apollo.storage.ec import StripeCodec, codec_for

SCHEMES = ["2+1", "4+2", "8+4"]


def stripe(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("size", [1, 4096, 4099], ids=["one-byte", "even", "odd"])
def test_any_k_fragments_decode_the_stripe_whichever_m_are_lost(scheme, size):
    codec = codec_for(Scheme.parse(scheme))
    k, width = codec.scheme.k, codec.scheme.width
    data = stripe(size, seed=size)
    fragments = codec.encode(data)
    assert len(fragments) == width
    for lost in itertools.combinations(range(width), codec.scheme.m):
        kept = {i: fragments[i] for i in range(width) if i not in lost}
        assert codec.decode(kept, size) == data, f"lost {lost}"
    # Fewer losses decode too (any k of them), and the order fragments are handed over in does not matter.
    survivors = dict(reversed(list(enumerate(fragments))[: k + 1]))
    assert codec.decode(survivors, size) == data


@pytest.mark.parametrize("scheme", SCHEMES)
def test_data_fragments_carry_the_stripe_verbatim_after_the_codec_header(scheme):
    codec = codec_for(Scheme.parse(scheme))
    k = codec.scheme.k
    data = stripe(10_001, seed=7)
    payload = fragment_payload_bytes(len(data), k)
    fragments = codec.encode(data)
    assert all(len(f) == codec.header_bytes + payload for f in fragments)
    for i in range(k):
        cell = bytes(codec.data_from_fragment(fragments[i]))
        expected = data[i * payload : (i + 1) * payload]
        assert cell[: len(expected)] == expected, f"data fragment {i} is not a slice of the stripe"
        assert not any(cell[len(expected) :]), "the last data fragment is padded with zeros"
    assert b"".join(bytes(codec.data_from_fragment(f))[:payload] for f in fragments[:k])[: len(data)] == data


@pytest.mark.parametrize("scheme", SCHEMES)
def test_rebuild_recreates_lost_fragments_byte_for_byte(scheme):
    codec = codec_for(Scheme.parse(scheme))
    k, m, width = codec.scheme.k, codec.scheme.m, codec.scheme.width
    fragments = codec.encode(stripe(8192 + 5, seed=3))
    for lost in ([0], [width - 1], list(range(m)), list(range(k, width))):  # data, parity, m data, all parity
        kept = {i: fragments[i] for i in range(width) if i not in lost}
        rebuilt = codec.rebuild(dict(list(kept.items())[:k]), lost)
        assert rebuilt == {i: fragments[i] for i in lost}, f"lost {lost}"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_fewer_than_k_fragments_are_refused_naming_the_shortfall(scheme):
    codec = codec_for(Scheme.parse(scheme))
    k = codec.scheme.k
    fragments = codec.encode(stripe(1000))
    short = {i: fragments[i] for i in range(k - 1)}
    with pytest.raises(InsufficientFragments, match=f"need {k}"):
        codec.decode(short, 1000)
    with pytest.raises(InsufficientFragments, match=f"need {k}"):
        codec.rebuild(short, [k - 1])


def test_replication_stores_whole_copies_and_reads_any_one():
    codec = codec_for(Scheme.parse("rep3"))
    data = stripe(777)
    fragments = codec.encode(memoryview(data))
    assert codec.header_bytes == 0
    assert fragments == [data] * 3
    assert codec.decode({2: fragments[2]}, len(data)) == data
    assert codec.rebuild({1: fragments[1]}, [0, 2]) == {0: data, 2: data}
    with pytest.raises(InsufficientFragments):
        codec.decode({}, len(data))


def test_codecs_are_shared_per_scheme():
    assert codec_for(Scheme.parse("4+2")) is codec_for(Scheme.parse("4+2"))
    assert codec_for(Scheme.parse("4+2")) is not codec_for(Scheme.parse("2+1"))
    assert isinstance(codec_for(Scheme.parse("4+2")), StripeCodec)
