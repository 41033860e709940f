"""CPU time per metadata call: an in-process ``MetaService`` on SQLite, ``commit_version`` of an 8-byte
inline object and ``get_version``, 16 concurrent callers.

CPU time (``time.process_time``, every thread of the process) rather than calls per second, so that two
versions can be compared on a shared machine whose load moves the wall-clock rates by a factor of two:

    PYTHONPATH=/tmp/before python benchmarks/meta_cpu.py before
    PYTHONPATH=/tmp/after python benchmarks/meta_cpu.py after

(alternate them a few times). Imports fall back to the pre-``apollo.proto`` names, so the same script runs
against commits from before the layered core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time

from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore

try:
    from apollo.proto.layout import ObjectData
    from apollo.proto.records import ObjectAttrs
except ImportError:  # before the layered core
    from apollo.types import ObjectAttrs, ObjectData  # type: ignore[no-redef]

ETAG = "0" * 32


async def measure(seconds: float, concurrency: int) -> dict[str, dict[str, float]]:
    meta = MetaService(SqlStore(os.path.join(tempfile.mkdtemp(), "apollo.db")))
    await meta.create_bucket("ops", time.time())
    results = {}
    try:
        for op in ("commit", "lookup"):
            done = 0
            deadline = time.perf_counter() + seconds

            async def caller(slot: int, op: str = op, deadline: float = deadline) -> None:
                nonlocal done
                n = 0
                while time.perf_counter() < deadline:
                    key = f"k{slot}-{n % 200}"
                    if op == "commit":
                        await meta.commit_version("ops", key, size=8, etag=ETAG, attrs=ObjectAttrs(),
                                                  data=ObjectData(8, inline=b"12345678"), now=time.time())  # fmt: skip
                    else:
                        await meta.get_version("ops", key)
                    n += 1
                    done += 1

            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(caller(i) for i in range(concurrency)))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            results[op] = {"calls_per_s": round(done / wall), "cpu_us_per_call": round(cpu / done * 1e6, 1)}
    finally:
        meta.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("label", nargs="?", default="", help="a name printed with the results (before, after)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(measure(args.seconds, args.concurrency))
    print(json.dumps({"label": args.label, "seconds": args.seconds, "concurrency": args.concurrency, **results}))


if __name__ == "__main__":
    main()
