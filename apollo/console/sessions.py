"""Console sessions, CSRF tokens and the failed-login throttle.

Call sequence (``apollo.console.auth`` and ``apollo.console.state`` drive it)::

    throttle.refused(address)            # before checking a password: seconds to wait, or 0
    throttle.failed(address)             # after a wrong pair (the caller then sleeps a little)
    session = await sessions.open(access_key, secret_digest)   # after a right pair: its token and CSRF token
    session = await sessions.get(token)  # every request: None when unknown, expired or logged out
    session.holds(secret_digest)         # every request: False once the key's secret changed (then close)
    await sessions.close(session)        # logout, or the key's secret changed

A session is a row of the metadata store (``apollo.meta.sql_console``), reached through the object engine's
service calls (``SessionStore``): the in-process service on ``apollo server`` and each of its ``--workers``,
``RemoteMeta`` on ``apollo gateway``. So a login holds on every gateway of a cluster and every worker of a
server, survives their restarts, and a logout at one ends it at all of them at once: every request looks its
session up, no cache (console traffic is a person's clicks; a lookup is one indexed row). The cookie is an
opaque 256-bit random token; the store keeps its SHA-256, the CSRF token, the expiry
(``limits.console_session_ttl_s``, on the metadata service's clock) and a fingerprint of the key's secret at
login keyed with the token (``fingerprint``): a key given a new secret ends its sessions once the front door's
key cache sees it (within 10 s; a deleted key's rows go with it), and neither the row nor a stolen cookie alone
says anything testable about the secret. A cookie not of the form ``ids.CONSOLE_TOKEN`` never reaches a query.

The throttle stays per process: it counts failed logins per client address in memory, and with ``--workers``
in the supervisor's directory (``shared_dir``: a file of failure times per address), so a guesser gets the
same attempts per window whichever worker answers (each failure is also answered late,
``LOGIN_FAILURE_DELAY_S``). Behind several gateways each counts its own: a guesser gets the attempts once per
gateway, each still late. Every table here is bounded (STYLE "put a limit on everything").
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from apollo import ids, limits
from apollo.invariant import invariant
from apollo.proto.records import ConsoleSession

LOGIN_FAILURES_MAX = 5  # failed logins from one address within the window before it must wait
LOGIN_FAILURE_WINDOW_S = 60.0
LOGIN_FAILURE_DELAY_S = 0.5  # every failed login answers this late: guessing costs time even under the cap
THROTTLED_ADDRESSES_MAX = 10_000
FAILED_LOGINS_DIR = "failed-logins"


class SessionStore(Protocol):
    """Where sessions live: ``apollo.client.engine.ObjectEngine``'s service calls, over the in-process metadata
    service or ``RemoteMeta`` (a root key's: ``apollo.proto.meta_api`` refuses them to any other key).

    :raises MetadataUnavailable: from each, when the metadata service cannot be reached (the console answers 503).
    """

    async def open_console_session(self, token_digest: str, access_key: str, secret_fingerprint: str,
                                   csrf: str) -> float: ...  # fmt: skip

    async def console_session(self, token_digest: str) -> ConsoleSession | None: ...

    async def close_console_session(self, token_digest: str) -> None: ...


def digest(token: str) -> str:
    """What names a session in the store: a copy of the database cannot present it as a cookie."""
    return hashlib.sha256(token.encode()).hexdigest()


def fingerprint(token: str, secret_digest: bytes) -> str:
    """The secret at login, keyed with the session's own token: no key to share between gateways, and a
    fingerprint from the database cannot test a guessed secret without the cookie."""
    return hmac.digest(token.encode(), b"secret\0" + secret_digest, "sha256").hex()


@dataclass(frozen=True)
class Session:
    token: str  # the cookie
    access_key: str
    secret_fingerprint: str  # ``fingerprint(token, digest of the secret at login)``
    csrf: str  # every state-changing form of this session carries it
    expires: float  # on the metadata service's clock

    def csrf_matches(self, token: str | None) -> bool:
        """Constant-time, so the token cannot be guessed a character at a time."""
        return bool(token) and hmac.compare_digest(self.csrf.encode(), token.encode())

    def holds(self, secret_digest: bytes) -> bool:
        """Whether the key still has the secret it logged in with (``secret_digest``: its SHA-256)."""
        return hmac.compare_digest(fingerprint(self.token, secret_digest), self.secret_fingerprint)


def prepare_shared_dir(shared_dir: Path) -> None:
    """The supervisor's directory for its workers' throttle (before they start), readable by the owner only."""
    shared_dir.mkdir(mode=0o700, exist_ok=True)
    (shared_dir / FAILED_LOGINS_DIR).mkdir(mode=0o700, exist_ok=True)


class Sessions:
    """Opens, finds and ends sessions in ``store``; tokens and CSRF tokens are 256-bit random."""

    def __init__(self, store: SessionStore) -> None:
        self.ttl_s = limits.console_session_ttl_s  # the cookie's lifetime; the store ends the session itself
        self._store = store

    async def open(self, access_key: str, secret_digest: bytes) -> Session:
        """After a right login. :raises NotFound: the key was deleted since its pair was checked."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        secret = fingerprint(token, secret_digest)
        expires = await self._store.open_console_session(digest(token), access_key, secret, csrf)
        return Session(token, access_key, secret, csrf, expires)

    async def get(self, token: str | None) -> Session | None:
        """The live session of a cookie; a cookie not of the form ``open`` makes reaches no query."""
        if not token or not ids.CONSOLE_TOKEN.fullmatch(token):
            return None
        found = await self._store.console_session(digest(token))
        if found is None:
            return None
        return Session(token, found.access_key, found.secret_fingerprint, found.csrf, found.expires)

    async def close(self, session: Session) -> None:
        """End ``session`` on every gateway and worker."""
        await self._store.close_console_session(digest(session.token))


class LoginThrottle:
    """At most ``failures_max`` failed logins per client address within ``window_s``; then it waits.

    Counted per address as the server sees it (``request.remote``): behind a proxy that is the proxy, so
    the cap then applies to everyone behind it, which errs on the safe side. With ``shared_dir`` (the
    workers' directory) each address's failures are a file of times there, appended by whichever worker
    saw one (``O_APPEND``: whole lines, whatever the other workers write), on the system-wide monotonic clock.
    """

    def __init__(self, shared_dir: Path | None = None, failures_max: int = LOGIN_FAILURES_MAX,
                 window_s: float = LOGIN_FAILURE_WINDOW_S, addresses_max: int = THROTTLED_ADDRESSES_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._dir = shared_dir / FAILED_LOGINS_DIR if shared_dir is not None else None
        self._failures_max = failures_max
        self._window_s = window_s
        self._addresses_max = addresses_max
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _file(self, address: str) -> Path:
        invariant(self._dir is not None, "failures are files only in a shared directory")
        return self._dir / hashlib.sha256(address.encode()).hexdigest()[:32]  # any address is a safe name

    def _recent(self, address: str) -> deque[float]:
        if self._dir is not None:  # every worker's failures; unreadable: this process's own
            with contextlib.suppress(OSError, ValueError):
                self._failures[address] = deque(float(line) for line in self._file(address).read_text().split())
        failures = self._failures.get(address, deque())
        horizon = self._clock() - self._window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            self._failures.pop(address, None)
        return failures

    def refused(self, address: str) -> float:
        """Seconds ``address`` must wait before its next attempt is even checked; 0: go ahead."""
        failures = self._recent(address)
        if len(failures) < self._failures_max:
            return 0.0
        return max(0.0, failures[0] + self._window_s - self._clock())

    def failed(self, address: str) -> None:
        failures = self._recent(address)
        now = self._clock()
        failures.append(now)
        self._failures[address] = failures
        self._failures.move_to_end(address)
        while len(failures) > self._failures_max:
            failures.popleft()
        if self._dir is not None:
            self._append(address, failures, now)
        while len(self._failures) > self._addresses_max:
            gone, _ = self._failures.popitem(last=False)
            if self._dir is not None:
                self._file(gone).unlink(missing_ok=True)

    def _append(self, address: str, failures: deque[float], now: float) -> None:
        """Append this failure; a file that grew past the cap is rewritten with the recent ones only."""
        path = self._file(address)
        with contextlib.suppress(OSError):  # a full disk must not turn a wrong password into a 500
            if path.exists() and path.stat().st_size > 64 * self._failures_max:
                temporary = path.with_suffix(f".{os.getpid()}")
                temporary.write_text("".join(f"{at!r}\n" for at in failures))
                temporary.replace(path)
                return
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(descriptor, f"{now!r}\n".encode())
            finally:
                os.close(descriptor)
