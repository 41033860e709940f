"""The metadata store: one class composed of one mixin per concern.

Call sequence of a write, as the client library drives it::

    store.add_pending(layout, owner, due)        # 1) per segment, before its shards are written
    ...shards written to drives...
    store.commit_version(...) / commit_part(...)  # 2) one transaction: conditions, new row, pending rows gone
    # crash between 1 and 2: the pending rows become due and GC deletes the shards
    # or, in a transaction (``sql_txns``): 2) stage_put claims the pending rows into the transaction,
    # 3) commit_txn makes every staged item visible at once; abort or expiry hands their data to GC

Every method is blocking; the metadata service calls them on its own thread.
"""

from __future__ import annotations

from apollo.meta.sql_cluster import ClusterOps
from apollo.meta.sql_console import ConsoleSessionOps
from apollo.meta.sql_kv import KVOps
from apollo.meta.sql_leases import LeaseOps
from apollo.meta.sql_multipart import MultipartOps
from apollo.meta.sql_repair import RepairOps
from apollo.meta.sql_shared_commits import SharedCommitOps
from apollo.meta.sql_snapshots import SnapshotOps
from apollo.meta.sql_tar import TarOps
from apollo.meta.sql_txns import TxnOps


class SqlStore(
    SharedCommitOps,
    KVOps,
    SnapshotOps,
    TxnOps,
    TarOps,
    MultipartOps,
    ClusterOps,
    RepairOps,
    LeaseOps,
    ConsoleSessionOps,
):
    """The metadata store, on SQLite (one machine) or PostgreSQL (clusters): see ``apollo.meta.engine``."""
