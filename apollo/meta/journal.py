"""The metadata journal: every committed change of the namespace, appended to files on the data drives.

Losing the metadata disk must not lose the namespace: small objects live only in the
database, delete markers have no shards, and shard headers cannot tell which writes
committed. So each transaction that changed the namespace (``capture``) takes the next
number of a counter kept in the same transaction (setting ``journal.seq``: a copy of the
database knows exactly which records it contains, and worker processes sharing the
database get distinct, ordered numbers), and after its COMMIT one line goes to up to
three drives::

    <drive>/meta-journal/journal-<owner>-<first seq>.jsonl   {"seq", "time", "owner", "changes": [...]}
    <drive>/meta-journal/checkpoint-<seq>.db                  a copy of the database at journal seq <seq>

Call sequence (``SqlBase`` drives the first two, the server the rest)::

    journal.seal(conn)       # inside the transaction: take the captured changes, bump the counter
    journal.publish(sealed)  # after COMMIT: append the line (no fsync), never raises
    journal.files.flush()    # every second: fsync what was appended
    checkpoint(...)          # manager, every --journal-checkpoint-interval: copy the database, prune

Appends are not fsynced on the commit path (a small PUT would pay a second fsync); a
power cut that also takes the metadata disk loses at most the last second of commits.
A journal I/O error never fails a commit: it is logged, counted, and the record goes to
the next drive. ``apollo.cluster.recovery`` reads all this back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from apollo import limits
from apollo.errors import DriveError
from apollo.meta import capture
from apollo.meta.backup import BackupError, backup, fsync_path
from apollo.meta.location import make_private
from apollo.proto.drive_format import read_format

if TYPE_CHECKING:
    from apollo.meta.sqlbase import SqlBase

log = logging.getLogger("apollo.journal")
JOURNAL_DIR = "meta-journal"
SEQ_SETTING = "journal.seq"
CHECKPOINT_STEP_PAGES = 1024
_JOURNAL_NAME = re.compile(r"journal-(?P<owner>.+)-(?P<first>\d+)\.jsonl")
_CHECKPOINT_NAME = re.compile(r"checkpoint-(?P<seq>\d+)\.db")
_RECORD_START = b'{"seq":'  # every line starts so; JSON escapes quotes inside strings, so it marks line starts
_TAIL_CHUNK_BYTES = 64 * 1024

Sealed = tuple[int, bytes]  # (seq, the line to append)


class Journal:
    """The commit hook of one store's writer connection (``SqlBase.journal``)."""

    def __init__(self, owner: str, files: JournalFiles) -> None:
        self.owner = owner
        self.files = files
        self._owner_json = json.dumps(owner)

    def seal(self, conn: sqlite3.Connection) -> Sealed | None:
        """Inside the transaction about to commit: its changes, numbered; None when it changed nothing journaled."""
        changes = capture.take(conn)
        if not changes:
            return None
        seq = int(conn.execute(
            "INSERT INTO settings (name, value) VALUES (?, '1') "
            "ON CONFLICT (name) DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING value", (SEQ_SETTING,),
        ).fetchone()[0])  # fmt: skip
        line = f'{{"seq":{seq},"time":{time.time():.6f},"owner":{self._owner_json},"changes":[{",".join(changes)}]}}\n'
        return seq, line.encode()

    def publish(self, sealed: Sealed) -> None:
        """After COMMIT: append the record. The commit stands whatever happens here."""
        try:
            self.files.append(*sealed)
        except Exception:  # a committed write must still be acknowledged
            log.exception("metadata journal: record %d not appended", sealed[0])
            self.files.on_error()

    def close(self) -> None:
        self.files.close()


def enable(
    store: SqlBase, owner: str, drives: list[tuple[str, Path]], on_error: Callable[[], None] = lambda: None
) -> Journal:
    """Capture ``store``'s writes from now on and journal them to ``drives`` [(drive id, root)]."""
    for _, root in drives:
        make_private(root / JOURNAL_DIR)  # journal files and checkpoints hold the access keys' secrets
    files = JournalFiles(owner, on_error=on_error)
    files.set_drives(drives)
    capture.install(store.conn)
    store.journal = Journal(owner, files)
    return store.journal


@dataclass
class _OpenFile:
    fd: int
    opened: float  # monotonic


