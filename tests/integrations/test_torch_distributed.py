"""apollo.torch's iterable dataset under real distributed training: ranks are processes spawned by
``torch.multiprocessing``, joined by a gloo process group on loopback, each with 3 forked DataLoader workers
reading thousands of small objects from a real ``apollo server`` through one frozen snapshot.

- Each epoch reads every key exactly once, the (rank, worker) shares are disjoint, and merged as the plan
  says (``apollo.torch.plan``: rank ``r`` of ``W`` reads positions ``r, r + W, ...``) the ranks' loops give
  one global order, the same for world sizes 1, 2 and 4: ``epoch_order`` of (snapshot, seed, epoch).
- A job checkpoints its loader's state at every step; one rank is SIGKILLed mid-epoch and the rest of the job
  with it (a preemption); resumed on another world size from the last checkpoint every rank wrote, what was
  read before the checkpoint followed by what is read after it is exactly an uninterrupted run's sequence.

Ranks step in lockstep (an ``all_reduce`` per step, as gradients would make them) and write, per step, the
samples their loop received (key, worker id, worker pid, CRC of the bytes) with the loader's ``state_dict``,
each file atomically: what the parent compares is what each loop received, never timing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
import warnings
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import get_worker_info

from apollo.client.blocking import Client
from apollo.client.native import AsyncClient
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess, free_port
from apollo.torch import ApolloDataLoader, ApolloIterableDataset, ApolloSample
from apollo.torch.plan import epoch_order

COUNT = 2000  # small objects under PREFIX
PREFIX = "train/"
BATCH = 16  # the DataLoader's and the dataset's
WORKERS = 3  # DataLoader workers of each rank
SEED = 20240611
EPOCHS = (0, 1)
KILL_AFTER = 15  # the preempted job: a rank is killed once rank 0 checkpointed this step of epoch 0...
HANG_AT = 40  # ... and rank 0 stops stepping here if that has not happened yet: the kill is always mid-epoch
STEP_S = 0.01  # the preempted job's "training" per step, so that the kill lands while batches are in flight
JOB_TIMEOUT_S = 120.0


def body(key: str) -> bytes:
    """An object's bytes: its key, repeated to a few hundred bytes (a size of its own)."""
    return f"{key}\n".encode() * (12 + zlib.crc32(key.encode()) % 20)


def tagged(sample: ApolloSample) -> list:
    """The transform, run in the DataLoader worker that read the sample: which worker, and what it read."""
    worker = get_worker_info()
    return [worker.id, os.getpid(), sample.key, zlib.crc32(sample.data)]


