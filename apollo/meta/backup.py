"""Copies of the SQLite metadata database: an online backup, and a restore into a stopped server's directory.

Call sequence (``apollo admin backup-metadata`` / ``restore-metadata``)::

    backup(meta_dir / DB_FILE, dest, step_pages, on_progress, overwrite)  # server may run and write
    # ... later, with the server stopped and MetaDirLock(meta_dir) held:
    restore(src, meta_dir, stamp)

Why one read transaction around the whole backup: SQLite's backup API starts over from
the first page whenever another connection commits between two steps (measured: 77
restarts in one copy under a steady writer), so under load a stepped copy might never
finish. A read transaction held on the source pins one snapshot for every step. In WAL
mode a reader never blocks writers; the WAL only grows until the copy ends and a
checkpoint can catch up. The steps are there for progress reports.

Both copy through the backup API from a read-only connection (so a source with a WAL
beside it, such as a database set aside by a restore, is read whole), write under a
temporary name, check the copy (``PRAGMA integrity_check``, and that it is an Apollo
database of a schema this version can open), fsync it and rename it into place, so a
failure leaves the destination as it was.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from apollo.meta.location import DB_FILE
from apollo.meta.schema import SCHEMA_VERSION

# Files SQLite keeps beside a database: they belong to it and must move (or go) with it.
SIDECARS = ("-wal", "-journal")
SHARED_MEMORY = "-shm"  # rebuilt from the WAL on open; never worth keeping
RESTORE_STEP_PAGES = -1  # the server is stopped: nothing to wait for, one step


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says why."""


@dataclass
class Summary:
    schema_version: int
    deployment_id: str
    buckets: int
    versions: int  # object versions, delete markers not included
    delete_markers: int
    uploads: int  # multipart uploads in progress
    size_bytes: int = 0


def backup(
    source: Path, dest: Path, step_pages: int, on_progress: Callable[[int, int], None], overwrite: bool = False
) -> Summary:
    """Copy the live database ``source`` to the single self-contained file ``dest``.

    ``on_progress(pages_copied, pages_total)`` is called after every step of ``step_pages`` pages.

    :raises BackupError: ``dest`` exists (and not ``overwrite``), ``source`` is missing, or a check failed.
    """
    if dest.exists() and not overwrite:
        raise BackupError(f"{dest} exists; pass --force to overwrite it")
    if not source.is_file():
        raise BackupError(f"no metadata database at {source}")
    partial = dest.with_name(dest.name + ".partial")
    _remove_with_sidecars(partial)  # left by an interrupted backup
    try:
        summary = _copy_snapshot(source, partial, step_pages, on_progress)
        fsync_path(partial)
        summary.size_bytes = partial.stat().st_size
        os.replace(partial, dest)
        fsync_path(dest.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"backup of {source} failed: {exc}") from exc
    finally:
        _remove_with_sidecars(partial)
    return summary


def _copy_snapshot(source: Path, target: Path, step_pages: int, on_progress: Callable[[int, int], None]) -> Summary:
    """Copy one snapshot of ``source`` (with its WAL, if it has one) to ``target``, then check the copy."""
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        src.execute("PRAGMA busy_timeout=10000")
        src.execute("BEGIN")
        src.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the snapshot is taken at the first read
        out = sqlite3.connect(target, isolation_level=None)
        try:
            src.backup(out, pages=step_pages, progress=lambda _status, left, total: on_progress(total - left, total))
            src.execute("COMMIT")
            out.execute("PRAGMA journal_mode=DELETE")  # the copy carries the source's WAL flag: one file instead
            return inspect(out)
        finally:
            out.close()
    finally:
        src.close()


def restore(source: Path, meta_dir: Path, stamp: str) -> tuple[Summary, Path | None]:
    """Make the backup ``source`` the database of ``meta_dir``; the caller holds ``MetaDirLock(meta_dir)``.

    The current database, if any, is kept (with its WAL) as ``apollo.db.before-restore-<stamp>``, which
    is itself a valid ``source`` for undoing the restore.
    Returns the summary of the restored database and where the previous one went.

    :raises BackupError: ``source`` is missing, damaged, not an Apollo database, or from a newer Apollo.
    """
    if not source.is_file():
        raise BackupError(f"no such file: {source}")
    target = meta_dir / DB_FILE
    staging = meta_dir / f"{DB_FILE}.restoring"
    _remove_with_sidecars(staging)
    try:
        summary = _copy_snapshot(source, staging, RESTORE_STEP_PAGES, lambda _copied, _total: None)
        fsync_path(staging)
        summary.size_bytes = staging.stat().st_size
        kept = _set_aside(target, _unused_name(meta_dir / f"{DB_FILE}.before-restore-{stamp}"))
        os.replace(staging, target)
        fsync_path(meta_dir)
    except sqlite3.Error as exc:
        raise BackupError(f"{source} is not a usable metadata database: {exc}") from exc
    finally:
        _remove_with_sidecars(staging)
    return summary, kept


def _set_aside(target: Path, kept: Path) -> Path | None:
    """Rename the database with its WAL and journal (a stale WAL would be replayed onto the restored file)."""
    if not target.exists():
        Path(f"{target}{SHARED_MEMORY}").unlink(missing_ok=True)
        for suffix in SIDECARS:
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        return None
    os.replace(target, kept)
    for suffix in SIDECARS:
        if Path(f"{target}{suffix}").exists():
            os.replace(f"{target}{suffix}", f"{kept}{suffix}")
    Path(f"{target}{SHARED_MEMORY}").unlink(missing_ok=True)
    return kept


def _unused_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``...: two restores within a second must not overwrite a kept database."""
    candidate, n = path, 0
    while any(Path(f"{candidate}{suffix}").exists() for suffix in ("", *SIDECARS)):
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def inspect(conn: sqlite3.Connection) -> Summary:
    """Check a database copy and count what it holds.

    :raises BackupError: damaged, not an Apollo database, or written by a newer Apollo.
    """
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise BackupError("integrity check failed: " + "; ".join(problems[:5]))
    has_settings = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'settings'").fetchone()
    settings = dict(conn.execute("SELECT name, value FROM settings").fetchall()) if has_settings else {}
    if "schema_version" not in settings:
        raise BackupError("not an Apollo metadata database (no schema_version setting)")
    version = int(settings["schema_version"])
    if version > SCHEMA_VERSION:
        raise BackupError(f"schema version {version} is newer than this Apollo's ({SCHEMA_VERSION}): upgrade Apollo")

    def count(sql: str) -> int:
        return conn.execute(sql).fetchone()[0]

    return Summary(
        schema_version=version,
        deployment_id=settings.get("deployment_id", ""),
        buckets=count("SELECT COUNT(*) FROM buckets"),
        versions=count("SELECT COUNT(*) FROM versions WHERE delete_marker = 0"),
        delete_markers=count("SELECT COUNT(*) FROM versions WHERE delete_marker = 1"),
        uploads=count("SELECT COUNT(*) FROM uploads"),
    )


def _remove_with_sidecars(path: Path) -> None:
    for suffix in ("", *SIDECARS, SHARED_MEMORY):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries (so a rename survives power loss)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
