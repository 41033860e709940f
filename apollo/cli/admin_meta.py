"""``apollo admin backup-metadata`` and ``restore-metadata``: the metadata database to a file and back.

The database work (snapshot copy, checks, the swap) is ``apollo.meta.backup``; this module
is the command line around it: arguments, the progress bar, the refusal while a server
runs, and the summaries.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from apollo.meta.backup import DB_FILE, BackupError, Summary, backup, restore
from apollo.meta.lock import MetaDirInUse, MetaDirLock

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


def cmd_backup(args: argparse.Namespace) -> None:
    # Imported here: rich takes ~40 ms to import, which every `apollo server` start would pay otherwise.
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
