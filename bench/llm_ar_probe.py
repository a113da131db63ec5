"""What the LLM of llm-ar can know: the class information left in the VQ-VAE's action sentences, measured without
an LLM. Each sequence is turned into its codes exactly as the LLM stage sees them (`tokens`: resample to the clip's
frames, quantise), then two small classifiers are fit on the training split and read on val and test:
bag-of-codes (how often each code occurs) and position x code one-hot (which code at which place). If they score
far below the ST-GCN on the same split, the tokenisation bounds the recipe, whatever the LLM learns.

  python bench/llm_ar_probe.py --folder runs/results/llm-ar-.../run/vqvae/recognizer --data SHARDS
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def sentences(folder: str, data: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    from actionllm.components.clips import clip_batch
    from actionllm.methods.llm_ar.config import LLMARConfig
    from actionllm.methods.llm_ar.model import load_vqvae
    from actionllm.methods.llm_ar.vqvae import clip_features
    from actionllm.skeleton.shards import read_shards

    vq, meta = load_vqvae(folder)
    cfg = LLMARConfig.model_validate(meta["config"])
    out: dict[str, tuple[list, list]] = {}
    for seq, split in read_shards(data):
        batch, _ = clip_batch([seq.joints], cfg.clip, meta["layout"])
        with torch.no_grad():
            codes = vq.quantise(clip_features(batch["x"].float(), cfg.clip.max_bodies))[0].numpy()
        xs, ys = out.setdefault(split, ([], []))
        xs.append(codes)
        ys.append(seq.label)
    return {s: (np.stack(x), np.array(y)) for s, (x, y) in out.items()}, vq.cfg.codebook_size


def features(codes: np.ndarray, size: int, kind: str) -> np.ndarray:
    if kind == "bag":
        return np.stack([np.bincount(c, minlength=size) for c in codes]).astype(np.float32)
    n, w = codes.shape
    x = np.zeros((n, w * size), np.float32)
    x[np.arange(n)[:, None], np.arange(w)[None] * size + codes] = 1.0
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", required=True, help="an llm-ar vqvae-stage recognizer folder")
    ap.add_argument("--data", required=True, help="the shard folder it was trained on (train/val/test splits)")
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression

    splits, size = sentences(args.folder, args.data)
    xtr, ytr = splits["train"]
    chance = 1 / len(np.unique(ytr))
    rows = {"sequences": {s: len(v[1]) for s, v in splits.items()}, "codes_used_train": int(len(np.unique(xtr))),
            "chance": chance}
    for kind in ("bag", "position"):
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(features(xtr, size, kind), ytr)
        for split in ("val", "test"):
            if split in splits:
                x, y = splits[split]
                rows[f"{kind}_{split}"] = float((clf.predict(features(x, size, kind)) == y).mean())
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
