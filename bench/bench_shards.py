"""Benchmark: reading a dataset from its Parquet shards vs re-parsing the source files, in one run.

    python bench/bench_shards.py [--data ../shared/data] [--repeats 3]

Prints the time of each way (best of N), sequences/s, and the ratio source/shards (> 1: shards faster),
plus the on-disk sizes. Both are measured here, side by side, on the same machine and the same data.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from actionllm.skeleton.formats import get_reader
from actionllm.skeleton.prepare import prepare
from actionllm.skeleton.shards import read_shards

CASES = [("msr_action3d", "msr-action3d", "cross-subject"), ("utd_mhad_skeleton", "utd-mhad", "cross-subject")]


def best_of(fn, repeats: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return min(times), n


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"{'dataset':14} {'source s':>9} {'shards s':>9} {'seq/s src':>10} {'seq/s shards':>12} {'ratio':>6}"
          f" {'src MB':>7} {'shard MB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for folder, fmt, protocol in CASES:
            src = args.data / folder
            reader = get_reader(fmt)(src)
            out = Path(tmp) / fmt
            prepare(reader, out, protocol)
            t_src, n_src = best_of(lambda r=reader: sum(1 for _ in r), args.repeats)
            t_shd, n_shd = best_of(lambda o=out: sum(1 for _ in read_shards(o)), args.repeats)
            print(f"{fmt:14} {t_src:9.3f} {t_shd:9.3f} {n_src / t_src:10.0f} {n_shd / t_shd:12.0f}"
                  f" {t_src / t_shd:6.2f} {size_mb(src):7.1f} {size_mb(out):8.1f}")


if __name__ == "__main__":
    main()
