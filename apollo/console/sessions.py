"""Console sessions, CSRF tokens and the failed-login throttle.

Call sequence (``apollo.console.auth`` drives it)::

    throttle.refused(address)            # before checking a password: seconds to wait, or 0
    throttle.failed(address)             # after a wrong pair (the caller then sleeps a little)
    session = sessions.open(access_key, secret_digest)   # after a right pair: its token and CSRF token
    session = sessions.get(token)        # every request: None when forged, expired or revoked
    sessions.close(session)              # logout, or the key's secret changed

A session is its cookie: a token signed with the server's session key (HMAC-SHA256) that says whose it
is, its CSRF token and when it expires, so any process holding the key checks it. With ``apollo server
--workers N`` the supervisor writes one key for all workers (``shared_dir``), and a browser stays logged
in whichever worker answers; a logout is written there too, so it ends the session on every worker.
The token holds a keyed fingerprint of the key's secret, not the secret nor its plain hash: a changed
or deleted key ends its sessions, and a stolen cookie says nothing testable about the secret. A restart
makes a new key, which ends every session, as before.

The throttle counts failed logins per client address; with ``--workers`` it counts them in the same
directory (a file of failure times per address), so a guesser gets the same attempts per window whichever
worker answers (each failure is also answered late, ``LOGIN_FAILURE_DELAY_S``). Every table here is bounded
(STYLE "put a limit on everything").
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from apollo.invariant import invariant

SESSION_TTL_S = 12 * 3600.0  # a login lasts a working day, then the form asks again
REVOKED_MAX = 10_000  # logouts remembered in memory (each until its session would have expired)
LOGIN_FAILURES_MAX = 5  # failed logins from one address within the window before it must wait
LOGIN_FAILURE_WINDOW_S = 60.0
LOGIN_FAILURE_DELAY_S = 0.5  # every failed login answers this late: guessing costs time even under the cap
THROTTLED_ADDRESSES_MAX = 10_000
KEY_FILE = "session.key"
REVOKED_DIR = "revoked"
FAILED_LOGINS_DIR = "failed-logins"


@dataclass
class Session:
    session_id: str  # random: names the session in the revocation list
    access_key: str
    secret_digest: bytes  # a keyed fingerprint of the secret at login (``Sessions.fingerprint``)
    csrf: str  # every state-changing form of this session carries it
    expires: float  # wall clock: every worker reads the same
    token: str = ""  # the cookie

    def csrf_matches(self, token: str | None) -> bool:
        """Constant-time, so the token cannot be guessed a character at a time."""
        return bool(token) and hmac.compare_digest(self.csrf.encode(), token.encode())


def shared_key(shared_dir: Path) -> bytes:
    """The supervisor's session key for its workers: made once per start, readable by the owner only."""
    shared_dir.mkdir(mode=0o700, exist_ok=True)
    for name in (REVOKED_DIR, FAILED_LOGINS_DIR):
        (shared_dir / name).mkdir(mode=0o700, exist_ok=True)
    path = shared_dir / KEY_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        key = secrets.token_bytes(32)
        handle.write(key)
    return key


class Sessions:
    """Signs and checks session tokens; ids and CSRF tokens are 256-bit random, never derived from the key."""

    def __init__(self, shared_dir: Path | None = None, ttl_s: float = SESSION_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        """``shared_dir``: where the supervisor put the workers' key (``shared_key``) and their logouts;
        None: this process's own key, in memory."""
        self.ttl_s = ttl_s
        self._clock = clock
        self._revoked_dir = shared_dir / REVOKED_DIR if shared_dir is not None else None
        self._key = (shared_dir / KEY_FILE).read_bytes() if shared_dir is not None else secrets.token_bytes(32)
        self._revoked: OrderedDict[str, float] = OrderedDict()  # session id -> when it would have expired

    def fingerprint(self, secret_digest: bytes) -> bytes:
        return hmac.digest(self._key, b"secret\0" + secret_digest, "sha256")

    def open(self, access_key: str, secret_digest: bytes) -> Session:
        session = Session(secrets.token_urlsafe(32), access_key, self.fingerprint(secret_digest),
                          secrets.token_urlsafe(32), self._clock() + self.ttl_s)  # fmt: skip
        payload = json.dumps({"i": session.session_id, "k": access_key, "f": session.secret_digest.hex(),
                              "c": session.csrf, "e": session.expires}, separators=(",", ":")).encode()  # fmt: skip
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        session.token = f"{body}.{self._sign(body)}"
        return session

    def get(self, token: str | None) -> Session | None:
        body, _, signature = (token or "").partition(".")
        if not body or not hmac.compare_digest(self._sign(body), signature):
            return None
        fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        session = Session(fields["i"], fields["k"], bytes.fromhex(fields["f"]), fields["c"], fields["e"], token)
        if self._clock() >= session.expires or self._is_revoked(session.session_id):
            return None
        return session

    def close(self, session: Session) -> None:
        """End ``session`` everywhere its key is known, until it would have expired anyway."""
        now = self._clock()
        self._revoked[session.session_id] = session.expires
        while len(self._revoked) > REVOKED_MAX or (self._revoked and next(iter(self._revoked.values())) <= now):
            self._revoked.popitem(last=False)
        if self._revoked_dir is not None:
            (self._revoked_dir / session.session_id).write_text(str(session.expires))
            for path in self._revoked_dir.iterdir():  # rare (logouts): drop those past their expiry
                if float(path.read_text() or 0) <= now:
                    path.unlink(missing_ok=True)

    def _is_revoked(self, session_id: str) -> bool:
        if session_id in self._revoked:
            return True
        return self._revoked_dir is not None and (self._revoked_dir / session_id).exists()

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), "sha256").hexdigest()


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
