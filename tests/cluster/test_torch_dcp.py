"""PyTorch Distributed Checkpoint on Apollo (``apollo.torch.dcp``) with real torch on CPU, ranks as processes
joined by gloo on loopback (``dcp_job.py``), against a cluster (PostgreSQL, 6 storage nodes) and ``apollo
server`` (SQLite):

- a model and its Adam state (~50 MB, DTensors sharded over 2 ranks) saved, then loaded on 4 ranks sharded
  the other way (a hypercube of each stored chunk: strided reads), on 1 rank as plain tensors, and model-only:
  every tensor equal;
- saves SIGKILLed before, while and after their ranks write, and inside ``finish``: the checkpoint saved
  before them loads as it was, with no file of theirs visible; their data leaves the drives once their
  transactions expire;
- ``dcp.async_save`` with torch's thread and process executors: it returns before the upload is done, the
  parameters change at once, and the checkpoint holds them as they were;
- ``dcp.save``/``dcp.load`` with no writer given go through the ``apollo`` fsspec protocol (torch's own
  writer), whose final rename is one metadata transaction: a reader polling meanwhile never finds a
  ``.metadata`` it cannot load.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from deployments import Target, deployment

from apollo.testing.server import free_port

torch = pytest.importorskip("torch")

BUCKET = "ckpt"
USER, SECRET = "dcp-user", "dcp-user-secret-key"
JOB = Path(__file__).with_name("dcp_job.py")
TTL_MIN_S = 2.0  # --txn-ttl-min, so that a save may ask for a short TTL
KILLED_TTL_S = 6.0  # what the saves the test kills ask for: their data is collected soon after
JOB_TIMEOUT_S = 180.0


def deployed(kind: str, make_cluster, make_server) -> Target:
    return deployment(kind, make_cluster, make_server, USER, SECRET,
                      meta_args=("--gc-delay", "0", "--txn-ttl-min", str(TTL_MIN_S)))  # fmt: skip


def start_job(target: Target, world: int, faults: dict[int, str] | None = None, **job) -> list[subprocess.Popen]:
    """The ranks of one job, each a process; ``faults``: ``APOLLO_FAULTS`` of a rank."""
    port = free_port()
    ranks = []
    for rank in range(world):
        spec = {"meta": target.meta_urls, "user": USER, "secret": SECRET, "rank": rank, "world": world,
                "port": port, "shard_dim": 0, **job}  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "APOLLO_FAULTS": (faults or {}).get(rank, "")}
        ranks.append(subprocess.Popen([sys.executable, str(JOB), json.dumps(spec)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env))  # fmt: skip
    return ranks


def run_job(target: Target, world: int, **job) -> list[str]:
    """Runs a job to its end; every rank must exit 0. Returns each rank's output."""
    ranks = start_job(target, world, **job)
    outputs = [rank.communicate(timeout=JOB_TIMEOUT_S) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0] * world, [error[-3000:] for _, error in outputs]
    return [out for out, _ in outputs]


def loaded_counts(outputs: list[str]) -> list[int]:
    return [int(out.split("loaded ")[1].split()[0]) for out in outputs]


def test_a_two_rank_save_loads_resharded_on_four_ranks_on_one_and_model_only(make_cluster, make_server):
    target = deployed("cluster", make_cluster, make_server)
    url = f"apollo://{BUCKET}/run-1/step-100"
    with target.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
        assert "saved" in run_job(target, 2, action="save", url=url, seed=1)[0]
        files = {info.key.rsplit("/", 1)[1]: info for info in client.list(BUCKET, "run-1/step-100/")}
        assert ".metadata" in files and sum(name.startswith("__1_") for name in files) >= 1, sorted(files)
        assert sum(info.size for info in files.values()) > 45_000_000  # ~50 MB: the model and Adam's moments
        # 4 ranks, 2-D tensors sharded on dim 1 now: each rank's piece is a strided hypercube of a stored chunk.
        counts = loaded_counts(run_job(target, 4, action="load", url=url, seed=1, shard_dim=1))
        assert counts == [counts[0]] * 4 and counts[0] == 32  # 4 layers' weights and biases; moments, steps
        whole = loaded_counts(run_job(target, 1, action="load", url=url, seed=1))
        assert whole == counts[:1]
        model = loaded_counts(run_job(target, 1, action="load", url=url, seed=1, model_only=True))
        assert model == [8]  # 4 weights and 4 biases


