"""One drive: a directory with a format file, shard files and a temp area.

Layout::

    <root>/apollo-drive.json        identity: drive id, deployment id, format version
    <root>/shards/<pg>/<segment>.<i> committed shard files (immutable)
    <root>/tmp/                     shard files being written; emptied at start-up

Writes go to ``tmp/``, are fsynced, then renamed into place and the directory
is fsynced, so a shard file is either absent or complete. Everything here is
blocking I/O; ``LocalStorageNode`` runs it on worker threads.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from apollo import faults
from apollo.errors import DriveError
from apollo.proto.drive_format import DRIVE_FORMAT_VERSION, FORMAT_FILE, read_format
from apollo.proto.layout import ShardRef

_IOV_MAX = os.sysconf("SC_IOV_MAX")  # buffers one writev takes

def format_drive(root: Path, deployment_id: str) -> str:
    """Write a new identity onto an empty directory; returns the new drive id."""
    root.mkdir(parents=True, exist_ok=True)
    if read_format(root) is not None:
        raise DriveError(f"drive {root} is already formatted")
    drive_id = uuid.uuid4().hex[:16]
    info = {"drive_id": drive_id, "deployment_id": deployment_id, "format_version": DRIVE_FORMAT_VERSION}
    tmp = root / (FORMAT_FILE + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(info, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, root / FORMAT_FILE)
    _fsync_dir(root)
    return drive_id


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardFileWriter:
    """Appends cell records to a temp file; ``finish`` makes it a committed shard file."""

    def __init__(self, drive: Drive, shard: ShardRef, header: bytes) -> None:
        self.drive = drive
        self.shard = shard
        # The pid lets a supervisor clear exactly a dead worker's files (``Drive.clear_tmp``).
        self.tmp_path = drive.tmp_dir / f"{shard.segment_id}.{shard.index}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            self._write_all([header])
        except BaseException:  # e.g. ENOSPC: the caller never gets a writer to abort, so clean up here
            self.abort()
            raise

    def _write_all(self, buffers: list[bytes]) -> None:
        for start in range(0, len(buffers), _IOV_MAX):  # a stream of tiny chunks must not hit EINVAL
            group = buffers[start : start + _IOV_MAX]
            written = os.writev(self._fd, group)
            if written != sum(len(b) for b in group):  # short writes happen on near-full disks: finish them
                data = memoryview(b"".join(group))[written:]
                while data:
                    data = data[os.write(self._fd, data) :]

    def append(self, records: list[bytes]) -> None:
        self._write_all(records)

    def finish(self, footer: bytes) -> None:
        self._write_all([footer])
        faults.point("storage.shard.before_fsync")
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        final = self.drive.shard_path(self.shard)
        final.parent.mkdir(exist_ok=True)
        os.replace(self.tmp_path, final)
        _fsync_dir(final.parent)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.tmp_path.unlink(missing_ok=True)


class Drive:
    """A formatted drive directory, opened after its identity has been checked."""

    def __init__(self, root: Path, deployment_id: str) -> None:
        info = read_format(root)
        if info is None:
            raise DriveError(f"drive {root} has no format file (wiped or never formatted)")
        if info.get("deployment_id") != deployment_id:
            raise DriveError(f"drive {root} belongs to another deployment ({info.get('deployment_id')})")
        self.root = root
        self.drive_id: str = info["drive_id"]
        self.shards_dir = root / "shards"
        self.tmp_dir = root / "tmp"
        self.shards_dir.mkdir(exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)

    def group_dir(self, pg: int) -> Path:
        return self.shards_dir / f"{pg:04x}"

    def shard_path(self, shard: ShardRef) -> Path:
        return self.group_dir(shard.pg) / f"{shard.segment_id}.{shard.index}"

    def clear_tmp(self, pid: int | None = None) -> int:
        """Remove temp files of writes a previous process (or the dead worker ``pid``) did not finish."""
        removed = 0
        for entry in self.tmp_dir.iterdir():
            if pid is not None and not entry.name.rpartition(".")[2].startswith(f"{pid}-"):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        return removed

    def open_writer(self, shard: ShardRef, header: bytes) -> ShardFileWriter:
        return ShardFileWriter(self, shard, header)

    def read(self, shard: ShardRef, offset: int, length: int) -> bytes:
        """Read bytes of a committed shard file; a short read means a truncated file."""
        with open(self.shard_path(shard), "rb", buffering=0) as handle:
            return os.pread(handle.fileno(), length, offset)

    def open_for_sending(self, shard: ShardRef) -> tuple[int, int]:
        """A committed shard file's descriptor and size, for ``sendfile``; the caller closes it."""
        fd = os.open(self.shard_path(shard), os.O_RDONLY | os.O_CLOEXEC)
        try:
            return fd, os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise

    def read_tail(self, shard: ShardRef, length: int) -> bytes:
        with open(self.shard_path(shard), "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            return os.pread(handle.fileno(), min(length, size), max(0, size - length))

    def size(self, shard: ShardRef) -> int:
        return self.shard_path(shard).stat().st_size

    def delete(self, shard: ShardRef) -> bool:
        try:
            self.shard_path(shard).unlink()
            return True
        except FileNotFoundError:
            return False

    def probe(self) -> str:
        """``ok``; ``gone`` when the format file vanished or names another drive (wiped, unmounted,
        swapped: the data is not coming back); ``unreachable`` on I/O errors (it may recover)."""
        try:
            info = json.loads((self.root / FORMAT_FILE).read_text())
        except FileNotFoundError:
            return "gone"
        except OSError:
            return "unreachable"
        except ValueError:
            return "gone"
        return "ok" if info.get("drive_id") == self.drive_id else "gone"

    def usage(self) -> tuple[int, int]:
        """(free bytes, total bytes) of the filesystem holding the drive."""
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize

    def check(self) -> tuple[str, int, int, str]:
        """(health, free bytes, total bytes, filesystem): what a node reports of the drive every few seconds.

        Health as ``probe`` says; the space of a drive that is not "ok" is not looked at (0, 0, ""). The
        filesystem is its device number on this host (hex): drives that are directories of one filesystem
        report the same space, which capacity must count once.
        """
        try:
            health = self.probe()
            if health != "ok":
                return health, 0, 0, ""
            free, total = self.usage()
            return health, free, total, f"{os.stat(self.root).st_dev:x}"
        except OSError:
            return "unreachable", 0, 0, ""
