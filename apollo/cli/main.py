"""``apollo`` command line: the all-in-one server, the cluster roles and admin subcommands."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
from pathlib import Path

from apollo import __version__, limits
from apollo.cli import admin_cluster, admin_kv, admin_meta, admin_txns, admin_users, devcluster, roles
from apollo.cli.common import (
    add_certs_flag,
    add_manager_flags,
    add_process_flags,
    add_writer_flags,
    client_limits,
    credentials,
    ensure_malloc_tuning,
    expand_braces,
)
from apollo.errors import MetadataUnavailable
from apollo.proto.layout import Scheme

DEFAULT_DATA = Path("apollo-data")


def cmd_server(args: argparse.Namespace) -> None:
    from apollo.roles.server import ServerConfig, run

    ensure_malloc_tuning()
    drives = [Path(p) for pattern in args.drives for p in expand_braces(pattern)]
    create_missing = args.dev or not drives  # a missing directory elsewhere is a disk that did not mount
    if not drives:
        drives = [DEFAULT_DATA / f"drive{n}" for n in range(1, 7)]
    meta_dir = Path(args.meta_dir) if args.meta_dir else drives[0].resolve().parent / "apollo-meta"
    if any(meta_dir.resolve() == d.resolve() or d.resolve() in meta_dir.resolve().parents for d in drives):
        sys.exit("--meta-dir must not be inside a drive: losing that drive would lose the metadata")
    if args.meta:
        print("apollo server --meta is now --database (--meta names metadata services elsewhere): the old "
              "name will go", file=sys.stderr)  # fmt: skip
    database = args.database or args.meta
    if database:
        if not database.startswith(("postgresql://", "postgres://")):
            sys.exit("--database takes a PostgreSQL URL (postgresql://user@host:port/database); "
                     "SQLite needs no flag (--meta-dir)")  # fmt: skip
        if args.worker_index is None:  # the supervisor wrote it for its workers
            from apollo.meta.location import remember_meta_url

            remember_meta_url(meta_dir, database)
    host, _, port = args.address.rpartition(":")
    user, password = credentials(args)
    config = ServerConfig(
        drives=drives, meta_dir=meta_dir, host=host or "127.0.0.1", port=int(port),
        scheme=Scheme.parse(args.ec) if args.ec else None, cell_size=args.cell_size, domain=args.domain,
        root_user=user, root_password=password, gc_delay_s=args.gc_delay, txn_ttl_min_s=args.txn_ttl_min,
        drive_reserve_bytes=args.drive_reserve,
        upload_expiry_s=args.upload_expiry, journal_checkpoint_interval_s=args.journal_checkpoint_interval,
        manager_lease_ttl_s=args.manager_lease, write_quorum=args.write_quorum, client_limits=client_limits(args),
        create_missing_drives=create_missing,
        worker_index=args.worker_index, listen_fd=args.listen_fd, owner=args.owner_id, advertise=args.advertise,
        certs=args.certs, max_connections=args.max_connections,
    )  # fmt: skip
    if args.workers < 1:
        sys.exit("--workers must be at least 1")
    if args.manager_lease < 1:
        sys.exit("--manager-lease must be at least 1 second")
    if args.journal_checkpoint_interval <= 0:
        sys.exit("--journal-checkpoint-interval must be positive")
    if args.workers > 1 and args.worker_index is None:
        from apollo.roles.workers import run_workers

        run_workers(config, sys.argv[2:], args.workers)  # argv after "apollo server"
        return
    run(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apollo", description="Apollo Storage")
    parser.add_argument("--version", action="version", version=f"apollo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("server", help="run the all-in-one S3 server")
    server.add_argument("drives", nargs="*",
                        help="drive directories (brace ranges like /data/d{1...6} expand); each must exist (a "
                             "missing one is a disk that did not mount), except with --dev")  # fmt: skip
    server.add_argument("--address", default="127.0.0.1:9000")
    server.add_argument("--advertise", metavar="URL",
                        help="URL native clients reach this server at (default http://ADDRESS, "
                             "https:// with --certs)")  # fmt: skip
    add_certs_flag(server)
    server.add_argument("--meta-dir", help="metadata directory (default: apollo-meta beside the drives)")
    server.add_argument("--database", metavar="URL",
                        help="keep the metadata in PostgreSQL at this URL instead of SQLite in --meta-dir; "
                             "remembered in --meta-dir for later starts and admin commands")  # fmt: skip
    server.add_argument("--meta", metavar="URL", help="the old name of --database (deprecated)")
    add_writer_flags(server, "erasure code K+M (or repN); default follows the drive count")
    add_manager_flags(server)
    server.add_argument("--journal-checkpoint-interval", type=float, metavar="SECONDS",
                        default=limits.journal_checkpoint_interval_s_default,
                        help="copy the metadata database to the journal drives this often (default 3600)")  # fmt: skip
    add_process_flags(server, "development mode: allow/print dev credentials")
    server.add_argument("--workers", type=int, default=1,
                        help="server processes sharing the port (one core each; see docs/benchmarks.md)")  # fmt: skip
    for hidden in ("--worker-index", "--listen-fd"):  # set by the supervisor of --workers for its workers
        server.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    server.add_argument("--owner-id", help=argparse.SUPPRESS)
    server.set_defaults(func=cmd_server)
    roles.register(sub)
    devcluster.register(sub)
    admin = sub.add_parser("admin", help="administration").add_subparsers(dest="admin", required=True)
    admin_users.register(admin)
    admin_meta.register(admin)
    admin_cluster.register(admin)
    admin_txns.register(admin)
    admin_kv.register(admin)
    return parser


def main(argv: list[str] | None = None) -> None:
    # Everything an Apollo process writes is its own: the metadata database, its WAL, backups and
    # checkpoints hold every secret key; shard files hold users' data (``make_private`` for old files).
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        args.func(args)
    except MetadataUnavailable as exc:  # the database refused or is away: one line saying so, not a traceback
        sys.exit(f"apollo {args.command}: {exc}")


if __name__ == "__main__":
    main()
