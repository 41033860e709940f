"""Operator actions on drives and background work, applied to the metadata database.

The running server picks every change up on its next probe (a couple of
seconds): a new drive row is attached and formatted drives take shards, a
draining or failed drive is walked and its shards are queued for repair. The
functions here only validate and record; the work itself is the server's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
import time
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from apollo import errors, limits
from apollo.cluster.duties import CLUSTER_SCHEME_DEFAULT, SCHEME_SETTING, STATUS_SETTING
from apollo.cluster.passes import request_setting, state_setting
from apollo.cluster.recovery import MISSING_REASON
from apollo.cluster.tuning import SETTING_PREFIX, Tuning, parse_rate
from apollo.meta.sql_users import KeyInfo
from apollo.meta.store import SqlStore
from apollo.proto.cluster_map import NODE_NAME, SERVING_STATES, ClusterMap, DriveRecord, NodeInfo
from apollo.proto.drive_format import read_format
from apollo.proto.layout import Scheme
from apollo.proto.placement import domain_shortfall
from apollo.proto.records import DriveJob
from apollo.storage.drive import format_drive


class AdminError(Exception):
    """An operator request that cannot be carried out; the message says why and what to do."""


def find_drive(store: SqlStore, name: str) -> DriveRecord:
    """A drive by id, or by path (the newest drive that is not retired at that path)."""
    records = store.list_drives()
    for record in records:
        if record.drive_id == name:
            return record
    path = str(Path(name).resolve())
    matches = [r for r in records if r.path == path and r.state != "retired"] or [r for r in records if r.path == path]
    if not matches:
        raise AdminError(f"no drive with id or path {name!r}; `apollo admin drive list` shows them")
    return matches[-1]


def _check_empty(store: SqlStore, path: Path) -> str:
    """The deployment a new drive at ``path`` joins; refused unless ``path`` is an empty directory."""
    deployment = store.get_setting("deployment_id")
    if deployment is None:
        raise AdminError("this metadata directory has no deployment yet: start the server once first")
    if not path.is_dir():  # a disk that did not mount: formatting would write to the filesystem below
        raise AdminError(f"{path} does not exist: mount the disk there first (or mkdir it, for a directory drive)")
    if read_format(path) is not None:
        raise AdminError(f"{path} is already an Apollo drive")
    if any(path.iterdir()):
        raise AdminError(f"{path} is not empty; give a new empty directory (a freshly mounted disk)")
    return deployment


def add_drive(store: SqlStore, path: Path, weight: float = 1.0) -> DriveRecord:
    """Format an empty directory and make it a new online drive."""
    return add_drives(store, [path], weight)[0]


def add_drives(store: SqlStore, paths: list[Path], weight: float = 1.0) -> list[DriveRecord]:
    """Format empty directories and make them new online drives: all of them, or (refused) none.

    Every path is checked before the first is formatted, so that ``/mnt/disk{7...9}`` with one
    non-empty disk does not leave the operator with two drives added and one to retry."""
    resolved = [path.resolve() for path in paths]
    if len(set(resolved)) < len(resolved):
        raise AdminError("the same directory is given twice")
    deployment = ""
    for path in resolved:
        deployment = _check_empty(store, path)
    records = []
    for path in resolved:
        record = DriveRecord(format_drive(path, deployment), NODE_NAME, str(path), "online", weight)
        store.put_drive(record, time.time())
        records.append(record)
    return records


def replace_drive(store: SqlStore, old_name: str, new_path: Path | None) -> tuple[DriveRecord, DriveRecord]:
    """Put a new empty drive in place of ``old``: the old drive's shards are rebuilt (or copied) onto it.

    A failed drive may have been rebuilt elsewhere and retired before the operator swapped the disk (a small
    drive, a fast repair): replacing it then adds the new disk as new capacity in its place, which the
    rebalancer fills, rather than refusing a swap that is already physically done."""
    old = find_drive(store, old_name)
    path = (new_path or Path(old.path)).resolve()
    if old.state == "retired":
        new = add_drive(store, path, old.weight)
        store.set_drive_state(old.drive_id, "retired", time.time(), replaced_by=new.drive_id)
        old.replaced_by = new.drive_id
        return old, new
    old_readable = str(path) != old.path and _still_formatted(old)
    new = add_drive(store, path, old.weight)
    now = time.time()
    state = "draining" if old_readable else "failed"
    store.set_drive_state(old.drive_id, state, now, replaced_by=new.drive_id)
    store.start_drive_job(old.drive_id, "drain" if old_readable else "evacuate", now)
    old.state, old.replaced_by = state, new.drive_id
    return old, new


def _still_formatted(record: DriveRecord) -> bool:
    try:
        info = read_format(Path(record.path))
    except Exception:
        return False
    return info is not None and info.get("drive_id") == record.drive_id


def drain_drive(store: SqlStore, name: str, force: bool = False) -> DriveRecord:
    """Copy every shard off a drive; it is retired when nothing refers to it any more (see ``drain_drives``)."""
    return drain_drives(store, [name], force)[0]


def drain_drives(store: SqlStore, names: list[str], force: bool = False) -> list[DriveRecord]:
    """Copy every shard off the drives named; each is retired when nothing refers to it any more.

    All of them or (refused) none: refused (unless ``force``) when the live failure domains left once
    all of them are gone would be fewer than the scheme's width (``_refuse_too_few_domains``)."""
    records = list({r.drive_id: r for r in (find_drive(store, name) for name in names)}.values())
    for record in records:
        if record.state not in ("online", "offline"):
            raise AdminError(f"drive {record.drive_id} is {record.state}; only online or offline drives can be "
                             "drained")  # fmt: skip
    what = ", ".join(r.drive_id for r in records)
    _refuse_too_few_domains(store, f"draining drive{'s' if len(records) > 1 else ''} {what}",
                            {r.drive_id for r in records}, force)  # fmt: skip
    now = time.time()
    for record in records:
        store.set_drive_state(record.drive_id, "draining", now)
        store.start_drive_job(record.drive_id, "drain", now)
        record.state = "draining"
    return records