def visible_files(client, prefix: str) -> dict[str, str]:
    return {info.key: info.etag for info in client.list(BUCKET, prefix)}


def test_killed_saves_leave_the_last_complete_checkpoint_and_their_data_is_collected(make_cluster, make_server):
    """Each save of a new state over the checkpoint is killed: a rank SIGKILLed after a seeded random delay, or
    crashed at one of the writer's fault points. The checkpoint loads as the last complete save left it: the
    one before, or, when a random kill landed after the commit, the killed job's whole save."""
    target = deployed("cluster", make_cluster, make_server)
    url, prefix = f"apollo://{BUCKET}/run-2/step-7", "run-2/step-7/"
    plan = random.Random(20261203)
    kills = [("signal", 0), ("signal", 1), ("dcp.write.after_file", 1), ("dcp.finish.before_metadata", 0),
             ("dcp.finish.before_commit", 0)]  # fmt: skip
    with target.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
        run_job(target, 2, action="save", url=url, seed=7)
        complete, seed = visible_files(client, prefix), 7
        for number, (how, victim) in enumerate(kills):
            faults = {} if how == "signal" else {victim: f"{how}=crash"}
            ranks = start_job(target, 2, faults=faults, action="save", url=url, seed=100 + number,
                              txn_ttl_s=KILLED_TTL_S)  # fmt: skip
            try:
                if how == "signal":
                    assert ranks[victim].stdout.readline().strip() == "started"
                    time.sleep(plan.uniform(0.0, 2.5))  # anywhere from planning to the middle of the writes
                    ranks[victim].send_signal(signal.SIGKILL)
                died = ranks[victim].wait(timeout=JOB_TIMEOUT_S)
                assert died in (-signal.SIGKILL, 137) or how == "signal", (how, victim, ranks[victim].stderr.read())
            finally:
                for rank in ranks:  # the survivor waits in a collective for its dead peer: end it too
                    rank.kill()
                    rank.wait(timeout=30)
            visible = visible_files(client, prefix)
            if visible != complete:  # a kill at a random time can land after the commit: then the whole new save
                assert how == "signal", (how, victim, sorted(visible))
                seed, complete = 100 + number, visible
            assert load_in_process(target, url, seed=seed) == 32, (how, victim)
        # Every killed save's transaction expires and its shard files are collected: once the checkpoint itself
        # is deleted, nothing is left on any drive.
        for key in complete:
            client.delete(BUCKET, key)
        deadline = time.monotonic() + 60
        while target.shard_files() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert target.shard_files() == []


def load_in_process(target: Target, url: str, seed: int) -> int:
    """Loads the checkpoint into plain tensors here (no process group) and compares it with the state of
    ``seed``; returns the tensors compared."""
    import torch.distributed.checkpoint as dcp
    from dcp_job import assert_equal, trained_state

    from apollo.torch.dcp import ApolloStorageReader

    _, state = trained_state(seed + 1000)
    _, expected = trained_state(seed)
    dcp.load(state, storage_reader=ApolloStorageReader(url, endpoint=target.meta_urls, access_key=USER,
                                                       secret_key=SECRET))  # fmt: skip
    return assert_equal(state, expected)


def test_async_save_returns_at_once_and_saves_the_state_as_it_was_with_both_executors(make_server):
    target = deployed("server", None, make_server)
    with target.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
    for executor in ("thread", "process"):
        out = run_job(target, 1, action="async", executor=executor, url=f"apollo://{BUCKET}/async/{executor}", seed=3)
        assert "async pending=True loaded 8" in out[0], (executor, out)


def as_the_environment(monkeypatch, target: Target) -> None:
    """Names the deployment to ``apollo://`` as a job's environment does (torch's fsspec path finds it so), for
    this test only; no filesystem instance made for an earlier test's endpoint is reused."""
    from apollo.integrations.fsspec import ApolloFileSystem

    monkeypatch.setenv("APOLLO_ENDPOINT", target.meta_urls)
    monkeypatch.setenv("APOLLO_ACCESS_KEY", USER)
    monkeypatch.setenv("APOLLO_SECRET_KEY", SECRET)
    ApolloFileSystem.clear_instance_cache()


