"""Access keys and the identity policies attached to them (``apollo admin user|policy``).

A key's rights are read in one lookup with its secret (``key_rights``): the documents of its policies come
along, built-in ones (``apollo.proto.identity.BUILTIN_POLICIES``) from the code, stored ones from
``policies``. Front doors cache that record for ``apollo.keycache.SECRET_TTL_S``, so a policy changed here
applies everywhere within that.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from apollo import errors
from apollo.meta.sealing import PREFIX as SEALED_PREFIX
from apollo.meta.sealing import Sealer, SealingError
from apollo.meta.sqlbase import SqlBase
from apollo.proto.identity import BUILTIN_POLICIES, POLICIES_PER_KEY_MAX
from apollo.proto.records import KeyRights

SECRET_TABLES = ("access_keys", "session_keys", "token_keys")  # the rows ``reseal_secrets`` rewrites


@dataclass(frozen=True)
class KeyInfo:
    access_key: str
    created: float
    is_root: bool
    policies: tuple[str, ...]  # attached policy names, sorted


class UserOps(SqlBase):
    @functools.cached_property
    def sealer(self) -> Sealer:
        """Seals secrets with ``APOLLO_SECRETS_KEY`` (``apollo.meta.sealing``). :raises SealingError:"""
        return Sealer.from_environment()

    # access keys -----------------------------------------------------------------------------

    def put_key(self, access_key: str, secret_key: str, now: float, is_root: bool = False,
                policies: Sequence[str] = ()) -> None:  # fmt: skip
        """Create a key (or give an existing one a new secret), attaching ``policies`` to it.

        :raises NotFound: a policy that does not exist.
        """
        with self.tx() as db:
            self._refuse_clear_among_sealed(db)
            db.execute(
                "INSERT INTO access_keys (access_key, secret_key, created, is_root) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (access_key) DO UPDATE SET secret_key = excluded.secret_key",
                (access_key, self.sealer.seal(secret_key, f"key:{access_key}"), now, int(is_root)),
            )
            for name in policies:
                self._attach(db, access_key, name)

    def get_secret(self, access_key: str) -> str | None:
        row = self.one("SELECT secret_key FROM access_keys WHERE access_key = ?", (access_key,))
        return None if row is None else self.sealer.open(row["secret_key"], f"key:{access_key}")

    def key_rights(self, access_key: str) -> KeyRights | None:
        """Secret, root or not, and the documents of the key's identity policies: all a door needs to decide.
        A temporary key's are its parent's, with its session's policy, token and expiry; it is gone with its
        parent (an expired one is the door's to refuse: its clock decides)."""
        row = self.one("SELECT secret_key, is_root FROM access_keys WHERE access_key = ?", (access_key,))
        if row is None:
            return self._session_rights(access_key)
        secret = self.sealer.open(row["secret_key"], f"key:{access_key}")
        return KeyRights(secret, bool(row["is_root"]), self._documents(access_key))

    def _session_rights(self, access_key: str) -> KeyRights | None:
        row = self.one(
            "SELECT s.secret_key, s.token_digest, s.parent, s.policy, s.expires, a.is_root FROM session_keys s "
            "JOIN access_keys a ON a.access_key = s.parent WHERE s.access_key = ?", (access_key,),
        )  # fmt: skip
        if row is None:
            return None
        # A root key's session is no root key: it gets every S3 right (never the roles' service calls).
        parent_policies = (BUILTIN_POLICIES["readwrite"],) if row["is_root"] else self._documents(row["parent"])
        secret = self.sealer.open(row["secret_key"], f"session:{access_key}")
        return KeyRights(secret, False, parent_policies, row["parent"], row["policy"], row["token_digest"],
                         row["expires"])  # fmt: skip

    def put_session(self, access_key: str, secret_key: str, token_digest: str, parent: str, policy: str,
                    expires: float, now: float) -> None:  # fmt: skip
        """Store a temporary key (validated by the caller, ``apollo.gateway.sts``); expired ones go meanwhile."""
        with self.tx() as db:
            db.execute("DELETE FROM session_keys WHERE expires < ?", (now,))
            sealed = self.sealer.seal(secret_key, f"session:{access_key}")
            db.execute(
                "INSERT INTO session_keys (access_key, secret_key, token_digest, parent, policy, expires, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (access_key, sealed, token_digest, parent, policy, expires, now),
            )  # fmt: skip

    def _documents(self, access_key: str) -> tuple[str, ...]:
        rows = self.all(
            "SELECT k.policy, p.document FROM key_policies k LEFT JOIN policies p ON p.name = k.policy "
            "WHERE k.access_key = ? ORDER BY k.policy", (access_key,),
        )  # fmt: skip
        documents = (BUILTIN_POLICIES.get(r["policy"]) or r["document"] or "" for r in rows)
        return tuple(d for d in documents if d)

    def set_root_key(self, access_key: str, secret_key: str, now: float) -> list[str]:
        """Make ``access_key`` the deployment's only root key; returns the root keys it replaced.

        The root key comes from the environment every start (``APOLLO_ROOT_USER``/``_PASSWORD``, or the
        development key): a root key left from an earlier start (``--dev``, a renamed root user) would
        stay valid as root for anyone who knows it, the well-known development secret included.
        """
        with self.tx() as db:
            self._refuse_clear_among_sealed(db)
            current = db.execute("SELECT secret_key FROM access_keys WHERE access_key = ?", (access_key,)).fetchone()
            if current is not None and self.sealer.open(current["secret_key"], f"key:{access_key}") != secret_key:
                # A new root secret ends the sessions minted with the old one (a rotation after a leak).
                db.execute("DELETE FROM session_keys WHERE parent = ?", (access_key,))
                db.execute("DELETE FROM console_sessions WHERE access_key = ?", (access_key,))
            old = [r["access_key"] for r in db.execute(
                "SELECT access_key FROM access_keys WHERE is_root = 1 AND access_key <> ?", (access_key,)
            ).fetchall()]  # fmt: skip
            db.executemany("DELETE FROM access_keys WHERE access_key = ?", [(key,) for key in old])
            db.executemany("DELETE FROM key_policies WHERE access_key = ?", [(key,) for key in old])
            db.executemany("DELETE FROM session_keys WHERE parent = ?", [(key,) for key in old])
            db.executemany("DELETE FROM console_sessions WHERE access_key = ?", [(key,) for key in old])
            db.execute(
                "INSERT INTO access_keys (access_key, secret_key, created, is_root) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (access_key) DO UPDATE SET secret_key = excluded.secret_key, is_root = 1",
                (access_key, self.sealer.seal(secret_key, f"key:{access_key}"), now),
            )
            return old

    def reseal_secrets(self) -> int:
        """At start: seal every secret stored in clear or with an older key with the current one (a key
        given for the first time, or rotated); returns how many were. Every secret must open: one that does
        not stops the start here rather than failing requests later.

        :raises SealingError:
        """
        resealed = 0
        with self.tx() as db:
            self._refuse_clear_among_sealed(db)
            for table, prefix in (("access_keys", "key"), ("session_keys", "session")):
                rows = db.execute(f"SELECT access_key, secret_key FROM {table}").fetchall()
                for r in rows:
                    row = f"{prefix}:{r['access_key']}"
                    secret = self.sealer.open(r["secret_key"], row)
                    if self.sealer.needs_resealing(r["secret_key"]):
                        db.execute(f"UPDATE {table} SET secret_key = ? WHERE access_key = ?",
                                   (self.sealer.seal(secret, row), r["access_key"]))  # fmt: skip
                        resealed += 1
            for r in db.execute("SELECT key_id, secret FROM token_keys").fetchall():
                row, stored = f"token_key:{r['key_id']}", bytes(r["secret"])
                secret = self.sealer.open_bytes(stored, row)
                if self.sealer.enabled and not stored.startswith(f"{SEALED_PREFIX}{self.sealer.current}:".encode()):
                    db.execute("UPDATE token_keys SET secret = ? WHERE key_id = ?",
                               (self.sealer.seal_bytes(secret, row), r["key_id"]))  # fmt: skip
                    resealed += 1
        if resealed:
            self.engine.erase_replaced(SECRET_TABLES)
        return resealed

    def _refuse_clear_among_sealed(self, db) -> None:
        """Without a key, a secret written now would be the one stored in clear beside sealed ones."""
        if not self.sealer.enabled and db.execute(
                "SELECT 1 FROM access_keys WHERE secret_key LIKE ? LIMIT 1", (SEALED_PREFIX + "%",)).fetchone():
            raise SealingError("secrets in the metadata database are sealed: set APOLLO_SECRETS_KEY (or "
                               "APOLLO_SECRETS_KEY_FILE) to the deployment's key")  # fmt: skip

    def list_keys(self) -> list[KeyInfo]:
        attached: dict[str, list[str]] = {}
        for r in self.all("SELECT access_key, policy FROM key_policies ORDER BY access_key, policy"):
            attached.setdefault(r["access_key"], []).append(r["policy"])
        rows = self.all("SELECT access_key, created, is_root FROM access_keys ORDER BY access_key")
        return [KeyInfo(r["access_key"], r["created"], bool(r["is_root"]), tuple(attached.get(r["access_key"], ())))
                for r in rows]  # fmt: skip

    def delete_key(self, access_key: str) -> bool:
        """Delete a key, its attachments, its temporary keys and its console sessions."""
        with self.tx() as db:
            db.execute("DELETE FROM key_policies WHERE access_key = ?", (access_key,))
            db.execute("DELETE FROM session_keys WHERE parent = ?", (access_key,))
            db.execute("DELETE FROM console_sessions WHERE access_key = ?", (access_key,))
            return db.execute("DELETE FROM access_keys WHERE access_key = ?", (access_key,)).rowcount > 0

    # identity policies -----------------------------------------------------------------------

    def put_policy(self, name: str, document: str, now: float) -> None:
        """Store (or replace) a policy already validated by the caller (``apollo.proto.policy``)."""
        if name in BUILTIN_POLICIES:
            raise errors.Conflict(f"{name} is a built-in policy: choose another name")
        with self.tx() as db:
            db.execute(
                "INSERT INTO policies (name, document, created) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET document = excluded.document",
                (name, document, now),
            )

    def get_policy(self, name: str) -> str | None:
        """The document of a stored or built-in policy; None if there is none of that name."""
        if name in BUILTIN_POLICIES:
            return BUILTIN_POLICIES[name]
        row = self.one("SELECT document FROM policies WHERE name = ?", (name,))
        return None if row is None else row["document"]

    def list_policies(self) -> list[tuple[str, bool, tuple[str, ...]]]:
        """(name, built in, keys it is attached to) of every policy, by name."""
        users: dict[str, list[str]] = {}
        for r in self.all("SELECT access_key, policy FROM key_policies ORDER BY policy, access_key"):
            users.setdefault(r["policy"], []).append(r["access_key"])
        stored = [r["name"] for r in self.all("SELECT name FROM policies")]
        return [(name, name in BUILTIN_POLICIES, tuple(users.get(name, ())))
                for name in sorted({*BUILTIN_POLICIES, *stored})]  # fmt: skip

    def delete_policy(self, name: str) -> None:
        """:raises NotFound, Conflict: no such stored policy; still attached to a key (detach it first, so
        that nobody loses or keeps rights by surprise)."""
        if name in BUILTIN_POLICIES:
            raise errors.Conflict(f"{name} is a built-in policy: it cannot be deleted")
        with self.tx() as db:
            users = [r["access_key"] for r in db.execute(
                "SELECT access_key FROM key_policies WHERE policy = ? ORDER BY access_key", (name,)).fetchall()]
            if users:
                raise errors.Conflict(f"policy {name} is attached to {', '.join(users)}: detach it first")
            if db.execute("DELETE FROM policies WHERE name = ?", (name,)).rowcount == 0:
                raise errors.NotFound(f"no such policy: {name}")

    def attach_policy(self, access_key: str, name: str) -> None:
        """:raises NotFound, Conflict: no such key or policy; too many policies on the key."""
        with self.tx() as db:
            self._attach(db, access_key, name)

    def detach_policy(self, access_key: str, name: str) -> None:
        """:raises NotFound: the policy is not attached to that key."""
        with self.tx() as db:
            if db.execute("DELETE FROM key_policies WHERE access_key = ? AND policy = ?",
                          (access_key, name)).rowcount == 0:  # fmt: skip
                raise errors.NotFound(f"policy {name} is not attached to {access_key}")

    def _attach(self, db, access_key: str, name: str) -> None:
        key = db.execute("SELECT is_root FROM access_keys WHERE access_key = ?", (access_key,)).fetchone()
        if key is None:
            raise errors.NotFound(f"no such access key: {access_key}")
        if key["is_root"]:
            raise errors.Conflict(f"{access_key} is the root key: it may do everything, policies do not apply")
        if name not in BUILTIN_POLICIES and db.execute("SELECT 1 FROM policies WHERE name = ?", (name,)).fetchone() \
                is None:  # fmt: skip
            raise errors.NotFound(f"no such policy: {name} (apollo admin policy list)")
        attached = db.execute("SELECT policy FROM key_policies WHERE access_key = ?", (access_key,)).fetchall()
        if name in {r["policy"] for r in attached}:
            return
        if len(attached) >= POLICIES_PER_KEY_MAX:
            raise errors.Conflict(f"{access_key} has {len(attached)} policies, the most a key may have")
        db.execute("INSERT INTO key_policies (access_key, policy) VALUES (?, ?)", (access_key, name))
