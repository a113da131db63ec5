"""Benchmark: what issue 18 (item 5) and issue 16 ask of a GPU, in one run, to fit one short device lease.

    python bench/gpu_suite.py prepare DIR            # here, with `make install`: the files the GPU machine lacks
    python bench/gpu_suite.py run --assets DIR [--shape llama3-8b|smollm2-135m|tiny] [--json PATH]

`prepare` writes DIR/<shape>/ for each shape: the model's config.json (Llama-3-8B's published shape, SmolLM2-135M's,
the project's `tiny`) beside SmolLM2's tokenizer files. The weights are random, drawn on the GPU from the config:
throughput depends on the shapes, not on the values, and no hub is reachable there. Token counts are SmolLM2's
tokenizer's (the windows are the same text; Llama-3's tokenizer writes other counts: bench/joint2text_tokens.py).

`run` measures, side by side in one process, with bf16 weights and autocast as training/loop.py trains on CUDA:
  ceilings     an 8192^3 bf16 matrix product (TFLOP/s) and a device-to-device copy (TB/s), the machine's own
  train        joints-llm LoRA steps (forward + backward + AdamW) on Joint2Text windows, N=18 COCO-13: eager vs
               SDPA vs flash_attention_2 (when flash-attn imports), paper vs compact format, Liger kernels (when
               liger-kernel imports; checked against the same loss first); tokens/s, MFU, peak memory
  sugar        one SUGAR stage-2 step (frozen encoder -> TQP, L=128 tokens -> LoRA r64 LLM, eq. 5's target):
               tokens/s and peak memory
  serve        windows/s of each recipe's predict_windows in one process, batch 1 vs batched
  liger-config `backbone.liger: true` through load_backbone from a folder with weights (`prepare`'s tiny-weights):
               patched on CUDA, the same loss
  gcn          ST-GCN vs CTR-GCN training samples/s (the yardstick's network, random clips of MSR's shape)
MFU counts what a LoRA step computes: forward 2N + activation gradients 2N per token over the frozen weights (no
weight gradients; the 6N of full fine-tuning would overstate it by 1.5x) + attention 12*layers*width*sequence, over
the datasheet's dense bf16 peak (989 TFLOP/s on H100/H200) and over the matrix product measured here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_throughput import PEAK_BF16, kernels  # noqa: E402 - bench/ is this script's folder (sys.path[0])

SHAPES = {  # LlamaConfig fields; Llama-3-8B's and SmolLM2-135M's as their published config.json give them
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                      rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
    "tiny": dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192),
}


# --- prepare (the CPU machine) ---------------------------------------------------------------------------------
def prepare(out: Path) -> None:
    from transformers import LlamaConfig

    from actionllm.components.backbone import BackboneConfig, load_tokenizer

    tok = load_tokenizer(BackboneConfig(name_or_path="smollm2-135m"))
    for name, fields in SHAPES.items():
        folder = out / name
        LlamaConfig(**fields, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                    eos_token_id=tok.eos_token_id, architectures=["LlamaForCausalLM"]).save_pretrained(folder)
        tok.save_pretrained(folder)
    # one folder with weights (random, seeded, bf16: 14 MB): the `backbone.liger` path loads a model as users do
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(LlamaConfig.from_pretrained(out / "tiny")).to(torch.bfloat16).save_pretrained(
        out / "tiny-weights")
    tok.save_pretrained(out / "tiny-weights")
    print(f"wrote {', '.join(SHAPES)} and tiny-weights under {out}")


# --- helpers ---------------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")


def ceilings(device: str) -> dict:
    """The machine's own bf16 matrix rate and copy bandwidth (median of 10 after 3 warm-ups; random data)."""
    if device != "cuda":
        return {}
    n = 8192
    a, b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16), torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    src = torch.randn(2**30 // 2, device="cuda", dtype=torch.bfloat16)  # 1 GiB
    dst = torch.empty_like(src)

    def median_ms(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    mm = median_ms(lambda: a @ b)
    cp = median_ms(lambda: dst.copy_(src))
    return {"matmul_bf16_tflops": round(2 * n**3 / mm / 1e9, 1), "copy_tb_s": round(2 * src.nbytes / cp / 1e9, 2)}


def base_model(assets: Path, shape: str, device: str):
    """A LlamaForCausalLM of `shape` with random weights drawn on `device` in bf16 (fp32 on CPU) + its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = assets / shape
    conf = AutoConfig.from_pretrained(folder)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(conf, dtype=dtype, attn_implementation="sdpa")
    sync(device)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "right"
    print(f"built {shape} ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params, {dtype}) on {device} "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    return model, tok


def set_kernel(model, kernel: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(kernel)
    else:
        model.config._attn_implementation = kernel


def step_time(rec, batch: dict, steps: int, device: str, opt: torch.optim.Optimizer | None = None
              ) -> tuple[float, float]:
    """Seconds per training step (after one warm-up) and the first step's loss. `opt`: the optimiser (default:
    AdamW over rec.param_groups at 1e-4, gradients clipped at 1, as training/loop.py steps a LoRA recipe)."""
    clip = opt is None
    opt = opt or torch.optim.AdamW(rec.param_groups(1e-4), lr=1e-4)
    params = [p for g in opt.param_groups for p in g["params"]]
    rec.train()
    first = None
    for i in range(steps + 1):
        if i == 1:
            sync(device)
            t0 = time.perf_counter()
        with autocast(device):
            loss = rec(**batch)["loss"]
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if first is None:
            first = loss.item()
    sync(device)
    return (time.perf_counter() - t0) / steps, first


def lora_flops_per_token(model, seq: int) -> float:
    c = model.config
    n = sum(p.numel() for n_, p in model.named_parameters() if "embed_tokens" not in n_)  # lookups are not FLOPs
    return 4 * n + 12 * c.num_hidden_layers * c.hidden_size * seq


def mfu(tokens_per_s: float, flops_per_token: float, device: str, measured_tflops: float | None) -> dict:
    if device != "cuda":
        return {}
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    out = {"tflops": round(tokens_per_s * flops_per_token / 1e12, 1)}
    if peak:
        out["mfu"] = round(tokens_per_s * flops_per_token / peak, 3)
    if measured_tflops:
        out["of_measured_matmul"] = round(tokens_per_s * flops_per_token / (measured_tflops * 1e12), 3)
    return out


def gait_windows(count: int, window: int) -> list[np.ndarray]:
    from actionllm.skeleton import synth_gait

    out = []
    for seq in synth_gait.generate(subjects=4, per_subject=2):
        j = seq.joints[None] if seq.joints.ndim == 3 else seq.joints  # [M, T, V, C]
        for s in range(0, j.shape[1] - window + 1, window // 2):
            out.append(j[:, s:s + window])
    return [out[i % len(out)] for i in range(count)]


# --- the parts -------------------------------------------------------------------------------------------------
def joints_llm_rec(model, tok, fmt: str, device: str):
    from actionllm.methods.joints_llm.model import JointsLLMRecognizer

    cfg = {"bridge": {"format": fmt}, "max_length": 8192}
    return JointsLLMRecognizer(cfg, ["normal", "parkinsonian"], "coco17", 2, model=model, tokenizer=tok).to(device)


def joints_llm_batch(rec, windows: list[np.ndarray], device: str) -> dict:
    from actionllm.methods.joints_llm.model import collate

    enc = [rec.encoder.encode_window(w) for w in windows]
    batch = collate({"input_ids": [e["input_ids"] for e in enc], "label": np.arange(len(windows)) % 2}, rec.pad_id)
    return {k: v.to(device) for k, v in batch.items()}


def release(rec):
    """The base model back without its LoRA layers (peft's unload), the recognizer dropped."""
    base = rec.llm.unload()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return base


def timed_row(rec, base, batch: dict, tokens: int, seq: int, args, device: str, ceil: dict, /, **fields
              ) -> dict | None:
    """One training row: `fields`, then step time, tokens/s, peak memory, the first loss and MFU (`base`: the model
    the FLOPs are counted on); None, said, when the step runs out of memory."""
    reset_peak(device)
    try:
        dt, loss = step_time(rec, batch, args.steps, device)
    except torch.OutOfMemoryError:
        print(f"{fields}: out of memory")
        return None
    return {**fields, "tokens": tokens, "step_s": round(dt, 4), "tokens_per_s": round(tokens / dt),
            "peak_gib": peak_gib(device), "first_loss": round(loss, 6),
            **mfu(tokens / dt, lora_flops_per_token(base, seq), device, ceil.get("matmul_bf16_tflops"))}


def train_rows(model, tok, args, device: str, ceil: dict) -> tuple[list[dict], object]:
    chosen = kernels(device)  # eager, sdpa (+ flash_attention_2 on CUDA when flash-attn imports)
    if "flash_attention_2" not in chosen:
        print("flash_attention_2: not measured, flash-attn does not import here (no binary wheel on PyPI)")
    plan = [(k, "compact", args.batch) for k in chosen] + [("sdpa", "paper", args.batch),
                                                            ("sdpa", "compact", args.big_batch)]
    rows, losses = [], {}
    for kernel, fmt, bsz in plan:
        set_kernel(model, kernel)
        rec = joints_llm_rec(model, tok, fmt, device)
        batch = joints_llm_batch(rec, gait_windows(bsz, 18), device)
        tokens, seq = int(batch["attention_mask"].sum()), batch["input_ids"].shape[1]
        row = timed_row(rec, model, batch, tokens, seq, args, device, ceil, part="train", recipe="joints-llm",
                        model=args.shape, kernel=kernel, format=fmt, batch=bsz, seq=seq)
        model = release(rec)
        if row is None:
            continue
        losses[(kernel, fmt, bsz)] = row["first_loss"]
        rows.append(row)
        print(row, flush=True)
    ref = losses.get(("eager", "compact", args.batch))
    for r in rows:
        if ref is not None and r["format"] == "compact" and r["batch"] == args.batch:
            r["loss_rel_diff_vs_eager"] = round(abs(r["first_loss"] - ref) / max(abs(ref), 1e-12), 5)
    set_kernel(model, "sdpa")
    return rows, model


BRIDGES = {"cpu": {}, "bert-base": {"hidden": 768, "layers": 12, "heads": 12}}  # the recipe's default; BLIP-2's


def sugar_rec(model, tok, assets: Path, shape: str, device: str, bridge: str = "cpu"):
    from actionllm.components.knowledge import bundled_knowledge, read_knowledge
    from actionllm.methods.sugar.alignment import SequenceEncoder
    from actionllm.methods.sugar.config import SugarConfig
    from actionllm.methods.sugar.model import SugarLLMRecognizer

    knowledge = read_knowledge(bundled_knowledge()["msr_action3d"])
    names = list(knowledge)
    # the paper's L = 128 action tokens; the bridge's own width/depth stay the CPU defaults (see sugar/README.md)
    cfg = SugarConfig.model_validate({"backbone": {"name_or_path": str(assets / shape)},
                                      "bridge": {"tokens": 128, **BRIDGES[bridge]}, "clip": {"frames": 32}})
    encoder = SequenceEncoder("kinect20", 3, cfg.encoder, 384)
    rec = SugarLLMRecognizer(cfg, names, "kinect20", 3, model=model, tokenizer=tok, encoder=encoder,
                             descriptions={k: v.description for k, v in knowledge.items()})
    return rec.to(device)


def msr_like_windows(count: int, frames: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(0, 0.3, (1, frames, 20, 3)).astype(np.float32) for _ in range(count)]


def sugar_batch(rec, bsz: int, device: str) -> dict:
    from actionllm.components.clips import clip_batch

    batch, _ = clip_batch(msr_like_windows(bsz), rec.cfg.clip, rec.layout)
    return {"x": batch["x"].to(device), "body_mask": batch["body_mask"].to(device),
            "labels": torch.arange(bsz, device=device) % len(rec.class_names)}


def sugar_rows(model, tok, args, device: str, ceil: dict) -> tuple[list[dict], object]:
    rows = []
    for bsz, bridge in ((args.batch, "cpu"), (args.big_batch, "cpu"), (args.big_batch, "bert-base")):
        rec = sugar_rec(model, tok, args.assets, args.shape, device, bridge)
        batch = sugar_batch(rec, bsz, device)
        tokens = rec.count_tokens(batch)
        row = timed_row(rec, model, batch, tokens, tokens // bsz, args, device, ceil, part="sugar", recipe="sugar",
                        model=args.shape, kernel="sdpa", batch=bsz, bridge=bridge,
                        trainable_params=sum(p.numel() for g in rec.param_groups(1e-4) for p in g["params"]))
        model = release(rec)
        if row is not None:
            rows.append(row)
            print(row, flush=True)
    return rows, model


def serve_rows(model, tok, args, device: str) -> tuple[list[dict], object]:
    """Windows/s of predict_windows, batch 1 vs batched, in one process (no Ray on the GPU machine)."""
    rows = []
    for recipe in ("joints-llm", "sugar"):
        rec = joints_llm_rec(model, tok, "compact", device) if recipe == "joints-llm" else \
            sugar_rec(model, tok, args.assets, args.shape, device)
        # sugar generates its explanation (32 tokens, one forward each): half the windows keep batch 1 short
        windows = gait_windows(args.serve_windows, 18) if recipe == "joints-llm" else \
            msr_like_windows(max(args.serve_windows // 2, 1))
        base = None
        for bsz in (1, 8, 32):
            with autocast(device):
                rec.predict_windows(windows[:bsz], batch_size=bsz)  # warm-up at this size
                sync(device)
                t0 = time.perf_counter()
                rec.predict_windows(windows, batch_size=bsz)
                sync(device)
            wps = len(windows) / (time.perf_counter() - t0)
            base = base or wps
            row = {"part": "serve", "recipe": recipe, "model": args.shape, "batch_size": bsz,
                   "windows": len(windows), "windows_per_s": round(wps, 2), "vs_batch_1": round(wps / base, 2)}
            if recipe == "sugar":
                row["generated_tokens"] = rec.cfg.max_new_tokens
            rows.append(row)
            print(row, flush=True)
        model = release(rec)
    return rows, model


def liger_rows(model, tok, args, device: str, ceil: dict) -> list[dict]:
    """Liger's RMSNorm/RoPE/SwiGLU kernels patched into the same model, against SDPA alone on the same batches
    (measured first): joints-llm compact and paper, sugar. Each loss is checked against the unpatched one."""
    if device != "cuda" or importlib.util.find_spec("liger_kernel") is None:
        print("liger: not measured (needs CUDA and liger-kernel)")
        return []
    work = [("joints-llm", "compact", args.big_batch), ("joints-llm", "paper", args.batch),
            ("sugar", "-", args.big_batch)]

    def make(recipe: str, fmt: str, bsz: int):
        if recipe == "sugar":
            rec = sugar_rec(model, tok, args.assets, args.shape, device)
            return rec, sugar_batch(rec, bsz, device)
        rec = joints_llm_rec(model, tok, fmt, device)
        return rec, joints_llm_batch(rec, gait_windows(bsz, 18), device)

    ref = {}
    for w in work:
        rec, batch = make(*w)
        ref[w] = step_time(rec, batch, args.steps, device)
        model = release(rec)
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False, model=model)
    except Exception as err:  # noqa: BLE001 - reported, not hidden
        print(f"liger: could not be applied: {type(err).__name__}: {err}")
        return [{"part": "liger", "error": f"{type(err).__name__}: {err}"}]
    rows = []
    for w in work:
        recipe, fmt, bsz = w
        rec, batch = make(*w)
        tokens = int(batch["attention_mask"].sum()) if recipe == "joints-llm" else rec.count_tokens(batch)
        row = timed_row(rec, model, batch, tokens, tokens // bsz, args, device, ceil, part="liger", recipe=recipe,
                        model=args.shape, kernel="sdpa+liger", format=fmt, batch=bsz)
        model = release(rec)
        if row is None:
            continue
        dt_ref, loss_ref = ref[w]
        row.update(sdpa_step_s=round(dt_ref, 4), vs_sdpa_same_run=round(dt_ref / row["step_s"], 3),
                   loss_rel_diff_vs_sdpa=round(abs(row["first_loss"] - loss_ref) / max(abs(loss_ref), 1e-12), 5))
        rows.append(row)
        print(row, flush=True)
    return rows


def liger_config_rows(args, device: str) -> list[dict]:
    """`backbone.liger: true` through the recipe's own loading (load_backbone from a folder with weights, inside
    JointsLLMRecognizer): patched on CUDA, the same loss as without it."""
    from actionllm.components.backbone import BackboneConfig, load_backbone

    folder = args.assets / "tiny-weights"
    losses, patched = {}, {}
    for liger in (False, True):
        cfg = BackboneConfig(name_or_path=str(folder), liger=liger)
        model, tok = load_backbone(cfg, device=device)
        patched[liger] = model.model.norm._get_name()  # Liger binds its forward (and name) to each instance
        rec = joints_llm_rec(model, tok, "compact", device)
        batch = joints_llm_batch(rec, gait_windows(2, 18), device)
        torch.manual_seed(0)
        with autocast(device):
            losses[liger] = rec(**batch)["loss"].item()
    row = {"part": "liger-config", "device": device, "final_norm_without": patched[False],
           "final_norm_with": patched[True], "loss_without": losses[False], "loss_with": losses[True],
           "loss_rel_diff": abs(losses[True] - losses[False]) / max(abs(losses[False]), 1e-12)}
    print(row, flush=True)
    return [row]


def gcn_rows(args, device: str) -> list[dict]:
    from actionllm.methods import get_recipe

    classes = [f"c{i}" for i in range(20)]
    rows = []
    for recipe in ("stgcn", "ctrgcn"):
        for bsz in (16, 64):
            cfg = {"preset": "standard", "clip": {"frames": 64}}
            rec = get_recipe(recipe).recognizer_cls()(cfg, classes, "kinect20", 3, seed=0).to(device)
            x = torch.randn(bsz, 2, 64, 20, 3, device=device)
            batch = {"x": x, "body_mask": torch.ones(bsz, 2, dtype=torch.bool, device=device),
                     "labels": torch.arange(bsz, device=device) % 20}
            opt = torch.optim.SGD(rec.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
            sps = bsz / step_time(rec, batch, args.steps * 2, device, opt)[0]
            row = {"part": "gcn", "recipe": recipe, "preset": "standard", "frames": 64, "batch": bsz,
                   "samples_per_s": round(sps, 1)}
            rows.append(row)
            print(row, flush=True)
    for r in rows:  # CTR-GCN against ST-GCN at the same batch
        st = next(o for o in rows if o["recipe"] == "stgcn" and o["batch"] == r["batch"])
        r["vs_stgcn"] = round(r["samples_per_s"] / st["samples_per_s"], 3)
    return rows


def run(args) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    import peft
    import transformers

    facts = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
             "transformers": transformers.__version__, "peft": peft.__version__, "shape": args.shape,
             "flash_attn": importlib.util.find_spec("flash_attn") is not None,
             "liger_kernel": importlib.util.find_spec("liger_kernel") is not None}
    print(facts, flush=True)
    t_all = time.perf_counter()
    ceil = ceilings(device)
    print({"ceilings": ceil}, flush=True)
    out = {"facts": facts, "ceilings": ceil, "rows": []}

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))

    parts = args.parts.split(",")
    if "gcn" in parts:
        out["rows"] += gcn_rows(args, device)
        save()
    if "liger-config" in parts:
        out["rows"] += liger_config_rows(args, device)
        save()
    on_model = [p for p in ("train", "sugar", "serve", "liger") if p in parts]  # liger last: it patches for good
    if on_model:
        model, tok = base_model(args.assets, args.shape, device)
    for part in on_model:
        if part == "liger":
            rows = liger_rows(model, tok, args, device, ceil)
        elif part == "serve":
            rows, model = serve_rows(model, tok, args, device)
        else:
            rows, model = (train_rows if part == "train" else sugar_rows)(model, tok, args, device, ceil)
        out["rows"] += rows
        save()
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    save()
    print(f"\n{'part':6} {'recipe':10} {'kernel':18} {'fmt':8} {'batch':>5} {'tokens/s':>9} {'MFU':>6} {'peak GiB':>8}")
    for r in out["rows"]:
        if "tokens_per_s" in r:
            print(f"{r['part']:6} {r['recipe']:10} {r['kernel']:18} {r.get('format', r.get('bridge', '-')):8} {r['batch']:5d} "
                  f"{r['tokens_per_s']:9d} {r.get('mfu', float('nan')):6.1%} {r['peak_gib'] or 0:8.1f}")
        elif "windows_per_s" in r:
            print(f"serve  {r['recipe']:10} batch {r['batch_size']:3d}: {r['windows_per_s']:8.2f} windows/s "
                  f"({r['vs_batch_1']:.2f}x batch 1)")
        elif "samples_per_s" in r:
            print(f"gcn    {r['recipe']:10} batch {r['batch']:3d}: {r['samples_per_s']:8.1f} samples/s "
                  f"({r['vs_stgcn']:.2f}x ST-GCN)")
    print(f"ceilings {ceil}; wall {out['wall_s']} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the model configs and the tokenizer the GPU machine lacks")
    p.add_argument("out", type=Path)
    r = sub.add_parser("run", help="measure (CUDA when present; on CPU only to check the script, with --shape tiny)")
    r.add_argument("--assets", type=Path, required=True)
    r.add_argument("--shape", choices=list(SHAPES), default="llama3-8b")
    r.add_argument("--parts", default="gcn,train,sugar,serve,liger-config,liger")
    r.add_argument("--batch", type=int, default=4, help="windows per step for the side-by-side rows")
    r.add_argument("--big-batch", type=int, default=16, help="windows per step for the throughput rows")
    r.add_argument("--steps", type=int, default=3, help="timed steps per row (after one warm-up)")
    r.add_argument("--serve-windows", type=int, default=64)
    r.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    prepare(args.out) if args.command == "prepare" else run(args)


if __name__ == "__main__":
    main()
