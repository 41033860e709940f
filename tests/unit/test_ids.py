"""Identifier checks (``apollo.ids``): exactly the forms Apollo generates pass; a path, an encoded slash, a
bool for an int or a near miss is refused with a ``BadIdentifier`` (a ValueError) naming what was wrong."""

from __future__ import annotations

import hashlib
import secrets
import uuid

import pytest

from apollo import ids
from apollo.ids import BadIdentifier

# Generated as Apollo generates them (uuid4), once: parameters must be the same at every collection (pytest-xdist
# workers each collect the suite and compare).
SEGMENT = uuid.UUID("b52d2a09-5e58-4da6-8533-174c56b42858").hex
DRIVE = uuid.UUID("6e1f0c3a-9d24-4b7e-a5c8-0f3e2d1b4a69").hex[:16]


def test_generated_identifiers_pass_unchanged():
    assert ids.segment_id(SEGMENT) is SEGMENT
    assert ids.drive_id(DRIVE) is DRIVE
    assert ids.placement_group(0) == 0 and ids.placement_group(ids.PLACEMENT_GROUPS_MAX - 1) == (1 << 20) - 1
    assert ids.shard_index(0) == 0 and ids.shard_index(ids.SHARDS_PER_SEGMENT_MAX - 1) == 31
    assert ids.etag("d41d8cd98f00b204e9800998ecf8427e") == "d41d8cd98f00b204e9800998ecf8427e"
    assert ids.etag("d41d8cd98f00b204e9800998ecf8427e-10000") == "d41d8cd98f00b204e9800998ecf8427e-10000"


HOSTILE = ["../" * 10 + "etc/pw", "..%2F..%2Fshards", "/" + "a" * 31, "a" * 31 + "/", "", " " + "a" * 31]


@pytest.mark.parametrize("value", [
    *HOSTILE, SEGMENT.upper(), SEGMENT[:-1], SEGMENT + "0", SEGMENT[:-1] + "g", SEGMENT + "\n", "０" * 32,
    SEGMENT.encode(), None, int(SEGMENT, 16), str(uuid.UUID(SEGMENT)),
])  # fmt: skip
def test_anything_but_32_lowercase_hex_digits_is_not_a_segment_id(value):
    with pytest.raises(BadIdentifier, match="bad segment id"):
        ids.segment_id(value)


@pytest.mark.parametrize("value", [*HOSTILE, DRIVE.upper(), DRIVE[:-1], DRIVE + "0", SEGMENT, DRIVE + "\n", None])
def test_anything_but_16_lowercase_hex_digits_is_not_a_drive_id(value):
    with pytest.raises(BadIdentifier, match="bad drive id"):
        ids.drive_id(value)


@pytest.mark.parametrize("value", [-1, 1 << 20, True, False, 1.0, "3", None])
def test_placement_groups_are_ints_within_bounds(value):
    with pytest.raises(BadIdentifier, match="bad placement group"):
        ids.placement_group(value)


@pytest.mark.parametrize("value", [-1, 32, True, 2.0, "0", None])
def test_shard_indexes_are_ints_within_the_widest_scheme(value):
    with pytest.raises(BadIdentifier, match="bad shard index"):
        ids.shard_index(value)


@pytest.mark.parametrize("value", [
    '"d41d8cd98f00b204e9800998ecf8427e"', "D41D8CD98F00B204E9800998ECF8427E", "d41d8cd98f00b204e9800998ecf8427e-",
    "d41d8cd98f00b204e9800998ecf8427e-123456", "d41d8cd98f00b204e9800998ecf8427e-1-2", "d41d8cd98f00b204", None,
])  # fmt: skip
def test_etags_are_an_md5_optionally_with_a_count(value):
    with pytest.raises(BadIdentifier, match="bad ETag"):
        ids.etag(value)


def test_the_refusal_is_a_value_error_showing_a_long_value_cut_short():
    with pytest.raises(ValueError) as caught:
        ids.segment_id("x" * 1000)
    message = str(caught.value)
    assert "x" * 76 + "..." in message and "x" * 80 not in message
    assert message.endswith("expected 32 lowercase hex digits")


def test_console_tokens_digests_and_access_keys():
    token, digest = secrets.token_urlsafe(32), hashlib.sha256(b"x").hexdigest()
    assert ids.console_token(token) is token and ids.sha256_hex(digest) is digest
    assert ids.access_key("AKIA0123") == "AKIA0123" and ids.access_key("root user") == "root user"
    for bad in (token[:-1], token + "A", token[:-1] + "=", token[:-1] + "/", token + "\n", None, token.encode()):
        with pytest.raises(BadIdentifier, match="bad console token"):
            ids.console_token(bad)
    for bad in (digest.upper(), digest[:-1], digest + "0", SEGMENT, digest + "\n", None):
        with pytest.raises(BadIdentifier, match="bad session digest"):
            ids.sha256_hex(bad, "session digest")
    for bad in ("", "k" * 257, "a\nb", "a\x00b", None, 7):
        with pytest.raises(BadIdentifier, match="bad access key"):
            ids.access_key(bad)
