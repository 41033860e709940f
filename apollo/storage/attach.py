"""Which directories become drives at start: one rule for the all-in-one server, storage nodes and tests.

A directory is a drive when its format file names this deployment. An empty directory
the deployment does not know is formatted as a new drive. Everything else is refused,
and never formatted:

- a directory that is missing (an unmounted disk: its mount point is missing, or the
  disk is not there), unless the caller creates missing directories (a development
  server's default drives);
- a directory the deployment knows as a drive that lost its format file: the disk was
  wiped or replaced, or did not mount and the empty mount point shows through;
  formatting it would put a new drive where the old one's shards are expected
  (``apollo admin drive replace`` formats it explicitly);
- a directory that is not empty and not an Apollo drive (another program's data);
- a drive of another deployment;
- a drive removed from this deployment (``apollo admin drive remove``): its format file still
  names the deployment, but the operator took it out, and a restart with the same command
  line must not bring it back.

Temp files of writes a previous process did not finish are removed once the drives are
attached (``clear_interrupted``): their clients saw those writes fail.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from apollo.errors import DriveError
from apollo.proto.drive_format import read_format
from apollo.storage.drive import Drive, format_drive

log = logging.getLogger("apollo.storage")


@dataclass
class Attached:
    drives: list[Drive] = field(default_factory=list)
    formatted: list[Drive] = field(default_factory=list)  # new drives, formatted here (also in ``drives``)
    problems: list[str] = field(default_factory=list)  # directories refused, and why
    foreign: list[Path] = field(default_factory=list)  # refused as another program's data (some callers stop)


def attach_drives(roots: list[Path], deployment_id: str, known: Mapping[str, str], *, create_missing: bool = False,
                  removed: Collection[str] = ()) -> Attached:  # fmt: skip
    """Open the drives in ``roots``; ``known``: path -> drive id of every drive the deployment has;
    ``removed``: ids of drives removed from it."""
    out = Attached()
    for root in roots:
        root = root.resolve()
        path = str(root)
        if not root.is_dir() and not create_missing:
            out.problems.append(f"drive {path} does not exist (not mounted?); not serving it")
            continue
        try:
            info = read_format(root) if root.exists() else None
            if info is None:
                if path in known:
                    out.problems.append(
                        f"drive {path} (id {known[path]}) lost its format file: unmounted, wiped or replaced; not "
                        "serving it (its shards are rebuilt elsewhere; `apollo admin drive replace` formats it anew)"
                    )
                    continue
                if root.exists() and any(root.iterdir()):
                    out.problems.append(f"drive {path} is not empty and not an Apollo drive; refusing to format it")
                    out.foreign.append(root)
                    continue
                format_drive(root, deployment_id)
            drive = Drive(root, deployment_id)
            if drive.drive_id in removed:
                out.problems.append(
                    f"drive {path} (id {drive.drive_id}) was removed from the deployment (`apollo admin drive "
                    "remove`); not serving it: take it off the command line, or wipe it to add the disk anew"
                )  # fmt: skip
                continue
        except (DriveError, OSError) as exc:
            out.problems.append(f"drive {path}: {exc}; not serving it")
            continue
        out.drives.append(drive)
        if info is None:
            out.formatted.append(drive)
            log.info("formatted new drive %s as %s", path, drive.drive_id)
    return out


def clear_interrupted(drives: list[Drive]) -> int:
    """Remove the temp files of writes no process will finish; returns how many."""
    removed = 0
    for drive in drives:
        count = drive.clear_tmp()
        if count:
            log.info("drive %s: removed %d temp files of interrupted writes", drive.root, count)
        removed += count
    return removed