def _refuse_too_few_domains(store: SqlStore, what: str, leaving: set[str], force: bool) -> None:
    """The drain rule: refused when the live failure domains left are fewer than the scheme's width.

    Fewer domains than shards means some domain holds two or more shards of a segment, so fewer than m
    domains may fail at once (``placement.domain_shortfall`` says how many; the lease holder logs the same
    words, docs/deploy.md "Sizing" states the rule). With ``force`` the drain goes ahead, and the copies
    still spread as evenly as the domains left allow (4+2 over three nodes: 2,2,2), waiting where no
    drive keeps that spread.
    """
    domains, unit = _live_domains(store, leaving)
    scheme = _scheme(store, unit)
    shortfall = domain_shortfall(scheme.width, scheme.m, domains.values(), unit)
    if shortfall is not None and not force:
        first = "add a drive" if unit == "drives" else "add a node"
        raise AdminError(f"{what} leaves {shortfall}; {first} first, or --force to drain anyway (the shards then "
                         "spread as evenly as what is left allows)")  # fmt: skip


def _scheme(store: SqlStore, unit: str) -> Scheme:
    """The scheme the checks assume: the one an all-in-one server records at start, else a cluster's default."""
    return Scheme.parse(store.get_setting(SCHEME_SETTING) or ("rep1" if unit == "drives" else CLUSTER_SCHEME_DEFAULT))


