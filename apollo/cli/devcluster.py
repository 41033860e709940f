"""``apollo dev-cluster``: a whole cluster on this machine in one command, stopped by Ctrl-C.

With ``--postgres`` it also runs PostgreSQL from Debian's packages in a temporary
directory; with ``--postgres-ha``, three PostgreSQL servers under Patroni (one etcd), a primary
and a synchronous standby, which the metadata services follow through a multi-host URL; without
either, the metadata service keeps SQLite in the data directory. Each
process logs to ``DATA/<name>.log``; the command prints the endpoints and credentials.
With ``--tls`` it makes a throwaway cluster CA and a certificate per role in ``DATA/tls``
(new ones at every start) and runs every role with ``--certs``: mutual TLS between the
roles, HTTPS for S3 clients; it prints what a client needs to connect.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

if TYPE_CHECKING:
    from apollo.testing.cluster import LocalCluster

CERT_DAYS = 30  # the throwaway CA's and certificates' lifetime: longer than any development session


def cmd_dev_cluster(args: argparse.Namespace) -> None:
    from apollo.testing.cluster import LocalCluster

    root = Path(args.data).resolve()
    if args.fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    postgres = _start_postgres(args)
    database = postgres.create_database("apollo") if postgres is not None else str(root / "meta.db")
    cluster = LocalCluster(root, database, nodes=args.nodes, drives=args.drives, metas=args.metas,
                           gateways=args.gateways, ec=args.ec, tls=args.tls, cert_days=CERT_DAYS)  # fmt: skip
    stop = False

    def interrupt(signum, frame) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        cluster.start()
        print(f"Apollo dev cluster in {root}  (logs: {root}/*.log)")
        print(f"  metadata   {cluster.meta_urls}  ({'PostgreSQL ' + database if postgres else 'SQLite ' + database})")
        if args.postgres_ha:
            print(f"  Patroni    {postgres.root}  (members {', '.join(m.name for m in postgres.members)}; "
                  f"REST http://127.0.0.1:{postgres.members[0].rest_port}/cluster; patronictl -c "
                  f"{postgres.members[0].config} list)")  # fmt: skip
        for node in cluster.nodes:
            print(f"  storage    {node.endpoint}  {node.name}")
        for gateway in cluster.gateways:
            print(f"  S3         {gateway.endpoint}")
        print(f"  access key {DEV_ACCESS_KEY}  secret key {DEV_SECRET_KEY}")
        _print_clients(cluster)
        print("Ctrl-C stops everything.", flush=True)
        reported: set[str] = set()
        while not stop:
            dead = {p.name for p in cluster.processes if not p.alive()} - reported
            if dead:
                print(f"stopped: {', '.join(sorted(dead))} (see its log)", file=sys.stderr, flush=True)
                reported |= dead
            time.sleep(0.5)
    finally:
        cluster.stop()
        if postgres is not None:
            postgres.destroy()
        print("dev cluster stopped")


def _start_postgres(args: argparse.Namespace):
    """The metadata database server the flags ask for (one PostgreSQL, or three under Patroni), or None."""
    if not (args.postgres or args.postgres_ha):
        return None
    from apollo.testing.patroni import TempPatroniCluster
    from apollo.testing.postgres import TempPostgres

    try:
        return TempPatroniCluster(members=3).start() if args.postgres_ha else TempPostgres(durable=True).start()
    except RuntimeError as exc:
        sys.exit(f"dev-cluster {'--postgres-ha' if args.postgres_ha else '--postgres'}: {exc}")


def _print_clients(cluster: LocalCluster) -> None:
    """How a native client (and, under TLS, an S3 client) connects."""
    keys = f"{cluster.meta_urls!r}, {DEV_ACCESS_KEY!r}, {DEV_SECRET_KEY!r}"
    if cluster.certs is None:
        print(f"  native     apollo.client.Client({keys})")
        return
    certs = cluster.client_certs
    print(f"  TLS        mutual between roles; cluster CA {cluster.ca_file}; each role's --certs in {certs.parent}/")
    print(f"  client     certificate {certs}/public.crt, key {certs}/private.key, CA {certs}/CAs/ca.crt")
    print(f"  native     apollo.client.Client({keys}, certs={str(certs)!r})  (or APOLLO_CERTS={certs})")
    print(f"  aws cli    aws --endpoint-url {cluster.gateways[0].endpoint if cluster.gateways else 'https://...'} "
          f"--ca-bundle {cluster.ca_file} s3 ls")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dev-cluster", help="run a whole local cluster (meta, storage nodes, gateway) until Ctrl-C")
    parser.add_argument("--nodes", type=int, default=6, help="storage nodes (default 6)")
    parser.add_argument("--drives", type=int, default=2, help="directory drives per node (default 2)")
    parser.add_argument("--metas", type=int, default=1, help="metadata services (more need PostgreSQL)")
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument("--ec", default="4+2")
    parser.add_argument("--postgres", action="store_true", help="metadata in a throwaway PostgreSQL server")
    parser.add_argument("--postgres-ha", action="store_true",
                        help="metadata in 3 PostgreSQL servers under Patroni, one a synchronous standby")  # fmt: skip
    parser.add_argument("--data", default="apollo-dev-cluster", help="directory for drives and logs")
    parser.add_argument("--fresh", action="store_true", help="delete the data directory first")
    parser.add_argument("--tls", action="store_true",
                        help="mutual TLS between the roles, HTTPS for S3; a throwaway CA in DATA/tls")  # fmt: skip
    parser.set_defaults(func=cmd_dev_cluster)
