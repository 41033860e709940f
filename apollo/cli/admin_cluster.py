"""``apollo admin drive|node|status|scrub|repair``: drive lifecycle and self-healing, for operators.

Every command works on the metadata directory (``--meta-dir``) while the server
runs; the server applies changes within seconds. ``--wait`` follows the work
with a progress bar (rate and ETA) until it is done. Drive paths take the brace
ranges ``apollo server`` takes (``/mnt/disk{7...9}``), expanded by the same function.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from apollo.cli.common import admin_store, expand_braces, size_text, where_arguments
from apollo.client.tls import CERTS_ENV, CertError, environment_context
from apollo.cluster import admin
from apollo.cluster.tuning import parse_rate
from apollo.proto.cluster_map import NODE_NAME

POLL_S = 0.5
console = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes get whole lines


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def _follow(
    description: str,
    poll: Callable[[], tuple[int, int, bool]],
    unit: str = "shards",
    timeout: float | None = None,
    since: float | None = None,
) -> None:
    """Show a progress bar (done/total, rate, elapsed, ETA) for ``poll() -> (done, total, finished)``.

    Exits with status 1 after ``timeout`` seconds (counted from ``since``, a ``time.monotonic()``, when one wait
    is shown as several bars): a repair that cannot finish (no drive to rebuild onto, too few good shards) must
    not hang a script forever; the work itself goes on.
    """
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn()]  # fmt: skip
    started = time.monotonic()
    since = started if since is None else since
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(description, total=None, rate="")
        while True:
            done, total, finished = poll()
            elapsed = time.monotonic() - started
            rate = f"{done / max(1e-6, elapsed):.1f} {unit}/s"
            progress.update(task, completed=done, total=(max(total, done) or None), rate=rate)
            if finished:
                progress.update(task, completed=total, total=total or 1)
                return
            if timeout is not None and time.monotonic() - since > timeout:
                progress.stop()
                sys.exit(f"{description}: not done after {timeout:.0f} s ({done} of {total} {unit}); it goes on in "
                         "the background: see `apollo admin status` and the server log")  # fmt: skip
            time.sleep(POLL_S)


def _follow_drives(store, drive_ids: list[str], description: str, timeout: float | None) -> None:
    """Until every drive's shards are copied off (or rebuilt elsewhere), then until every drive is retired.

    The copies end a few seconds before the drive is retired (the lease holder retires it on its next look,
    after writes in flight and its deleted data are settled), and only a retired drive may be removed: a
    ``--wait`` that returned at the last copy made the documented "drain, stop, remove" fail at remove.
    """
    started = time.monotonic()

    def copied() -> tuple[int, int, bool]:
        jobs = {j.drive_id: j for j in store.drive_jobs(active_only=False) if j.drive_id in drive_ids}
        done = total = 0
        finished = True
        for drive_id in drive_ids:
            job, remaining = jobs.get(drive_id), store.pending_repairs_on(drive_id)
            queued = job.queued if job else remaining
            done, total = done + queued - remaining, total + queued
            finished = finished and (job is None or job.finished > 0) and remaining == 0
        return done, total, finished

    def retired() -> tuple[int, int, bool]:
        left = len(admin.unretired(store, drive_ids))
        return len(drive_ids) - left, len(drive_ids), left == 0

    _follow(description, copied, timeout=timeout, since=started)
    _follow(f"{description}: retiring", retired, unit="drives", timeout=timeout, since=started)


def _one(pattern: str, what: str) -> str:
    """The single drive a brace pattern names, for the commands that take exactly one."""
    names = expand_braces(pattern)
    if len(names) != 1:
        sys.exit(f"error: {what} takes one drive, and {pattern!r} names {len(names)}")
    return names[0]


def cmd_drive(args: argparse.Namespace) -> None:
    if args.database and args.action in ("add", "replace"):
        sys.exit("in a cluster, drives join with their storage node (apollo storage DIR...): start the node "
                 "with the new directory; a dead node's drives fail and are rebuilt after "
                 "drive_offline_grace_s")  # fmt: skip
    store = admin_store(args)
    try:
        if args.action == "list":
            _print_drives(store)
            return
        if args.drive is None:
            sys.exit(f"apollo admin drive {args.action}: say which drive (id or path)")
        names = expand_braces(args.drive)  # as `apollo server` expands its drive list
        if args.action == "add":
            for record in admin.add_drives(store, [Path(name) for name in names], args.weight):
                print(f"added drive {record.drive_id} at {record.path}; the server attaches it within seconds")
        elif args.action == "replace":
            new_path = Path(_one(args.new_path, "replace")) if args.new_path else None
            old, new = admin.replace_drive(store, _one(args.drive, "replace"), new_path)
            if old.state == "retired":
                print(f"drive {old.drive_id} was retired already (its shards were rebuilt elsewhere); drive "
                      f"{new.drive_id} at {new.path} is added in its place, and the rebalancer fills it")  # fmt: skip
            else:
                how = "copied" if old.state == "draining" else "rebuilt"
                print(f"drive {new.drive_id} at {new.path} replaces {old.drive_id}; its shards are {how} onto it")
            if args.wait:
                _follow_drives(store, [old.drive_id], f"drive {old.drive_id}", args.timeout)
        elif args.action == "drain":
            records = admin.drain_drives(store, names, force=args.force)
            for record in records:
                print(f"draining drive {record.drive_id} ({record.path}); it is retired once empty")
            if args.wait:
                what = f"drive {records[0].drive_id}" if len(records) == 1 else f"{len(records)} drives"
                _follow_drives(store, [r.drive_id for r in records], what, args.timeout)
        elif args.action == "remove":
            for record in admin.remove_drives(store, names):
                print(f"removed drive {record.drive_id} ({record.path}) from the cluster map")
    except admin.AdminError as exc:
        sys.exit(f"error: {exc}")


def _print_drives(store, status: admin.Status | None = None) -> None:
    """The drive table; in a cluster with the node (and rack, when racks are labelled) of each drive, since
    every host has its /mnt/disk1."""
    status = status or admin.status(store)
    racks = {n.name: n.rack for n in status.nodes}
    where = ["node", "rack"] if any(racks.values()) else ["node"] if status.clustered else []
    table = Table(title="drives")
    for column in ("drive", *where, "path", "state", "since", "used", "free", "to repair", "replaced by"):
        table.add_column(column)
    for d in status.drives:
        used = f"{100 * (1 - d.free_bytes / d.total_bytes):.1f}%" if d.total_bytes else "-"
        located = [d.node, racks.get(d.node, "")][: len(where)]
        table.add_row(d.drive_id, *located, d.path, d.state, _when(d.state_since), used, size_text(d.free_bytes),
                      str(status.pending_by_drive.get(d.drive_id, 0)), d.replaced_by or "")  # fmt: skip
    console.print(table)


def _print_nodes(status: admin.Status) -> None:
    """Storage nodes: name, endpoint, rack, alive by heartbeat, last heartbeat, drives by state."""
    table = Table(title="storage nodes")
    for column in ("node", "endpoint", "rack", "alive", "last heartbeat", "drives"):
        table.add_column(column)
    for node in status.nodes:
        states: dict[str, int] = {}
        for d in status.drives:
            if d.node == node.name:
                states[d.state] = states.get(d.state, 0) + 1
        drives = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
        table.add_row(node.name, node.endpoint, node.rack or "-", "yes" if node.alive else "NO",
                      _when(node.heartbeat), drives)  # fmt: skip
    console.print(table)


def _print_processes(status: admin.Status) -> None:
    """One line per server (all-in-one) or storage node: does it answer, which version, since when. Nodes under
    mutual TLS answer only a client with a certificate of the cluster CA: ``APOLLO_CERTS``, as native clients."""
    try:
        context = environment_context()
    except CertError as exc:
        sys.exit(f"apollo admin status: {CERTS_ENV}: {exc}")
    for node in status.nodes:
        found = admin.probe(node.endpoint, ssl_context=context)
        name = "server" if node.name == NODE_NAME else f"node {node.name}"
        if not found.answering:
            console.print(f"{name} {node.endpoint}: NOT ANSWERING ({found.error}); last heartbeat "
                          f"{_when(node.heartbeat)}")  # fmt: skip
            continue
        up = f", up {_duration(time.time() - found.started)}" if found.started else ""
        console.print(f"{name} {node.endpoint}: answering, Apollo {found.version or '?'}{up}")
    if not status.nodes:
        console.print("server: none has registered yet (start `apollo server`)")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min" if minutes else f"{int(seconds)} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} days {hours % 24} h"


def cmd_status(args: argparse.Namespace) -> None:
    store = admin_store(args)
    status = admin.status(store)
    _print_processes(status)
    versions, logical = store.stored_totals()
    console.print(f"stored: {versions} objects (versions, delete markers not counted), {size_text(logical)}; "
                  f"scheme {status.scheme}")  # fmt: skip
    _print_drives(store, status)
    used, total, online, filesystems = status.capacity()
    shared = f" (on {filesystems} filesystems, each counted once)" if filesystems < online else ""
    console.print(f"capacity: {size_text(used)} used of {size_text(total)} on {online} online drives{shared}; "
                  f"{status.segments} segments")  # fmt: skip
    repair = status.repair
    console.print(f"repair: backlog {repair['backlog_now']} shards, {repair.get('degraded_groups', 0)} degraded "
                  f"groups, rate {size_text(repair.get('bytes_per_s', 0))}/s, "
                  f"{size_text(repair.get('bytes_total', 0))} "
                  f"rebuilt since start (limit {size_text(status.tuning.repair_bytes_per_s)}/s)")  # fmt: skip
    _print_spread(status)
    for job in status.jobs:
        walking = f"walking group {job.cursor_pg}" if job.cursor_pg >= 0 else "starting its walk"
        state = f"done {_when(job.finished)}" if job.finished else walking
        console.print(f"drive job: {job.kind} {job.drive_id}: {job.queued} shards queued, "
                      f"{status.pending_by_drive.get(job.drive_id, 0)} left, {state}")  # fmt: skip
    current, last = status.scrub.get("current"), status.scrub.get("last")
    if current:
        console.print(f"scrub: {current['mode']} pass started {_when(current['started'])}: "
                      f"{current['segments']}/{current['total']} segments, {size_text(current['bytes'])} read, "
                      f"{current['errors']} problems")  # fmt: skip
    if last:
        console.print(f"last scrub: {last['mode']} {_when(last['started'])} - {_when(last['finished'])}: "
                      f"{last['segments']} segments, {last['shards']} shards, {size_text(last['bytes'])}, "
                      f"{last['errors']} problems")  # fmt: skip
    console.print(f"scrub every {status.tuning.scrub_interval_s / 3600:.1f} h ({status.tuning.scrub_mode}, "
                  f"limit {size_text(status.tuning.scrub_bytes_per_s)}/s)")  # fmt: skip
    shard_bytes = round(logical * status.scheme.width / status.scheme.k)  # what a deep pass reads
    hours, behind = status.scrub_projection(shard_bytes)
    if behind:
        interval_h = status.tuning.scrub_interval_s / 3600
        console.print(f"WARNING: a scrub pass reads about {size_text(shard_bytes)} of shards: {hours:.1f} h at "
                      f"{size_text(status.tuning.scrub_bytes_per_s)}/s, longer than the {interval_h:.1f} h interval; "
                      "raise the rate (`apollo admin scrub --rate ...`) or the interval")  # fmt: skip
    sweep = admin.pass_state(store, "orphans").get("last")
    if sweep:
        console.print(f"last orphan sweep: {_when(sweep['started'])}: {sweep['files']} shard files checked, "
                      f"{sweep['orphans']} orphans deleted")  # fmt: skip
    for step in status.next_steps():
        console.print(f"NEXT: {step}")


def _print_spread(status: admin.Status) -> None:
    """Segments at risk (a failure domain holds more of their shards than the live domains force), as the
    rebalancer last counted them, and a warning when the live domains are too few for the scheme at all."""
    at_risk, measured = status.repair.get("at_risk"), status.repair.get("at_risk_measured")
    if at_risk is None:
        console.print("spread: segments at risk not counted yet (the rebalancer counts them on each pass; "
                      "`apollo admin rebalance --now` starts one)")  # fmt: skip
    else:
        fixing = ", being moved off their crowded domains" if at_risk else ""
        console.print(f"spread: {at_risk} segments at risk (more shards in one failure domain than the live "
                      f"domains force{fixing}), counted {_when(measured)}")  # fmt: skip
    if status.shortfall:
        console.print(f"WARNING: {status.shortfall}")


def _request_and_follow(
    store, name: str, done: str, total: Callable[[dict], int], unit: str, args: argparse.Namespace
) -> dict:
    """Ask for a pass of ``name`` now; with ``wait``, follow it to the end and return its final state."""
    requested = admin.request_pass(store, name)
    print(f"{name} pass requested")
    if not args.wait:
        return {}

    def poll() -> tuple[int, int, bool]:
        # A pass serving a later request (a drive came or went meanwhile, another operator asked) started
        # after ours was written, so it serves ours too; waiting for our exact timestamp could wait forever.
        state = admin.pass_state(store, name)
        current, last = state.get("current") or {}, state.get("last", {})
        if last.get("request", 0.0) >= requested:
            return last[done], total(last), True
        if current.get("request", 0.0) >= requested:
            return current[done], total(current), False
        return 0, 0, False

    _follow(name, poll, unit=unit, timeout=args.timeout)
    return admin.pass_state(store, name)["last"]


def cmd_scrub(args: argparse.Namespace) -> None:
    store = admin_store(args)
    tuning = admin.set_tuning(store, scrub_bytes_per_s=args.rate, scrub_mode=args.mode, scrub_interval_s=args.interval)
    print(f"scrub: {tuning.scrub_mode}, every {tuning.scrub_interval_s:.0f} s, "
          f"limit {size_text(tuning.scrub_bytes_per_s)}/s")  # fmt: skip
    if args.now:
        last = _request_and_follow(store, "scrub", "segments", lambda s: s["total"], "segments", args)
        if last:
            print(f"scrub done: {last['segments']} segments, {last['shards']} shards, {last['errors']} problems")


def cmd_sweep(args: argparse.Namespace) -> None:
    if args.admin == "gc":
        print("apollo admin gc is now apollo admin sweep (it sweeps orphan shard files; the garbage collector "
              "runs on its own): the old name will go", file=sys.stderr)  # fmt: skip
    store = admin_store(args)
    tuning = admin.set_tuning(store, orphan_interval_s=args.interval, orphan_min_age_s=args.min_age)
    print(f"orphan sweep: every {tuning.orphan_interval_s:.0f} s, files younger than "
          f"{tuning.orphan_min_age_s:.0f} s are kept")  # fmt: skip
    if args.now:
        last = _request_and_follow(store, "orphans", "drive", lambda s: len(s["drives"]), "drives", args)
        if last:
            print(f"orphan sweep done: {last['files']} shard files checked, {last['orphans']} orphans deleted "
                  f"({size_text(last['bytes_freed'])})")  # fmt: skip


def cmd_rebalance(args: argparse.Namespace) -> None:
    store = admin_store(args)
    tuning = admin.set_tuning(store, rebalance_interval_s=args.interval, rebalance_tolerance=args.tolerance)
    print(f"rebalance: every {tuning.rebalance_interval_s:.0f} s and when drives come or go, "
          f"tolerance {100 * tuning.rebalance_tolerance:.1f}%")  # fmt: skip
    if args.now:
        segments = store.segment_count()
        last = _request_and_follow(store, "rebalance", "segments", lambda _: segments, "segments", args)
        if last:
            print(f"rebalance planned {last['moves']} moves; spread {100 * last['spread']:.1f}%")
            _follow_backlog(store, args.timeout)


def _follow_backlog(store, timeout: float | None) -> None:
    start = store.repair_backlog()
    if start == 0:
        print("repair queue is empty")
        return

    def poll() -> tuple[int, int, bool]:
        backlog = store.repair_backlog()
        return max(0, start - backlog), start, backlog == 0

    _follow("repair", poll, timeout=timeout)


def cmd_repair(args: argparse.Namespace) -> None:
    store = admin_store(args)
    paused = None if args.pause is None else int(args.pause)
    tuning = admin.set_tuning(store, repair_bytes_per_s=args.rate, repair_ops_per_s=args.iops,
                              repair_parallel=args.parallel, repair_paused=paused)  # fmt: skip
    print(f"repair: {'PAUSED, ' if tuning.repair_paused else ''}limit {size_text(tuning.repair_bytes_per_s)}/s, "
          f"{tuning.repair_ops_per_s:.0f} ops/s, {tuning.repair_parallel} segments at a time")  # fmt: skip
    if args.wait:
        _follow_backlog(store, args.timeout)


def cmd_node(args: argparse.Namespace) -> None:
    """Take a storage node out of a cluster for good: drain it, stop it, remove it."""
    store = admin_store(args)
    if args.action == "list":
        _print_nodes(admin.status(store))
        return
    if not args.node:
        sys.exit(f"error: node {args.action} needs the node's name (`apollo admin node list` shows them)")
    try:
        if args.action == "drain":
            drives = admin.drain_node(store, args.node, force=args.force, follow=args.wait)
            if drives:
                print(f"draining {len(drives)} drives of {args.node}; they are retired once empty, then stop the "
                      f"node and `apollo admin node remove {args.node}`")  # fmt: skip
            if args.wait:
                _follow_drives(store, [d.drive_id for d in drives], f"node {args.node}", args.timeout)
                print(f"every drive of {args.node} is retired: stop `apollo storage` on it, then "
                      f"`apollo admin node remove {args.node}`")  # fmt: skip
        elif args.action == "remove":
            drives = admin.remove_node(store, args.node)
            print(f"removed node {args.node} and its {len(drives)} drives from the cluster map")
    except admin.AdminError as exc:
        sys.exit(f"error: {exc}")


def cmd_tune(args: argparse.Namespace) -> None:
    store = admin_store(args)
    values = {}
    for item in args.settings:
        name, eq, value = item.partition("=")
        if not eq:
            sys.exit(f"error: expected NAME=VALUE, got {item!r}")
        values[name] = value
    try:
        tuning = admin.set_tuning(store, **values)
    except (admin.AdminError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    for name in tuning.names():
        print(f"{name} = {getattr(tuning, name)}")


def _pass_parser(admin_parsers: argparse._SubParsersAction, name: str, help_text: str, func) -> argparse.ArgumentParser:
    """A command for a periodic pass: its knobs, and --now [--wait] to run one and follow it."""
    parser = admin_parsers.add_parser(name, help=help_text)
    where_arguments(parser)
    parser.add_argument("--now", action="store_true", help="start a pass now")
    parser.add_argument("--wait", action="store_true", help="with --now: follow the pass until it ends")
    parser.add_argument("--timeout", type=float, help="with --wait: give up waiting after this many seconds")
    parser.add_argument("--interval", type=float, help="seconds between the starts of passes")
    parser.set_defaults(func=func)
    return parser


def register(admin_parsers: argparse._SubParsersAction) -> None:
    drive = admin_parsers.add_parser("drive", help="list, add, replace, drain or remove drives")
    drive.add_argument("action", choices=["list", "add", "replace", "drain", "remove"])
    drive.add_argument("drive", nargs="?", help="drive id or path (add: the new empty directory); brace ranges "
                       "like /mnt/disk{7...9} expand")  # fmt: skip
    drive.add_argument("new_path", nargs="?", help="replace: the new drive's directory (default: the old path)")
    where_arguments(drive)
    drive.add_argument("--weight", type=float, default=1.0, help="add: relative share of new shards")
    drive.add_argument("--force", action="store_true", help="drain even if too few drives would remain")
    drive.add_argument("--wait", action="store_true", help="replace/drain: follow the work until the drive is retired")
    drive.add_argument("--timeout", type=float, help="with --wait: give up waiting after this many seconds")
    drive.set_defaults(func=cmd_drive)
    node = admin_parsers.add_parser("node", help="list a cluster's storage nodes, drain one, or remove a stopped, "
                                    "drained one")  # fmt: skip
    node.add_argument("action", choices=["list", "drain", "remove"])
    node.add_argument("node", nargs="?", help="the node's name (apollo storage --name; `node list` shows them)")
    node.add_argument("--database", required=True, help="the cluster's metadata database (postgresql://...)")
    node.add_argument("--force", action="store_true", help="drain even if too few failure domains would remain")
    node.add_argument("--wait", action="store_true",
                      help="drain: follow the copying until every drive of the node is retired")  # fmt: skip
    node.add_argument("--timeout", type=float, help="with --wait: give up waiting after this many seconds")
    node.set_defaults(func=cmd_node)
    tune = admin_parsers.add_parser("tune", help="show or set background-work knobs (NAME=VALUE ...)")
    tune.add_argument("settings", nargs="*", help="e.g. drive_offline_grace_s=300 scrub_mode=shallow")
    where_arguments(tune)
    tune.set_defaults(func=cmd_tune)
    status = admin_parsers.add_parser("status", help="drives, capacity, repair and scrub at a glance")
    where_arguments(status)
    status.set_defaults(func=cmd_status)
    scrub = _pass_parser(admin_parsers, "scrub", "tune the scrubber or start a pass now", cmd_scrub)
    scrub.add_argument("--rate", type=parse_rate, help="bytes read per second, e.g. 50MiB/s (0: unlimited)")
    scrub.add_argument("--mode", choices=["deep", "shallow"])
    for name, help_text in (("sweep", "sweep the drives for orphan shard files (nothing refers to them)"),
                            ("gc", "the old name of sweep (deprecated: the garbage collector runs on its own)")):
        sweep = _pass_parser(admin_parsers, name, help_text, cmd_sweep)
        sweep.add_argument("--min-age", type=float, help="keep unreferenced files younger than this many seconds")
    rebalance = _pass_parser(admin_parsers, "rebalance", "even out drive usage by moving shards", cmd_rebalance)
    rebalance.add_argument("--tolerance", type=float, help="allowed spread around each drive's share (0.05 = 5%%)")
    repair = admin_parsers.add_parser("repair", help="tune the repair worker, or wait for the backlog to drain")
    where_arguments(repair)
    repair.add_argument("--rate", type=parse_rate, help="bytes read+written per second, e.g. 200MiB/s (0: unlimited)")
    repair.add_argument("--iops", type=float, help="shard reads+writes per second (0: unlimited)")
    repair.add_argument("--parallel", type=int, help="segments repaired at once")
    repair.add_argument("--pause", dest="pause", action="store_true", default=None,
                        help="stop rebuilding (the queue keeps filling)")  # fmt: skip
    repair.add_argument("--resume", dest="pause", action="store_false", help="rebuild again")
    repair.add_argument("--wait", action="store_true", help="follow the backlog until it is empty")
    repair.add_argument("--timeout", type=float, help="with --wait: give up waiting after this many seconds")
    repair.set_defaults(func=cmd_repair)