def _live_domains(store: SqlStore, leaving: set[str]) -> tuple[dict[str, int], str]:
    """Online drives per live failure domain once ``leaving`` are gone, and what a domain is: on one server
    each drive ("drives"); in a cluster the rack when labelled, else the node, counting live nodes only."""
    records = store.list_drives()
    drives = [r for r in records if r.state == "online" and r.drive_id not in leaving]
    if all(r.node == NODE_NAME for r in records):
        return {r.drive_id: 1 for r in drives}, "drives"
    cluster = store.cluster_map(time.time(), limits.node_dead_after_s, 0)
    alive = {n.name for n in cluster.nodes if n.alive}
    domain_of = cluster.domains()
    domains: dict[str, int] = {}
    for record in drives:
        if record.node in alive:
            domain = domain_of.get(record.node, record.node)
            domains[domain] = domains.get(domain, 0) + 1
    return domains, "failure domains"


def remove_drive(store: SqlStore, name: str) -> DriveRecord:
    """Forget a drive that holds nothing the namespace needs."""
    return remove_drives(store, [name])[0]


def remove_drives(store: SqlStore, names: list[str]) -> list[DriveRecord]:
    """Forget drives that hold nothing the namespace needs: all of them, or (refused) none."""
    records = list({r.drive_id: r for r in (find_drive(store, name) for name in names)}.values())
    for record in records:
        _check_removable(store, record)
    for record in records:
        store.delete_drive(record.drive_id)
    return records


def unretired(store: SqlStore, drive_ids: list[str]) -> list[DriveRecord]:
    """Those of ``drive_ids`` the cluster map still holds in another state than retired, as ``status`` reads them.

    A drained or failed drive may be removed only once retired: its shards copied or rebuilt elsewhere,
    no queued or running copy, no write in flight and no uncollected garbage on it
    (``DriveLifecycle._retire_if_empty``); until then ``remove_drive`` and ``remove_node`` refuse."""
    wanted = set(drive_ids)
    return [r for r in store.list_drives() if r.drive_id in wanted and r.state != "retired"]


def _check_removable(store: SqlStore, record: DriveRecord) -> None:
    if record.state in SERVING_STATES or (record.state == "failed" and store.pending_repairs_on(record.drive_id)):
        raise AdminError(f"drive {record.drive_id} is {record.state} and still holds shards; "
                         "drain it first and wait until it is retired")  # fmt: skip
    store.reconcile_drive_index(record.drive_id)  # ask the layouts themselves, not only the index, before it goes
    if store.segments_after(-1, "", 1, record.drive_id):
        raise AdminError(f"segments still refer to drive {record.drive_id}; wait for its repairs to finish")


# storage nodes of a cluster -------------------------------------------------------------------


def _node_drives(store: SqlStore, node: str, cluster: ClusterMap) -> list[DriveRecord]:
    drives = [r for r in store.list_drives() if r.node == node]
    if not drives and node not in {n.name for n in cluster.nodes}:
        raise AdminError(f"no storage node named {node!r}; `apollo admin drive list --database ...` shows them")
    return drives


def drain_node(store: SqlStore, node: str, force: bool = False, follow: bool = False) -> list[DriveRecord]:
    """Copy every shard off every drive of a storage node, before the node is taken away for good.

    Its drives are retired once empty; then stop the node and ``remove_node`` it. Refused when the
    other nodes are fewer failure domains than the scheme's width (``_refuse_too_few_domains``;
    ``--force`` drains anyway, as evenly as the domains left allow). Returns every drive of the node
    that is draining, those a drain begun earlier started included: ``drain --wait`` run again (an
    interrupted wait, or as ``remove_node`` advises) follows that drain rather than refusing, and with
    ``follow`` (``--wait``) a drain that has finished meanwhile is no error: nothing is left to follow ([])."""
    cluster = store.cluster_map(time.time(), limits.node_dead_after_s, 0)
    drives = _node_drives(store, node, cluster)
    starting = [r for r in drives if r.state in ("online", "offline")]
    if drives and all(r.state == "retired" for r in drives):
        if follow:
            return []
        raise AdminError(f"every drive of {node} is retired already: stop `apollo storage` on it, then "
                         f"`apollo admin node remove {node}`")  # fmt: skip
    if not starting and not any(r.state == "draining" for r in drives):
        raise AdminError(f"node {node} has no online, offline or draining drive to drain")
    if starting:
        _refuse_too_few_domains(store, f"draining {node}", {r.drive_id for r in starting}, force)
    now = time.time()
    for record in starting:
        store.set_drive_state(record.drive_id, "draining", now)
        store.start_drive_job(record.drive_id, "drain", now)
        record.state = "draining"
    return [r for r in drives if r.state == "draining"]


