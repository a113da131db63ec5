"""Choose an LLM stage's prior weight on validation data and write it into its recognizer folder.

components/llm_stage.py fuses the LLM's name log-likelihoods with the first stage's class log-probabilities
(`prior_weight`; 0 = the paper's LLM alone). `fit_prior_weight` reads a split's sequences (skeletons: the
recognizer's windows; videos: one clip each), asks the recognizer once for the two parts of its score, picks
the weight with the best sequence accuracy (`choose_prior_weight`) and stores it in config.json (config.prior_weight,
and the table it was chosen from under "prior"), so that evaluation and serving read it from the folder.
`actionllm train` runs it on the `val` split after an LLM stage whose first stage scores classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .components.llm_stage import PRIOR_WEIGHTS, choose_prior_weight
from .inference import cut, predict_many
from .methods import load_recognizer
from .recognizer_folder import read_config
from .skeleton.shards import Manifest, read_shards


def split_windows(rec, data: str, split: str) -> tuple[list[list], list[int]]:
    """A split's sequences -> (windows per sequence, labels): skeleton windows, or one decoded clip per video."""
    if Manifest.read(data).modality == "video":
        from .video.decode import read_frames
        from .video.folder import read_video_rows

        rows = read_video_rows(data, split)
        size = rec.encoder.image_size
        return ([[read_frames(r["uri"], rec.cfg.video.frames, size, num_frames=r["num_frames"])] for r in rows],
                [rec.class_names.index(r["label_name"]) for r in rows])
    windows, labels = [], []
    for seq, _ in read_shards(data, split=split):
        windows.append(cut(seq, rec.window, rec.stride)[0])
        labels.append(int(seq.label))
    return windows, labels


def fit_prior_weight(folder: str | Path, data: str, split: str = "val", batch_size: int = 8,
                     weights: tuple[float, ...] = PRIOR_WEIGHTS) -> dict | None:
    """Choose the folder's prior weight on `split` and write it into its config.json -> {"weight", "rows",
    "split", "sequences"}; None when the recognizer has no prior (its first stage scores no classes)."""
    rec = load_recognizer(folder)
    if not getattr(rec, "has_prior", False):
        return None
    windows, labels = split_windows(rec, data, split)
    keep = [i for i, y in enumerate(labels) if y in set(rec.candidates)]
    if not keep:
        raise ValueError(f"{data}: no sequences of the recognizer's classes in split {split!r} to choose the "
                         "prior weight on")
    outs = predict_many(rec, [windows[i] for i in keep], batch_size=batch_size, generate=False)
    weight, rows = choose_prior_weight([np.asarray(o["llm_scores"]) for o in outs],
                                       [np.asarray(o["prior_logprobs"]) for o in outs], [labels[i] for i in keep],
                                       weights)
    choice = {"weight": weight, "split": split, "sequences": len(keep), "rows": rows}
    path = Path(folder) / "config.json"
    meta = read_config(folder)
    meta["config"]["prior_weight"] = weight
    meta["prior"] = choice
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return choice
