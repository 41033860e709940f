"""Prometheus metrics of every Apollo process: S3 gateway, storage engine, self-healing, metadata RPC, storage nodes."""

from __future__ import annotations

import os
import platform
import time

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from apollo import __version__

registry = CollectorRegistry()

# What the process runs, so a dashboard shows how far a rolling upgrade got and which version a problem
# started with: one series, always 1 (the Prometheus convention for build facts; the labels carry the news).
build_info = Gauge("apollo_build_info", "Apollo and Python versions of this process (always 1)",
                   ["version", "python"], registry=registry, multiprocess_mode="livemax")  # fmt: skip
build_info.labels(__version__, platform.python_version()).set(1)
# The uptime `apollo admin status` prints; with --workers, the oldest live worker's.
start_time = Gauge("apollo_start_time_seconds", "When this process started (unix seconds)", registry=registry,
                   multiprocess_mode="livemin")  # fmt: skip
start_time.set(time.time())

requests_total = Counter(
    "apollo_s3_requests_total", "S3 requests by operation and HTTP status", ["op", "status"], registry=registry
)
request_seconds = Histogram(
    "apollo_s3_request_seconds", "S3 request latency by operation", ["op"], registry=registry,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)  # fmt: skip
bytes_in = Counter("apollo_s3_bytes_in_total", "Request body bytes received", registry=registry)
bytes_out = Counter("apollo_s3_bytes_out_total", "Response body bytes sent", registry=registry)
refused_requests = Counter("apollo_s3_refused_requests_total",
                           "S3 requests answered 503 SlowDown at once: the limit of requests in flight of their "
                           "access key or of the process was reached", ["limit"], registry=registry)  # fmt: skip
refused_connections = Counter("apollo_refused_connections_total",
                              "Connections closed as they arrived: the process held --max-connections already",
                              registry=registry)  # fmt: skip
stalled_peers = Counter("apollo_stalled_connections_total",
                        "Connections cut because the peer sent or took no byte for the stall timeout",
                        ["direction"], registry=registry)  # fmt: skip
damaged_shards = Counter(
    "apollo_damaged_shards_total", "Shards found missing or corrupt (read from parity instead)", ["reason"],
    registry=registry,
)  # fmt: skip
ec_decoded_stripes = Counter(
    "apollo_ec_decoded_stripes_total", "Stripes rebuilt from parity while reading", registry=registry
)
# With --workers, every worker probes the drives; "livemin" reports a drive down if any live worker sees it down.
# /metrics answers anyone, so drives are named by id only: `apollo admin status` maps ids to paths.
drive_up = Gauge("apollo_drive_up", "1 when a drive is healthy and attached", ["drive"], registry=registry,
                 multiprocess_mode="livemin")  # fmt: skip
drive_free_bytes = Gauge("apollo_drive_free_bytes", "Free bytes on a drive's filesystem", ["drive"],
                         registry=registry, multiprocess_mode="livemin")  # fmt: skip
# With the free bytes, the fraction left, which is what a "nearly full" alert needs (0 while a drive is not "ok").
drive_total_bytes = Gauge("apollo_drive_total_bytes", "Size in bytes of a drive's filesystem", ["drive"],
                          registry=registry, multiprocess_mode="livemin")  # fmt: skip
gc_deleted_shards = Counter("apollo_gc_deleted_shards_total", "Shard files removed by GC", registry=registry)
# Self-healing (apollo.cluster): gauges are set by the manager process only, hence "livemax".
repair_backlog = Gauge("apollo_repair_backlog", "Shards waiting in the repair queue", registry=registry,
                       multiprocess_mode="livemax")  # fmt: skip
degraded_groups = Gauge("apollo_degraded_groups", "Placement groups with a shard waiting for repair",
                        registry=registry, multiprocess_mode="livemax")  # fmt: skip
segments_at_risk = Gauge("apollo_segments_at_risk",
                         "Segments with more shards in one failure domain than the live domains force, as the "
                         "rebalancer's last measurement found them (it moves them off)",
                         registry=registry, multiprocess_mode="livemax")  # fmt: skip
repaired_shards = Counter("apollo_repaired_shards_total", "Shards rebuilt or moved by the repair worker",
                          registry=registry)  # fmt: skip
repair_bytes = Counter("apollo_repair_bytes_total", "Bytes written by the repair worker", registry=registry)
repair_failures = Counter("apollo_repair_failures_total", "Segment repairs that failed and were deferred",
                          registry=registry)  # fmt: skip
scrub_bytes = Counter("apollo_scrub_bytes_total", "Bytes read by the scrubber", registry=registry)
scrub_errors = Counter("apollo_scrub_errors_total", "Damaged or missing shards found by the scrubber",
                       registry=registry)  # fmt: skip
scrub_progress = Gauge("apollo_scrub_progress_ratio", "Fraction of segments the current scrub pass has checked",
                       registry=registry, multiprocess_mode="livemax")  # fmt: skip
# A pass starts one interval after the previous one started; a pass still running past that time is behind
# schedule (too slow a rate for the data), and so is a scrubber that stopped starting passes.
scrub_due = Gauge("apollo_scrub_next_pass_due_timestamp_seconds",
                  "When the next scrub pass is due to start (Unix time): the current or last pass's start plus the "
                  "scrub interval", registry=registry, multiprocess_mode="livemax")  # fmt: skip
orphan_shards_deleted = Counter("apollo_orphan_shards_deleted_total",
                                "Shard files no metadata referred to, deleted by the orphan sweeper",
                                registry=registry)  # fmt: skip
journal_errors = Counter("apollo_meta_journal_errors_total",
                         "Metadata journal appends or fsyncs that failed (the commit stood; another drive took it)",
                         registry=registry)  # fmt: skip
