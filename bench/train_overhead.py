"""Benchmark: a training run's fixed cost -- time to its first optimiser step and each epoch's overhead -- with
the data pipeline streamed every epoch (`data_cache=never`, the path before issue 18) and cached for the run
(`data_cache=always`), measured side by side in one run.

    python bench/train_overhead.py [--epochs 4] [--config actionllm/methods/stgcn/configs/demo-gait.yaml]
                                   [--data SHARDS] [--json PATH]

Each mode runs the real `actionllm train` command (an embedded local Ray, 2 Ray Train workers) on the same
shards (default: `make demo`'s synthetic gait set, made here) with validation every epoch. From the run's
metrics.jsonl and summary.json (wall-clock stamps, same machine):
- time_to_first_step_s: from launching the command to the first optimiser step, split into the CLI's imports
  and checks, `ray.init`, building the datasets (the cached mode computes them here), the Train workers' start
  (placement, imports, recognizer) and the wait for the first batch + the first step;
- epoch_overhead_s: per epoch after the first, the wait for its first batch (the pipeline's start-up) plus
  validation's time (`val_s`, itself mostly start-up on small data); epoch_s beside it.
Speed targets are met here, never in timed unit tests; on a busy machine both modes slow down together.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"stream": "never", "cached": "always"}


def actionllm() -> str:
    exe = Path(sys.executable).with_name("actionllm")
    return str(exe) if exe.exists() else "actionllm"


def run_once(config: str, data: str, out: Path, epochs: int, cache: str) -> dict:
    cmd = [actionllm(), "train", "--config", config, "--data", data, "--output", str(out),
           "--set", f"epochs={epochs}", "--set", "eval_every=1", "--set", f"data_cache={cache}"]
    launched = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - launched
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    start = next(r for r in records if r.get("kind") == "start")
    first = next(r for r in records if r.get("kind") == "first_step")
    epochs_ = [r for r in records if r.get("kind") == "epoch"]
    t = json.loads((out / "summary.json").read_text())["timings"]
    datasets_done = t["started_at"] + t["checks_s"] + t["ray_init_s"] + t["datasets_s"]
    later = epochs_[1:] or epochs_
    mean = lambda k: sum(r.get(k, 0.0) for r in later) / len(later)  # noqa: E731
    return {
        "mode": cache, "wall_s": wall, "time_to_first_step_s": first["time"] - launched,
        "phases": {"cli_and_checks_s": t["started_at"] - launched + t["checks_s"], "ray_init_s": t["ray_init_s"],
                   "datasets_s": t["datasets_s"], "workers_start_s": start["time"] - datasets_done,
                   "first_batch_and_step_s": first["time"] - start["time"]},
        "epoch_overhead_s": mean("first_batch_s") + mean("val_s"),
        "first_batch_s": mean("first_batch_s"), "val_s": mean("val_s"), "epoch_s": mean("epoch_s"),
        "val_accuracy": epochs_[-1].get("val_accuracy"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "actionllm/methods/stgcn/configs/demo-gait.yaml"))
    ap.add_argument("--data", default=None, help="a shard folder (default: make demo's synthetic gait set, made here)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = f"{tmp}/shards"
            subprocess.run([actionllm(), "synth-gait", "--out", data, "--subjects", "12", "--per-subject", "4",
                            "--seconds", "4"], check=True, capture_output=True, cwd=ROOT)
        rows = {name: run_once(args.config, data, Path(tmp) / name, args.epochs, cache)
                for name, cache in MODES.items()}
    load = os.getloadavg()[0]
    print(f"{Path(args.config).name} on {data if args.data else 'synthetic gait'}, {args.epochs} epochs, "
          f"validation every epoch; load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':28s}" + "".join(f"{n:>12s}" for n in rows) + f"{'ratio':>10s}")

    def line(label: str, get) -> None:
        a, b = (get(rows[n]) for n in MODES)
        print(f"{label:28s}{a:12.2f}{b:12.2f}{a / b if b else float('nan'):9.1f}x")

    line("time to first step (s)", lambda r: r["time_to_first_step_s"])
    for k in rows["stream"]["phases"]:
        line(f"  {k}", lambda r, k=k: r["phases"][k])
    line("epoch overhead (s)", lambda r: r["epoch_overhead_s"])
    line("  first batch wait (s)", lambda r: r["first_batch_s"])
    line("  validation (s)", lambda r: r["val_s"])
    line("epoch (s)", lambda r: r["epoch_s"])
    line("whole command (s)", lambda r: r["wall_s"])
    print("val accuracy: " + ", ".join(f"{n} {r['val_accuracy']}" for n, r in rows.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "time_to_first_step_s": {n: r["time_to_first_step_s"] for n, r in rows.items()},
            "epoch_overhead_s": {n: r["epoch_overhead_s"] for n, r in rows.items()},
            "rows": list(rows.values()), "load_average": load}, indent=2) + "\n")


if __name__ == "__main__":
    main()