def polled_while(save, load) -> tuple[list, list]:
    """Runs ``save()`` while another thread calls ``load()`` over and over; returns what the loads returned
    and the errors they raised. One load ends before ``save()`` starts and one begins after it ends, so the
    loads see the state before the saves and the one after them, however the threads are scheduled (on a
    busy machine a load could outlast every save, and a check that they saw two states failed)."""
    stop, seen, failures, finished = threading.Event(), [], [], []

    def poll() -> None:
        while not stop.is_set():
            try:
                seen.append(load())
            except Exception as error:  # noqa: BLE001 - every failure is a finding
                failures.append(repr(error))
            finished.append(1)

    def loads_finished(count: int) -> None:
        deadline = time.monotonic() + 60
        while len(finished) < count and reader.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        loads_finished(1)
        save()
        loads_finished(len(finished) + 2)  # the one under way, then one begun after the last save
    finally:
        stop.set()
        reader.join(timeout=60)
    return seen, failures


def test_a_reader_never_finds_a_torn_checkpoint_by_apollos_writer_or_torchs_fsspec_one(make_server, monkeypatch):
    """Apollo's writer replaces a checkpoint in one transaction, so a reader loading it over and over while it
    is saved again and again always loads one whole save. With no writer given, torch picks its fsspec writer
    for ``apollo://`` (the entry point): its final rename of ``.metadata.tmp`` is one metadata transaction, so a
    reader polling for the newest step never finds a ``.metadata`` that does not load, nor one that vanishes."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    from apollo.integrations.fsspec import ApolloFileSystem
    from apollo.torch.dcp import ApolloStorageReader, ApolloStorageWriter

    target = deployed("server", None, make_server)
    settings = {"endpoint": target.meta_urls, "access_key": USER, "secret_key": SECRET}
    with target.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)

    def state(n: int) -> dict:  # w is read straight into its tensor, b and n in a batch GET
        return {"w": torch.full((1024, 512), float(n)), "b": torch.full((300,), float(n)), "n": n}

    def consistent(loaded: dict) -> int:
        n = loaded["n"]
        assert torch.equal(loaded["w"], state(n)["w"]) and torch.equal(loaded["b"], state(n)["b"]), "torn"
        return n

    url = f"apollo://{BUCKET}/replaced/step-1"
    dcp.save(state(0), storage_writer=ApolloStorageWriter(url, **settings))

    def load_apollo() -> int:
        loaded = state(-1)
        dcp.load(loaded, storage_reader=ApolloStorageReader(url, **settings))
        return consistent(loaded)

    def save_apollo() -> None:
        for n in range(1, 6):
            dcp.save(state(n), storage_writer=ApolloStorageWriter(url, **settings))

    seen, failures = polled_while(save_apollo, load_apollo)
    assert not failures, failures[:3]
    assert len(set(seen)) >= 2 and load_apollo() == 5, sorted(set(seen))

    class SavingBetweenOpenAndRead(DefaultLoadPlanner):
        """Saves a new state over the checkpoint after the reader opened it and before it reads a byte."""

        def create_local_plan(self):
            dcp.save(state(6), storage_writer=ApolloStorageWriter(url, **settings))
            return super().create_local_plan()

    loaded = state(-1)
    dcp.load(loaded, storage_reader=ApolloStorageReader(url, **settings), planner=SavingBetweenOpenAndRead())
    assert consistent(loaded) == 5 and load_apollo() == 6  # what was opened is what was read

    as_the_environment(monkeypatch, target)
    steps = [f"apollo://{BUCKET}/plain/step-{n}" for n in range(4)]
    fs = ApolloFileSystem()
    dcp.save(state(0), checkpoint_id=steps[0])
    found: list[int] = []

    def load_newest() -> int:
        present = [n for n, step in enumerate(steps) if fs.exists(f"{step}/.metadata")]
        assert present == list(range(len(present))), f"a .metadata vanished: {present}"
        assert present[-1] >= max(found, default=0), f"the newest step went back: {present} after {found}"
        found.append(present[-1])
        loaded = state(-1)
        dcp.load(loaded, checkpoint_id=steps[present[-1]])
        assert consistent(loaded) == present[-1]
        return present[-1]

    def save_steps() -> None:
        for n in range(1, 4):
            dcp.save(state(n), checkpoint_id=steps[n])

    seen, failures = polled_while(save_steps, load_newest)
    assert not failures, failures[:3]
    assert seen and load_newest() == 3
    assert not fs.exists(f"{steps[3]}/.metadata.tmp")


def load_refused(state: dict, reader) -> str:
    """What ``dcp.load`` failed with: its ranks' errors, which torch wraps in one CheckpointException."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    with pytest.raises(CheckpointException) as refused:
        dcp.load(state, storage_reader=reader)
    return " ".join(f"{type(error).__name__}: {error}" for error in refused.value.failures.values())


