"""PYSKL / MMAction2 skeleton annotation pickles (``ntu60_hrnet.pkl``, ``ntu60_3danno.pkl``, ``gym_hrnet.pkl``...).

A pickle holds ``{"split": {name: [frame_dir, ...]}, "annotations": [{"frame_dir", "label",
"keypoint" [M,T,V,C], "keypoint_score" [M,T,V] (optional), "total_frames", "img_shape"?}]}``. Input is
one pickle or a folder whose ``*.pkl`` are all read. The layout is the option ``layout`` (default
``coco17``; ``ntu25`` for the 3D NTU pickles); V must match it. 2D or 3D follows the data.

SECURITY: unpickling runs code. Only load local pickle files that the user named and trusts.

Protocols come from the file's ``split``: ``<p>_train`` with ``<p>_test`` (preferred) or ``<p>_val``
gives protocol ``<p>``; plain ``train`` with ``test``/``val`` gives ``official``. A sample in neither list
of the chosen protocol is an error (ValueError) rather than a silent guess. A pickle without any such
pair offers ``holdout`` (a deterministic 80/20 split by frame_dir) instead. Class names: option
``class_names`` (a list or a text file with one name per line), else none (labels stay indices, empty
names). NTU-style frame_dirs (``S001C002P003R002A013``) give subject (P) and view (C), else "".
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..layouts import get_layout
from ..sequence import SkeletonSequence
from .base import FormatError, Protocol, Reader, Rejection, holdout, register_reader
from .ntu import parse_name


def pair_splits(split: dict[str, list]) -> dict[str, tuple[set, set]]:
    """{protocol: (train ids, test ids)} from a pyskl ``split`` dict."""
    out = {}
    for key in split:
        if key == "train":
            prefix, name = "", "official"
        elif key.endswith("_train"):
            prefix = name = key[: -len("_train")]
            prefix += "_"
        else:
            continue
        test = next((prefix + s for s in ("test", "val") if prefix + s in split), None)
        if test is not None:
            out[name] = (set(map(str, split[key])), set(map(str, split[test])))
    return out


def make_protocol(name: str, train: set, test: set) -> Protocol:
    def split(seq: SkeletonSequence) -> str:
        if seq.sample_id in train:
            return "train"
        if seq.sample_id in test:
            return "test"
        raise ValueError(f"pyskl protocol {name!r}: {seq.sample_id} is in neither its train nor its test list")

    return split


@register_reader
class PYSKLReader(Reader):
    name = "pyskl"
    description = "PYSKL/MMAction2 skeleton pickles (2D or 3D keypoints, layout given by the 'layout' option)"
    layout = "coco17"
    trusted_pickle = True

    def __init__(self, input_path, **options):
        super().__init__(input_path, **options)
        self.layout = options.get("layout") or type(self).layout
        self.num_joints = get_layout(self.layout).num_joints
        self.fps = float(options.get("fps", 30.0))
        names = options.get("class_names") or []
        if isinstance(names, (str, Path)):
            names = [ln.strip() for ln in Path(names).read_text().splitlines() if ln.strip()]
        self._names = list(names)
        self._cache: tuple[Path, dict] | None = None  # the last pickle loaded (they can be large)

    def files(self) -> list[Path]:
        return [self.input] if self.input.is_file() else sorted(self.input.glob("*.pkl"))

    def _load(self, path: Path) -> dict:
        if self._cache and self._cache[0] == path:
            return self._cache[1]
        try:
            with open(path, "rb") as f:
                data = pickle.load(f)  # trusted: see the module docstring
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a malformed file
            raise FormatError(path, f"cannot unpickle: {type(e).__name__}: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise FormatError(path, "expected a dict with an 'annotations' list (and a 'split' dict)")
        self._cache = (path, data)
        return data

    @property
    def class_names(self) -> list[str]:
        return list(self._names)

    @property
    def protocols(self) -> dict[str, Protocol]:
        if not hasattr(self, "_protocols"):
            pairs: dict[str, tuple[set, set]] = {}
            for path in self.files():
                for name, (train, test) in pair_splits(self._load(path).get("split") or {}).items():
                    old = pairs.setdefault(name, (set(), set()))
                    old[0].update(train)
                    old[1].update(test)
            self._protocols = {n: make_protocol(n, tr, te) for n, (tr, te) in sorted(pairs.items())}
            if not self._protocols:
                self._protocols = {"holdout": holdout}
        return self._protocols

    def read_file(self, path: Path) -> Iterator[SkeletonSequence | Rejection]:
        path = Path(path)
        data = self._load(path)
        self._cache = None  # read once: let the annotations go with the caller's items
        for i, ann in enumerate(data["annotations"]):
            yield self._sequence(path, i, ann)

    def _sequence(self, path: Path, i: int, ann) -> SkeletonSequence:
        if not isinstance(ann, dict) or "frame_dir" not in ann:
            raise FormatError(path, f"annotation #{i} is not a dict with a 'frame_dir'")
        fd = str(ann["frame_dir"])
        where = f"annotation #{i} (frame_dir {fd!r})"
        if "keypoint" not in ann:
            raise FormatError(path, f"{where} has no 'keypoint' array")
        kp = np.asarray(ann["keypoint"], dtype=np.float32)
        if kp.ndim != 4 or kp.shape[-1] not in (2, 3):
            raise FormatError(path, f"{where}: keypoint shape {kp.shape}, expected [M,T,V,2|3]")
        m, t, v, _ = kp.shape
        if v != self.num_joints:
            raise FormatError(path, f"{where}: {v} joints, layout {self.layout!r} has {self.num_joints}")
        if "total_frames" in ann and int(ann["total_frames"]) != t:
            raise FormatError(path, f"{where}: total_frames {ann['total_frames']} != {t} keypoint frames")
        scores = ann.get("keypoint_score")
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float32)
            if scores.shape != (m, t, v):
                raise FormatError(path, f"{where}: keypoint_score shape {scores.shape} != {(m, t, v)}")
        label = int(ann.get("label", -1))
        ids = parse_name(fd)
        meta = {"source": str(path)}
        if "img_shape" in ann:
            meta["img_shape"] = tuple(int(x) for x in ann["img_shape"])
        if ids:
            meta.update(setup=ids[0], replication=ids[3])
        return SkeletonSequence(
            sample_id=fd, layout=self.layout, joints=kp, scores=scores, label=label,
            label_name=self._names[label] if 0 <= label < len(self._names) else "", dataset=self.name,
            subject=str(ids[2]) if ids else "", view=str(ids[1]) if ids else "", fps=self.fps, meta=meta,
        )
