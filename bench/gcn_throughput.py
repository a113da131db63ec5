"""Benchmark: training samples/s of the GCN recipes (ST-GCN, CTR-GCN) side by side in one run, and the share of
an epoch the network itself takes.

    python bench/gcn_throughput.py [--data ../shared/data/msr_action3d] [--preset small] [--frames 32] [--batch 16]
                                   [--steps 10] [--json PATH]

Real MSR Action3D clips (kinect20, 3D, the CPU configuration's 32 frames, PYSKL's augmentation) go through each
recipe's own preprocessor and collate, then forward + backward + SGD step of the recognizer are timed (the first
step is warm-up). Printed: preprocessing ms/sample, step s, network samples/s and the ratio to ST-GCN's. The
end-to-end epoch (Ray Data, the per-epoch pipeline restart, validation) is in each results row's
`seconds_per_epoch` (bench/results.py). Speed targets are met here, never in timed unit tests.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from actionllm.methods import get_recipe
from actionllm.skeleton.formats import get_reader
from training.loop import training_autocast

ROOT = Path(__file__).resolve().parents[1]


def clips_batch(recipe: str, preset: str, frames: int, seqs: list, classes: list[str]):
    """A recognizer of `recipe` and one training batch made by its own preprocessor (timed per sample)."""
    cfg = {"preset": preset, "clip": {"frames": frames}, "augment": {"rotate": 0.3, "scale": 0.1, "crop": 0.9}}
    rec = get_recipe(recipe).recognizer_cls()(cfg, classes, "kinect20", 3, seed=0)
    pre = rec.preprocessor(rec.cfg, "kinect20", 3, train=True, seed=0)
    rows = {"joints": np.empty(len(seqs), object), "num_bodies": np.array([s.num_bodies for s in seqs]),
            "num_frames": np.array([s.num_frames for s in seqs]), "dims": np.array([3] * len(seqs)),
            "label": np.array([s.label for s in seqs])}
    for i, s in enumerate(seqs):
        rows["joints"][i] = s.joints.reshape(-1)
    t0 = time.perf_counter()
    batch = rec.collate_fn()(pre(rows))
    return rec, batch, (time.perf_counter() - t0) / len(seqs)


def step_time(rec, batch: dict, steps: int, autocast: str = "off") -> float:
    opt = torch.optim.SGD(rec.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    rec.train()
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        with training_autocast(autocast, torch.device("cpu")):
            out = rec(**batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "msr_action3d"))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--autocast", default="off", choices=["off", "bf16", "both"],
                    help="the training forward's autocast (TrainConfig.autocast); both: each recipe both ways")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    reader = get_reader("msr-action3d")(args.data)
    seqs = [s for f in reader.files()[:: max(1, len(reader.files()) // args.batch)] for s in reader.read_file(f)]
    seqs = seqs[: args.batch]
    print(f"preset={args.preset} frames={args.frames} batch={args.batch} torch threads={torch.get_num_threads()}")
    modes = ["off", "bf16"] if args.autocast == "both" else [args.autocast]
    print(f"{'recipe':8} {'autocast':>8} {'params':>8} {'prep ms/sample':>15} {'s/step':>8} {'samples/s':>10} "
          f"{'vs stgcn':>9}   (vs the first row: ST-GCN, {modes[0]})")
    rows, base = [], None
    for recipe in ("stgcn", "ctrgcn"):
        for mode in modes:
            torch.manual_seed(0)
            rec, batch, prep = clips_batch(recipe, args.preset, args.frames, seqs, reader.class_names)
            dt = step_time(rec, batch, args.steps, mode)
            sps = args.batch / dt
            base = base or sps
            params = sum(p.numel() for p in rec.parameters())
            rows.append({"recipe": recipe, "autocast": mode, "preset": args.preset, "params": params,
                         "prep_ms_per_sample": 1e3 * prep, "step_s": dt, "samples_per_s": sps, "vs_stgcn": sps / base})
            print(f"{recipe:8} {mode:>8} {params / 1e6:7.2f}M {1e3 * prep:15.2f} {dt:8.3f} {sps:10.1f} "
                  f"{sps / base:9.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