def remove_node(store: SqlStore, node: str) -> list[DriveRecord]:
    """Forget a stopped storage node whose drives hold nothing the namespace needs."""
    cluster = store.cluster_map(time.time(), limits.node_dead_after_s, 0)
    drives = _node_drives(store, node, cluster)
    if any(n.name == node and n.alive for n in cluster.nodes):
        raise AdminError(f"node {node} is still heartbeating: stop `apollo storage` on it first "
                         "(it would register its drives again)")  # fmt: skip
    waiting = []
    for record in drives:  # all of them before any is forgotten
        try:
            _check_removable(store, record)
        except AdminError:
            waiting.append(record)
    if waiting:
        raise AdminError(_not_removable_yet(store, node, drives, waiting))
    store.delete_node(node)
    return drives


def _not_removable_yet(store: SqlStore, node: str, drives: list[DriveRecord], waiting: list[DriveRecord]) -> str:
    """What keeps a stopped node's drives in the map, and what the operator waits for before trying again."""
    states = ", ".join(f"{r.drive_id} {r.state}" for r in waiting)
    head = f"node {node} cannot be removed yet: {len(waiting)} of its {len(drives)} drives are not retired ({states})"
    if any(r.state in ("online", "offline") for r in waiting):
        return (f"{head}; drain it first: `apollo admin node drain {node} --wait` while it runs, then stop it and "
                f"run `apollo admin node remove {node}` again")  # fmt: skip
    left = sum(store.pending_repairs_on(r.drive_id) for r in waiting)
    return (f"{head}; {left} of their shards are still queued to be copied or rebuilt elsewhere, and a drive is "
            "retired only once nothing refers to it (copies done, writes in flight committed or collected, "
            f"deleted data collected). Wait for that with `apollo admin node drain {node} --wait` (or until "
            f"`apollo admin status` shows them retired), then run `apollo admin node remove {node}` again")  # fmt: skip


# after a metadata recovery ---------------------------------------------------------------------


@dataclass
class UnlistedDrive:
    """A drive the recovered metadata knows that recovery did not read (``drives_not_given``)."""

    drive_id: str
    path: str  # "" when no drive row names it: added after the checkpoint recovery started from
    state: str  # as of that checkpoint ("" with no row)
    missing_shards: int  # shards of it recovery did not find, queued for repair


def drives_not_given(store: SqlStore, read: Collection[str], given: list[Path]) -> list[UnlistedDrive]:
    """Drives a recovered database knows (its drive rows, and the drives its segments' shards are on) that were
    neither read nor given: directories left off the command line of ``recover-metadata``.

    Recovery reads only the drives it is given: a forgotten one's journal copies and checkpoints go unread and
    its shards are queued to be rebuilt from parity, though they are still on it. Drives given but unreadable
    (wiped) are reported as skipped, so they are left out here.
    """
    given_paths = {str(path.resolve()) for path in given}
    missing = store.queued_repairs_by_drive(MISSING_REASON)
    records = store.list_drives()
    found = [UnlistedDrive(r.drive_id, r.path, r.state, missing.get(r.drive_id, 0)) for r in records
             if r.drive_id not in read and r.state != "retired" and r.path not in given_paths]  # fmt: skip
    rows = {r.drive_id for r in records}
    found += [UnlistedDrive(drive_id, "", "", n) for drive_id, n in sorted(missing.items())
              if drive_id not in read and drive_id not in rows]  # fmt: skip
    return found