class JournalFiles:
    """Appends records to one file per chosen drive: the first ``copies`` healthy candidates by drive id.

    The writer thread appends; the server's flush loop (another thread) refreshes the
    candidates and fsyncs. A file is never appended to after ``rotate_s``: checkpoint
    pruning relies on that to know which files no writer will touch again.
    """

    def __init__(
        self, owner: str, copies: int = limits.journal_copies, rotate_s: float = limits.journal_file_rotate_s,
        retry_s: float = limits.journal_drive_retry_s, on_error: Callable[[], None] = lambda: None,
    ) -> None:  # fmt: skip
        self.owner = owner
        self.copies = copies
        self.rotate_s = rotate_s
        self.retry_s = retry_s
        self.on_error = on_error
        self._lock = threading.Lock()
        self._candidates: list[tuple[str, Path]] = []
        self._open: dict[str, _OpenFile] = {}
        self._closing: list[int] = []  # descriptors the writer let go of: fsynced, then closed, by flush()
        self._dirs_to_sync: set[Path] = set()
        self._failed_at: dict[str, float] = {}  # drive id -> monotonic time of its last I/O error
        self._stranded = False  # the last record reached no drive

    def set_drives(self, drives: list[tuple[str, Path]]) -> None:
        """Drives a record may go to (online, with space); the order does not matter."""
        with self._lock:
            self._candidates = sorted(drives)

    def targets(self) -> list[tuple[str, Path]]:
        """The drives records go to now (and checkpoints with them)."""
        with self._lock:
            return self._healthy(time.monotonic())[: self.copies]

    def _healthy(self, now: float) -> list[tuple[str, Path]]:
        return [(d, root) for d, root in self._candidates if now - self._failed_at.get(d, -1e18) >= self.retry_s]

    def append(self, seq: int, line: bytes) -> None:
        with self._lock:
            now = time.monotonic()
            written: set[str] = set()
            for drive_id, root in self._healthy(now):
                if len(written) == self.copies:
                    break
                try:
                    _write_all(self._file(drive_id, root, seq, now), line)
                    written.add(drive_id)
                except OSError as exc:
                    log.error("metadata journal: drive %s (%s) failed, using another: %s", drive_id, root, exc)
                    self.on_error()
                    self._failed_at[drive_id] = now
                    self._let_go(drive_id)
            for drive_id in set(self._open) - written:  # no longer among the chosen drives
                self._let_go(drive_id)
        if not written:
            self.on_error()
            if not self._stranded:  # once, not once per commit
                log.error("metadata journal: record %d reached no drive; the commit stands", seq)
        elif self._stranded:
            log.info("metadata journal: records reach drives again from record %d", seq)
        self._stranded = not written

    def _file(self, drive_id: str, root: Path, seq: int, now: float) -> int:
        current = self._open.get(drive_id)
        if current is not None and now - current.opened < self.rotate_s:
            return current.fd
        self._let_go(drive_id)
        try:  # the directory may hold a replacement by now (a quick disk swap): never write into it
            info = read_format(root)
        except DriveError as exc:
            raise OSError(str(exc)) from exc
        if info is None or info.get("drive_id") != drive_id:
            raise OSError(f"{root} no longer holds drive {drive_id}")
        directory = root / JOURNAL_DIR
        if not directory.is_dir():
            directory.mkdir()
            self._dirs_to_sync.add(root)
        fd = os.open(directory / f"journal-{self.owner}-{seq}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._dirs_to_sync.add(directory)
        self._open[drive_id] = _OpenFile(fd, now)
        return fd

    def _let_go(self, drive_id: str) -> None:
        current = self._open.pop(drive_id, None)
        if current is not None:
            self._closing.append(current.fd)

    def flush(self) -> None:
        """fsync everything appended so far; runs beside the writer, which is blocked only to list descriptors."""
        with self._lock:
            fds, self._closing = self._closing, []
            dirs, self._dirs_to_sync = self._dirs_to_sync, set()
            for current in self._open.values():
                try:
                    fds.append(os.dup(current.fd))  # the writer may let go of the original meanwhile
                except OSError as exc:
                    log.error("metadata journal: cannot flush: %s", exc)
                    self.on_error()
        for fd in fds:
            try:
                os.fsync(fd)
            except OSError as exc:
                log.error("metadata journal: fsync failed: %s", exc)
                self.on_error()
            finally:
                os.close(fd)
        for directory in dirs:
            try:
                fsync_path(directory)
            except OSError as exc:
                log.error("metadata journal: fsync of %s failed: %s", directory, exc)
                self.on_error()

    def close(self) -> None:
        with self._lock:
            for drive_id in list(self._open):
                self._let_go(drive_id)
        self.flush()


def _write_all(fd: int, line: bytes) -> None:
    written = os.write(fd, line)
    if written != len(line):  # a short write on a full disk would leave half a line: count it as failed
        raise OSError(f"short write ({written} of {len(line)} bytes)")


# reading back (recovery, pruning) ----------------------------------------------------------


def journal_files(root: Path) -> list[Path]:
    directory = root / JOURNAL_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _JOURNAL_NAME.fullmatch(p.name))


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(seq, path) of the checkpoints on a drive, newest first."""
    directory = root / JOURNAL_DIR
    if not directory.is_dir():
        return []
    found = [(int(m["seq"]), p) for p in directory.iterdir() if (m := _CHECKPOINT_NAME.fullmatch(p.name))]
    return sorted(found, reverse=True)


def read_records(path: Path, on_bad_line: Callable[[int], None]) -> Iterator[tuple[int, dict, int]]:
    """(seq, record, line bytes) of every readable line, in file order (which is seq order).

    A line that does not parse (torn by a crash, zeroed by a power cut) is reported with
    ``on_bad_line(bytes)`` and skipped.
    """
    with open(path, "rb") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                seq = record["seq"]
            except (ValueError, KeyError, TypeError):
                on_bad_line(len(line))
                continue
            yield seq, record, len(line)


def last_seq(path: Path) -> int | None:
    """Seq of the last record a file holds, reading only its tail (journal files can be gigabytes)."""
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        tail, start = b"", end
        while True:
            start = max(0, start - _TAIL_CHUNK_BYTES)
            handle.seek(start)
            tail = handle.read(end - start)
            at = tail.rfind(b"\n" + _RECORD_START)
            if at >= 0:
                return _seq_at(tail, at + 1)
            if start == 0:
                return _seq_at(tail, 0) if tail.startswith(_RECORD_START) else None


def _seq_at(data: bytes, at: int) -> int | None:
    match = re.match(rb"\d+", data[at + len(_RECORD_START) : at + len(_RECORD_START) + 24])
    return int(match.group()) if match else None


def checkpoint_seq(path: Path) -> int:
    """The journal seq a database (or a copy of one) contains records up to."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM settings WHERE name = ?", (SEQ_SETTING,)).fetchone()
        return 0 if row is None else int(row[0])
    finally:
        conn.close()


