"""JHMDB ground-truth 2D joints (Jhuang et al., ICCV 2013), as pickled by DD-Net (Yang et al. 2019).

Input: the folder holding ``GT_train_{k}.pkl`` / ``GT_test_{k}.pkl`` (k = 1, 2, 3: JHMDB's official
splits; option ``split``, default 1). Each pickle is ``{'pose': [array (T, 15, 2)], 'label': [str]}``:
JHMDB 'pos_world' puppet coordinates (normalised, image y pointing down), 15 joints in the ``jhmdb15``
order, no confidence, no subject ids. 14 classes (the JHMDB classes without '_' in their name).
Split 1 holds 433 train + 176 test clips. Protocol "official" (alias f"split{k}") keeps the pickle's split.

WARNING: unpickling runs code stored in the file. This reader only loads the local files the user
names; never point it at pickles from an untrusted source.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..sequence import SkeletonSequence
from .base import FormatError, Reader, Rejection, register_reader

CLASSES = ("catch", "clap", "golf", "jump", "pick", "pour", "pullup", "push", "run", "sit", "stand", "throw",
           "walk", "wave")
FPS = 30.0  # JHMDB clips come from 30 fps video (HMDB51 is normalised to 30 fps)


def official_split(seq: SkeletonSequence) -> str:
    """'train' or 'test' as the source pickle says (meta, else the sample id 'split1_train_0000_clap')."""
    split = seq.meta.get("split") or seq.sample_id.split("_")[1]
    if split not in ("train", "test"):
        raise ValueError(f"{seq.sample_id}: no JHMDB split recorded")
    return split


@register_reader
class JHMDBReader(Reader):
    name = "jhmdb"
    description = "JHMDB ground-truth 2D puppet joints, DD-Net pickles (15 joints, 2D; trusted local pickle)"
    layout = "jhmdb15"
    trusted_pickle = True

    def __init__(self, input_path, split: int = 1, **options):
        super().__init__(input_path, split=split, **options)
        if int(split) not in (1, 2, 3):
            raise ValueError(f"{self.name}: split must be 1, 2 or 3, got {split!r}")
        self.split = int(split)

    def files(self) -> list[Path]:
        paths = [self.input / f"GT_{part}_{self.split}.pkl" for part in ("train", "test")]
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"{self.name}: {p} does not exist")
        return paths

    @property
    def class_names(self) -> list[str]:
        return list(CLASSES)

    @property
    def protocols(self):
        return {"official": official_split, f"split{self.split}": official_split}

    def read_file(self, path: Path) -> Iterator[SkeletonSequence | Rejection]:
        path = Path(path)
        part = "train" if path.name.startswith("GT_train") else "test" if path.name.startswith("GT_test") else None
        if part is None:
            raise FormatError(path, "file name must start with GT_train or GT_test")
        try:
            with open(path, "rb") as f:
                data = pickle.load(f)  # trusted local file: see the module docstring
        except Exception as e:  # noqa: BLE001 - a corrupt pickle raises many kinds
            raise FormatError(path, f"cannot unpickle: {type(e).__name__}: {e}") from None
        if not isinstance(data, dict) or not {"pose", "label"} <= set(data):
            keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
            raise FormatError(path, f"expected a dict with keys 'pose' and 'label', got {keys}")
        poses, labels = list(data["pose"]), list(data["label"])
        if len(poses) != len(labels):
            raise FormatError(path, f"{len(poses)} poses but {len(labels)} labels")
        for i, (pose, label) in enumerate(zip(poses, labels, strict=True)):
            try:
                pose = np.asarray(pose, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise FormatError(path, f"pose {i} is not numeric ({e})") from None
            if pose.ndim != 3 or pose.shape[1:] != (15, 2):
                raise FormatError(path, f"pose {i} has shape {pose.shape}, expected (T, 15, 2)")
            if label not in CLASSES:
                raise FormatError(path, f"pose {i}: unknown label {label!r} (known: {list(CLASSES)})")
            yield SkeletonSequence(
                sample_id=f"split{self.split}_{part}_{i:04d}_{label}",
                layout=self.layout,
                joints=pose,
                label=CLASSES.index(label),
                label_name=label,
                dataset=self.name,
                fps=FPS,
                meta={"source": str(path), "split": part, "index": i},
            )
