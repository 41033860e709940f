"""What several ``apollo`` commands share: development credentials, drive patterns, sizes, the malloc setting."""

from __future__ import annotations

import argparse
import os
import re
import sys

DEV_USER = "apollo-dev"
DEV_PASSWORD = "apollo-dev-secret"


def expand_braces(pattern: str) -> list[str]:
    """``/data/d{1...6}`` -> six paths (MinIO-style ellipsis; ``..`` also accepted)."""
    match = re.search(r"\{(\d+)\.\.\.?(\d+)\}", pattern)
    if match is None:
        return [pattern]
    first, last = int(match.group(1)), int(match.group(2))
    width = len(match.group(1)) if match.group(1).startswith("0") else 0
    step = 1 if last >= first else -1
    out = []
    for n in range(first, last + step, step):
        out += expand_braces(pattern[: match.start()] + str(n).zfill(width) + pattern[match.end() :])
    return out


_SIZE = re.compile(r"\s*(\d+)\s*(?:([kmgt])(i?))?b?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``268435456``, ``64MiB`` (binary) or ``64MB`` (decimal) -> bytes, as ``--drive-reserve`` takes them."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 268435456, 64MiB, 10GB)")
    number, prefix, binary = match.groups()
    power = " kmgt".index(prefix.lower()) if prefix else 0
    return int(number) * (1024 if binary else 1000) ** power


def credentials(args: argparse.Namespace) -> tuple[str, str]:
    user = os.environ.get("APOLLO_ROOT_USER", "")
    password = os.environ.get("APOLLO_ROOT_PASSWORD", "")
    if args.dev and not (user and password):
        user, password = DEV_USER, DEV_PASSWORD
        print(f"dev mode: access key {user}  secret key {password}", flush=True)
        return user, password
    weak = len(user) < 3 or len(password) < 12 or password in (DEV_PASSWORD, "minioadmin", "password")
    if weak and not args.dev:
        sys.exit("set APOLLO_ROOT_USER (3+ chars) and APOLLO_ROOT_PASSWORD (12+ chars, not a well-known "
                 "default), or pass --dev for a development server")  # fmt: skip
    return user, password


# glibc returns every buffer above its dynamic mmap threshold to the kernel, so each EC call
# and large bytes object pays page faults: measured up to 17x slower encoding without these.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "67108864", "MALLOC_TRIM_THRESHOLD_": "134217728"}


def ensure_malloc_tuning() -> None:
    """Re-exec once with the glibc settings (they are read only at process start)."""
    if all(os.environ.get(name) for name in MALLOC_TUNING):
        return
    env = {**os.environ, **MALLOC_TUNING}
    os.execve(sys.executable, [sys.executable, "-m", "apollo", *sys.argv[1:]], env)


def address(text: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``host:`` with the defaults filled in."""
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port or default_port)
