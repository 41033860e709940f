"""The storage node's wire contract, shared by the service (``apollo.storage.service``) and its
client stub (``apollo.client.remote_storage``): the headers each side reads.

Shards are at ``/_apollo/shards/{drive}/{pg}/{segment}/{index}`` (every part quoted, and checked by
format on arrival); listings at ``/_apollo/shards/{drive}`` and ``/_apollo/shards/{drive}/{pg}``
(``apollo.proto.routes``).
"""

from __future__ import annotations

TOKEN_HEADER = "X-Apollo-Token"
SIZE_HEADER = "X-Apollo-Size"
ERROR_HEADER = "X-Apollo-Error"
EPOCH_HEADER = "X-Apollo-Epoch"  # the cluster map epoch this node last heard of: a client with an older map refreshes
ERRNO_HEADER = "X-Apollo-Errno"
