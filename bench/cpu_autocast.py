"""Benchmark: a LoRA training step of an LLM on CPU, float32 against bf16 autocast (`autocast: bf16`), in one run.

    python bench/cpu_autocast.py [--backbone smollm2-135m] [--batch 4] [--tokens 176] [--steps 3] [--rounds 2]
                                [--json PATH]

The step is what the LLM recipes' training step spends its time on: forward of B x T input embeddings through the
backbone with LoRA (r 64, alpha 16, q/k/v/o), cross-entropy, backward, AdamW. The two settings take turns, round by
round, so a busy machine slows both alike. It prints seconds per step for each, the ratio, and how far the bf16
loss is from the float32 one on the same weights and batch. On a CPU without native bf16 (no avx512_bf16 / amx_bf16
flag) expect a ratio below 1: training/config.py keeps `autocast: auto` at float32 on CPU for that reason.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from actionllm.components.backbone import BackboneConfig, load_backbone
from actionllm.components.lora import LoraSettings, apply_lora
from training.loop import cpu_has_native_bf16, training_autocast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=176, help="sequence length (SUGAR's MSR prompt + answer: ~176)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per setting and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    llm = apply_lora(load_backbone(BackboneConfig(name_or_path=args.backbone))[0], LoraSettings(r=64, alpha=16))
    opt = torch.optim.AdamW([p for p in llm.parameters() if p.requires_grad], lr=1e-5)
    width = llm.get_input_embeddings().weight.shape[1]
    x = torch.randn(args.batch, args.tokens, width) * llm.get_input_embeddings().weight.std()
    labels = torch.randint(0, llm.get_input_embeddings().weight.shape[0], (args.batch, args.tokens))
    cpu = torch.device("cpu")

    def loss(mode: str) -> torch.Tensor:
        with training_autocast(mode, cpu):
            return llm(inputs_embeds=x, labels=labels).loss

    with torch.no_grad():  # the same weights and batch: how far bf16's loss is from float32's
        ref, low = loss("off").item(), loss("bf16").item()

    def step(mode: str) -> None:
        loss(mode).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {"off": [], "bf16": []}
    for mode in times:  # warm-up (oneDNN builds its kernels on first use)
        step(mode)
    for _ in range(args.rounds):
        for mode in times:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(mode)
            times[mode].append((time.perf_counter() - t0) / args.steps)
    fp32, bf16 = min(times["off"]), min(times["bf16"])
    out = {"backbone": args.backbone, "batch": args.batch, "tokens": args.tokens, "threads": torch.get_num_threads(),
           "native_bf16": cpu_has_native_bf16(), "load": os.getloadavg()[0],
           "float32_s_per_step": round(fp32, 3), "bf16_s_per_step": round(bf16, 3), "speedup": round(fp32 / bf16, 2),
           "loss_float32": round(ref, 4), "loss_bf16": round(low, 4)}
    print(f"LoRA step, {args.backbone}, {args.batch} x {args.tokens} tokens, {out['threads']} threads, native bf16: "
          f"{out['native_bf16']}, load {out['load']:.1f}")
    print(f"  float32 {fp32:.2f} s/step   bf16 autocast {bf16:.2f} s/step   ratio {fp32 / bf16:.2f}x "
          f"(best of {args.rounds} rounds)   loss {ref:.4f} vs {low:.4f}")
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
