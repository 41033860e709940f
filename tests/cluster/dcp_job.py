"""One rank of a PyTorch Distributed Checkpoint job against Apollo, run as its own process by
``test_torch_dcp.py``: ``python dcp_job.py '<json>'``. The job (every field in the json):

- ``action``: ``save`` (the state of ``seed`` to ``url``), ``load`` (into a state of another seed, then every
  tensor compared with the state of ``seed``; ``model_only`` loads the model's half), ``async`` (an
  ``async_save`` with ``executor`` "thread" or "process", the parameters changed at once, then a load that
  must find them as they were when the save began).
- ``rank``, ``world``, ``port``: the gloo process group on loopback (a world of 1 uses none and plain tensors).
- ``shard_dim``: 2-D tensors are DTensors sharded on this dim over the ranks (1-D ones on dim 0).
- ``meta``, ``user``, ``secret``: the native client's settings, given to the writer and reader;
  ``txn_ttl_s``: the save's transaction's TTL (a killed save's data is collected once it ends).

It prints ``started`` once the process group is up, ``saved`` or ``loaded N`` when done, and exits 0; any
mismatch raises. ``APOLLO_FAULTS`` in its environment crashes it at a writer's fault point.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor, init_device_mesh

from apollo.torch.dcp import ApolloStorageReader, ApolloStorageWriter


def trained_state(seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A model of ~17 MB and its Adam state after one step (~50 MB in all), keyed by parameter names, with
    plain values beside the tensors (saved as bytes items)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 1000))  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(8, 1024)).sum().backward()
    optimizer.step()
    model_state, optim_state = get_state_dict(model, optimizer)
    return model, {"model": model_state, "optim": optim_state, "extra": {"seed": seed, "note": "x" * 1000}}


def sharded(value: Any, mesh, shard_dim: int) -> Any:
    """Every tensor of ``value`` as a DTensor over ``mesh``: 2-D ones sharded on ``shard_dim``, 1-D on 0,
    scalars replicated."""
    if isinstance(value, dict):
        return {key: sharded(item, mesh, shard_dim) for key, item in value.items()}
    if isinstance(value, list):
        return [sharded(item, mesh, shard_dim) for item in value]
    if isinstance(value, torch.Tensor):
        placement = Replicate() if value.dim() == 0 else Shard(min(shard_dim, value.dim() - 1))
        return distribute_tensor(value, mesh, [placement])
    return value


def assert_equal(loaded: Any, expected: Any, path: str = "") -> int:
    """Compares ``loaded`` (DTensors gathered whole) with ``expected``; returns the tensors compared."""
    if isinstance(expected, dict):
        assert set(loaded) == set(expected), (path, set(loaded) ^ set(expected))
        return sum(assert_equal(loaded[key], expected[key], f"{path}/{key}") for key in expected)
    if isinstance(expected, list):
        return sum(assert_equal(a, b, f"{path}[{n}]") for n, (a, b) in enumerate(zip(loaded, expected, strict=True)))
    if isinstance(expected, torch.Tensor):
        whole = loaded.full_tensor() if isinstance(loaded, DTensor) else loaded
        assert torch.equal(whole, expected), path
        return 1
    assert loaded == expected, (path, loaded, expected)
    return 0


def main(job: dict[str, Any]) -> None:
    world, rank = job["world"], job["rank"]
    settings = {"endpoint": job["meta"], "access_key": job["user"], "secret_key": job["secret"]}
    mesh = None
    if world > 1 or job["action"] == "async":
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{job['port']}", rank=rank, world_size=world)
        mesh = init_device_mesh("cpu", (world,)) if world > 1 else None
    print("started", flush=True)
    try:
        model, expected = trained_state(job["seed"])
        if job["action"] == "save":
            state = sharded(expected, mesh, job["shard_dim"]) if mesh else expected
            writer = ApolloStorageWriter(job["url"], txn_ttl_s=job.get("txn_ttl_s"), **settings)
            dcp.save(state, storage_writer=writer)
            print("saved", flush=True)
        elif job["action"] == "load":
            _, state = trained_state(job["seed"] + 1000)  # other values, same structure
            if job.get("model_only"):
                state, expected = {"model": state["model"]}, {"model": expected["model"]}
            state = sharded(state, mesh, job["shard_dim"]) if mesh else state
            dcp.load(state, storage_reader=ApolloStorageReader(job["url"], **settings))
            print(f"loaded {assert_equal(state, expected)}", flush=True)
        else:
            save_async(job, model, expected, settings)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def save_async(job: dict[str, Any], model: torch.nn.Module, expected: dict[str, Any], settings: dict) -> None:
    """``async_save`` returns before the upload ends; the next "step" then changes every parameter in place,
    and the checkpoint must still hold the values of when the save began."""
    from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType

    kind = AsyncCheckpointerType.PROCESS if job["executor"] == "process" else AsyncCheckpointerType.THREAD
    saved = {"model": {name: tensor.clone() for name, tensor in expected["model"].items()}}
    upload = dcp.async_save(expected, storage_writer=ApolloStorageWriter(job["url"], **settings),
                            async_checkpointer_type=kind)  # fmt: skip
    pending = not upload.done()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)  # expected["model"] holds these very tensors
    upload.result(timeout=300)
    _, state = trained_state(job["seed"] + 1000)
    state = {"model": state["model"]}
    dcp.load(state, storage_reader=ApolloStorageReader(job["url"], **settings))
    print(f"async pending={pending} loaded {assert_equal(state, saved)}", flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
