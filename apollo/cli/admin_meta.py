"""``apollo admin backup-metadata``, ``restore-metadata`` and ``recover-metadata``: the metadata database
to a file and back, and rebuilt from the drives.

The database work (snapshot copy, checks, the swap; replaying the drives' journal) is
``apollo.meta.backup`` and ``apollo.cluster.recovery``; this module is the command line
around it: arguments, the progress bars, the refusal while a server runs, and the summaries.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from apollo.cli.common import expand_braces
from apollo.meta.backup import BackupError, Summary, backup, restore
from apollo.meta.location import DB_FILE, refuse_postgres
from apollo.meta.lock import MetaDirInUse, MetaDirLock

if TYPE_CHECKING:  # imported where used: `apollo server` starts without them
    from apollo.cluster.admin import UnlistedDrive
    from apollo.cluster.recovery import Report

STEP_PAGES_DEFAULT = 1024  # 4 MiB of 4 KiB pages between progress updates

BACKUP_DESCRIPTION = """\
Copy the metadata database to DEST while the server runs and writes: one consistent
snapshot (writers are not blocked), written as DEST.partial, checked with
PRAGMA integrity_check, fsynced, then renamed to DEST. Exits non-zero, leaving no DEST,
if anything fails."""

RESTORE_DESCRIPTION = """\
Make the backup SOURCE the metadata database of a stopped server (refused while a
server uses --meta-dir). The namespace goes back to the moment the backup was taken:

  - objects written after the backup are no longer listed or readable; their shard
    files stay on the drives, referenced by nothing (orphans), until the orphan
    collector removes them;
  - objects deleted or overwritten after the backup come back; a large object's data
    is readable only if the garbage collector had not removed it yet (--gc-delay after
    the delete); small (inline) objects live in the database and always come back whole;
  - multipart uploads are as they were at the backup.

The current database is kept as apollo.db.before-restore-<UTC time>."""

RECOVER_DESCRIPTION = """\
Rebuild the metadata database of a stopped server from its drives alone, when
apollo.db is lost: the newest checkpoint of the database found on any drive
(meta-journal/checkpoint-<seq>.db), then every commit journaled after it
(meta-journal/journal-*.jsonl, on three drives), then a check of every segment's
shards. Give every drive directory of the deployment (brace ranges like
/srv/apollo/drive{1...6} expand); drives the recovered metadata knows that were
not given are named at the end (NOT GIVEN), to recover again with them.

Comes back: buckets, every object version and delete marker with its ETag, metadata,
tags and checksums (small objects with their bytes), access keys, and multipart
uploads in progress. Lost: commits of the last second before a power cut that also
took the metadata disk (journal appends are fsynced once a second), and settings
changed since the checkpoint (tuning knobs). Shards missing from the drives are
reported and queued for repair.