class RunsCode:
    """What a hostile writer of the bucket would plant as ``.metadata``: unpickling it runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_planted_metadata_runs_no_code_and_another_writers_checkpoint_is_refused(make_server, tmp_path, monkeypatch):
    import io
    import pickle

    import torch.distributed.checkpoint as dcp

    from apollo.torch.dcp import ApolloStorageReader

    target = deployed("server", None, make_server)
    settings = {"endpoint": target.meta_urls, "access_key": USER, "secret_key": SECRET}
    marker = tmp_path / "code-ran"
    with target.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
        archive = io.BytesIO()
        torch.save({"x": RunsCode(marker)}, archive)
        for name, planted in (("pickle", pickle.dumps(RunsCode(marker))), ("archive", archive.getvalue())):
            client.put(BUCKET, f"planted/{name}/.metadata", planted)
            reader = ApolloStorageReader(f"apollo://{BUCKET}/planted/{name}", **settings)
            why = load_refused({"w": torch.zeros(2)}, reader)
            assert "is not the metadata of a checkpoint ApolloStorageWriter saved" in why, why
        assert not marker.exists(), "unpickling the planted .metadata ran its command"
        why = load_refused({"w": torch.zeros(2)}, ApolloStorageReader(f"apollo://{BUCKET}/none", **settings))
        assert "holds no checkpoint" in why, why
    # torch's own fsspec writer pickles .metadata plainly: Apollo's reader names it rather than unpickle it.
    as_the_environment(monkeypatch, target)
    dcp.save({"w": torch.ones(4)}, checkpoint_id=f"apollo://{BUCKET}/by-torch")
    why = load_refused({"w": torch.zeros(4)}, ApolloStorageReader(f"apollo://{BUCKET}/by-torch", **settings))
    assert "is not the metadata of a checkpoint ApolloStorageWriter saved" in why, why
    loaded = {"w": torch.zeros(4)}
    dcp.load(loaded, checkpoint_id=f"apollo://{BUCKET}/by-torch")  # torch's reader, through apollo://
    assert torch.equal(loaded["w"], torch.ones(4))


def test_a_pickle_planted_as_a_checkpoint_value_runs_no_code_on_load(make_server, tmp_path):
    """A value that is not a tensor is saved as ``torch.save`` bytes, and torch's ``DefaultLoadPlanner`` loads it
    with ``weights_only=False``: whoever could write one file of a checkpoint would run code in every rank that
    loads it. Apollo's reader refuses such an item before the planner sees it; plain values still load, and a
    reader told to trust its writers loads the planted one, which runs the command (the attack is real)."""
    import torch.distributed.checkpoint as dcp

    from apollo.torch.dcp import ApolloStorageReader, ApolloStorageWriter

    target = deployed("server", None, make_server)
    settings = {"endpoint": target.meta_urls, "access_key": USER, "secret_key": SECRET}
    marker = tmp_path / "code-ran"
    with target.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
    planted, plain = f"apollo://{BUCKET}/values/planted", f"apollo://{BUCKET}/values/plain"
    values = {"step": 7, "run": "run-7", "losses": [0.5, 0.25]}
    dcp.save({"w": torch.ones(4), "values": values, "hook": RunsCode(marker)},
             storage_writer=ApolloStorageWriter(planted, **settings))  # fmt: skip
    dcp.save({"w": torch.ones(4), "values": values}, storage_writer=ApolloStorageWriter(plain, **settings))
    assert not marker.exists()  # saving pickles the object; nothing ran

    why = load_refused({"w": torch.zeros(4), "values": {}, "hook": None}, ApolloStorageReader(planted, **settings))
    assert "item 'hook' is a pickle torch's weights-only loader refuses" in why, why
    assert not marker.exists(), "the planted value was unpickled"

    loaded = {"w": torch.zeros(4), "values": {"step": 0, "run": "", "losses": []}}
    dcp.load(loaded, storage_reader=ApolloStorageReader(plain, **settings))
    assert torch.equal(loaded["w"], torch.ones(4)) and loaded["values"] == values

    dcp.load({"w": torch.zeros(4), "values": {}, "hook": None},
             storage_reader=ApolloStorageReader(planted, trust_pickles=True, **settings))  # fmt: skip
    assert marker.exists(), "trusted, the planted value is unpickled and runs its command"
