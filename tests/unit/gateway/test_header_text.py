"""User metadata values on the wire (RFC 2047 encoded-words, as S3 answers them)."""

from __future__ import annotations

import pytest

from apollo.gateway.header_text import decode_value, encode_value


@pytest.mark.parametrize(("raw", "text"), [
    ("plain ascii", "plain ascii"),
    ("=?UTF-8?B?SGVsbG8gV29ybGTDqQ==?=", "Hello Worldé"),
    ("=?utf-8?q?caf=C3=A9?=", "café"),
    ("=?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?=", "éé"),  # RFC 2047: the space between adjacent words goes
    ("=?ISO-8859-1?Q?na=EFve?=", "naïve"),
    ("Hello Worldé", "Hello Worldé"),  # raw UTF-8 (what Go and Rust clients send) stays that text
    ("caf\udce9", "café"),  # a raw byte that is not UTF-8 (a Latin-1 client) is read as ISO-8859-1
    ("=?UTF-8?B?not base64!?=", "=?UTF-8?B?not base64!?="),  # not a word after all: text as sent
    ("=?no-such-charset?B?w6k=?=", "=?no-such-charset?B?w6k=?="),
])  # fmt: skip
def test_decode_value(raw, text):
    assert decode_value(raw) == text


@pytest.mark.parametrize(("text", "wire"), [
    ("plain ascii\twith tab", "plain ascii\twith tab"),
    ("Hello Worldé", "=?UTF-8?B?SGVsbG8gV29ybGTDqQ==?="),
    ("line\nbreak", "=?UTF-8?B?bGluZQpicmVhaw==?="),  # a header cannot carry it raw
    ("ключ", "=?UTF-8?B?0LrQu9GO0Yc=?="),
])  # fmt: skip
def test_encode_value(text, wire):
    assert encode_value(text) == wire
    assert decode_value(wire) == text
