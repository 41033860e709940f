"""Web-console sessions in the metadata store (``apollo.meta.sql_console``), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest

from apollo import errors, limits
from apollo.ids import BadIdentifier
from apollo.proto.records import ConsoleSession

TTL = limits.console_session_ttl_s
FINGERPRINT, CSRF = "f" * 64, "c" * 43


def digest(n: int) -> str:
    return hashlib.sha256(f"token-{n}".encode()).hexdigest()


def rows(store, access_key: str | None = None) -> int:
    if access_key is None:
        return store.one("SELECT COUNT(*) AS n FROM console_sessions")["n"]
    return store.one("SELECT COUNT(*) AS n FROM console_sessions WHERE access_key = ?", (access_key,))["n"]


@pytest.fixture
def store(store):
    store.put_key("AKUSER", "s3cret", 1.0)
    store.put_key("AKOTHER", "other", 1.0)
    return store


def test_a_session_is_found_by_its_digest_until_it_expires_or_is_closed(store):
    assert store.open_console_session(digest(1), "AKUSER", FINGERPRINT, CSRF, 100.0) == 100.0 + TTL
    assert store.console_session(digest(1), 101.0) == ConsoleSession("AKUSER", FINGERPRINT, CSRF, 100.0 + TTL)
    assert store.console_session(digest(2), 101.0) is None  # another token
    assert store.console_session(digest(1), 100.0 + TTL) is None  # expired: the service's clock says so
    store.open_console_session(digest(2), "AKUSER", FINGERPRINT, CSRF, 100.0)
    store.close_console_session(digest(2))
    store.close_console_session(digest(2))  # a second logout (another gateway's) changes nothing
    assert store.console_session(digest(2), 101.0) is None
    assert store.console_session(digest(1), 101.0) is not None  # the other login of the same key stays


def test_expired_rows_go_at_the_next_open(store):
    store.open_console_session(digest(1), "AKUSER", FINGERPRINT, CSRF, 100.0)
    store.open_console_session(digest(2), "AKOTHER", FINGERPRINT, CSRF, 100.0 + TTL / 2)
    store.open_console_session(digest(3), "AKUSER", FINGERPRINT, CSRF, 100.0 + TTL + 1)  # the first has expired
    kept = {r["token_digest"] for r in store.all("SELECT token_digest FROM console_sessions")}
    assert kept == {digest(2), digest(3)}


def test_a_key_keeps_only_its_newest_sessions(store):
    """A holder of a key who logs in in a loop pushes out only that key's own oldest logins."""
    store.open_console_session(digest(-1), "AKOTHER", FINGERPRINT, CSRF, 50.0)
    cap = limits.console_sessions_per_key_max
    for n in range(cap + 5):
        store.open_console_session(digest(n), "AKUSER", FINGERPRINT, CSRF, 100.0 + n)
    assert rows(store, "AKUSER") == cap
    assert [store.console_session(digest(n), 200.0) is None for n in range(6)] == [True] * 5 + [False]
    assert store.console_session(digest(cap + 4), 200.0) is not None
    assert store.console_session(digest(-1), 200.0) is not None  # another key's are untouched


def test_only_existing_keys_open_sessions_and_deleting_a_key_or_a_new_root_secret_ends_them(store):
    with pytest.raises(errors.NotFound):
        store.open_console_session(digest(1), "AKNOBODY", FINGERPRINT, CSRF, 100.0)
    store.put_session("ASIATEMP", "s", "d" * 64, "AKUSER", "", 1e12, 100.0)  # a temporary key is no console key
    with pytest.raises(errors.NotFound):
        store.open_console_session(digest(1), "ASIATEMP", FINGERPRINT, CSRF, 100.0)
    assert rows(store) == 0
    store.open_console_session(digest(1), "AKUSER", FINGERPRINT, CSRF, 100.0)
    store.open_console_session(digest(2), "AKOTHER", FINGERPRINT, CSRF, 100.0)
    assert store.delete_key("AKUSER")
    assert store.console_session(digest(1), 101.0) is None and rows(store, "AKOTHER") == 1
    store.set_root_key("admin", "first", 1.0)
    store.open_console_session(digest(3), "admin", FINGERPRINT, CSRF, 100.0)
    store.set_root_key("admin", "first", 2.0)  # the same secret at the next start: still logged in
    assert store.console_session(digest(3), 101.0) is not None
    store.set_root_key("admin", "rotated", 3.0)  # a rotation after a leak logs the old secret's sessions out
    assert store.console_session(digest(3), 101.0) is None


@pytest.mark.parametrize("call, args", [
    ("open_console_session", ("x" * 64, "AKUSER", FINGERPRINT, CSRF, 1.0)),  # not hex
    ("open_console_session", (digest(1).upper(), "AKUSER", FINGERPRINT, CSRF, 1.0)),
    ("open_console_session", (digest(1), "AKUSER", FINGERPRINT[:-1], CSRF, 1.0)),
    ("open_console_session", (digest(1), "AKUSER", FINGERPRINT, CSRF + "c", 1.0)),
    ("open_console_session", (digest(1), "AKUSER", FINGERPRINT, "' OR 1=1 --" + "c" * 32, 1.0)),
    ("open_console_session", (digest(1), "K" * 257, FINGERPRINT, CSRF, 1.0)),
    ("open_console_session", (digest(1), "", FINGERPRINT, CSRF, 1.0)),
    ("open_console_session", (digest(1), "AK\nUSER", FINGERPRINT, CSRF, 1.0)),
    ("console_session", ("' OR ''='", 1.0)),
    ("console_session", (7, 1.0)),
    ("close_console_session", (digest(1) + "\n",)),
])  # fmt: skip
def test_identifiers_of_another_form_reach_no_query(store, call, args):
    store.open_console_session(digest(1), "AKUSER", FINGERPRINT, CSRF, 1.0)
    with pytest.raises(BadIdentifier):
        getattr(store, call)(*args)
    assert rows(store) == 1
