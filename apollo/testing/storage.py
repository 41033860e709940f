"""Storage node processes for tests: real ``apollo.storage.service`` apps on loopback ports.

Until the cluster map hands storage nodes their deployment and token keys, a test gives
them both: the keyring in a JSON file, the deployment on the command line. Everything
else is the production code path: drives formatted and opened as the server does,
shards served over HTTP, tokens checked by the node.

    python -m apollo.testing.storage --port P --deployment D --keyring FILE DRIVE...
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from apollo import tokens
from apollo.testing.server import free_port


def write_keyring(path: Path, keyring: tokens.Keyring) -> None:
    path.write_text(json.dumps([{"key_id": k.key_id, "secret": k.secret.hex(), "created": k.created}
                                for k in keyring.by_age()]))  # fmt: skip


def read_keyring(path: Path) -> tokens.Keyring:
    return tokens.Keyring([tokens.TokenKey(k["key_id"], bytes.fromhex(k["secret"]), k["created"])
                           for k in json.loads(path.read_text())])  # fmt: skip


class StorageNodeProcess:
    """Start, kill -9, SIGSTOP/SIGCONT and restart one storage node serving ``drives`` directories."""

    def __init__(self, root: Path, deployment_id: str, keyring_file: Path, drives: int = 1) -> None:
        self.root = Path(root)
        self.drives = [self.root / f"drive{n}" for n in range(1, drives + 1)]
        self.deployment_id = deployment_id
        self.keyring_file = keyring_file
        self.port = free_port()
        self.log_path = self.root / "storage.log"
        self.ids_path = self.root / "drive-ids.json"
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drive_ids(self) -> list[str]:
        return json.loads(self.ids_path.read_text())

    def start(self, timeout_s: float = 20.0) -> StorageNodeProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "apollo.testing.storage", "--port", str(self.port), "--deployment",
                self.deployment_id, "--keyring", str(self.keyring_file), "--ids", str(self.ids_path),
                *map(str, self.drives)]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"storage node exited with {self.process.returncode}: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health/live", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"storage node not up after {timeout_s}s")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: the node hangs (its sockets stay open, nothing answers), the case timeouts are for."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def main() -> None:
    from aiohttp import web

    from apollo.storage.drive import format_drive, read_format
    from apollo.storage.node import LocalStorageNode
    from apollo.storage.service import build_storage_app

    parser = argparse.ArgumentParser()
    parser.add_argument("drives", nargs="+", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deployment", required=True)
    parser.add_argument("--keyring", type=Path, required=True)
    parser.add_argument("--ids", type=Path, required=True)
    args = parser.parse_args()
    for root in args.drives:
        root.mkdir(parents=True, exist_ok=True)
        if read_format(root) is None:
            format_drive(root, args.deployment)
    node = LocalStorageNode.open(args.drives, args.deployment)
    for drive in node.drives.values():
        drive.clear_tmp()  # writes this node never finished: their clients saw them fail
    tmp = args.ids.with_suffix(".tmp")
    tmp.write_text(json.dumps(node.drive_ids()))
    os.replace(tmp, args.ids)
    web.run_app(build_storage_app(node, read_keyring(args.keyring)), host="127.0.0.1", port=args.port,
                print=None, handle_signals=True)  # fmt: skip


if __name__ == "__main__":
    main()
