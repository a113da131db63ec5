"""The paper's Fig. 5: a t-SNE map of an align-stage recognizer's test embeddings (the skeleton encoder's output in
the text space), one colour per class, the class texts' embeddings marked beside them.

    python -m actionllm.methods.sugar.tsne --checkpoint runs/sugar/align/recognizer --data data/msr \
        --out runs/sugar/tsne.png [--split test] [--perplexity 30]

Needs scikit-learn (`pip install scikit-learn`; the dev extras install it). Also writes <out>.json: the 2-D points,
their labels, and the mean silhouette of the classes in the embedding space (cosine; 1 = tight separate classes,
0 = overlapping), a number to compare runs by where the picture only shows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ...inference import cut
from ...skeleton.shards import read_shards


def embeddings(rec, data: str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """One embedding per sequence (the mean of its windows' unit embeddings, renormalised) and its label."""
    embs, labels = [], []
    for seq, _ in read_shards(data, split=split):
        e = rec.embed_windows(cut(seq, rec.window, rec.stride)[0]).mean(0)
        embs.append(e / max(float(np.linalg.norm(e)), 1e-12))
        labels.append(seq.label)
    if not embs:
        raise ValueError(f"{data}: no sequences in split {split!r}")
    return np.stack(embs), np.asarray(labels)


def tsne_map(rec, data: str, out: str | Path, split: str = "test", perplexity: float = 30.0, seed: int = 0) -> dict:
    """Embed the split's sequences, project them and the class texts with t-SNE, draw the PNG; -> the summary."""
    try:
        from sklearn.manifold import TSNE
        from sklearn.metrics import silhouette_score
    except ImportError:
        raise ImportError("the t-SNE figure needs scikit-learn: pip install scikit-learn") from None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    embs, labels = embeddings(rec, data, split)
    texts = rec.bank.emb.detach().cpu().numpy()  # [texts, d], unit rows
    text_labels = rec.bank.owner.cpu().numpy()
    points = np.concatenate([embs, texts])
    perp = min(perplexity, max(2.0, (len(points) - 1) / 3))
    xy = TSNE(n_components=2, perplexity=perp, metric="cosine", init="pca", random_state=seed).fit_transform(points)
    seq_xy, text_xy = xy[: len(embs)], xy[len(embs):]
    silhouette = float(silhouette_score(embs, labels, metric="cosine")) if len(set(labels.tolist())) > 1 else None
    fig, ax = plt.subplots(figsize=(9, 8))
    cmap = plt.get_cmap("tab20")
    for k, name in enumerate(rec.class_names):
        sel = labels == k
        if sel.any():
            ax.scatter(seq_xy[sel, 0], seq_xy[sel, 1], s=14, color=cmap(k % 20), label=name, alpha=0.8)
        tsel = text_labels == k
        ax.scatter(text_xy[tsel, 0], text_xy[tsel, 1], s=90, marker="*", color=cmap(k % 20), edgecolors="black",
                   linewidths=0.6)
    ax.set_title(f"t-SNE of {len(embs)} {split} sequences (dots) and the class texts (stars); "
                 f"silhouette {silhouette:.2f}" if silhouette is not None else "t-SNE", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="best", markerscale=1.5)
    ax.set_xticks([])
    ax.set_yticks([])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    summary = {"data": str(data), "split": split,
               "sequences": len(embs), "perplexity": perp, "silhouette_cosine": silhouette,
               "points": [{"x": float(x), "y": float(y), "label": rec.class_names[int(k)]}
                          for (x, y), k in zip(seq_xy, labels, strict=True)]}
    out.with_suffix(".json").write_text(json.dumps(summary) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a sugar align-stage recognizer folder")
    ap.add_argument("--data", required=True, help="a shard folder")
    ap.add_argument("--out", required=True, help="the PNG to write (its .json beside it)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--perplexity", type=float, default=30.0)
    args = ap.parse_args()
    from ...registry import load_recognizer
    from .model import SugarAlignRecognizer

    rec = load_recognizer(args.checkpoint)
    if not isinstance(rec, SugarAlignRecognizer):
        raise SystemExit(f"{args.checkpoint}: a {rec.recipe} folder; the t-SNE map reads a sugar align-stage one "
                         "(<run>/align/recognizer, or the recognizer of an align-only run)")
    summary = tsne_map(rec, args.data, args.out, args.split, args.perplexity)
    print(json.dumps({"checkpoint": args.checkpoint, **{k: v for k, v in summary.items() if k != "points"}}))


if __name__ == "__main__":
    main()
