"""The cluster map's rows: storage nodes, their drives' usage, the epoch, the token keys.

Storage nodes register once at start (endpoint, rack, drives) and then heartbeat every
couple of seconds with their drives' free space. Registration that changes anything
(a new node or drive, a moved endpoint) bumps the epoch in the same transaction;
heartbeats change only liveness and usage, which the map computes when it is read.
"""

from __future__ import annotations

import re

from apollo import errors
from apollo.meta.sql_admin import AdminOps
from apollo.proto.cluster_map import ClusterMap, DriveInfo, NodeInfo
from apollo.tokens import TokenKey

EPOCH_SETTING = "cluster.epoch"
DRIVE_HEALTH = frozenset({"ok", "gone", "unreachable"})  # what a node reports of a drive (``Drive.check``)
_FILESYSTEM = re.compile(r"[0-9a-f]{0,32}")  # a device number in hex, or "" (not known)


class ClusterOps(AdminOps):
    def register_node(self, name: str, endpoint: str, rack: str, drives: list[tuple[str, str]], now: float) -> int:
        """Record a node and its drives [(drive id, path)]; returns the epoch of the map that includes them."""
        with self.tx() as db:
            old = db.execute("SELECT endpoint, rack FROM nodes WHERE name = ?", (name,)).fetchone()
            changed = old is None or (old["endpoint"], old["rack"]) != (endpoint, rack)
            db.execute(
                "INSERT INTO nodes (name, endpoint, rack, heartbeat, registered) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET endpoint = excluded.endpoint, rack = excluded.rack, "
                "heartbeat = excluded.heartbeat",
                (name, endpoint, rack, now, now),
            )
            for drive_id, path in drives:
                if db.execute("SELECT 1 FROM removed_drives WHERE drive_id = ?", (drive_id,)).fetchone():
                    continue  # removed from the deployment: the node still has the disk, the map never again
                row = db.execute("SELECT node, path FROM drives WHERE drive_id = ?", (drive_id,)).fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO drives (drive_id, node, path, state, weight, added, state_since) "
                        "VALUES (?, ?, ?, 'online', 1, ?, ?)",
                        (drive_id, name, path, now, now),
                    )
                elif (row["node"], row["path"]) != (name, path):  # a disk moved to another host or mount
                    db.execute("UPDATE drives SET node = ?, path = ? WHERE drive_id = ?", (name, path, drive_id))
                else:
                    continue
                changed = True
            return self._bump_epoch(db) if changed else self.epoch()

    def delete_node(self, name: str) -> int:
        """Forget a storage node and its (retired) drives; returns the new epoch."""
        with self.tx() as db:
            db.execute("DELETE FROM drive_jobs WHERE drive_id IN (SELECT drive_id FROM drives WHERE node = ?)", (name,))
            self._remember_removed(db, "node = ?", name)
            db.execute("DELETE FROM drives WHERE node = ?", (name,))
            db.execute("DELETE FROM nodes WHERE name = ?", (name,))
            return self._bump_epoch(db)

    def _bump_epoch(self, db) -> int:
        epoch = self.epoch() + 1
        db.execute(
            "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (EPOCH_SETTING, str(epoch)),
        )
        return epoch

    def epoch(self) -> int:
        row = self.one("SELECT value FROM settings WHERE name = ?", (EPOCH_SETTING,))
        return 0 if row is None else int(row["value"])

    def node_heartbeat(self, name: str, drives: dict[str, tuple[str, int, int, str]], now: float) -> int:
        """A node is alive, with (health, free bytes, total bytes, filesystem) per drive (a node of the version
        before sends no filesystem); returns the current epoch. :raises InvalidRequest: a malformed report."""
        reports = [(*_drive_report(drive_id, report), drive_id, name) for drive_id, report in drives.items()]
        with self.tx() as db:
            if db.execute("UPDATE nodes SET heartbeat = ? WHERE name = ?", (now, name)).rowcount == 0:
                raise LookupError(f"storage node {name} is not registered")
            db.executemany(
                "UPDATE drives SET health = ?, free_bytes = ?, total_bytes = ?, filesystem = ? "
                "WHERE drive_id = ? AND node = ?",
                reports,
            )
            # A drive of this node it no longer serves (taken off its command line, failed to open): unreachable,
            # so no new shards go there and, past the grace, its shards are rebuilt elsewhere.
            served = list(drives) or [""]
            db.execute(
                f"UPDATE drives SET health = 'unreachable' WHERE node = ? AND health <> 'unreachable' "
                f"AND drive_id NOT IN ({','.join('?' * len(served))})",
                (name, *served),
            )
        return self.epoch()

    def cluster_map(self, now: float, node_timeout_s: float, reserve_bytes: int) -> ClusterMap:
        with self.tx():  # one snapshot: the epoch matches the rows
            nodes = [
                NodeInfo(r["name"], r["endpoint"], r["rack"], r["heartbeat"] >= now - node_timeout_s, r["heartbeat"])
                for r in self.all("SELECT * FROM nodes ORDER BY name")
            ]
            alive = {n.name for n in nodes if n.alive}
            drives = [
                DriveInfo(r["drive_id"], r["node"], r["state"],
                          r["state"] == "online" and r["node"] in alive and r["health"] == "ok"
                          and r["free_bytes"] >= reserve_bytes, r["weight"])
                for r in self.all("SELECT * FROM drives WHERE state <> 'retired' ORDER BY drive_id")
            ]  # fmt: skip
            return ClusterMap(self.epoch(), nodes, drives)

    # token keys ------------------------------------------------------------------------------

    def token_keys(self) -> list[TokenKey]:
        rows = self.all("SELECT key_id, secret, created FROM token_keys ORDER BY created")
        return [TokenKey(r["key_id"], self.sealer.open_bytes(bytes(r["secret"]), f"token_key:{r['key_id']}"),
                         r["created"]) for r in rows]  # fmt: skip

    def add_token_key(self, key: TokenKey) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO token_keys (key_id, secret, created) VALUES (?, ?, ?)",
                       (key.key_id, self.sealer.seal_bytes(key.secret, f"token_key:{key.key_id}"),
                        key.created))  # fmt: skip

    def drop_token_keys(self, created_before: float) -> int:
        """Forget keys no valid token can be signed with any more (keeping at least the newest)."""
        with self.tx() as db:
            return db.execute(
                "DELETE FROM token_keys WHERE created < ? AND key_id <> "
                "(SELECT key_id FROM token_keys ORDER BY created DESC LIMIT 1)",
                (created_before,),
            ).rowcount


def _drive_report(drive_id: str, report: object) -> tuple[str, int, int, str]:
    """A heartbeat's (health, free, total[, filesystem]) of a drive, each held to its form."""
    if not isinstance(report, list | tuple) or len(report) not in (3, 4):
        raise errors.InvalidRequest(f"drive {drive_id!r}: a report is [health, free bytes, total bytes, filesystem]")
    health, free, total, filesystem = (*report, "") if len(report) == 3 else report
    if (not isinstance(health, str) or health not in DRIVE_HEALTH or type(free) is not int or free < 0
            or type(total) is not int or total < 0
            or not isinstance(filesystem, str) or not _FILESYSTEM.fullmatch(filesystem)):  # fmt: skip
        raise errors.InvalidRequest(f"drive {drive_id!r}: a malformed report {str(report)[:120]}")
    return health, free, total, filesystem
