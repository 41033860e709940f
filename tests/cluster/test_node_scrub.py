"""Node-local scrub (``apollo.cluster.node_scrub``): each storage node verifies its own drives' shard files and
reports a damaged one for repair, with no shard read over the network by the lease holder."""

from __future__ import annotations

import time

from apollo.storage.shardfile import HEADER_BYTES
from apollo.testing.workload import Workload

MIB = 1024**2


def test_a_node_finds_a_flipped_byte_on_its_own_drive_and_the_shard_is_rebuilt(make_cluster, seed):
    # The lease holder's scrub ran its pass on the empty cluster at start and waits a week for the next;
    # nothing reads the objects until the end. Only the nodes' own passes (every 2 s) can find the damage.
    cluster = make_cluster(nodes=6, node_args=("--scrub-interval", "2", "--scrub-rate", "64"))
    client = cluster.native()
    client.create_bucket("scrubbed")
    objects = Workload(seed)
    objects.write(client, "scrubbed", 3, sizes=(MIB, 2 * MIB))
    victim = max(cluster.shard_files(), key=lambda path: path.stat().st_size)
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[HEADER_BYTES + 1000] ^= 0x01  # one bit of the first cell's data: only its CRC32C can tell
    victim.write_bytes(bytes(damaged))
    node = next(n for n in cluster.nodes if str(victim).startswith(str(cluster.root / n.name) + "/"))

    deadline = time.monotonic() + 60
    while not (victim.exists() and victim.read_bytes()[HEADER_BYTES:] == original[HEADER_BYTES:]):
        assert time.monotonic() < deadline, f"the flipped bit was never repaired:\n{node.log_tail()}"
        time.sleep(0.25)
    assert "node scrub: shard" in node.log_path.read_text()  # found by the node that holds it
    assert objects.verify(client, "scrubbed") == 3
    client.close()