Refused while a server uses --meta-dir, or when it holds a database (--force keeps
that one as apollo.db.before-restore-<UTC time> and recovers anyway)."""


def register(admin: argparse._SubParsersAction) -> None:
    """Add both commands under ``apollo admin``."""
    raw = argparse.RawDescriptionHelpFormatter
    cmd = admin.add_parser("backup-metadata", help="online, consistent copy of the metadata database",
                           description=BACKUP_DESCRIPTION, formatter_class=raw)  # fmt: skip
    cmd.add_argument("dest", type=Path, metavar="DEST", help="backup file to write")
    cmd.add_argument("--meta-dir", type=Path, required=True)
    cmd.add_argument("--force", action="store_true", help="overwrite DEST if it exists")
    cmd.add_argument("--step-pages", type=_positive, default=STEP_PAGES_DEFAULT,
                     help=f"database pages copied per step (default {STEP_PAGES_DEFAULT})")  # fmt: skip
    cmd.set_defaults(func=cmd_backup)
    cmd = admin.add_parser("restore-metadata", help="replace the metadata database of a stopped server with a backup",
                           description=RESTORE_DESCRIPTION, formatter_class=raw)  # fmt: skip
    cmd.add_argument("source", type=Path, metavar="SOURCE", help="a file written by backup-metadata")
    cmd.add_argument("--meta-dir", type=Path, required=True)
    cmd.set_defaults(func=cmd_restore)
    cmd = admin.add_parser("recover-metadata", help="rebuild a lost metadata database from the drives",
                           description=RECOVER_DESCRIPTION, formatter_class=raw)  # fmt: skip
    cmd.add_argument("drives", nargs="+", metavar="DRIVE_DIR",
                     help="every drive directory (brace ranges like drive{1...6} expand)")  # fmt: skip
    cmd.add_argument("--meta-dir", type=Path, required=True)
    cmd.add_argument("--force", action="store_true", help="keep an existing database aside and recover anyway")
    cmd.set_defaults(func=cmd_recover)


def cmd_backup(args: argparse.Namespace) -> None:
    # Imported here: rich takes ~40 ms to import, which every `apollo server` start would pay otherwise.
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    refuse_postgres(args.meta_dir, "backup-metadata")
    source = args.meta_dir / DB_FILE
    started = time.monotonic()
    columns = (TextColumn("copying"), BarColumn(), MofNCompleteColumn(), TextColumn("pages {task.fields[rate]}"),
               TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip

    def report(copied: int, total: int) -> None:
        rate = f"{copied / elapsed:,.0f} pages/s" if (elapsed := time.monotonic() - started) > 0 else ""
        progress.update(task, completed=copied, total=total, rate=rate)

    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("backup", total=None, rate="")
        try:
            summary = backup(source, args.dest, args.step_pages, report, overwrite=args.force)
        except BackupError as exc:
            progress.remove_task(task)
            progress.stop()
            sys.exit(f"backup-metadata failed: {exc}")
    print(f"backed up {source} to {args.dest} (integrity check ok, fsynced)")
    _print_summary(summary, time.monotonic() - started)


def cmd_restore(args: argparse.Namespace) -> None:
    refuse_postgres(args.meta_dir, "restore-metadata")
    started = time.monotonic()
    try:
        lock = MetaDirLock(args.meta_dir, "apollo admin restore-metadata")
    except MetaDirInUse as exc:
        sys.exit(f"restore-metadata refused: {exc}")
    try:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        summary, kept = restore(args.source, args.meta_dir, stamp)
    except BackupError as exc:
        sys.exit(f"restore-metadata failed: {exc}")
    finally:
        lock.release()
    print(f"restored {args.source} to {args.meta_dir / DB_FILE} (integrity check ok, fsynced)")
    print(f"  previous database kept as {kept}" if kept else "  there was no previous database")
    _print_summary(summary, time.monotonic() - started)


def cmd_recover(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from apollo.cluster.recovery import RecoveryError, RecoveryRefused, recover

    refuse_postgres(args.meta_dir, "recover-metadata")
    drives = [Path(p) for pattern in args.drives for p in expand_braces(pattern)]  # as `apollo server` does
    started = time.monotonic()
    try:
        lock = MetaDirLock(args.meta_dir, "apollo admin recover-metadata")
    except MetaDirInUse as exc:
        sys.exit(f"recover-metadata refused: {exc}")
    columns = (TextColumn("{task.description:<24}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=Console(stderr=True)) as progress:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            report = recover(args.meta_dir, drives, _PhaseBars(progress), stamp, args.force)
        unlisted = _not_given(args.meta_dir, report, drives)
    except RecoveryRefused as exc:
        sys.exit(f"recover-metadata refused: {exc}")
    except RecoveryError as exc:
        sys.exit(f"recover-metadata failed: {exc}")
    finally:
        lock.release()
    print(f"recovered {args.meta_dir / DB_FILE} from {len(report.drives)} drives (integrity check ok, fsynced)")
    for line in _recovery_lines(report) + _not_given_lines(unlisted):
        print(f"  {line}")
    _print_summary(report.summary, time.monotonic() - started)
    print(f"  previous database kept as {report.kept}" if report.kept else "  there was no previous database")
    print("Not recoverable by design: commits of the last second before a power cut that also took the metadata "
          "disk, and settings changed since the checkpoint (tuning knobs).")  # fmt: skip
    if unlisted:
        print(f"{len(unlisted)} drive(s) the recovered metadata knows were not given (NOT GIVEN above): if they "
              "still exist, recover again with every drive, these included (--force keeps this result aside), so "
              "that their journal copies, checkpoints and shards are read, not rebuilt from parity.")  # fmt: skip
        paths = [d.path for d in unlisted if d.path]
        if paths:
            print(f"  add to the command line: {' '.join(paths)}")


def _not_given(meta_dir: Path, report: Report, drives: list[Path]) -> list[UnlistedDrive]:
    """The drives the recovered database knows that were not on the command line (``admin.drives_not_given``)."""
    from apollo.cluster.admin import drives_not_given
    from apollo.roles.server import open_store

    store = open_store(meta_dir)
    try:
        return drives_not_given(store, report.drives.keys(), drives)
    finally:
        store.close()


def _not_given_lines(unlisted: list[UnlistedDrive]) -> list[str]:
    lines = []
    for drive in unlisted:
        where = f"at {drive.path} ({drive.state} at the checkpoint)" if drive.path else "(its path is not recorded)"
        lines.append(f"NOT GIVEN        drive {drive.drive_id} {where}: {drive.missing_shards:,} of its shards "
                     "were not found and are queued for repair")  # fmt: skip
    return lines


class _PhaseBars:
    """``recovery.Progress`` as one rich bar per phase (checkpoint copy, journal, segment check)."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.task = None

    def phase(self, description: str, total: int) -> None:
        self._finish()
        self.task = self.progress.add_task(description, total=total or None)

    def advance(self, amount: int) -> None:
        self.progress.advance(self.task, amount)

    def _finish(self) -> None:
        if self.task is not None:
            done = self.progress.tasks[self.task].total or 1
            self.progress.update(self.task, total=done, completed=done)


