"""Sessions in a real metadata store (SQLite and PostgreSQL) on a fake clock, and the failed-login throttle."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator

import pytest

from apollo import limits
from apollo.client.context import ClientContext
from apollo.client.engine import ObjectEngine
from apollo.console.auth import safe_next
from apollo.console.sessions import LoginThrottle, Sessions, digest, fingerprint, prepare_shared_dir
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.layout import Scheme

SECRET = hashlib.sha256(b"s3cret").digest()
ROTATED = hashlib.sha256(b"rotated").digest()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def front_doors(meta_target) -> Iterator[Callable[[], Sessions]]:
    """``front_doors()``: the sessions of one more process (a gateway, a worker) over the same database, each
    with its own metadata service, all on ``front_doors.clock``."""
    target = meta_target()
    setup = SqlStore(target)
    setup.put_key("AKUSER", "s3cret", 1.0)
    setup.close()
    clock, opened = Clock(), []

    def one() -> Sessions:
        context = ClientContext(MetaService(SqlStore(target)), {})
        opened.append(context)
        return Sessions(ObjectEngine(context, Scheme.parse("4+2"), clock=clock))

    one.clock, one.target = clock, target
    yield one
    for context in opened:
        context.meta.close()
        context.cpu.shutdown()


def test_a_session_is_a_random_token_the_store_knows_by_its_digest_until_it_expires(front_doors):
    sessions = front_doors()

    async def scenario() -> None:
        first = await sessions.open("AKUSER", SECRET)
        assert len(first.token) == 43 and first.token != first.csrf  # 256 random bits each
        again = await sessions.get(first.token)
        assert again == first
        assert again.holds(SECRET) and not again.holds(ROTATED)  # a changed secret ends it (``Console.session``)
        assert again.secret_fingerprint == fingerprint(first.token, SECRET) != SECRET.hex()  # keyed with the token
        assert first.csrf_matches(first.csrf) and not first.csrf_matches("") and not first.csrf_matches(None)
        assert first.expires == front_doors.clock.now + limits.console_session_ttl_s == 1000.0 + sessions.ttl_s
        store = SqlStore(front_doors.target)
        try:  # what a copy of the database holds: neither the token nor anything testable without it
            (row,) = [dict(r) for r in store.all("SELECT * FROM console_sessions")]
        finally:
            store.close()
        assert row["token_digest"] == digest(first.token) and first.token not in str(row)
        other = await sessions.open("AKUSER", SECRET)
        assert other.token != first.token and other.csrf != first.csrf
        front_doors.clock.now += sessions.ttl_s
        assert await sessions.get(first.token) is None

    asyncio.run(scenario())


def test_a_forged_or_malformed_cookie_is_no_session(front_doors):
    sessions = front_doors()

    async def scenario() -> None:
        session = await sessions.open("AKUSER", SECRET)
        for cookie in (None, "", ".", session.token[:-1], session.token + "A", session.token[:-1] + "=",
                       digest(session.token), "x" * 10_000, session.token.swapcase()):  # fmt: skip
            assert await sessions.get(cookie) is None, cookie
        assert await sessions.get(session.token) is not None

    asyncio.run(scenario())


def test_a_login_at_one_front_door_holds_at_another_and_a_logout_at_either_ends_it_at_both(front_doors):
    """Two gateways (or workers) over one metadata database, each with its own metadata service."""
    gateway_a, gateway_b = front_doors(), front_doors()

    async def scenario() -> None:
        session = await gateway_a.open("AKUSER", SECRET)
        seen = await gateway_b.get(session.token)
        assert seen is not None and (seen.access_key, seen.csrf) == ("AKUSER", session.csrf)
        await gateway_b.close(seen)
        assert await gateway_a.get(session.token) is None and await gateway_b.get(session.token) is None
        await gateway_b.close(seen)  # logged out twice (two tabs): nothing left to end

    asyncio.run(scenario())


def test_after_login_only_console_pages():
    assert safe_next("/_apollo/console/buckets?prefix=a") == "/_apollo/console/buckets?prefix=a"
    for target in ("https://evil.example/", "//evil.example/_apollo/console/", "/other", "", "/_apollo/console"):
        assert safe_next(target) == "/_apollo/console/"


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


def test_workers_sharing_a_directory_share_one_throttle(tmp_path):
    """Two workers' throttles over one directory: failures seen by either count for both, and they end
    with the window; a directory that cannot be written still leaves each its own count."""
    clock = Clock()
    prepare_shared_dir(tmp_path)
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
