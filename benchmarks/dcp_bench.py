"""PyTorch Distributed Checkpoint save and load throughput: Apollo's storage writer and reader against torch's
own filesystem writer on the local disk (the baseline, measured in the same run), torch's fsspec writer
through ``apollo://`` (what ``dcp.save(checkpoint_id="apollo://...")`` picks with no writer given) and, with
``--s3fs-python``, torch's fsspec writer over s3fs against Apollo's own S3 gateway (what a user without
Apollo's writer runs; in a Python of its own, ``dcp_s3fs_way.py``). Each round also times ``dcp.async_save``
with Apollo's writer: how long it blocks the caller, against a synchronous save.

One process (no process group) saves a state dict of ``--tensors`` float32 tensors of ``--tensor-mib`` MiB
each and loads it back into tensors of the same shapes; every load is compared with what was saved. The
deployment is one ``apollo server`` (6 directory drives on the same disk as the baseline's directory, 4+2) or
a cluster (``--cluster``: one ``apollo meta`` on PostgreSQL, six ``apollo storage`` processes). Each way runs
``--rounds`` times, alternating, and the median is printed; GB/s are of the state dict's bytes.

    .venv/bin/python benchmarks/dcp_bench.py                      # 512 MiB, server
    .venv/bin/python benchmarks/dcp_bench.py --cluster --rounds 3
    .venv/bin/python benchmarks/dcp_bench.py --s3fs-python /tmp/dcp-s3fs/bin/python   # see dcp_s3fs_way.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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


S3FS = "S3 gateway, torch's fsspec over s3fs"
ASYNC = "apollo, dcp.async_save"


def s3fs_round(s3_endpoint: str, round_number: int, options: argparse.Namespace) -> tuple[float, float]:
    """(save, load) seconds of one round of the s3fs way, in its own Python (``dcp_s3fs_way.py``)."""
    command = [options.s3fs_python, str(Path(__file__).with_name("dcp_s3fs_way.py")), "--endpoint", s3_endpoint,
               "--key", DEV_ACCESS_KEY, "--secret", DEV_SECRET_KEY, "--path", f"s3://bench/s/r{round_number}",
               "--tensors", str(options.tensors), "--tensor-mib", str(options.tensor_mib)]  # fmt: skip
    answer = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return answer["save"], answer["load"]


def async_round(state: dict[str, torch.Tensor], round_number: int, settings: dict) -> tuple[float, float]:
    """(blocking, whole) seconds of ``dcp.async_save`` with Apollo's writer (thread executor, torch's default
    stager): how long the training loop waits, and how long until the checkpoint is committed."""
    started = time.perf_counter()
    future = dcp.async_save(state, storage_writer=ApolloStorageWriter(f"apollo://bench/x/r{round_number}",
                                                                      **settings))  # fmt: skip
    blocked = time.perf_counter() - started
    future.result()
    whole = time.perf_counter() - started
    into = {key: torch.empty_like(tensor) for key, tensor in state.items()}
    dcp.load(into, storage_reader=ApolloStorageReader(f"apollo://bench/x/r{round_number}", **settings))
    if any(not torch.equal(into[key], state[key]) for key in state):
        raise RuntimeError("async_save: the loaded state differs from the saved one")
    return blocked, whole


def run(endpoint: str, s3_endpoint: str, options: argparse.Namespace) -> dict[str, tuple[list[float], list[float]]]:
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
            if options.s3fs_python:
                saves, loads = results.setdefault(S3FS, ([], []))
                save_s, load_s = s3fs_round(s3_endpoint, round_number, options)
                saves.append(save_s)
                loads.append(load_s)
            settings = {"endpoint": endpoint, "access_key": DEV_ACCESS_KEY, "secret_key": DEV_SECRET_KEY}
            blocked, whole = async_round(saved, round_number, settings)
            blocks, wholes = results.setdefault(ASYNC, ([], []))
            blocks.append(blocked)
            wholes.append(whole)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tensors", type=int, default=16)
    parser.add_argument("--tensor-mib", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cluster", action="store_true", help="a cluster on PostgreSQL, not apollo server")
    parser.add_argument("--local-dir", default=None, help="where the baseline writes (default: the temp dir)")
    parser.add_argument("--s3fs-python", default=None, help="a Python with torch and s3fs (dcp_s3fs_way.py): "
                        "adds torch's fsspec writer over s3fs against the S3 gateway")  # fmt: skip
    options = parser.parse_args()
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # one process, on purpose
    total = options.tensors * options.tensor_mib * 1024 * 1024
    kind = "cluster (apollo meta on PostgreSQL, 6 storage processes)" if options.cluster else "apollo server"
    print(f"{options.tensors} float32 tensors of {options.tensor_mib} MiB ({total / 2**20:.0f} MiB), one process, "
          f"{options.rounds} rounds (median), {kind}, 4+2; torch {torch.__version__}; cpus={os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="apollo-dcp-deploy-") as root:
        if options.cluster:
            with TempPostgres(durable=True) as pg, LocalCluster(Path(root) / "c", pg.create_database("b")) as cluster:
                results = run(cluster.meta_urls, cluster.gateways[0].endpoint, options)
        else:
            with ServerProcess(Path(root) / "server") as server:
                results = run(server.endpoint, server.endpoint, options)
    blocks, wholes = results.pop(ASYNC)
    baseline = results["local disk, torch's FileSystemWriter"]
    base_save, base_load = (statistics.median(times) for times in baseline)
    print(f"{'way':<38} {'save':>9} {'GB/s':>6} {'vs disk':>8} {'load':>9} {'GB/s':>6} {'vs disk':>8} {'load/save':>9}")
    for name, (saves, loads) in results.items():
        save_s, load_s = statistics.median(saves), statistics.median(loads)
        print(f"{name:<38} {save_s:8.2f}s {total / save_s / 1e9:6.2f} {base_save / save_s:7.2f}x "
              f"{load_s:8.2f}s {total / load_s / 1e9:6.2f} {base_load / load_s:7.2f}x {load_s / save_s:8.2f}x")
    if S3FS in results:
        ours, theirs = results["apollo, ApolloStorageWriter"], results[S3FS]
        print(f"Apollo's writer / reader against torch's fsspec over s3fs to the S3 gateway: save "
              f"{statistics.median(theirs[0]) / statistics.median(ours[0]):.2f}x, load "
              f"{statistics.median(theirs[1]) / statistics.median(ours[1]):.2f}x as fast")  # fmt: skip
    sync_save = statistics.median(results["apollo, ApolloStorageWriter"][0])
    print(f"{ASYNC} (thread executor): blocks {statistics.median(blocks):.3f} s "
          f"({statistics.median(blocks) / sync_save:.1%} of a synchronous save with Apollo's writer), "
          f"committed after {statistics.median(wholes):.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
