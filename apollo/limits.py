"""Every bound and default in one place; units come last in each name."""

from __future__ import annotations

from dataclasses import dataclass

# S3 protocol bounds (AWS documented values).
key_length_bytes_max = 1024
put_object_size_bytes_max = 5 * 1024**3  # single PUT; larger needs multipart
part_size_bytes_min = 5 * 1024**2
part_size_bytes_max = 5 * 1024**3
part_number_max = 10_000
list_keys_max = 1000
list_hidden_rows_max = 10_000  # delete markers one listing page steps over before it ends, truncated
delete_objects_keys_max = 1000
# Not an AWS limit: each open upload is a metadata row that any key with write access can add, and nothing
# else removes before --upload-expiry; a checkpoint of thousands of ranks stays far below it.
open_uploads_per_bucket_max = 100_000
xml_body_bytes_max = 2 * 1024**2  # CompleteMultipartUpload with 10,000 parts fits in ~1 MiB
user_metadata_bytes_max = 2 * 1024
tags_per_object_max = 10
tags_per_bucket_max = 50  # S3: "up to 50 tags" on a bucket
clock_skew_s_max = 900

# Storage engine geometry.
cell_size_bytes_default = 256 * 1024
cell_size_bytes_min = 1024  # a layout with cells outside these bounds is refused (a client names the cell size)
cell_size_bytes_max = 16 * 1024**2
segment_size_bytes_max = 64 * 1024**2  # one object segment = one set of k+m shard files
io_batch_bytes = 8 * 1024**2  # data bytes handed to one encode+write or read job
placement_groups_default = 256
inline_object_bytes_max = 16 * 1024  # smaller objects live in the metadata row
drive_free_bytes_min = 256 * 1024**2  # placement skips drives with less free space

# Timing.
gc_interval_s = 5.0
gc_deleted_data_delay_s = 30.0  # in-flight readers of an overwritten version finish first
upload_expiry_s_default = 7 * 24 * 3600.0  # like the common AbortIncompleteMultipartUpload lifecycle rule
uploads_expired_per_pass_max = 64  # one GC pass aborts at most this many abandoned uploads, oldest first
shutdown_grace_s = 10.0

# Metadata journal and checkpoints on the data drives (apollo.meta.journal).
journal_copies = 3  # drives each journal record is appended to
journal_flush_interval_s = 1.0  # appends are fsynced this often, not on the commit path
journal_file_rotate_s = 600.0  # a journal file takes appends for this long, then a new one starts
journal_drive_retry_s = 30.0  # a drive whose journal append failed is skipped this long
journal_checkpoint_interval_s_default = 3600.0
journal_checkpoints_kept = 2  # per drive; journal files are kept until the oldest of them covers them

# Peers that stop sending or reading: a request body that brings no byte, or a response the client takes
# no byte of, for this long loses its connection and whatever it held (read-ahead, a file descriptor).
s3_client_stall_s_default = 20.0  # apollo server/gateway --client-timeout; AWS answers RequestTimeout after ~20 s
shard_client_stall_s = 10.0  # storage nodes: native clients and gateways, which give up on a node sooner
# S3 requests in flight in one process (apollo/gateway/admission.py): beyond them, 503 SlowDown at once.
s3_requests_per_key_max_default = 256  # --max-requests-per-key: one key's job cannot take every slot
s3_requests_max_default = 1024  # --max-requests

