"""Capability tokens: who signs, what verifies, and how keys rotate without refusing a valid token."""

from __future__ import annotations

import pytest

from apollo import tokens
from apollo.errors import TokenError

NOW = 1_800_000_000.0


def test_a_new_key_signs_only_once_published_and_old_tokens_stay_valid_until_they_expire():
    old = tokens.TokenKey("old", b"o" * 32, NOW - 10 * tokens.ROTATE_S)
    ring = tokens.Keyring([old])
    before = ring.issue(tokens.READ, "seg", tokens.TOKEN_TTL_S, now=NOW)
    new = tokens.TokenKey("new", b"n" * 32, NOW)
    ring.replace([old, new])
    assert ring.signing_key(NOW + tokens.PUBLISH_S - 1).key_id == "old"  # nodes may not have "new" yet
    assert ring.signing_key(NOW + tokens.PUBLISH_S).key_id == "new"
    after = ring.issue(tokens.READ, "seg", tokens.TOKEN_TTL_S, now=NOW + tokens.PUBLISH_S)
    for token in (before, after):
        ring.check(token, tokens.READ, "seg", now=NOW + tokens.PUBLISH_S)
    ring.replace([new])  # "old" dropped: what it signed is refused, naming the reason
    with pytest.raises(TokenError, match="unknown key"):
        ring.check(before, tokens.READ, "seg", now=NOW + tokens.PUBLISH_S)


def test_the_first_key_of_a_new_deployment_signs_at_once_and_no_key_is_an_error():
    assert tokens.Keyring([tokens.TokenKey("k", b"k" * 32, NOW)]).signing_key(NOW).key_id == "k"
    with pytest.raises(TokenError, match="no token keys"):
        tokens.Keyring().issue(tokens.READ, "seg", 60, now=NOW)


@pytest.mark.parametrize("mangle", [
    lambda t: t + "x", lambda t: t.replace("v1.", "v2.", 1), lambda t: "garbage", lambda t: t[:-4],
    lambda t: ".".join(t.split(".")[:3]),
])  # fmt: skip
def test_malformed_or_altered_tokens_are_refused(mangle):
    ring = tokens.Keyring([tokens.TokenKey("k", b"k" * 32, NOW - 3600)])
    token = ring.issue(tokens.WRITE, "seg", 60, now=NOW)
    with pytest.raises(TokenError):
        ring.check(mangle(token), tokens.WRITE, "seg", now=NOW)


def test_service_tokens_cover_every_segment_but_only_their_operation():
    ring = tokens.Keyring([tokens.TokenKey("k", b"k" * 32, NOW - 3600)])
    token = ring.issue(tokens.DELETE, tokens.ANY_SEGMENT, 60, now=NOW)
    ring.check(token, tokens.DELETE, "any-segment", now=NOW)
    with pytest.raises(TokenError, match="allows delete, not read"):
        ring.check(token, tokens.READ, "any-segment", now=NOW)
    with pytest.raises(TokenError, match="expired"):
        ring.check(token, tokens.DELETE, "any-segment", now=NOW + 61)
