"""Strategies shared by the property tests."""

from __future__ import annotations

from hypothesis import strategies as st

# Text as aiohttp hands over header values: the bytes decoded as UTF-8 with ``surrogateescape``, so a
# non-UTF-8 byte arrives as a lone surrogate (U+DC80..U+DCFF).
wire_text = st.binary(max_size=64).map(lambda raw: raw.decode("utf-8", "surrogateescape"))
any_text = st.one_of(st.text(max_size=64), wire_text)