def write_atomically(path: Path, value: Any) -> None:
    """A checkpoint a kill can never leave half-written: a file is either absent or whole."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value))
    os.replace(temporary, path)


def rank_main(rank: int, job: dict[str, Any]) -> None:
    """One rank of a job (a spawned process): its epochs in lockstep with the other ranks; after each step,
    ``rank{r}/epoch{e}-step{s}.json``: the loader's state and the samples this rank's loop received."""
    warnings.filterwarnings("ignore", "This DataLoader will create")  # 3 workers on a 2-core machine: we know
    world_size = job["world_size"]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{job['port']}", rank=rank, world_size=world_size)
    try:
        dataset = ApolloIterableDataset.from_prefix(
            job["url"],
            snapshot=job["snapshot"],
            endpoint=job["endpoint"],
            access_key=DEV_ACCESS_KEY,
            secret_key=DEV_SECRET_KEY,
            shuffle=True,
            seed=SEED,
            batch_size=BATCH,
            transform=tagged,
        )
        assert (dataset.rank, dataset.world_size) == (rank, world_size)  # taken from the process group
        loader = ApolloDataLoader(
            dataset, batch_size=BATCH, num_workers=WORKERS, collate_fn=list, multiprocessing_context="fork"
        )
        if job["resume"] is not None:
            loader.load_state_dict(job["resume"])
        directory = Path(job["out"]) / f"rank{rank}"
        directory.mkdir(parents=True, exist_ok=True)
        for epoch in job["epochs"]:
            dataset.set_epoch(epoch)  # the epoch a resumed job is in: no change, it goes on where it stopped
            batches = iter(loader)
            for step in itertools.count(1):
                batch = next(batches, None)
                more = torch.tensor([0 if batch is None else 1])
                dist.all_reduce(more)  # one batch per rank per step; the epoch is over when every rank's is
                if not more.item():
                    break
                time.sleep(job["step_s"])
                write_atomically(
                    directory / f"epoch{epoch}-step{step:04d}.json",
                    {"state": loader.state_dict(), "samples": batch or []},
                )
                if job["hang_at"] == step and rank == 0:
                    time.sleep(JOB_TIMEOUT_S)  # a step that never ends: the job's end is a kill
    finally:
        dist.destroy_process_group()


# The parent: jobs and what they read ------------------------------------------------------------------


def live(pid: int) -> bool:
    """Whether ``pid`` is a process that still runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def children(pids: set[int]) -> set[int]:
    """The processes whose parent is one of ``pids``: the ranks' DataLoader workers."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent in pids:
                found.add(int(entry.name))
    return found


def kill_all(pids: set[int]) -> None:
    for pid in pids:
        if live(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_gone(pids: set[int], timeout_s: float = 15.0) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while (left := {pid for pid in pids if live(pid)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


class Job:
    """``world_size`` spawned ranks running ``rank_main``; whatever happens, no process of it outlives it."""

    def __init__(self, out: Path, data: dict[str, str], world_size: int, **options: Any) -> None:
        self.out = out
        self.world_size = world_size
        self.spec = {"port": free_port(), "world_size": world_size, "out": str(out), "epochs": list(EPOCHS),
                     "resume": None, "step_s": 0.0, "hang_at": None, **data, **options}  # fmt: skip
        self.workers: set[int] = set()

    def __enter__(self) -> Job:
        self.context = mp.start_processes(
            rank_main, args=(self.spec,), nprocs=self.world_size, join=False, start_method="spawn"
        )
        return self

    def ranks(self) -> set[int]:
        return set(self.context.pids())

    def wait(self, until=None) -> None:
        """Until every rank ended well (a rank's failure is raised), or ``until()`` is true."""
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not self.context.join(timeout=0.05):
            self.workers |= children(self.ranks())
            if until is not None and until():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {self.out.name} still running after {JOB_TIMEOUT_S} s")

    def __exit__(self, error: type[BaseException] | None, *exc: object) -> None:
        ranks = self.ranks()
        self.workers |= children({pid for pid in ranks if live(pid)})
        kill_all(ranks | self.workers)  # none left but after a failure
        for process in self.context.processes:
            process.join()
        left = wait_gone(ranks | self.workers)
        assert error is not None or not left, f"processes of the job left running: {left}"

    def steps(self) -> dict[int, list[list[dict]]]:
        """``{epoch: [the checkpoints of rank r, by step, for each rank r]}``, as on disk."""
        found: dict[int, list[list[dict]]] = {}
        for epoch in EPOCHS:
            per_rank = [
                [json.loads(path.read_text()) for path in sorted((self.out / f"rank{rank}").glob(f"epoch{epoch}-*"))]
                for rank in range(self.world_size)
            ]
            if any(per_rank):
                found[epoch] = per_rank
        return found


def global_order(per_rank: list[list[list]], keys: list[str], start: int = 0, end: int = COUNT) -> list[str]:
    """The ranks' samples merged as the plan says (rank ``r`` of ``W`` has positions ``start + r + i * W``),
    positions ``start`` to ``end``, after checking what each (rank, worker) read: the key's bytes, each key
    once, no gap, and within a rank, whole batches by worker in turn (its ``i``-th sample from worker
    ``i // B % n``, one process per worker)."""
    world_size = len(per_rank)
    expected_crc = {key: zlib.crc32(body(key)) for key in keys}
    placed: dict[int, str] = {}
    shares: dict[tuple[int, int], set[str]] = {}
    for rank, samples in enumerate(per_rank):
        pids = {}
        for index, (worker, pid, key, crc) in enumerate(samples):
            assert key in expected_crc, f"rank {rank} read {key}, which is not in the snapshot"
            assert crc == expected_crc[key], f"rank {rank} read other bytes than {key}'s"
            assert worker == index // BATCH % WORKERS, f"rank {rank}'s sample {index} from worker {worker}"
            assert pids.setdefault(worker, pid) == pid, f"rank {rank}'s worker {worker} in two processes"
            shares.setdefault((rank, worker), set()).add(key)
            placed[start + rank + index * world_size] = key
        assert len(set(pids.values())) == len(pids), f"rank {rank}: two workers in one process"
    counted = Counter(key for samples in per_rank for _, _, key, _ in samples)
    assert [key for key, times in counted.items() if times > 1] == [], "samples read twice in one epoch"
    assert sum(map(len, shares.values())) == len(set().union(*shares.values())), "(rank, worker) shares overlap"
    assert sorted(placed) == list(range(start, end)), "the ranks' positions do not tile the epoch's part"
    return [placed[position] for position in sorted(placed)]


def checkpoints_agree(per_rank: list[list[dict]], epoch: int, start: int = 0) -> None:
    """At each step every rank had a whole batch in, every rank's state says the same: ``k`` samples on each
    of ``W`` ranks read the first ``k * W`` positions from where the epoch (re)started."""
    world_size = len(per_rank)
    for step, states in enumerate(zip(*per_rank, strict=True), start=1):
        if all(len(state["samples"]) == BATCH for state in states) and step < len(per_rank[0]):
            assert all(state["state"] == states[0]["state"] for state in states), f"step {step}: ranks disagree"
            assert states[0]["state"]["epoch"] == epoch
            assert states[0]["state"]["position"] == start + step * BATCH * world_size, f"step {step}"


# Fixtures and tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frozen(apollo_server: ServerProcess) -> dict[str, Any]:
    """``COUNT`` small objects written with the native client and a snapshot of them; then the prefix changes
    (one object more, one deleted), which no rank of any job may see."""
    bucket = "torch-distributed"
    keys = [f"{PREFIX}{number:05d}.bin" for number in range(COUNT)]

    async def write() -> None:
        async with AsyncClient(apollo_server.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as client:
            await client.create_bucket(bucket)
            slots = asyncio.Semaphore(32)

            async def put(key: str) -> None:
                async with slots:
                    await client.put(bucket, key, body(key))

            await asyncio.gather(*(put(key) for key in keys))

    asyncio.run(write())
    with Client(apollo_server.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as client:
        snapshot = client.snapshot(bucket, PREFIX).snapshot_id
        client.put(bucket, f"{PREFIX}late.bin", body(f"{PREFIX}late.bin"))
        client.delete(bucket, keys[7])
    spec = {"url": f"apollo://{bucket}/{PREFIX}", "snapshot": snapshot, "endpoint": apollo_server.endpoint}
    return {"spec": spec, "keys": keys}


@pytest.fixture(scope="module")
def uninterrupted(frozen, tmp_path_factory) -> dict[int, list[str]]:
    """One rank, whole epochs: each epoch's global order, for the other runs to equal."""
    with Job(tmp_path_factory.mktemp("world1"), frozen["spec"], world_size=1) as job:
        job.wait()
    orders = {}
    for epoch, per_rank in job.steps().items():
        checkpoints_agree(per_rank, epoch)
        orders[epoch] = global_order(received(per_rank), frozen["keys"])
    assert sorted(orders) == list(EPOCHS)
    return orders


def received(per_rank: list[list[dict]], steps: int | None = None) -> list[list[list]]:
    """What each rank's loop received (in its first ``steps`` steps)."""
    return [[sample for step in checkpoints[:steps] for sample in step["samples"]] for checkpoints in per_rank]


@pytest.mark.parametrize("world_size", [2, 4])
def test_each_epoch_reads_every_key_once_across_ranks_and_workers_in_one_global_order(
    frozen, uninterrupted, tmp_path, world_size
):
    keys = frozen["keys"]
    for epoch in EPOCHS:  # the order is (snapshot, seed, epoch)'s: shuffled, new each epoch
        plan = [keys[index] for index in epoch_order(COUNT, snapshot_id=frozen["spec"]["snapshot"], seed=SEED,
                                                     epoch=epoch, shuffle=True)]  # fmt: skip
        assert uninterrupted[epoch] == plan and plan != keys
    assert uninterrupted[0] != uninterrupted[1]
    with Job(tmp_path, frozen["spec"], world_size) as job:
        job.wait()
    steps = job.steps()
    assert sorted(steps) == list(EPOCHS)
    for epoch, per_rank in steps.items():
        checkpoints_agree(per_rank, epoch)
        assert global_order(received(per_rank), keys) == uninterrupted[epoch]
        assert all(len(samples) in (COUNT // world_size, COUNT // world_size + 1) for samples in received(per_rank))
    workers = {pid for per_rank in steps.values() for samples in received(per_rank) for _, pid, _, _ in samples}
    assert len(workers) == world_size * WORKERS * len(EPOCHS)  # each epoch, its own forked workers
    assert workers.isdisjoint(job.context.pids())  # the ranks read nothing themselves


def test_a_job_killed_mid_epoch_resumes_on_another_world_size_with_exactly_the_rest(frozen, uninterrupted, tmp_path):
    keys = frozen["keys"]
    with Job(tmp_path / "preempted", frozen["spec"], 2, step_s=STEP_S, hang_at=HANG_AT) as job:
        rank0_past = tmp_path / "preempted" / "rank0" / f"epoch0-step{KILL_AFTER:04d}.json"
        job.wait(until=rank0_past.exists)
        ranks, workers = job.context.pids(), job.workers | children(job.ranks())
        os.kill(ranks[1], signal.SIGKILL)  # mid-epoch; then the scheduler ends the rest of the preempted job
        kill_all({ranks[0]} | workers)  # (a rank's sentinel is open while its workers live: they go too)
        with pytest.raises(mp.ProcessExitedException, match="terminated with signal SIGKILL"):
            job.context.join(timeout=JOB_TIMEOUT_S)
    [per_rank] = job.steps().values()  # epoch 0 only
    steps_per_rank = -(-COUNT // 2 // BATCH)
    agreed = min(len(checkpoints) for checkpoints in per_rank)  # the last step every rank checkpointed
    assert KILL_AFTER - 1 <= agreed <= HANG_AT < steps_per_rank, "the job was not killed mid-epoch"
    checkpoints_agree([checkpoints[:agreed] for checkpoints in per_rank], 0)
    state = per_rank[0][agreed - 1]["state"]
    assert state == per_rank[1][agreed - 1]["state"] and state["position"] == agreed * 2 * BATCH
    before = global_order(received(per_rank, agreed), keys, end=state["position"])

    with Job(tmp_path / "resumed", frozen["spec"], 3, resume=state) as job:  # as a job restarts: all load it
        job.wait()
    steps = job.steps()
    assert sorted(steps) == list(EPOCHS)
    checkpoints_agree(steps[0], 0, start=state["position"])
    after = global_order(received(steps[0]), keys, start=state["position"])
    assert len(before) + len(after) == COUNT and before + after == uninterrupted[0]
    checkpoints_agree(steps[1], 1)  # the next epoch is whole again, on the new world size
    assert global_order(received(steps[1]), keys) == uninterrupted[1]