# The metadata API: a call's body (a commit of a 5 GiB object names ~80 segments; a complete of
# 10,000 parts is ~0.5 MiB) arrives whole within the deadline, after its headers named a known key.
rpc_body_bytes_max = 4 * 1024**2
rpc_body_read_s = 10.0
# A batch lookup (``get_versions``, behind the native client's ``get_batch``) names at most this many
# objects: an answer of 1,000 inline objects of 16 KiB is ~22 MiB of JSON. A client splits larger batches.
batch_lookup_items_max = 1000
# Commits sharing one call and one transaction (``commit_versions``, apollo.meta.sql_shared_commits): what
# queued behind the calls in flight; inline objects of 16 KiB make such a call ~1.4 MiB of JSON at most.
commits_per_call_max = 64
# Snapshots (apollo.meta.sql_snapshots): one is taken in one transaction, which holds SQLite's only writer
# (about 1 s per 100,000 objects); a bucket's are listed in one answer.
snapshot_objects_max = 2_000_000
snapshots_per_bucket_max = 1000
# Transactions over many objects (apollo.meta.sql_txns): keys staged in one (its commit is one SQL
# transaction, which holds SQLite's only writer about 1 s per 20,000 keys); transactions one access key
# holds open at once; the lifetime the service grants, whatever the client asks, within these bounds (an
# uncommitted transaction is aborted by the garbage collector when it ends).
txn_items_max = 100_000
txns_open_per_key_max = 100
txn_ttl_s_default = 3600.0
txn_ttl_s_min = 60.0
txn_ttl_s_max = 24 * 3600.0
txns_expired_per_pass_max = 64  # one GC pass aborts or forgets at most this many, oldest first
# KV namespaces (apollo.meta.sql_kv): the bounds of a budget and a TTL; expired values one GC pass removes.
kv_budget_bytes_max = 1 << 60
kv_ttl_s_max = 365 * 24 * 3600.0
kv_expired_per_pass_max = 1000
# Members of one tar archive whose index is kept (apollo.proto.tar_index): the index goes with the commit,
# inside one metadata call (rpc_body_bytes_max), at about 60 bytes a member.
tar_members_max = 50_000
tar_member_name_bytes_max = 1024
# The S3 gateway's batch GET (POST /bucket?batch, a TAR stream): items per request; the largest item it
# holds in memory (a bigger one is that item's error: read it with a GET); the bytes one batch holds read
# ahead of its stream, counted at its largest item's size; the bytes all batches of one process may hold at
# once (each reserves its window, else 503 SlowDown).
batch_request_items_max = 10_000
batch_item_bytes_max = 16 * 1024**2
batch_window_bytes = 64 * 1024**2
batch_inflight_bytes_max = 512 * 1024**2
# A batch of shard reads to one storage node (POST /_apollo/shards, behind ``get_batch``): reads and bytes of
# one request and the request body (a read is ~60 bytes, each distinct token ~150 more); an object of a batch
# larger than shard_batch_object_bytes_max is read on its own, shard by shard, as a single GET reads it.
shard_batch_reads_max = 4096
shard_batch_bytes_max = 32 * 1024**2  # the bytes a batch of reads answers with
shard_batch_disk_bytes_max = 512 * 1024**2  # and reads off the drives (a part of a cell costs the whole record)
shard_batch_wave_bytes = 32 * 1024**2  # the bytes of one wave of a batch GET
shard_batch_inflight_bytes_max = 256 * 1024**2  # a node's batches in progress hold at most this; more: 503 Busy
shard_batch_body_bytes_max = 2 * 1024**2
shard_batch_object_bytes_max = 4 * 1024**2

# Cluster membership and keys: these must agree. A node heartbeats every node_heartbeat_interval_s
# and is dead (its drives not writable) after node_dead_after_s, a few missed heartbeats. Clients and
# services refresh the cluster map every cluster_map_refresh_s. A new capability-token key signs nothing
# for token_key_publish_s, long after every storage node (one heartbeat) and every metadata process
# (keyring_refresh_s) has it.
node_heartbeat_interval_s = 2.0
node_dead_after_s = 6.0
cluster_map_refresh_s = 2.0
drive_probe_interval_s = 2.0  # the all-in-one server's drive probe, its heartbeat
keyring_refresh_s = 5.0
token_key_publish_s = 30.0

# Web-console sessions (``apollo.console.sessions``): rows of the metadata store, one per login. A login
# lasts a working day; a key holds at most this many live ones (its oldest go first), so a key's holder
# who logs in in a loop cannot grow the table without bound.
console_session_ttl_s = 12 * 3600.0
console_sessions_per_key_max = 100
access_key_chars_max = 256  # longer than any key Apollo makes or the environment is likely to name

# The manager lease (repair, GC, rebalance, scrub run on its holder): a holder that dies is replaced
# after at most this long; renewed every third of it.
manager_lease_ttl_s_default = 10.0


@dataclass(frozen=True)
class ClientLimits:
    """What S3 clients may hold of one process: ``--client-timeout``, ``--max-requests-per-key`` and
    ``--max-requests`` of ``apollo server`` and ``apollo gateway``."""

    stall_s: float = s3_client_stall_s_default
    requests_per_key_max: int = s3_requests_per_key_max_default
    requests_max: int = s3_requests_max_default
