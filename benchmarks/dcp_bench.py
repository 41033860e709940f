"""PyTorch Distributed Checkpoint save and load throughput: Apollo's storage writer and reader against torch's
own filesystem writer on the local disk (the baseline, measured in the same run) and torch's fsspec writer
through ``apollo://`` (what ``dcp.save(checkpoint_id="apollo://...")`` picks with no writer given).

One process (no process group) saves a state dict of ``--tensors`` float32 tensors of ``--tensor-mib`` MiB
each and loads it back into tensors of the same shapes; every load is compared with what was saved. The
deployment is one ``apollo server`` (6 directory drives on the same disk as the baseline's directory, 4+2) or
a cluster (``--cluster``: one ``apollo meta`` on PostgreSQL, six ``apollo storage`` processes). Each way runs
``--rounds`` times, alternating, and the median is printed; GB/s are of the state dict's bytes.

    .venv/bin/python benchmarks/dcp_bench.py                      # 512 MiB, server
    .venv/bin/python benchmarks/dcp_bench.py --cluster --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed.checkpoint as dcp  # noqa: E402

from apollo.client import Client  # noqa: E402
from apollo.integrations.fsspec import ApolloFileSystem  # noqa: E402
from apollo.testing.cluster import LocalCluster  # noqa: E402
from apollo.testing.postgres import TempPostgres  # noqa: E402
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess  # noqa: E402
from apollo.torch.dcp import ApolloStorageReader, ApolloStorageWriter  # noqa: E402


def state_of(tensors: int, mib: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    rows = mib * 1024 * 1024 // 4 // 1024
    return {f"layer{n}.weight": torch.randn(rows, 1024, generator=generator) for n in range(tensors)}


def timed(action: Callable[..., None], *args: object) -> float:
    started = time.perf_counter()
    action(*args)
    return time.perf_counter() - started


def ways(endpoint: str, local: Path) -> dict[str, tuple[Callable, Callable]]:
    """Each way's (save, load) of a state dict to/from a round's checkpoint id."""
    settings = {"endpoint": endpoint, "access_key": DEV_ACCESS_KEY, "secret_key": DEV_SECRET_KEY}
    return {
        "local disk, torch's FileSystemWriter": (
            lambda state, n: dcp.save(state, storage_writer=dcp.FileSystemWriter(local / f"r{n}")),
            lambda state, n: dcp.load(state, storage_reader=dcp.FileSystemReader(local / f"r{n}")),
        ),
        "apollo, ApolloStorageWriter": (
            lambda state, n: dcp.save(state, storage_writer=ApolloStorageWriter(f"apollo://bench/a/r{n}", **settings)),
            lambda state, n: dcp.load(state, storage_reader=ApolloStorageReader(f"apollo://bench/a/r{n}", **settings)),
        ),
        "apollo://, torch's fsspec writer": (
            lambda state, n: dcp.save(state, checkpoint_id=f"apollo://bench/f/r{n}"),
            lambda state, n: dcp.load(state, checkpoint_id=f"apollo://bench/f/r{n}"),
        ),
    }


def run(endpoint: str, options: argparse.Namespace) -> dict[str, tuple[list[float], list[float]]]:
    os.environ.update(APOLLO_ENDPOINT=endpoint, APOLLO_ACCESS_KEY=DEV_ACCESS_KEY, APOLLO_SECRET_KEY=DEV_SECRET_KEY)
    ApolloFileSystem.clear_instance_cache()
    with Client(endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as client:
        client.create_bucket("bench")
    saved = state_of(options.tensors, options.tensor_mib, seed=1)
    results: dict[str, tuple[list[float], list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="apollo-dcp-bench-", dir=options.local_dir) as local:
        chosen = ways(endpoint, Path(local))
        for round_number in range(options.rounds):
            for name, (save, load) in chosen.items():
                save_s = timed(save, saved, round_number)
                into = {key: torch.empty_like(tensor) for key, tensor in saved.items()}
                load_s = timed(load, into, round_number)
                if any(not torch.equal(into[key], saved[key]) for key in saved):
                    raise RuntimeError(f"{name}: the loaded state differs from the saved one")
                saves, loads = results.setdefault(name, ([], []))
                saves.append(save_s)
                loads.append(load_s)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tensors", type=int, default=16)
    parser.add_argument("--tensor-mib", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cluster", action="store_true", help="a cluster on PostgreSQL, not apollo server")
    parser.add_argument("--local-dir", default=None, help="where the baseline writes (default: the temp dir)")
    options = parser.parse_args()
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # one process, on purpose
    total = options.tensors * options.tensor_mib * 1024 * 1024
    kind = "cluster (apollo meta on PostgreSQL, 6 storage processes)" if options.cluster else "apollo server"
    print(f"{options.tensors} float32 tensors of {options.tensor_mib} MiB ({total / 2**20:.0f} MiB), one process, "
          f"{options.rounds} rounds (median), {kind}, 4+2; torch {torch.__version__}; cpus={os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="apollo-dcp-deploy-") as root:
        if options.cluster:
            with TempPostgres(durable=True) as pg, LocalCluster(Path(root) / "c", pg.create_database("b")) as cluster:
                results = run(cluster.meta_urls, options)
        else:
            with ServerProcess(Path(root) / "server") as server:
                results = run(server.endpoint, options)
    baseline = results["local disk, torch's FileSystemWriter"]
    base_save, base_load = (statistics.median(times) for times in baseline)
    print(f"{'way':<38} {'save':>9} {'GB/s':>6} {'vs disk':>8} {'load':>9} {'GB/s':>6} {'vs disk':>8} {'load/save':>9}")
    for name, (saves, loads) in results.items():
        save_s, load_s = statistics.median(saves), statistics.median(loads)
        print(f"{name:<38} {save_s:8.2f}s {total / save_s / 1e9:6.2f} {base_save / save_s:7.2f}x "
              f"{load_s:8.2f}s {total / load_s / 1e9:6.2f} {base_load / load_s:7.2f}x {load_s / save_s:8.2f}x")


if __name__ == "__main__":
    main()
