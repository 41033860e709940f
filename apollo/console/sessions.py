"""Console sessions, CSRF tokens and the failed-login throttle, kept in this process's memory.

Call sequence (``apollo.console.auth`` drives it)::

    throttle.refused(address)            # before checking a password: seconds to wait, or 0
    throttle.failed(address)             # after a wrong pair (the caller then sleeps a little)
    session = sessions.open(access_key, secret_digest)   # after a right pair: id + CSRF token
    session = sessions.get(session_id)   # every request: None when unknown or expired
    sessions.close(session_id)           # logout, or the key's secret changed

Why memory: a first increment on one process. With ``apollo server --workers N`` each worker holds its
own sessions, so a browser is logged in only on the worker that served its login; docs/operations.md
says so. Every table here is bounded (STYLE "put a limit on everything"): a flood of logins or of
failed attempts from many addresses evicts the oldest entries instead of growing without end.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

SESSION_TTL_S = 12 * 3600.0  # a login lasts a working day, then the form asks again
SESSIONS_MAX = 10_000  # the oldest session goes first when more are open
LOGIN_FAILURES_MAX = 5  # failed logins from one address within the window before it must wait
LOGIN_FAILURE_WINDOW_S = 60.0
LOGIN_FAILURE_DELAY_S = 0.5  # every failed login answers this late: guessing costs time even under the cap
THROTTLED_ADDRESSES_MAX = 10_000


@dataclass
class Session:
    session_id: str
    access_key: str
    secret_digest: bytes  # of the secret at login: a changed or deleted key ends the session
    csrf: str  # every state-changing form of this session carries it
    expires: float  # on ``time.monotonic()``

    def csrf_matches(self, token: str | None) -> bool:
        """Constant-time, so the token cannot be guessed a character at a time."""
        return bool(token) and hmac.compare_digest(self.csrf.encode(), token.encode())


class Sessions:
    """Open sessions by id; ids and CSRF tokens are 256-bit random, never derived from the key."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, size_max: int = SESSIONS_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.ttl_s = ttl_s
        self._size_max = size_max
        self._clock = clock
        self._open: OrderedDict[str, Session] = OrderedDict()

    def open(self, access_key: str, secret_digest: bytes) -> Session:
        while len(self._open) >= self._size_max:
            self._open.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), access_key, secret_digest, secrets.token_urlsafe(32),
                          self._clock() + self.ttl_s)  # fmt: skip
        self._open[session.session_id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        session = self._open.get(session_id or "")
        if session is None:
            return None
        if self._clock() >= session.expires:
            del self._open[session.session_id]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._open.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._open)


class LoginThrottle:
    """At most ``failures_max`` failed logins per client address within ``window_s``; then it waits.

    Counted per address as the server sees it (``request.remote``): behind a proxy that is the proxy, so
    the cap then applies to everyone behind it, which errs on the safe side.
    """

    def __init__(self, failures_max: int = LOGIN_FAILURES_MAX, window_s: float = LOGIN_FAILURE_WINDOW_S,
                 addresses_max: int = THROTTLED_ADDRESSES_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._failures_max = failures_max
        self._window_s = window_s
        self._addresses_max = addresses_max
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str) -> deque[float]:
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
        failures.append(self._clock())
        self._failures[address] = failures
        self._failures.move_to_end(address)
        while len(failures) > self._failures_max:
            failures.popleft()
        while len(self._failures) > self._addresses_max:
            self._failures.popitem(last=False)
