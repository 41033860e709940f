"""One round of ``dcp_bench.py``'s s3fs way: torch's fsspec checkpoint writer and reader over s3fs, against an
S3 endpoint (Apollo's own gateway), saving and loading the same state dict ``dcp_bench.py`` makes.

It runs in a Python of its own (``dcp_bench.py --s3fs-python``): s3fs's aiobotocore pins a botocore older than
the boto3 Apollo's tests use, so the two cannot share a virtualenv. It imports torch and s3fs only; the state
dict is made with the same seeded generator, so it is the same bytes. Prints one JSON line:
``{"save": seconds, "load": seconds}``; exits non-zero if the load differs from the save.

    python3 -m venv /tmp/dcp-s3fs && /tmp/dcp-s3fs/bin/pip install torch==2.13.0 s3fs numpy
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter


def state_of(tensors: int, mib: int, seed: int) -> dict[str, torch.Tensor]:
    """The same state as ``dcp_bench.state_of``."""
    generator = torch.Generator().manual_seed(seed)
    rows = mib * 1024 * 1024 // 4 // 1024
    return {f"layer{n}.weight": torch.randn(rows, 1024, generator=generator) for n in range(tensors)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--path", required=True, help="s3://bucket/prefix of this round's checkpoint")
    parser.add_argument("--tensors", type=int, required=True)
    parser.add_argument("--tensor-mib", type=int, required=True)
    options = parser.parse_args()
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    s3 = {"key": options.key, "secret": options.secret, "client_kwargs": {"endpoint_url": options.endpoint,
                                                                          "region_name": "us-east-1"}}  # fmt: skip
    saved = state_of(options.tensors, options.tensor_mib, seed=1)
    started = time.perf_counter()
    dcp.save(saved, storage_writer=FsspecWriter(options.path, **s3))
    save_s = time.perf_counter() - started
    into = {key: torch.empty_like(tensor) for key, tensor in saved.items()}
    started = time.perf_counter()
    dcp.load(into, storage_reader=FsspecReader(options.path, **s3))
    load_s = time.perf_counter() - started
    if any(not torch.equal(into[key], saved[key]) for key in saved):
        raise SystemExit("the loaded state differs from the saved one")
    print(json.dumps({"save": save_s, "load": load_s}))


if __name__ == "__main__":
    main()
