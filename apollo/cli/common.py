"""What several ``apollo`` commands share: development credentials, drive patterns, sizes, the malloc setting,
and how an admin command finds and opens the metadata."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from apollo import errors, limits

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


def add_manager_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of the processes that may hold the manager lease: ``apollo server`` and ``apollo meta``."""
    parser.add_argument("--gc-delay", type=float, default=limits.gc_deleted_data_delay_s,
                        help="seconds before data of deleted versions is removed")  # fmt: skip
    parser.add_argument("--txn-ttl-min", type=float, default=limits.txn_ttl_s_min, metavar="SECONDS",
                        help="the shortest lifetime granted to a transaction over many objects (default 60; "
                             "tests use less)")  # fmt: skip
    parser.add_argument("--upload-expiry", type=float, default=limits.upload_expiry_s_default,
                        help="abort multipart uploads unfinished after this many seconds (default 7 days)")  # fmt: skip
    parser.add_argument("--drive-reserve", type=parse_size, default=limits.drive_free_bytes_min, metavar="SIZE",
                        help="free space kept on every drive: bytes, or 64MiB, 10GB (default 256MiB)")  # fmt: skip
    parser.add_argument("--manager-lease", type=float, default=limits.manager_lease_ttl_s_default, metavar="SECONDS",
                        help="lifetime of the manager lease: how soon another process takes over background "
                             "work (repair, GC, rebalance) from one that died")  # fmt: skip


def add_writer_flags(parser: argparse.ArgumentParser, ec_help: str, ec_default: str | None = None) -> None:
    """Flags of the processes that write objects for S3 clients: ``apollo server`` and ``apollo gateway``."""
    parser.add_argument("--ec", default=ec_default, help=ec_help)
    parser.add_argument("--cell-size", type=int, default=limits.cell_size_bytes_default)
    parser.add_argument("--domain", help="enable virtual-host-style addressing under this domain")
    parser.add_argument("--write-quorum", type=int, metavar="N",
                        help="shards durable before a write is acknowledged (default and minimum k+1)")  # fmt: skip
    parser.add_argument("--client-timeout", type=float, default=limits.s3_client_stall_s_default, metavar="SECONDS",
                        help="cut off a client that sends no byte of its request body, or takes no byte of a "
                             "response, for this long (default 20)")  # fmt: skip
    parser.add_argument("--max-requests-per-key", type=int, default=limits.s3_requests_per_key_max_default,
                        metavar="N", help="S3 requests one access key may have in progress on this process; "
                                          "more are answered 503 SlowDown (default 256)")  # fmt: skip
    parser.add_argument("--max-requests", type=int, default=limits.s3_requests_max_default, metavar="N",
                        help="S3 requests in progress on this process; more are answered 503 SlowDown "
                             "(default 1024)")  # fmt: skip


def client_limits(args: argparse.Namespace) -> limits.ClientLimits:
    """The flags of ``add_writer_flags`` that bound what clients may hold."""
    if args.client_timeout <= 0 or args.max_requests_per_key < 1 or args.max_requests < 1:
        sys.exit("--client-timeout must be positive, --max-requests-per-key and --max-requests at least 1")
    return limits.ClientLimits(args.client_timeout, args.max_requests_per_key, args.max_requests)


# What --certs means, per kind of process (MinIO's layout; docs/security.md, "TLS between roles").
_CERTS_HELP = {
    "front door": (
        "serve HTTPS only, with DIR/public.crt (certificate, then any chain) and DIR/private.key (PEM, "
        "unencrypted); reloaded on SIGHUP and when the files change"
    ),
    "gateway": (
        "serve S3 over HTTPS only, with DIR/public.crt (certificate, then any chain) and DIR/private.key "
        "(PEM, unencrypted), asking S3 clients for no certificate; with the cluster CA in DIR/CAs/*.crt, "
        "call the metadata service and storage nodes over mutual TLS, presenting DIR/public.crt and "
        "trusting that CA only; reloaded on SIGHUP and when the files change"
    ),
    "role": (
        "mutual TLS: serve HTTPS only, with DIR/public.crt and DIR/private.key (PEM, unencrypted), to "
        "peers with a certificate of the cluster CA in DIR/CAs/*.crt (required); calls to other roles "
        "present DIR/public.crt and trust that CA only; reloaded on SIGHUP and when the files change"
    ),
}


def add_certs_flag(parser: argparse.ArgumentParser, kind: str = "front door") -> None:
    """``--certs DIR`` (MinIO's layout, ``apollo.client.tls``) of a ``kind`` of process: ``front door``
    (``apollo server``), ``gateway``, or ``role`` (``apollo meta``, ``apollo storage``: mutual TLS)."""
    parser.add_argument("--certs", type=Path, metavar="DIR", help=_CERTS_HELP[kind])


def add_process_flags(parser: argparse.ArgumentParser, dev_help: str) -> None:
    """Flags of every long-running ``apollo`` process."""
    parser.add_argument("--dev", action="store_true", help=dev_help)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--max-connections", type=int, default=0, metavar="N",
                        help="connections this process holds open (idle keep-alives too); more are closed as they "
                             "arrive (default: half its file-descriptor limit, which it raises to the hard limit)")


def admin_store(args: argparse.Namespace):
    """The metadata store, or exit with one line saying why it cannot be opened (a PostgreSQL server that
    asks for a password nobody gave: PGPASSWORD) rather than a page of connection-pool traceback."""
    from apollo.roles.server import open_store

    try:
        if getattr(args, "database", None):
            return open_store(database=args.database)
        return open_store(Path(args.meta_dir))
    except errors.MetadataUnavailable as exc:
        sys.exit(f"error: {exc}")


def where_arguments(parser: argparse.ArgumentParser) -> None:
    """The metadata to work on: an all-in-one server's directory, or a cluster's database."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--meta-dir", help="the metadata directory of an all-in-one server")
    where.add_argument("--database", help="a cluster's metadata database (postgresql://...)")


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""
