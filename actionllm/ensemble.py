"""Several recognizers as one: PYSKL's multi-stream fusion (joint, bone, joint-motion, bone-motion networks, or
several recipes), as a recognizer folder that evaluates, predicts and serves like any other.

  actionllm ensemble --member runs/joint/recognizer --member runs/bone/recognizer --output runs/2s/recognizer

An ensemble folder holds its members' folders, copied (it moves and deploys as one folder):

  config.json            recipe "ensemble", config {"members": [...], "rule"}, the members' classes, layout, dims,
                         window and stride
  members/0-<recipe>/    the first member's folder, unchanged
  members/1-<recipe>/    ...

The rule: each window's probabilities are the mean of the members' (equal weights), so the members must cut a
sequence the same way (same window and stride). For whole-sequence recognizers (the GCN recipes: one window per
sequence) this is PYSKL's sum of the streams' softmax scores divided by the member count -- the same answer as
`actionllm evaluate --checkpoint A --checkpoint B` (evaluation.py), which also fuses members that cut differently
(it sums per sequence). Explanations (frame and joint weights) are the first member's. Nothing here imports ray.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .contract import RecognizerBase
from .recognizer_folder import FORMAT

RECIPE = "ensemble"
RULE = "mean of the members' window probabilities (equal weights)"
NOT_TRAINED = "an ensemble is not trained: train its members, then join them with `actionllm ensemble`"


class EnsembleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    members: list[str] = Field(min_length=2, description="the members' folders, relative to the ensemble's")
    rule: str = RULE


def _difference(a, b) -> tuple[str, str]:
    """How b differs from a, briefly: two lists by their lengths or first differing entry, values as they are."""
    if not isinstance(a, list):
        return repr(b), repr(a)
    if len(a) != len(b):
        return f"{len(b)} entries", f"{len(a)}"
    i = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    return f"[{i}] = {b[i]!r}", f"{a[i]!r}"


def check_members(paths: list[str], members: list, same_windows: bool = False) -> None:
    """Refuse members that disagree on class names (and their order), layout, dimensions or candidate classes --
    and, when `same_windows`, on how they cut a sequence -- naming the first member and the one that differs."""
    first = members[0]
    for path, rec in zip(paths[1:], members[1:], strict=True):
        checks = [("class names", first.class_names, rec.class_names), ("layout", first.layout, rec.layout),
                  ("dims", first.dims, rec.dims), ("candidate classes", first.candidates, rec.candidates)]
        if same_windows:
            checks += [("window", first.window, rec.window), ("stride", first.stride, rec.stride)]
        for what, a, b in checks:
            if a != b:
                theirs, ours = _difference(a, b)
                raise ValueError(f"ensemble: {path} has {what} {theirs} but {paths[0]} has {ours} (members must "
                                 "recognise the same classes, in the same order, from the same layout"
                                 + (", cutting sequences into the same windows)" if same_windows else ")"))


class EnsembleRecognizer(RecognizerBase):
    """Loaded members, fused per window. Not trained: its members are (train each, then `write_ensemble`)."""

    recipe: ClassVar[str] = RECIPE
    config_cls: ClassVar[type[BaseModel]] = EnsembleConfig

    def __init__(self, config, class_names: list[str], layout: str, dims: int, members: list[RecognizerBase]):
        super().__init__(config, class_names, layout, dims)
        from torch import nn

        self.members = nn.ModuleList(members)  # answers among the trained classes (open_vocabulary stays False)
        self.explanation = members[0].explanation

    @classmethod
    def preprocessor(cls, cfg, layout: str, dims: int, train: bool = False, seed: int | None = None):
        raise TypeError(NOT_TRAINED)

    def collate_fn(self):
        raise TypeError(NOT_TRAINED)

    def forward(self, *args, **kwargs) -> dict:
        raise TypeError(NOT_TRAINED)

    @property
    def window(self) -> int | None:
        return self.members[0].window

    @property
    def stride(self) -> int | None:
        return self.members[0].stride

    @property
    def candidates(self) -> list[int]:
        return self.members[0].candidates

    def predict_windows(self, windows: list[np.ndarray], batch_size: int = 8, **extra) -> dict:
        outs = [m.predict_windows(windows, batch_size=batch_size, **extra) for m in self.members]
        fused = np.mean([np.asarray(o["probabilities"], np.float64) for o in outs], axis=0)
        return {**outs[0], "probabilities": fused.astype(np.float32),
                "tokens": int(sum(o.get("tokens", 0) for o in outs))}

    def release(self) -> None:
        for m in self.members:
            m.release()

    def base_meta(self) -> dict:
        return {"format": FORMAT, "format_version": 1, "actionllm_version": __version__, "recipe": RECIPE,
                "config": self.cfg.model_dump(mode="json"), "class_names": self.class_names, "layout": self.layout,
                "dims": self.dims, "window": self.window, "stride": self.stride,
                "member_recipes": [m.recipe for m in self.members], "serving": self.serving_facts(self.cfg)}

    def save(self, folder: str | Path) -> Path:
        raise TypeError("an ensemble folder is written from its members' folders: write_ensemble(members, output)")


def load_ensemble(folder: Path, meta: dict, load_member, device: str = "cpu",
                  shared: dict | None = None) -> EnsembleRecognizer:
    """An ensemble folder's config.json (`meta`) -> its members, each loaded by `load_member` (the registry's
    load_recognizer), checked, joined."""
    cfg = EnsembleConfig.model_validate(meta["config"])
    paths = [str(Path(folder) / m) for m in cfg.members]
    members = [load_member(p, device=device, shared=shared) for p in paths]
    check_members(paths, members, same_windows=True)
    first = members[0]
    return EnsembleRecognizer(cfg, first.class_names, first.layout, first.dims, members).eval()


def write_ensemble(member_folders: list[str | Path], output: str | Path, load_member) -> Path:
    """Copy the member folders under <output>/members/ and write the ensemble's config.json; members are loaded
    (by `load_member`) and checked first, so a mismatched set writes nothing."""
    if len(member_folders) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(member_folders)}")
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output} exists and is not empty: choose another --output")
    paths = [str(Path(m)) for m in member_folders]
    members = [load_member(p) for p in paths]
    check_members(paths, members, same_windows=True)
    names = [f"members/{i}-{m.recipe}" for i, m in enumerate(members)]
    for src, name in zip(paths, names, strict=True):
        shutil.copytree(src, output / name)
    first = members[0]
    joined = EnsembleRecognizer(EnsembleConfig(members=names), first.class_names, first.layout, first.dims, members)
    meta = {**joined.base_meta(), "sources": paths}
    (output / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    sample = Path(paths[0]) / "sample.json"
    if sample.is_file():  # the service's web page offers it as an example
        shutil.copy(sample, output / "sample.json")
    return output
