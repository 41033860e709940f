"""Rebuild the metadata database from the drives alone (``apollo admin recover-metadata``).

The drives carry checkpoints of the database and the journal of every commit since
(``apollo.meta.journal``). Call sequence, all on a staging file beside the database::

    recover(meta_dir, drive_dirs, progress, stamp, force)
      1. the newest checkpoint on any drive that passes the backup checks, copied
         (or an empty schema when there is none);
      2. every journal record with a higher seq, from every drive, merged in seq order,
         duplicates (the same record on several drives) skipped, gaps reported;
      3. invariants a lost record could break, repaired (``_repair_invariants``);
      4. the drives re-registered from their format files, the deployment id taken from them;
      5. every segment's shards looked up on the drives; missing ones queued for repair;
      6. ``backup.restore`` makes the staging file the database (a previous one is kept aside).

The caller holds ``MetaDirLock(meta_dir)``. Nothing on the drives is modified.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from apollo.errors import DriveError
from apollo.meta import journal
from apollo.meta.backup import SHARED_MEMORY, SIDECARS, BackupError, Summary, backup, restore
from apollo.meta.capture import Replayer
from apollo.meta.location import DB_FILE
from apollo.meta.shard_index import rebuild_shard_index
from apollo.meta.store import SqlStore
from apollo.proto.cluster_map import NODE_NAME, DriveRecord
from apollo.proto.drive_format import read_format
from apollo.proto.layout import SegmentLayout
from apollo.storage.drive import Drive

STAGING_FILE = DB_FILE + ".recovering"
RECORDS_PER_TRANSACTION = 1000
MISSING_REASON = "missing after metadata recovery"


class RecoveryError(RuntimeError):
    """Recovery cannot go on; the message says why. The metadata directory is left as it was."""


class RecoveryRefused(RecoveryError):
    """The metadata directory holds a database, and replacing it was not asked for."""


class Progress(Protocol):
    def phase(self, description: str, total: int) -> None: ...

    def advance(self, amount: int) -> None: ...


@dataclass
class Report:
    drives: dict[str, Drive]  # the drives that were read, by id
    skipped_drives: list[str]  # given directories that are not drives of the deployment, and why
    deployment_id: str
    checkpoint: Path | None = None
    checkpoint_seq: int = 0
    rejected_checkpoints: list[str] = field(default_factory=list)
    replayed: int = 0  # journal records applied
    already_in_checkpoint: int = 0  # commits the journal still holds that the checkpoint contains
    duplicates: int = 0  # further copies of the same records (each is on up to three drives)
    bad_lines: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)  # seq ranges no drive had
    last_seq: int = 0
    fixes: dict[str, int] = field(default_factory=dict)  # what was repaired -> how many rows
    versions_without_data: int = 0
    segments: int = 0
    degraded: int = 0  # segments missing shards but still readable
    unreadable: int = 0  # segments missing more shards than the code can rebuild
    missing_shards: int = 0
    summary: Summary | None = None
    kept: Path | None = None  # where a previous database went


def recover(meta_dir: Path, drive_dirs: list[Path], progress: Progress, stamp: str, force: bool) -> Report:
    """Rebuild ``meta_dir``'s database from ``drive_dirs``.

    :raises RecoveryRefused: a database exists and not ``force``.
    :raises RecoveryError: no usable drive, drives of two deployments, a journal record that does not apply.
    """
    if (meta_dir / DB_FILE).exists() and not force:
        raise RecoveryRefused(f"{meta_dir / DB_FILE} exists; recovering would replace it (pass --force to keep "
                            "it aside and recover anyway)")  # fmt: skip
    report = _read_drives(drive_dirs)
    meta_dir.mkdir(parents=True, exist_ok=True)
    staging = meta_dir / STAGING_FILE
    _remove_with_sidecars(staging)
    try:
        _start_from_checkpoint(report, staging, progress)
        store = SqlStore(staging)
        try:
            _replay(store, report, progress)
            if report.checkpoint is None and not report.replayed:
                raise RecoveryError("no checkpoint and no journal record on the given drives: nothing to recover "
                                    "from (drives written before Apollo kept a metadata journal?)")  # fmt: skip
            report.fixes = _repair_invariants(store, time.time())
            report.versions_without_data = _versions_without_data(store)
            _register_drives(store, report)
            _check_segments(store, report, progress)
        finally:
            store.close()
        report.summary, report.kept = restore(staging, meta_dir, stamp)
    except BackupError as exc:
        raise RecoveryError(str(exc)) from exc
    finally:
        _remove_with_sidecars(staging)
    return report


def _read_drives(drive_dirs: list[Path]) -> Report:
    roots, skipped, deployments = [], [], set()
    for root in drive_dirs:
        try:
            info = read_format(root) if root.is_dir() else None
        except DriveError as exc:
            info, why = None, str(exc)
        else:
            why = f"{root}: no drive format file (wiped, or not an Apollo drive)"
        if info is None:
            skipped.append(why)
            continue
        roots.append(root.resolve())
        deployments.add(info["deployment_id"])
    if not roots:
        raise RecoveryError("none of the given directories is an Apollo drive")
    if len(deployments) > 1:
        raise RecoveryError(f"the drives belong to {len(deployments)} deployments ({', '.join(sorted(deployments))}); "
                            "give the drives of one deployment")  # fmt: skip
    deployment = deployments.pop()
    drives = [Drive(root, deployment) for root in roots]
    return Report({drive.drive_id: drive for drive in drives}, skipped, deployment)


def _start_from_checkpoint(report: Report, staging: Path, progress: Progress) -> None:
    """Copy the newest checkpoint that passes the checks to ``staging``; leave nothing there if none does."""
    found = sorted(((seq, path) for d in report.drives.values() for seq, path in journal.checkpoints(d.root)),
                   reverse=True)  # fmt: skip
    for _, path in found:
        progress.phase(f"checkpoint {path.name}", 0)
        try:
            summary = backup(path, staging, journal.CHECKPOINT_STEP_PAGES, lambda c, t: None, overwrite=True)
        except BackupError as exc:
            report.rejected_checkpoints.append(f"{path}: {exc}")
            continue
        if summary.deployment_id not in ("", report.deployment_id):
            report.rejected_checkpoints.append(f"{path}: of deployment {summary.deployment_id}")
            _remove_with_sidecars(staging)
            continue
        report.checkpoint, report.checkpoint_seq = path, journal.checkpoint_seq(staging)
        return


def _records(report: Report, progress: Progress) -> Iterator[tuple[int, dict]]:
    """Every journal record of every drive, in seq order (each file is in seq order: merge them)."""
    files = [path for drive in report.drives.values() for path in journal.journal_files(drive.root)]
    total = sum(path.stat().st_size for path in files)
    progress.phase("journal records", total)

    def bad_line(size: int) -> None:
        report.bad_lines += 1
        progress.advance(size)

    streams = [journal.read_records(path, bad_line) for path in files]
    for seq, record, size in heapq.merge(*streams, key=lambda item: item[0]):
        progress.advance(size)
        yield seq, record


def _replay(store: SqlStore, report: Report, progress: Progress) -> None:
    replayer = Replayer(store.conn)
    applied = report.checkpoint_seq
    pending = 0
    store.conn.execute("BEGIN IMMEDIATE")
    previous = None
    for seq, record in _records(report, progress):
        if seq == previous or report.checkpoint_seq < seq <= applied:
            report.duplicates += 1
            continue
        previous = seq
        if seq <= report.checkpoint_seq:
            report.already_in_checkpoint += 1
            continue
        if seq > applied + 1:
            report.gaps.append((applied + 1, seq - 1))
        try:
            for change in record["changes"]:
                replayer.apply(change)
        except (ValueError, KeyError, TypeError, sqlite3.Error) as exc:
            raise RecoveryError(f"journal record {seq} cannot be applied ({exc}): is it from a newer Apollo?") from exc
        applied = seq
        report.replayed += 1
        pending += 1
        if pending == RECORDS_PER_TRANSACTION:
            store.conn.execute("COMMIT")
            store.conn.execute("BEGIN IMMEDIATE")
            pending = 0
    store.conn.execute("COMMIT")
    report.last_seq = applied
    store.set_setting(journal.SEQ_SETTING, str(applied))  # new commits continue the numbering


def _repair_invariants(store: SqlStore, now: float) -> dict[str, int]:
    """Make the database consistent again where lost journal records (gaps) or the checkpoint left it not.

    With a complete journal every count is zero except possibly the first: the checkpoint's
    pending-write rows of writes that committed after it (the commits are in the journal,
    the removal of the GC rows is not, because ``garbage`` is not journaled). Left in
    place, the server would collect those writes' shards as abandoned.
    """
    with store.tx() as db:
        fixes = {
            "GC rows of committed segments removed": db.execute(
                "DELETE FROM garbage WHERE segment_id IN (SELECT segment_id FROM segments)").rowcount,
            "parts of vanished uploads removed": db.execute(
                "DELETE FROM parts WHERE upload_id NOT IN (SELECT upload_id FROM uploads)").rowcount,
            "staged items of vanished transactions removed": db.execute(
                "DELETE FROM txn_items WHERE txn_id NOT IN (SELECT txn_id FROM txns WHERE state IN "
                "('open', 'committing'))").rowcount,
        }  # fmt: skip
        unowned = ("data_id NOT IN (SELECT data_id FROM versions WHERE data_id IS NOT NULL) "
                   "AND data_id NOT IN (SELECT data_id FROM retired_versions WHERE data_id IS NOT NULL) "
                   "AND data_id NOT IN (SELECT data_id FROM parts) "
                   "AND data_id NOT IN (SELECT data_id FROM txn_items WHERE data_id IS NOT NULL)")  # fmt: skip
        db.execute(f"INSERT OR IGNORE INTO garbage (segment_id, layout, owner, due) "
                   f"SELECT segment_id, layout, '', ? FROM segments WHERE {unowned}", (now,))  # fmt: skip
        fixes["segments of no version or part sent to GC"] = db.execute(
            f"DELETE FROM segments WHERE {unowned}").rowcount  # fmt: skip
        rebuild_shard_index(db)  # derived from the layouts, not journaled: the replay left it as the checkpoint had it
        # Clear the wrong flags first, then set the right ones: one latest row per key is a unique index.
        newest = "(SELECT MAX(v.id) FROM versions v WHERE v.bucket = versions.bucket AND v.key = versions.key)"
        fixes["latest-version flags corrected"] = (
            db.execute(f"UPDATE versions SET is_latest = 0 WHERE is_latest = 1 AND id <> {newest}").rowcount
            + db.execute(f"UPDATE versions SET is_latest = 1 WHERE is_latest = 0 AND id = {newest}").rowcount
        )
        fixes.update(store.reconcile_kv(db, now))  # after the versions are right: it follows them
    return fixes


def _versions_without_data(store: SqlStore) -> int:
    """Versions whose segment rows are in no record any drive still has: listed, but unreadable."""
    return store.one(
        "SELECT COUNT(*) AS n FROM versions v WHERE v.data_id IS NOT NULL AND v.size > 0 "
        "AND NOT EXISTS (SELECT 1 FROM segments s WHERE s.data_id = v.data_id)")["n"]  # fmt: skip


def _register_drives(store: SqlStore, report: Report) -> None:
    store.set_setting("deployment_id", report.deployment_id)
    now = time.time()
    for drive_id, drive in report.drives.items():
        store.put_drive(DriveRecord(drive_id, NODE_NAME, str(drive.root), "online", 1.0), now)


def _check_segments(store: SqlStore, report: Report, progress: Progress) -> None:
    """Look up every shard of every committed segment; queue the missing ones for the repair worker."""
    report.segments = store.segment_count()
    progress.phase("segments", report.segments)
    missing: list[tuple[str, int, str, str]] = []
    reader = store.open_reader()
    try:
        for row in reader.conn.execute("SELECT layout FROM segments"):
            layout = SegmentLayout.from_json(json.loads(row["layout"]))
            absent = [i for i, drive_id in enumerate(layout.drives) if not _shard_exists(report, drive_id, layout, i)]
            if absent:
                report.missing_shards += len(absent)
                if len(layout.drives) - len(absent) >= layout.scheme.k:
                    report.degraded += 1
                else:
                    report.unreadable += 1
                missing += [(layout.segment_id, i, layout.drives[i], MISSING_REASON) for i in absent]
            progress.advance(1)
    finally:
        reader.close()
    store.report_damages(missing, time.time())


def _shard_exists(report: Report, drive_id: str, layout: SegmentLayout, index: int) -> bool:
    drive = report.drives.get(drive_id)
    return drive is not None and drive.shard_path(layout.shard(index)).is_file()


def _remove_with_sidecars(path: Path) -> None:
    for suffix in ("", *SIDECARS, SHARED_MEMORY):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