# checkpoints -------------------------------------------------------------------------------


@dataclass
class CheckpointResult:
    written: list[tuple[int, Path]]
    checkpoints_removed: int
    journal_files_removed: int


def checkpoint(
    database: Path, roots: list[Path], all_roots: list[Path], rotate_s: float = limits.journal_file_rotate_s
) -> CheckpointResult:
    """Copy the live database to each of ``roots``, then prune ``all_roots``.

    Each copy is an online backup (``apollo.meta.backup``: one snapshot, checked, fsynced,
    renamed), named after the journal seq it contains. A drive keeps its newest
    ``limits.journal_checkpoints_kept`` checkpoints, and a journal file goes once every
    record in it is in the oldest checkpoint kept: if the newest copy turns out damaged,
    the one before it plus the journal still recover everything.
    """
    written = []
    for root in roots:
        directory = root / JOURNAL_DIR
        try:
            directory.mkdir(exist_ok=True)
            incoming = directory / "checkpoint-new.db"
            backup(database, incoming, CHECKPOINT_STEP_PAGES, lambda _copied, _total: None, overwrite=True)
            seq = checkpoint_seq(incoming)
            os.replace(incoming, directory / f"checkpoint-{seq}.db")
            fsync_path(directory)
            written.append((seq, directory / f"checkpoint-{seq}.db"))
        except (BackupError, OSError, sqlite3.Error) as exc:
            log.error("metadata checkpoint on %s failed: %s", root, exc)
    checkpointed = {path.parent.parent for _, path in written}
    removed_checkpoints, floors = 0, []
    for root in all_roots:
        found = checkpoints(root)
        for _, path in found[limits.journal_checkpoints_kept :]:
            path.unlink(missing_ok=True)
            removed_checkpoints += 1
        if root in checkpointed:
            floors.append(found[: limits.journal_checkpoints_kept][-1][0])
    removed_files = _prune_journal(all_roots, min(floors), rotate_s) if floors else 0
    return CheckpointResult(written, removed_checkpoints, removed_files)


def _prune_journal(roots: list[Path], covered_seq: int, rotate_s: float) -> int:
    """Delete journal files whose records are all in a kept checkpoint and that no writer will append to."""
    idle_since = time.time() - 2 * rotate_s  # writers rotate after rotate_s, so an older file is closed
    removed = 0
    for root in roots:
        for path in journal_files(root):
            try:
                if path.stat().st_mtime < idle_since and (last_seq(path) or 0) <= covered_seq:
                    path.unlink()
                    removed += 1
            except OSError as exc:
                log.warning("metadata journal: could not prune %s: %s", path, exc)
    return removed
