"""The byte spans a resharded Distributed Checkpoint load reads (``apollo.torch.dcp.layout``), checked against
torch's own ``narrow`` on seeded random shapes and hypercubes, and how the writer spreads items over files
and the reader coalesces ranges."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from apollo.torch.dcp import reader as dcp_reader  # noqa: E402 - after the importorskip
from apollo.torch.dcp.layout import dtype_named, hypercube_in, raw_bytes, span_of, writable_bytes  # noqa: E402


def narrowed(tensor, offsets, lengths):
    for dim, (offset, length) in enumerate(zip(offsets, lengths, strict=True)):
        tensor = tensor.narrow(dim, offset, length)
    return tensor


@pytest.mark.parametrize("seed", range(40))
def test_the_span_holds_exactly_the_hypercube_and_says_when_it_is_contiguous(seed):
    rng = random.Random(seed)
    shape = tuple(rng.randint(1, 6) for _ in range(rng.randint(1, 4)))
    dtype = rng.choice([torch.float32, torch.bfloat16, torch.int64, torch.uint8])
    stored = torch.arange(torch.Size(shape).numel()).reshape(shape).to(dtype)
    offsets = tuple(rng.randint(0, size - 1) for size in shape)
    lengths = tuple(rng.randint(1, size - offset) for size, offset in zip(shape, offsets, strict=True))
    span = span_of(shape, stored.element_size(), offsets, lengths)
    data = raw_bytes(stored)[span.start : span.end]
    expected = narrowed(stored, offsets, lengths)
    assert torch.equal(hypercube_in(bytes(data), dtype, span), expected)
    assert span.contiguous == (span.end - span.start == expected.numel() * stored.element_size())
    if span.contiguous:  # then the bytes are the hypercube's, in order
        assert bytes(data) == bytes(raw_bytes(expected))


def test_row_spans_are_contiguous_and_column_spans_cover_only_their_rows():
    rows = span_of((8, 4), 4, (2, 0), (3, 4))
    assert (rows.start, rows.end, rows.contiguous) == (32, 80, True)
    columns = span_of((8, 4), 4, (0, 1), (8, 2))
    assert (columns.start, columns.end, columns.contiguous) == (4, 4 * (7 * 4 + 3), False)
    scalar = span_of((), 8, (), ())
    assert (scalar.start, scalar.end, scalar.contiguous) == (0, 8, True)
    assert span_of((4, 0), 4, (0, 0), (4, 0)).end == 0


@pytest.mark.parametrize("offsets, lengths", [((0, 3), (8, 2)), ((-1, 0), (1, 4)), ((0,), (8,)), ((0, 0), (9, 4))])
def test_a_hypercube_outside_the_tensor_is_refused(offsets, lengths):
    with pytest.raises(ValueError):
        span_of((8, 4), 4, offsets, lengths)


def test_dtypes_by_name_and_only_torch_dtypes():
    assert dtype_named("torch.bfloat16") is torch.bfloat16 and dtype_named("float32") is torch.float32
    for bad in ("torch.nn", "os", "torch.Tensor", "__import__"):
        with pytest.raises(ValueError):
            dtype_named(bad)


def test_raw_bytes_of_a_strided_tensor_are_its_row_major_copy_and_only_contiguous_cpu_tensors_take_reads():
    base = torch.arange(12, dtype=torch.int32).reshape(3, 4)
    assert bytes(raw_bytes(base.t())) == bytes(raw_bytes(base.t().contiguous()))
    assert writable_bytes(base.t()) is None
    view = writable_bytes(base)
    view[:4] = bytes([7, 0, 0, 0])
    assert base[0, 0].item() == 7


def job(path: str, start: int, end: int) -> dcp_reader._Job:
    return dcp_reader._Job(request=None, relative_path=path, start=start, end=end)


def test_ranges_of_a_file_close_together_are_read_as_one_and_the_others_apart():
    gap = dcp_reader.COALESCE_GAP_BYTES
    jobs = [job("a", 0, 100), job("b", 0, 10), job("a", 100 + gap, 200 + gap), job("a", 300 + 2 * gap, 400 + 2 * gap)]
    ranges = dcp_reader._coalesced(jobs)
    assert [(path, start, end, len(members)) for path, start, end, members in ranges] == [
        ("a", 0, 200 + gap, 2), ("a", 300 + 2 * gap, 400 + 2 * gap, 1), ("b", 0, 10, 1)]  # fmt: skip
    big = dcp_reader.COALESCED_MAX_BYTES
    assert len(dcp_reader._coalesced([job("a", 0, big), job("a", big, big + 1)])) == 2
