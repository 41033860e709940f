"""Single-file checkpoints through ``apollo.torch.checkpoint`` against a real ``apollo server``: a model and its
Adam state saved with ``torch.save`` and loaded with ``torch.load``, every tensor equal; a save that raises
half-way, a writer dropped unclosed and a process SIGKILLed mid-save publish nothing, and the checkpoint
saved before them still loads; a reader keeps reading the version it opened while the object is replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from apollo.client.files import CHUNK_BYTES
from apollo.torch.checkpoint import reader, writer


def trained_state(seed: int) -> dict:
    """A model of ~12 MB and its Adam state after one step (~36 MB with the moments): several put chunks."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                torch.nn.Linear(1024, 1024))  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(8, 1024)).sum().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optim": optimizer.state_dict(), "step": seed}


def assert_same(loaded: object, saved: object) -> None:
    if isinstance(saved, torch.Tensor):
        assert isinstance(loaded, torch.Tensor) and torch.equal(loaded, saved)
    elif isinstance(saved, dict):
        assert isinstance(loaded, dict) and loaded.keys() == saved.keys()
        for key in saved:
            assert_same(loaded[key], saved[key])
    elif isinstance(saved, list | tuple):
        assert len(loaded) == len(saved)
        for a, b in zip(loaded, saved, strict=True):
            assert_same(a, b)
    else:
        assert loaded == saved


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("this state cannot be saved")


def test_a_checkpoint_saves_and_loads_and_a_failed_save_publishes_nothing(apollo_fs, fs_bucket):
    url = f"apollo://{fs_bucket}/run/step.pt"
    saved = trained_state(1)
    with writer(url) as f:
        torch.save(saved, f)
    assert f.info.size > 3 * CHUNK_BYTES, "the checkpoint spans several chunks of the put"
    assert_same(torch.load(reader(url), weights_only=True), saved)

    with pytest.raises(RuntimeError, match="cannot be saved"), writer(url) as f:
        torch.save({**trained_state(2), "last": Unpicklable()}, f)  # tensors written first, then it raises
    dropped = writer(url)
    torch.save(trained_state(3), dropped)
    del dropped  # never closed: not published
    assert_same(torch.load(reader(url), weights_only=True), saved)
    assert apollo_fs.ls(f"{fs_bucket}/run", detail=False) == [f"{fs_bucket}/run/step.pt"]


def test_a_reader_keeps_the_version_it_opened(apollo_fs, fs_bucket):
    url = f"apollo://{fs_bucket}/ckpt.pt"
    first = trained_state(4)
    with writer(url) as f:
        torch.save(first, f)
    opened = reader(url)
    with writer(url) as f:
        torch.save(trained_state(5), f)  # replaced on an unversioned bucket, while opened
    assert_same(torch.load(opened, weights_only=True), first)
    with pytest.raises(FileNotFoundError):
        reader(f"apollo://{fs_bucket}/missing.pt")
    with pytest.raises(ValueError):
        reader(f"s3://{fs_bucket}/ckpt.pt")


def test_a_process_killed_mid_save_publishes_nothing(apollo_fs, fs_bucket, tmp_path):
    url = f"apollo://{fs_bucket}/killed.pt"
    marker = tmp_path / "written"
    script = (
        "import sys, time\n"
        "from apollo.torch.checkpoint import writer\n"
        f"f = writer({url!r})\n"
        f"for _ in range(3): f.write(b'x' * {CHUNK_BYTES})\n"
        f"open({str(marker)!r}, 'w').close()\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, "the writer process died before writing"
            assert time.monotonic() < deadline, "the writer process wrote nothing in 60 s"
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert not apollo_fs.exists(f"{fs_bucket}/killed.pt")
    with pytest.raises(FileNotFoundError):
        reader(url)


def test_a_save_into_a_missing_bucket_is_refused_at_open(apollo_fs):
    with pytest.raises(FileNotFoundError, match="no-such-bucket-here"):
        writer("apollo://no-such-bucket-here/step.pt")
    assert not apollo_fs.exists("no-such-bucket-here")