drives_by_state = Gauge("apollo_drives", "Drives by lifecycle state", ["state"], registry=registry,
                        multiprocess_mode="livemax")  # fmt: skip

# Cluster roles.
rpc_total = Counter("apollo_meta_rpc_total", "Metadata service calls by method and outcome", ["method", "outcome"],
                    registry=registry)  # fmt: skip
standby_reads = Counter("apollo_meta_standby_reads_total", "Reads offered to PostgreSQL standbys, by who "
                        "answered: standby, or primary and why (behind, not_found, failed)", ["answered"],
                        registry=registry)  # fmt: skip
rpc_seconds = Histogram(
    "apollo_meta_rpc_seconds", "Metadata service call latency by method", ["method"], registry=registry,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
# A gateway serves nothing while no metadata service answers: "livemin", so one worker cut off shows.
meta_reachable = Gauge("apollo_meta_reachable", "1 while this gateway reaches a metadata service, 0 during an outage",
                       registry=registry, multiprocess_mode="livemin")  # fmt: skip
manager_lease_held = Gauge("apollo_manager_lease_held", "1 while this process holds the manager lease",
                           registry=registry, multiprocess_mode="livemax")  # fmt: skip
nodes_alive = Gauge("apollo_storage_nodes", "Storage nodes in the cluster map by liveness", ["alive"],
                    registry=registry, multiprocess_mode="livemax")  # fmt: skip
shard_requests = Counter("apollo_shard_requests_total", "Storage node shard requests by operation and HTTP status",
                         ["op", "status"], registry=registry)  # fmt: skip
# Per drive on the process that has it (a storage node, the all-in-one server): which disk is busy or slow.
drive_io_bytes = Counter("apollo_drive_io_bytes_total", "Bytes read from or written to a drive's shard files",
                         ["drive", "op"], registry=registry)  # fmt: skip
drive_io_seconds = Histogram(
    "apollo_drive_io_seconds", "Time of one read or write of a drive's shard files (a send counts as a read)",
    ["drive", "op"], registry=registry, buckets=(0.0005, 0.002, 0.01, 0.05, 0.25, 1, 5),
)  # fmt: skip
shard_bytes = Counter("apollo_shard_bytes_total", "Shard bytes a storage node wrote or served", ["direction"],
                      registry=registry)  # fmt: skip


def record_damage(damage) -> None:
    reason = "crc" if "CRC" in damage.reason else ("missing" if "No such file" in damage.reason else "io")
    damaged_shards.labels(reason).inc()


# What each cluster role exports: the metrics whose values it knows (family names, without _total). A storage
# node's "repair backlog 0" would claim a fact it knows nothing about; the all-in-one server owns them all.
_EVERY_ROLE = {"apollo_build_info", "apollo_start_time_seconds", "apollo_stalled_connections",
               "apollo_refused_connections"}
_READERS = {"apollo_damaged_shards", "apollo_ec_decoded_stripes"}  # whoever reads objects: gateways, repair
OWNED_BY_ROLE: dict[str, frozenset[str]] = {
    "gateway": frozenset(_EVERY_ROLE | _READERS | {
        "apollo_s3_requests", "apollo_s3_request_seconds", "apollo_s3_bytes_in", "apollo_s3_bytes_out",
        "apollo_s3_refused_requests", "apollo_meta_reachable"}),
    "storage": frozenset(_EVERY_ROLE | {
        "apollo_shard_requests", "apollo_shard_bytes", "apollo_drive_up", "apollo_drive_free_bytes",
        "apollo_drive_total_bytes", "apollo_drive_io_bytes", "apollo_drive_io_seconds",
        # its own share of the cluster's repairs (the manager's rebuild jobs) and its local scrub
        "apollo_repaired_shards", "apollo_repair_bytes", "apollo_scrub_bytes", "apollo_scrub_errors"}),
    "meta": frozenset(_EVERY_ROLE | _READERS | {
        "apollo_meta_rpc", "apollo_meta_rpc_seconds", "apollo_meta_standby_reads",
        "apollo_manager_lease_held", "apollo_storage_nodes",
        "apollo_drives", "apollo_repair_backlog", "apollo_degraded_groups", "apollo_segments_at_risk",
        "apollo_repaired_shards", "apollo_repair_bytes", "apollo_repair_failures", "apollo_scrub_bytes",
        "apollo_scrub_errors", "apollo_scrub_progress_ratio", "apollo_scrub_next_pass_due_timestamp_seconds",
        "apollo_orphan_shards_deleted", "apollo_gc_deleted_shards"}),
}  # fmt: skip
_owned: frozenset[str] | None = None  # None: every metric (the all-in-one server)


def serve_role(role: str) -> None:
    """Export only what ``role`` owns (``OWNED_BY_ROLE``); called once by a cluster role at start."""
    global _owned
    _owned = OWNED_BY_ROLE[role]


class _Owned:
    """The registry, less the families this process does not own (``generate_latest`` only calls collect)."""

    def __init__(self, source: CollectorRegistry, owned: frozenset[str]) -> None:
        self.source, self.owned = source, owned

    def collect(self):
        return (family for family in self.source.collect() if family.name in self.owned)


def response() -> web.Response:
    """A /metrics answer, for every role's app."""
    return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def exposition() -> bytes:
    """The text format for /metrics: this process's registry, or the sum over all workers of --workers N."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(registry if _owned is None else _Owned(registry, _owned))
    return generate_latest(aggregated())


def aggregated() -> CollectorRegistry:
    """What this server counts: this process's registry, or the sum over all workers of --workers N."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return registry
    summed = CollectorRegistry()
    multiprocess.MultiProcessCollector(summed)
    return summed
