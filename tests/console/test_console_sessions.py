"""Sessions and the failed-login throttle on a fake clock: expiry, bounds, the window."""

from __future__ import annotations

from apollo.console.auth import safe_next
from apollo.console.sessions import LoginThrottle, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_expire_and_stay_bounded():
    clock = Clock()
    sessions = Sessions(ttl_s=60, size_max=3, clock=clock)
    first = sessions.open("k", b"d")
    assert sessions.get(first.session_id) is first and first.csrf != first.session_id
    assert first.csrf_matches(first.csrf) and not first.csrf_matches("") and not first.csrf_matches(None)
    clock.now += 61
    assert sessions.get(first.session_id) is None and len(sessions) == 0
    opened = [sessions.open("k", b"d") for _ in range(5)]
    assert len(sessions) == 3 and sessions.get(opened[0].session_id) is None  # the oldest went first
    assert sessions.get(opened[-1].session_id) is opened[-1]
    assert sessions.get(None) is None and sessions.get("") is None


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