# tuning and scrub requests --------------------------------------------------------------------


def set_tuning(store: SqlStore, **values: object) -> Tuning:
    """Validate, then store, the knobs given (None: leave as is); returns the resulting tuning."""
    given = {name: str(value) for name, value in values.items() if value is not None}
    unknown = sorted(set(given) - set(Tuning.names()))
    if unknown:
        raise AdminError(f"unknown tuning knob(s) {unknown}; known: {Tuning.names()}")
    Tuning.load({SETTING_PREFIX + name: value for name, value in given.items()})  # raises ValueError if malformed
    for name, value in given.items():
        store.set_setting(SETTING_PREFIX + name, value)
    return Tuning.load(store.settings_like(SETTING_PREFIX))


def request_pass(store: SqlStore, name: str) -> float:
    """Ask the server for a pass of ``name`` (scrub, orphans) now; returns the request to wait for."""
    now = time.time()
    store.set_setting(request_setting(name), repr(now))
    return now


def directory(store: SqlStore) -> tuple[list[KeyInfo], list[tuple[str, bool, tuple[str, ...], str]]]:
    """Every key (no secret) and every policy: (name, built in, keys it is attached to, document)."""
    policies = [(name, builtin, users, store.get_policy(name) or "") for name, builtin, users in store.list_policies()]
    return store.list_keys(), policies


PASSES = ("scrub", "rebalance", "orphans")  # the periodic passes an operator may start at once


class ConsoleControls:
    """What the console may change of the background work, as ``apollo admin repair|scrub|rebalance`` do:
    rates and the repair pause (settings the manager reads within seconds), and passes started at once.

    :raises InvalidRequest: a rate that does not parse, a pass that does not exist.
    """

    passes = PASSES

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def tune(self, repair_rate: str, scrub_rate: str, repair_paused: bool) -> Tuning:
        try:
            return set_tuning(self._store, repair_bytes_per_s=parse_rate(repair_rate),
                              scrub_bytes_per_s=parse_rate(scrub_rate), repair_paused=int(repair_paused))  # fmt: skip
        except (ValueError, AdminError) as exc:
            raise errors.InvalidRequest(str(exc)) from exc

    def start_pass(self, name: str) -> None:
        if name not in PASSES:
            raise errors.InvalidRequest(f"no background pass {name!r}; there are {', '.join(PASSES)}")
        request_pass(self._store, name)


def pass_state(store: SqlStore, name: str) -> dict:
    return json.loads(store.get_setting(state_setting(name)) or "{}")


# status ---------------------------------------------------------------------------------------


