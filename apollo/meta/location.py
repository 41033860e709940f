"""Where a metadata directory's database is: SQLite inside it, or the PostgreSQL URL it names.

``apollo server --meta URL`` writes the URL into the directory, so that later starts and
every admin command keep taking ``--meta-dir`` whichever engine holds the metadata.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DB_FILE = "apollo.db"
META_URL_FILE = "meta-url"


def meta_url(meta_dir: Path) -> str | None:
    """The PostgreSQL URL this directory's server uses, or None (SQLite)."""
    url_file = meta_dir / META_URL_FILE
    return url_file.read_text().strip() if url_file.is_file() else None


def meta_target(meta_dir: Path) -> str:
    """What ``SqlStore`` opens for this directory: the URL, else the SQLite file."""
    return meta_url(meta_dir) or str(meta_dir / DB_FILE)


def remember_meta_url(meta_dir: Path, url: str) -> None:
    """Record ``--meta URL`` (owner-only: the URL may carry a password)."""
    meta_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(meta_dir / META_URL_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(url + "\n")


def make_private(directory: Path) -> None:
    """Owner-only access to ``directory`` and the files in it (0700, 0600).

    The metadata database holds every secret key in clear, as do its WAL, its backups and the
    checkpoints copied to the data drives; a retired drive must not carry them readable to all.
    Every Apollo process creates files with umask 077 (``apollo.cli.main``); this fixes the files an
    older version, or another tool, left readable.
    """
    if not directory.is_dir():
        return
    directory.chmod(0o700)
    for path in directory.iterdir():
        # A file another process removes meanwhile (a worker's checkpoint temp file) has nothing to protect.
        with contextlib.suppress(FileNotFoundError):
            if path.is_file():
                path.chmod(0o600)


def refuse_postgres(meta_dir: Path, command: str) -> None:
    """SQLite-file tools (backup, restore, recovery from the drives) have no meaning for PostgreSQL."""
    if meta_url(meta_dir) is not None:
        raise SystemExit(
            f"{command}: the metadata of {meta_dir} is in PostgreSQL ({META_URL_FILE}); use "
            "PostgreSQL's own tools (pg_dump, pg_basebackup, streaming replicas) instead"
        )
