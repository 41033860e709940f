"""``Range`` headers (``apollo.gateway.http.parse_range``): an accepted range always lies within the object,
an unsatisfiable one is a 416 InvalidRange naming the size, anything unparsable is ignored (whole object)."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from prop_strategies import any_text

from apollo.gateway.http import parse_range
from apollo.gateway.s3errors import S3Error

sizes = st.one_of(st.integers(0, 10), st.integers(0, 2**63))
numbers = st.one_of(st.integers(0, 12), st.integers(0, 2**64 + 5)).map(str)
range_like = st.tuples(st.sampled_from(["bytes=", "bytes =", "BYTES=", "bytes=-", "items=", " bytes="]),
                       st.one_of(st.just(""), numbers), st.sampled_from(["-", "", "--", ","]),
                       st.one_of(st.just(""), numbers),
                       st.sampled_from(["", ",0-1", " ", "\n", "x"])).map("".join)  # fmt: skip
values = st.one_of(range_like, any_text, st.from_regex(r"bytes=[0-9٠-٩+_ ]{0,4}-[0-9٠-٩+_ ]{0,4}", fullmatch=True))


def _check_refusal(exc: S3Error, size: int) -> None:
    assert (exc.code, exc.status) == ("InvalidRange", 416)
    assert exc.fields["ActualObjectSize"] == str(size)
    assert exc.headers == {"Content-Range": f"bytes */{size}"}


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.none(), values), sizes)
@example("bytes=0-0", 0)
@example("bytes=-1", 0)
@example("bytes=99999999999999999999-", 5)
@example("bytes=٣-٤", 10)
def test_a_range_is_within_the_object_ignored_or_a_416(value, size):
    try:
        result = parse_range(value, size)
    except S3Error as exc:
        _check_refusal(exc, size)
        return
    if result is not None:
        start, end = result
        assert 0 <= start <= end <= size
        assert end > start or size == 0  # only a suffix range of an empty object is empty
        assert value.strip().isascii()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**40))
def test_a_rendered_range_parses_back_clamped_to_the_object(start, length, size):
    last = start + length
    if start < size:
        assert parse_range(f"bytes={start}-{last}", size) == (start, min(last + 1, size))
        assert parse_range(f"bytes={start}-", size) == (start, size)
    else:
        for value in (f"bytes={start}-{last}", f"bytes={start}-"):
            try:
                parse_range(value, size)
            except S3Error as exc:
                _check_refusal(exc, size)
            else:
                raise AssertionError(f"{value} accepted for a {size}-byte object")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_a_suffix_range_is_the_last_bytes_and_a_zero_suffix_is_a_416(suffix, size):
    if suffix:
        assert parse_range(f"bytes=-{suffix}", size) == (max(0, size - suffix), size)
        return
    try:
        parse_range("bytes=-0", size)
    except S3Error as exc:
        _check_refusal(exc, size)
    else:
        raise AssertionError("bytes=-0 accepted")


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 2**40), st.integers(1, 2**40), st.integers(0, 2**40))
def test_a_range_ending_before_it_starts_is_ignored(start, shortfall, size):
    assert parse_range(f"bytes={start}-{max(0, start - shortfall)}", size) is None or start - shortfall >= start
