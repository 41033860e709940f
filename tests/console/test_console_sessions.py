"""Sessions and the failed-login throttle on a fake clock: signed tokens, expiry, logouts, the window."""

from __future__ import annotations

import base64

from apollo.console.auth import safe_next
from apollo.console.sessions import LoginThrottle, Sessions, shared_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_is_its_signed_token_until_it_expires():
    clock = Clock()
    sessions = Sessions(ttl_s=60, clock=clock)
    first = sessions.open("k", b"digest")
    again = sessions.get(first.token)
    assert (again.access_key, again.csrf, again.session_id) == ("k", first.csrf, first.session_id)
    assert again.secret_digest == sessions.fingerprint(b"digest") != b"digest"  # keyed: nothing to test offline
    assert first.csrf_matches(first.csrf) and not first.csrf_matches("") and not first.csrf_matches(None)
    clock.now += 61
    assert sessions.get(first.token) is None
    assert sessions.get(None) is None and sessions.get("") is None and sessions.get(".") is None


def test_a_forged_or_altered_token_is_no_session():
    sessions, other = Sessions(), Sessions()
    token = sessions.open("reader", b"d").token
    body, _, signature = token.partition(".")
    assert other.get(token) is None  # another server's key
    forged = base64.urlsafe_b64encode(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).replace(
        b'"k":"reader"', b'"k":"root"')).decode().rstrip("=")  # fmt: skip
    assert forged != body and sessions.get(f"{forged}.{signature}") is None
    assert sessions.get(f"{body}.{'0' * 64}") is None and sessions.get(body) is None


def test_workers_share_sessions_and_logouts_through_the_supervisors_directory(tmp_path):
    shared_key(tmp_path / "console")
    one, two = Sessions(tmp_path / "console"), Sessions(tmp_path / "console")
    session = one.open("k", b"d")
    assert two.get(session.token).session_id == session.session_id
    two.close(two.get(session.token))  # a logout on the other worker
    assert one.get(session.token) is None and two.get(session.token) is None
    assert oct((tmp_path / "console" / "session.key").stat().st_mode & 0o777) == "0o600"
    shared_key(tmp_path / "console")  # the next start: a new key ends every session
    assert Sessions(tmp_path / "console").get(one.open("k", b"d").token) is None


def test_throttle_caps_failures_per_address_within_the_window():
    clock = Clock()
    throttle = LoginThrottle(failures_max=3, window_s=60, addresses_max=2, clock=clock)
    for _ in range(3):
        assert throttle.refused("a") == 0
        throttle.failed("a")
    assert throttle.refused("a") == 60 and throttle.refused("b") == 0
    clock.now += 30
    assert throttle.refused("a") == 30
    clock.now += 31
    assert throttle.refused("a") == 0
    throttle.failed("b"), throttle.failed("c"), throttle.failed("d")
    assert len(throttle._failures) == 2  # bounded: the oldest address is forgotten


def test_after_login_only_console_pages():
    assert safe_next("/_apollo/console/buckets?prefix=a") == "/_apollo/console/buckets?prefix=a"
    for target in ("https://evil.example/", "//evil.example/_apollo/console/", "/other", "", "/_apollo/console"):
        assert safe_next(target) == "/_apollo/console/"


def test_workers_sharing_a_directory_share_one_throttle(tmp_path):
    """Two workers' throttles over one directory: failures seen by either count for both, and they end
    with the window; a directory that cannot be written still leaves each its own count."""
    clock = Clock()
    shared_key(tmp_path)
    first, second = (LoginThrottle(tmp_path, failures_max=3, window_s=60, clock=clock) for _ in range(2))
    first.failed("10.0.0.7")
    second.failed("10.0.0.7")
    assert first.refused("10.0.0.7") == second.refused("10.0.0.7") == 0
    first.failed("10.0.0.7")
    assert second.refused("10.0.0.7") == 60 and first.refused("10.0.0.8") == 0
    clock.now += 61
    assert first.refused("10.0.0.7") == second.refused("10.0.0.7") == 0
    unwritable = LoginThrottle(tmp_path / "missing", failures_max=2, window_s=60, clock=clock)
    for _ in range(2):
        unwritable.failed("10.0.0.9")
    assert unwritable.refused("10.0.0.9") == 60
