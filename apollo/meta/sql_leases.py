"""Leases: at most one holder of a named role at a time, across every process sharing the database.

Background managers (repair, GC, rebalance, drive jobs) must run once per cluster,
whatever the number of metadata processes. Each process calls ``acquire_lease`` every
few seconds; the holder extends its lease, the others see it held. A holder that dies
stops renewing and the lease passes to the next caller once it expires. Expiry is
measured on the database's clock, so hosts with skewed clocks still agree.

A holder must stop its work once it cannot renew before the expiry (``LeaseKeeper``
in ``apollo.cluster.manager`` does). The work itself is safe to overlap for a moment
at a hand-over: repairs commit only onto an unchanged layout, and queue rows are
deduplicated.
"""

from __future__ import annotations

from apollo.meta.sqlbase import SqlBase
from apollo.proto.records import Lease


class LeaseOps(SqlBase):
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> Lease:
        """Take ``name`` if it is free or expired, or extend it if ``holder`` has it; returns the lease as it stands.

        The caller holds the lease when ``result.holder == holder``.
        """
        with self.tx() as db:
            now = db.execute(f"SELECT {self.engine.now_sql} AS now").fetchone()["now"]
            db.execute(
                "INSERT INTO leases (name, holder, expires, acquired) VALUES (?, '', 0, 0) "
                "ON CONFLICT (name) DO NOTHING",
                (name,),
            )
            db.execute(
                "UPDATE leases SET acquired = CASE WHEN holder = ? THEN acquired ELSE ? END, holder = ?, expires = ? "
                "WHERE name = ? AND (holder = ? OR expires < ?)",
                (holder, now, holder, now + ttl_s, name, holder, now),
            )
            row = db.execute("SELECT * FROM leases WHERE name = ?", (name,)).fetchone()
            return Lease(row["name"], row["holder"], row["expires"], row["acquired"], now)

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up at once (a clean shutdown), so the next process need not wait for the expiry."""
        with self.tx() as db:
            db.execute("UPDATE leases SET holder = '', expires = 0 WHERE name = ? AND holder = ?", (name, holder))

    def leases(self) -> list[Lease]:
        now = self.one(f"SELECT {self.engine.now_sql} AS now")["now"]
        rows = self.all("SELECT * FROM leases ORDER BY name")
        return [Lease(r["name"], r["holder"], r["expires"], r["acquired"], now) for r in rows]
