"""Web-console sessions in the metadata store, so a login holds on every gateway and every worker.

Call sequence (a front door's ``apollo.console.sessions.Sessions`` drives it, through the service rights of a
root key: ``apollo.proto.meta_api``)::

    open_console_session(digest, access_key, fingerprint, csrf, now)  # a right login; returns its expiry
    console_session(digest, now)         # every console request: the row, or None (unknown, expired, closed)
    close_console_session(digest)        # logout, or the front door found the key's secret changed

What the store holds is never the token: its SHA-256 names the row, and the secret's fingerprint is keyed
with the token (``apollo.console.sessions.fingerprint``), so a copy of the database can neither present a
session nor test guesses of a secret. Checking that fingerprint against the key's current secret is the
front door's (it holds the secret, in its key cache); deleting a key here drops its sessions at once.

Bounded: every open deletes the expired rows, and a key keeps its newest
``limits.console_sessions_per_key_max`` sessions, so a hostile holder of a key who logs in in a loop
pushes out only its own oldest logins.
"""

from __future__ import annotations

from apollo import errors, ids, limits
from apollo.meta.sqlbase import SqlBase
from apollo.proto.records import ConsoleSession


class ConsoleSessionOps(SqlBase):
    def open_console_session(self, token_digest: str, access_key: str, secret_fingerprint: str, csrf: str,
                             now: float) -> float:  # fmt: skip
        """Record a login of ``access_key`` lasting ``limits.console_session_ttl_s`` from ``now``; returns
        when it expires.

        :raises BadIdentifier: a digest, fingerprint, CSRF token or key not of the form Apollo makes.
        :raises NotFound: no such access key (a temporary key is none: it cannot log in to the console).
        """
        ids.sha256_hex(token_digest, "session token digest")
        ids.sha256_hex(secret_fingerprint, "secret fingerprint")
        ids.console_token(csrf)
        ids.access_key(access_key)
        expires = now + limits.console_session_ttl_s
        with self.tx() as db:
            db.execute("DELETE FROM console_sessions WHERE expires <= ?", (now,))
            added = db.execute(
                "INSERT INTO console_sessions (token_digest, access_key, secret_fingerprint, csrf, expires, created) "
                "SELECT ?, access_key, ?, ?, ?, ? FROM access_keys WHERE access_key = ?",
                (token_digest, secret_fingerprint, csrf, expires, now, access_key),
            ).rowcount  # fmt: skip
            if added == 0:
                raise errors.NotFound(f"no access key {access_key!r} to open a console session for")
            db.execute(
                "DELETE FROM console_sessions WHERE access_key = ? AND token_digest NOT IN ("
                "SELECT token_digest FROM console_sessions WHERE access_key = ? "
                "ORDER BY created DESC, token_digest DESC LIMIT ?)",
                (access_key, access_key, limits.console_sessions_per_key_max),
            )  # fmt: skip
        return expires

    def console_session(self, token_digest: str, now: float) -> ConsoleSession | None:
        """The live session whose token has this SHA-256; None when there is none, or it has expired.

        :raises BadIdentifier:
        """
        row = self.one(
            "SELECT access_key, secret_fingerprint, csrf, expires FROM console_sessions "
            "WHERE token_digest = ? AND expires > ?", (ids.sha256_hex(token_digest, "session token digest"), now),
        )  # fmt: skip
        if row is None:
            return None
        return ConsoleSession(row["access_key"], row["secret_fingerprint"], row["csrf"], row["expires"])

    def close_console_session(self, token_digest: str) -> None:
        """End the session (logout); closing one already gone changes nothing. :raises BadIdentifier:"""
        with self.tx() as db:
            db.execute("DELETE FROM console_sessions WHERE token_digest = ?",
                       (ids.sha256_hex(token_digest, "session token digest"),))  # fmt: skip
