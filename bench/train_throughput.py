"""Benchmark: tokens/s of the joints-llm training step, attention kernels side by side, in one run.

    python bench/train_throughput.py [--backbone tiny] [--window 12] [--batch 2] [--steps 5] [--device cpu]

For each attention kernel available here (eager, sdpa, flash_attention_2 when flash-attn is installed on
CUDA) it times forward + backward + AdamW step of Recognizer (LoRA + attn-pooling head) on real-shaped
Joint2Text windows, with dynamic padding, and prints tokens/s and the ratio to eager. On a GPU it also
prints MFU = achieved FLOP/s / peak, with training FLOPs per token ~ 6N (forward 2N + backward 4N; with
LoRA the frozen weights still need activation gradients, so ~ 4N + 2N_lora; we use 6N as the usual upper
convention) + attention 12 * layers * hidden * seq (forward+backward of QK^T and AV).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np
import torch

from actionllm.components.backbone import BackboneConfig, load_backbone
from actionllm.methods.joints_llm.model import JointsLLMRecognizer, collate

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s


def kernels(device: str) -> list[str]:
    out = ["eager", "sdpa"]
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn"):
        out.append("flash_attention_2")
    return out


def time_steps(rec: JointsLLMRecognizer, batch: dict, steps: int, device: str) -> float:
    opt = torch.optim.AdamW([p for p in rec.parameters() if p.requires_grad], lr=1e-4)
    batch = {k: v.to(device) for k, v in batch.items()}
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    for i in range(steps + 1):  # first step is warm-up
        if i == 1:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with ctx:
            loss = rec(**batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--window", type=int, default=12)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    windows = [rng.normal(size=(args.window, 17, 2)).astype(np.float32) for _ in range(args.batch)]
    base = None
    print(f"backbone={args.backbone} device={args.device} window={args.window} batch={args.batch}")
    print(f"{'kernel':20} {'tokens':>7} {'s/step':>8} {'tokens/s':>10} {'vs eager':>9} {'MFU':>6}")
    for kernel in kernels(args.device):
        cfg = {"backbone": {"name_or_path": args.backbone, "attn_implementation": kernel},
               "bridge": {"window": args.window, "precision": 2}}
        model, tok = load_backbone(BackboneConfig(**cfg["backbone"]), device=args.device)
        rec = JointsLLMRecognizer(cfg, ["a", "b"], "coco17", 2, model=model, tokenizer=tok).to(args.device)
        enc = [rec.encoder.encode_window(w) for w in windows]
        batch = collate({"input_ids": [e["input_ids"] for e in enc], "label": np.array([0, 1] * args.batch)[: args.batch]},
                        rec.pad_id)
        tokens = int(batch["attention_mask"].sum())
        dt = time_steps(rec, batch, args.steps, args.device)
        tps = tokens / dt
        base = base or tps
        mfu = ""
        if args.device.startswith("cuda"):
            c = model.config
            n = sum(p.numel() for p in model.parameters())
            seq = batch["input_ids"].shape[1]
            flops_per_token = 6 * n + 12 * c.num_hidden_layers * c.hidden_size * seq
            name = torch.cuda.get_device_name()
            peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
            mfu = f"{tps * flops_per_token / peak:6.1%}" if peak else "n/a"
        print(f"{kernel:20} {tokens:7d} {dt:8.3f} {tps:10.0f} {tps / base:9.2f} {mfu:>6}")
        del rec, model


if __name__ == "__main__":
    main()
