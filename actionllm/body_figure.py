"""The report's joint picture drawn on the body: the skeleton of one evaluated sequence (its middle frame), its
joints coloured by the recognizer's mean joint weight per class (`attention_body.png`, beside the bar chart)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .skeleton.layouts import get_layout  # noqa: E402

MAX_CLASSES = 6  # panels in the figure


def body_pose(seq) -> np.ndarray:
    """A sequence's first body at its middle frame -> [V, 2] plotting coordinates with y up (2D layouts are image
    pixels, whose y grows downwards; 3D layouts here are camera coordinates with y up: x and y are drawn)."""
    frame = np.asarray(seq.joints[0, seq.num_frames // 2, :, :2], np.float64)
    return frame * np.array([1.0, -1.0]) if seq.dims == 2 else frame


def plot_body(pose: np.ndarray, layout: str, expl: list[dict], class_names: list[str], joint_names: list[str],
              path: Path, what: str = "attention") -> bool:
    """One panel per class (at most MAX_CLASSES): bones in grey, joints coloured by the class's mean joint weight
    (the recognizer's joints matched to the layout's by name). False (nothing written) when no joint matches or the
    weights are all equal (a recognizer without a joint read-back)."""
    lay = get_layout(layout)
    where = {n: i for i, n in enumerate(lay.joints)}
    shared = [(where[n], k) for k, n in enumerate(joint_names) if n in where]
    classes = sorted({e["label"] for e in expl})[:MAX_CLASSES]
    weights = {c: np.mean([e["joint_weights"] for e in expl if e["label"] == c], axis=0) for c in classes}
    if not shared or all(np.ptp(w) < 1e-9 for w in weights.values()):
        return False
    top = max(float(np.max(w)) for w in weights.values())
    fig, axes = plt.subplots(1, len(classes), figsize=(2.6 * len(classes) + 1.2, 3.6), squeeze=False,
                             layout="constrained")
    for ax, c in zip(axes[0], classes, strict=True):
        for a, b in lay.bone_index:
            ax.plot(pose[[a, b], 0], pose[[a, b], 1], color="0.75", lw=2, zorder=1)
        idx = [i for i, _ in shared]
        points = ax.scatter(pose[idx, 0], pose[idx, 1], c=[weights[c][k] for _, k in shared], cmap="inferno_r",
                            vmin=0, vmax=top, s=60, edgecolors="k", linewidths=0.4, zorder=2)
        ax.set_title(class_names[c], fontsize=9)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.colorbar(points, ax=list(axes[0]), shrink=0.8, label=f"{what} weight")
    fig.suptitle(f"{what} over joints, on the body (mean per class)", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
