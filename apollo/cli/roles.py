"""``apollo meta | storage | gateway``: the roles of a cluster, each its own process.

Credentials come from the environment, as for ``apollo server``: the metadata service
creates the root key from ``APOLLO_ROOT_USER`` / ``APOLLO_ROOT_PASSWORD``; storage nodes
and gateways sign their calls with that root key (or another root key, in
``APOLLO_ACCESS_KEY`` / ``APOLLO_SECRET_KEY``). ``--dev`` uses the development key on all.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from apollo.cli.common import (
    add_certs_flag,
    add_manager_flags,
    add_process_flags,
    add_writer_flags,
    address,
    client_limits,
    credentials,
    ensure_malloc_tuning,
    expand_braces,
)

META_HELP = "metadata service URL(s), comma-separated: http://meta1:9100,http://meta2:9100 (https:// with --certs)"


def _service_key(args: argparse.Namespace) -> tuple[str, str]:

    access = os.environ.get("APOLLO_ACCESS_KEY", "")
    secret = os.environ.get("APOLLO_SECRET_KEY", "")
    return (access, secret) if access and secret else credentials(args)


def cmd_meta(args: argparse.Namespace) -> None:
    ensure_malloc_tuning()
    from apollo.errors import MetadataUnavailable
    from apollo.roles.meta import MetaConfig, run

    host, port = address(args.address, 9100)
    user, password = credentials(args)
    try:
        run(MetaConfig(args.database, host, port, user, password, args.drive_reserve, args.manager_lease,
                       args.gc_delay, args.upload_expiry, certs=args.certs, txn_ttl_min_s=args.txn_ttl_min,
                       max_connections=args.max_connections, standby_reads=args.standby_reads))  # fmt: skip
    except MetadataUnavailable as exc:  # the database refused or is away at start: one line, not a traceback
        sys.exit(f"apollo meta: {exc}")


def cmd_storage(args: argparse.Namespace) -> None:
    ensure_malloc_tuning()
    from apollo.roles.storage import StorageConfig, run

    drives = [Path(p) for pattern in args.drives for p in expand_braces(pattern)]
    host, port = address(args.address, 9200)
    access, secret = _service_key(args)
    config = StorageConfig(drives, args.meta, access, secret, host, port, rack=args.rack,
                           advertise=args.advertise or "", certs=args.certs,
                           max_connections=args.max_connections, scrub_bytes_per_s=args.scrub_rate * 1024**2,
                           scrub_interval_s=args.scrub_interval)  # fmt: skip
    if args.name:
        config.name = args.name
    run(config)


def cmd_gateway(args: argparse.Namespace) -> None:
    ensure_malloc_tuning()
    from apollo.client.writer import write_quorum
    from apollo.proto.layout import Scheme
    from apollo.roles.gateway import GatewayConfig, run

    host, port = address(args.address, 9000)
    access, secret = _service_key(args)
    try:
        scheme = Scheme.parse(args.ec)
        write_quorum(scheme, args.write_quorum)
    except ValueError as exc:
        sys.exit(str(exc))
    run(GatewayConfig(args.meta, access, secret, host, port, scheme, args.cell_size, args.domain, args.write_quorum,
                      client_limits(args), certs=args.certs, max_connections=args.max_connections))  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:

    meta = sub.add_parser("meta", help="run a metadata service of a cluster")
    meta.add_argument("--database", required=True, help="postgresql://user@host:port/db (or a SQLite file)")
    meta.add_argument("--address", default="127.0.0.1:9100")
    meta.add_argument("--standby-reads", action="store_true",
                      help="answer lookups and listings from the PostgreSQL standbys among the URL's hosts when they "
                           "have replayed the caller's last write (read-your-writes; docs/deploy.md)")  # fmt: skip
    add_manager_flags(meta)
    add_certs_flag(meta, "role")
    meta.set_defaults(func=cmd_meta)

    storage = sub.add_parser("storage", help="run a storage node of a cluster")
    storage.add_argument("drives", nargs="+", help="drive directories (brace ranges like /data/d{1...6} expand)")
    storage.add_argument("--meta", required=True, help=META_HELP)
    storage.add_argument("--address", default="127.0.0.1:9200")
    storage.add_argument("--advertise", help="URL others reach this node at (default http://ADDRESS, "
                                              "https://ADDRESS with --certs)")  # fmt: skip
    storage.add_argument("--name", help="node name, unique in the cluster (default: the host name)")
    storage.add_argument("--rack", default="", help="failure domain above the node: shards spread over racks")
    storage.add_argument("--scrub-rate", type=float, default=32.0, metavar="MIB_PER_S",
                         help="MiB/s this node reads to verify every cell of its own drives' shards (0: no local "
                              "scrub); damaged shards are queued for repair (default 32)")  # fmt: skip
    storage.add_argument("--scrub-interval", type=float, default=7 * 24 * 3600.0, metavar="SECONDS",
                         help="a local scrub pass starts this long after the previous one started (default 7 days)")
    add_certs_flag(storage, "role")
    storage.set_defaults(func=cmd_storage)

    gateway = sub.add_parser("gateway", help="run an S3 gateway of a cluster")
    gateway.add_argument("--meta", required=True, help=META_HELP)
    gateway.add_argument("--address", default="127.0.0.1:9000")
    add_writer_flags(gateway, "erasure code K+M (or repN) of new objects", ec_default="4+2")
    add_certs_flag(gateway, "gateway")
    gateway.set_defaults(func=cmd_gateway)

    for parser in (meta, storage, gateway):
        add_process_flags(parser, "use the development access key")