@dataclass
class Status:
    drives: list[DriveRecord]
    jobs: list[DriveJob]
    pending_by_drive: dict[str, int]
    repair: dict
    scrub: dict
    tuning: Tuning
    segments: int
    shortfall: str | None  # what too few live failure domains cost (``domain_shortfall``); None: enough
    scheme: Scheme
    nodes: list[NodeInfo]  # the all-in-one server is one node, NODE_NAME

    @property
    def clustered(self) -> bool:
        return any(d.node != NODE_NAME for d in self.drives)

    def next_steps(self) -> list[str]:
        """What an operator does about what the status shows: a failed drive, repair that cannot proceed."""
        steps = []
        for d in self.drives:
            if d.state != "failed" or d.replaced_by:
                continue
            if self.clustered:
                steps.append(f"drive {d.drive_id} ({d.node}:{d.path}) failed: its shards are rebuilt elsewhere; "
                             f"replace the disk, and once the drive shows retired restart `apollo storage` on "
                             f"{d.node} with the new empty disk at {d.path}")  # fmt: skip
            else:
                steps.append(f"drive {d.drive_id} ({d.path}) failed: replace it: mount a new disk at {d.path}, "
                             f"then `apollo admin drive replace {d.path} --wait`")  # fmt: skip
        online = sum(d.state == "online" for d in self.drives)
        if self.repair.get("backlog_now") and online <= self.scheme.width:
            steps.append(f"repair is waiting: {online} online drives for {self.scheme.width}-wide segments leave "
                         "no spare drive to rebuild onto (every online drive already holds a shard of each "
                         "segment); reads decode from parity meanwhile. Replace the failed drive or add "
                         "one")  # fmt: skip
        return steps

    def capacity(self) -> tuple[int, int, int, int]:
        """(used, total bytes, online drives, filesystems they are on). Directory drives that share a
        filesystem each report its usage, so each filesystem counts once: by the (node, filesystem) its
        node reports; a drive whose node reported none yet (one of the version before) by its own path on
        one server, and once per drive in a cluster."""
        online = [d for d in self.drives if d.state == "online"]
        seen: dict[object, DriveRecord] = {}
        for d in online:
            where: object = (d.node, d.filesystem) if d.filesystem else d.drive_id
            if not d.filesystem and not self.clustered:
                with contextlib.suppress(OSError):
                    where = os.stat(d.path).st_dev
            seen.setdefault(where, d)
        used = sum(d.total_bytes - d.free_bytes for d in seen.values())
        return used, sum(d.total_bytes for d in seen.values()), len(online), len(seen)

    def scrub_projection(self, stored_bytes: int) -> tuple[float, bool]:
        """Hours a scrub pass over ``stored_bytes`` of shards takes at the scrub rate, and whether that is
        longer than the scrub interval (passes would run back to back and still fall behind)."""
        rate = self.tuning.scrub_bytes_per_s
        hours = stored_bytes / rate / 3600 if rate > 0 else 0.0
        return hours, hours * 3600 > self.tuning.scrub_interval_s


def status(store: SqlStore) -> Status:
    """Everything ``apollo admin status`` shows. The count of segments at risk (``repair["at_risk"]``) is the
    lease holder's, from the rebalancer's last walk: counting here would scan every segment per call."""
    drives = store.list_drives()
    domains, unit = _live_domains(store, set())
    scheme = _scheme(store, unit)
    return Status(
        drives=drives,
        jobs=store.drive_jobs(active_only=False),
        pending_by_drive={d.drive_id: store.pending_repairs_on(d.drive_id) for d in drives},
        repair=json.loads(store.get_setting(STATUS_SETTING) or "{}") | {"backlog_now": store.repair_backlog()},
        scrub=pass_state(store, "scrub"),
        tuning=Tuning.load(store.settings_like(SETTING_PREFIX)),
        segments=store.segment_count(),
        shortfall=domain_shortfall(scheme.width, scheme.m, domains.values(), unit) if domains else None,
        scheme=scheme,
        nodes=store.cluster_map(time.time(), limits.node_dead_after_s, 0).nodes,
    )


@dataclass
class ProcessProbe:
    """What an Apollo process says of itself on its /metrics: whether it answers, its version and start."""

    endpoint: str
    answering: bool
    version: str = ""
    started: float | None = None
    error: str = ""


def probe(endpoint: str, timeout_s: float = 3.0, ssl_context: ssl.SSLContext | None = None) -> ProcessProbe:
    """Ask the process at ``endpoint`` (unauthenticated /metrics: no key needed, none revealed).
    ``ssl_context``: for an ``https://`` node; under mutual TLS it must carry a client certificate of the
    cluster CA (``apollo.client.tls.environment_context``: ``APOLLO_CERTS``)."""
    try:
        with urllib.request.urlopen(f"{endpoint}/metrics", timeout=timeout_s, context=ssl_context) as answer:
            text = answer.read().decode()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return ProcessProbe(endpoint, False, error=str(reason))
    version = re.search(r'^apollo_build_info\{[^}]*version="([^"]*)"', text, re.MULTILINE)
    started = re.search(r"^apollo_start_time_seconds(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    return ProcessProbe(endpoint, True, version[1] if version else "", float(started[1]) if started else None)
