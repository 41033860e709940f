"""Erasure-code throughput by cell size and scheme: the measurement behind the default cell size.

Encodes (and decodes with m data cells lost) 256 MiB of random stripes per
configuration on one thread, through the same ``StripeCodec`` the writer uses,
and prints GB/s of data. Run it as the server runs: with the glibc malloc
settings ``apollo server`` re-executes itself with (see PERF-NOTES), which this
script also sets by re-executing itself unless ``--no-malloc-tuning`` is given.

    .venv/bin/python benchmarks/ec_cells.py [--data-mib 256] [--schemes 4+2,8+4]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "67108864", "MALLOC_TRIM_THRESHOLD_": "134217728"}
CELL_SIZES_KIB = (64, 128, 256, 512, 1024)


def measure(scheme_text: str, cell_bytes: int, data_bytes: int) -> tuple[float, float]:
    from apollo.proto.layout import Scheme
    from apollo.storage.ec import StripeCodec

    scheme = Scheme.parse(scheme_text)
    codec = StripeCodec(scheme)
    stripe = os.urandom(cell_bytes * scheme.k)
    stripes = max(1, data_bytes // len(stripe))
    started = time.perf_counter()
    for _ in range(stripes):
        fragments = codec.encode(stripe)
    encode_s = time.perf_counter() - started
    survivors = {i: fragments[i] for i in range(scheme.m, scheme.width)}  # the first m data cells are lost
    started = time.perf_counter()
    for _ in range(stripes):
        decoded = codec.decode(survivors, len(stripe))
    decode_s = time.perf_counter() - started
    if bytes(decoded) != stripe:
        raise SystemExit(f"{scheme_text} cell {cell_bytes}: decode returned wrong bytes")
    total = stripes * len(stripe)
    return total / encode_s / 1e9, total / decode_s / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-mib", type=int, default=256)
    parser.add_argument("--schemes", default="4+2,8+4")
    parser.add_argument("--no-malloc-tuning", action="store_true")
    args = parser.parse_args()
    if not args.no_malloc_tuning and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    tuned = "default glibc malloc" if args.no_malloc_tuning else "MALLOC_MMAP_THRESHOLD_=64MiB"
    print(f"# EC throughput, 1 thread, {args.data_mib} MiB per point; {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {tuned}")  # fmt: skip
    print("| scheme | cell | encode GB/s | decode (m lost) GB/s |")
    print("|---|---|---|---|")
    for scheme in args.schemes.split(","):
        for kib in CELL_SIZES_KIB:
            encode, decode = measure(scheme, kib * 1024, args.data_mib * 1024**2)
            print(f"| {scheme} | {kib} KiB | {encode:.2f} | {decode:.2f} |", flush=True)


if __name__ == "__main__":
    main()
