"""``apollo admin ...`` as an operator runs it: a subprocess of this interpreter, for tests.

    out = admin("scrub", "--now", "--wait", meta_dir=server.meta_dir)      # stdout; raises on failure
    status = admin("status", database=cluster.database)
    why = admin_refused("drive", "drain", str(drive), meta_dir=server.meta_dir)  # stderr; raises on success
    done = run_admin("node", "remove", node, database=cluster.database)  # the CompletedProcess, unchecked
    done = run_admin("backup-metadata", ..., check=True)  # the CompletedProcess; raises on failure

``meta_dir`` (an all-in-one server's metadata directory) and ``database`` (a cluster's database URL)
append ``--meta-dir`` / ``--database``; commands whose arguments already name them pass neither.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

TIMEOUT_S = 300.0


class AdminFailed(AssertionError):
    """``apollo admin`` did not do what the test expected; the message carries its output."""

    def __init__(self, message: str, result: subprocess.CompletedProcess) -> None:
        super().__init__(message)
        self.result = result


def _command(args: tuple[str | Path, ...], meta_dir: str | Path | None, database: str | None) -> list[str]:
    command = [sys.executable, "-m", "apollo", "admin", *map(str, args)]
    if meta_dir is not None:
        command += ["--meta-dir", str(meta_dir)]
    if database is not None:
        command += ["--database", database]
    return command


def _shown(result: subprocess.CompletedProcess) -> str:
    return f"{' '.join(result.args[3:])}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def run_admin(*args: str | Path, meta_dir: str | Path | None = None, database: str | None = None,
              timeout: float = TIMEOUT_S, env: Mapping[str, str] | None = None,
              check: bool = False) -> subprocess.CompletedProcess:  # fmt: skip
    """Run ``apollo admin ARGS``; the finished process (text stdout and stderr), for a test that looks at both.
    ``check``: a non-zero exit raises ``AdminFailed``; otherwise any exit is returned."""
    result = subprocess.run(_command(args, meta_dir, database), capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **env} if env else None)  # fmt: skip
    if check and result.returncode != 0:
        raise AdminFailed(f"apollo admin failed with exit status {result.returncode}: {_shown(result)}", result)
    return result


def admin(*args: str | Path, meta_dir: str | Path | None = None, database: str | None = None,
          timeout: float = TIMEOUT_S, env: Mapping[str, str] | None = None) -> str:  # fmt: skip
    """Run ``apollo admin ARGS``; its stdout. A non-zero exit raises ``AdminFailed`` with stderr in the message."""
    return run_admin(*args, meta_dir=meta_dir, database=database, timeout=timeout, env=env, check=True).stdout


def admin_refused(*args: str | Path, meta_dir: str | Path | None = None, database: str | None = None,
                  timeout: float = TIMEOUT_S, env: Mapping[str, str] | None = None) -> str:  # fmt: skip
    """Run ``apollo admin ARGS``, which must fail; its stderr (the refusal). Success raises ``AdminFailed``."""
    result = run_admin(*args, meta_dir=meta_dir, database=database, timeout=timeout, env=env)
    if result.returncode == 0:
        raise AdminFailed(f"apollo admin succeeded where a refusal was expected: {_shown(result)}", result)
    return result.stderr
