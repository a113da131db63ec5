"""Benchmark: `actionllm evaluate` sequences/s the old way (one predict_windows call per sequence, chunk=1, with
the free text that llm-ar writes and the report drops) vs today's (windows batched across sequences, the default
chunk, no text: generate=False), on the same recognizer and data in one run, and whether they predict the same.
The middle way (one call per sequence, no text) is timed too: old / middle is what skipping the text buys, middle /
today what batching buys.

    python bench/evaluate_speed.py [--checkpoint DIR --data SHARDS] [--backbone smollm2-135m] [--limit 48]
                                   [--batch-size 8] [--chunk 64] [--json PATH]

Without --checkpoint, an llm-ar recognizer of the MSR run file (actionllm/methods/llm_ar/configs/llm-ar-msr.yaml:
32-frame clips -> 8 action tokens, 512 codes, max_new_tokens 8) is built on --backbone (default the real
SmolLM2-135M; `tiny` for a smoke run) with a random VQ-VAE and LoRA: the work per window depends on the shapes, not
on trained weights (except that a trained model may stop generating earlier). Without --data, the MSR Action3D
test split (cross-subject: even subjects) is written as shards from ../shared/data/msr_action3d. The first
--limit test sequences are evaluated both ways (the recognizer loaded once, before; a warm-up call first). Prints
seconds and sequences/s each way, the ratio, the top-1 of each, whether the predicted classes are identical, the
largest difference between the two ways' sequence scores (mean window log-probabilities) and the machine's load
(on a shared 2-core machine a loaded one slows the per-sequence path's many small calls the most).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from actionllm import evaluation
from actionllm.evaluation import CHUNK, evaluate

ROOT = Path(__file__).resolve().parents[1]
RUN_FILE = ROOT / "actionllm" / "methods" / "llm_ar" / "configs" / "llm-ar-msr.yaml"


def msr_test_shards(raw: Path, folder: Path) -> Path:
    """The MSR Action3D cross-subject split as shards (what `actionllm prepare` writes)."""
    from actionllm.skeleton.formats import get_reader
    from actionllm.skeleton.prepare import prepare

    prepare(get_reader("msr-action3d")(raw), folder, "cross-subject", val_fraction=0.0, on_note=lambda _: None)
    return folder


def build_llm_ar(folder: Path, classes: list[str], backbone: str) -> Path:
    """An llm-ar recognizer folder of the MSR run file's shape on `backbone` (random VQ-VAE, random LoRA B)."""
    import torch

    from actionllm.components.backbone import hidden_size
    from actionllm.methods import get_recipe
    from actionllm.methods.llm_ar.model import LLMARRecognizer
    from actionllm.methods.llm_ar.vqvae import ActionVQVAE

    cfg = get_recipe("llm-ar").config({**yaml.safe_load(RUN_FILE.read_text())["recipe_config"],
                                       "backbone": {"name_or_path": backbone}})
    torch.manual_seed(0)
    vqvae = ActionVQVAE(cfg.clip.max_bodies * 20 * 3, hidden_size(cfg.backbone), cfg.vqvae)  # kinect20, 3D
    rec = LLMARRecognizer(cfg.model_dump(), classes, "kinect20", 3, vqvae=vqvae, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in rec.named_parameters():
            if "lora_B" in n:  # LoRA B starts at 0 (the adapter is the identity): give it weights
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return rec.save(folder / "llm-ar")


def timed(checkpoint: str, data: str, limit: int, batch_size: int, chunk: int, text: bool = False
          ) -> tuple[float, dict, np.ndarray]:
    """Seconds of one evaluate call with the recognizer already loaded (`preloaded`), its result and the sequence
    scores it computed its metrics from. `text`: the recognizer writes its free text as evaluate made it do before
    (its `writes_text` hidden, so that evaluate does not pass generate=False)."""
    seen, real = [], evaluation.metrics
    members = evaluation.load_members([checkpoint])  # the ones `preloaded` holds
    for m in members:
        if text:
            m.writes_text = False  # an instance attribute over the class's True
        else:
            m.__dict__.pop("writes_text", None)

    def spy(scores, labels, names):
        seen.append(np.array(scores))
        return real(scores, labels, names)

    evaluation.metrics = spy
    try:
        t0 = time.perf_counter()
        result = evaluate(checkpoint, data, limit=limit, batch_size=batch_size, chunk=chunk)
        return time.perf_counter() - t0, result, seen[0]
    finally:
        evaluation.metrics = real


def preloaded(checkpoint: str) -> float:
    """Load the recognizer once and have evaluate reuse it (both ways time evaluation, not loading): seconds."""
    t0 = time.perf_counter()
    members = evaluation.load_members([checkpoint])
    evaluation.load_members = lambda checkpoints, device="cpu", adapter=True: members
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="a recognizer folder (default: build an llm-ar one)")
    ap.add_argument("--data", default=None, help="shard folder with a test split (default: MSR's, written here)")
    ap.add_argument("--raw", default=str(ROOT.parent / "shared" / "data" / "msr_action3d"))
    ap.add_argument("--backbone", default="smollm2-135m", help="of the built llm-ar recognizer: smollm2-135m, tiny")
    ap.add_argument("--limit", type=int, default=48, help="test sequences evaluated each way")
    ap.add_argument("--batch-size", type=int, default=8, help="windows per forward (evaluate's batch_size)")
    ap.add_argument("--chunk", type=int, default=CHUNK, help="sequences per predict_windows call, batched")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or str(msr_test_shards(Path(args.raw), Path(tmp) / "shards"))
        checkpoint = args.checkpoint
        if checkpoint is None:
            classes = json.loads((Path(data) / "manifest.json").read_text())["class_names"]
            checkpoint = str(build_llm_ar(Path(tmp), classes, args.backbone))
        load_s = preloaded(checkpoint)
        evaluate(checkpoint, data, limit=2, batch_size=args.batch_size)  # warm-up: first-call costs out of both
        print(f"checkpoint={checkpoint} data={data} limit={args.limit} batch_size={args.batch_size} "
              f"chunk={args.chunk} torch threads={torch.get_num_threads()} recognizer loaded in {load_s:.1f} s; "
              f"machine load {os.getloadavg()[0]:.2f}")
        load_before = os.getloadavg()[0]
        t_one, r_one, s_one = timed(checkpoint, data, args.limit, args.batch_size, 1, text=True)
        t_mid, r_mid, s_mid = timed(checkpoint, data, args.limit, args.batch_size, 1)
        t_many, r_many, s_many = timed(checkpoint, data, args.limit, args.batch_size, args.chunk)
    n = r_one["sequences"]
    identical = bool(all((s.argmax(1) == s_one.argmax(1)).all() for s in (s_mid, s_many))
                     and r_one["confusion"] == r_mid["confusion"] == r_many["confusion"])
    row = {"recipe": r_one["recipe"], "sequences": n, "windows": r_one["windows"], "batch_size": args.batch_size,
           "chunk": args.chunk, "per_sequence_s": t_one, "per_sequence_no_text_s": t_mid, "batched_s": t_many,
           "per_sequence_seq_per_s": n / t_one, "per_sequence_no_text_seq_per_s": n / t_mid,
           "batched_seq_per_s": n / t_many, "speedup": t_one / t_many, "speedup_no_text": t_one / t_mid,
           "speedup_batching": t_mid / t_many, "identical": identical,
           "top1": [r_one["top1"], r_mid["top1"], r_many["top1"]],
           "max_score_diff": float(max(np.abs(s - s_one).max() for s in (s_mid, s_many))),
           "recognizer_load_s": load_s, "load_before": load_before, "load_after": os.getloadavg()[0]}
    print(f"{'path':34} {'seconds':>8} {'seq/s':>8}")
    print(f"{'old: per sequence, with text':34} {t_one:8.1f} {row['per_sequence_seq_per_s']:8.2f}")
    print(f"{'per sequence, no text':34} {t_mid:8.1f} {row['per_sequence_no_text_seq_per_s']:8.2f}")
    print(f"{'today: batched, no text':34} {t_many:8.1f} {row['batched_seq_per_s']:8.2f}")
    print(f"speed-up {row['speedup']:.2f}x on {n} sequences ({row['windows']} windows): no text "
          f"{row['speedup_no_text']:.2f}x, then batching {row['speedup_batching']:.2f}x; identical predictions: "
          f"{identical}; top-1 {' / '.join(f'{t:.3f}' for t in row['top1'])}; max |score diff| "
          f"{row['max_score_diff']:.2e}; machine load {load_before:.2f} before, {row['load_after']:.2f} after")
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