def _recovery_lines(report) -> list[str]:
    lines = [f"checkpoint       {report.checkpoint} (journal seq {report.checkpoint_seq:,})" if report.checkpoint
             else "checkpoint       none found: replaying the journal from the start"]  # fmt: skip
    lines += [f"  not used: {why}" for why in report.rejected_checkpoints]
    span = f" (seq {report.checkpoint_seq + 1:,} to {report.last_seq:,})" if report.replayed else ""
    lines.append(f"journal          {report.replayed:,} commits replayed{span}; {report.already_in_checkpoint:,} "
                 f"already in the checkpoint, {report.duplicates:,} copies from other drives skipped")  # fmt: skip
    if report.bad_lines:
        lines.append(f"                 {report.bad_lines:,} unreadable journal lines skipped (torn by a crash)")
    for first, last in report.gaps:
        lines.append(f"LOST             commits {first:,} to {last:,}: on no drive given")
    if report.versions_without_data:
        lines.append(f"LOST             {report.versions_without_data:,} object versions whose segment rows are gone")
    lines += [f"repaired         {count:,} {what}" for what, count in report.fixes.items() if count]
    lines.append(
        f"segments         {report.segments:,} checked: {report.degraded:,} degraded (readable), "
        f"{report.unreadable:,} unreadable; {report.missing_shards:,} missing shards queued for repair"
    )
    lines += [f"skipped          {why}" for why in report.skipped_drives]
    return lines


def _print_summary(summary: Summary, seconds: float) -> None:
    print(f"  buckets          {summary.buckets:,}")
    print(f"  object versions  {summary.versions:,} (and {summary.delete_markers:,} delete markers)")
    print(f"  uploads          {summary.uploads:,} in progress")
    print(f"  size             {summary.size_bytes / 1e6:,.1f} MB")
    print(f"  time             {seconds:.2f} s")
    print(f"  schema version {summary.schema_version}, deployment {summary.deployment_id or '?'}")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
