"""PYSKL / MMAction2 skeleton annotation pickles (``ntu60_hrnet.pkl``, ``ntu60_3danno.pkl``, ``gym_hrnet.pkl``...).

A pickle holds ``{"split": {name: [frame_dir, ...]}, "annotations": [{"frame_dir", "label",
"keypoint" [M,T,V,C], "keypoint_score" [M,T,V] (optional), "total_frames", "img_shape"?}]}``. Input is
one pickle or a folder whose ``*.pkl`` are all read. The layout is the option ``layout`` (default
``coco17``; ``ntu25`` for the 3D NTU pickles); V must match it. 2D or 3D follows the data.

SECURITY: unpickling runs code. Only load local pickle files that the user named and trusts.

Protocols come from the file's ``split``: ``<p>_train`` with ``<p>_test`` (preferred) or ``<p>_val``
gives protocol ``<p>``; plain ``train`` with ``test``/``val`` gives ``official``. A sample in neither list
of the chosen protocol is an error (ValueError) rather than a silent guess. A pickle without any such
pair offers ``holdout`` (a deterministic 80/20 split by frame_dir) instead; `prepare` without a protocol uses
the first one (``official`` for a plain train/test pair). Class names: option ``class_names`` (a list, or a
file: a JSON list, or a text file with one name per line; ``-O class_names=FILE``); PYSKL pickles carry none,
so without the option classes are named by index (``class_0`` ... up to the largest label), with a note in
``notes`` (prepare records it in manifest.json). NTU-style frame_dirs (``S001C002P003R002A013``) give subject (P)
and view (C), else "".
"""

from __future__ import annotations

import json
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


def read_class_names(value) -> list[str]:
    """The class_names option: a list, or a file holding a JSON list or one name per line."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if not isinstance(value, (str, Path)):
        raise ValueError(f"pyskl: class_names must be a file or a list of names, got {value!r}")
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"pyskl: class_names file {path} does not exist")
    text = path.read_text()
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"pyskl: class_names file {path} is not a valid JSON list: {err}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"pyskl: class_names file {path} must hold a JSON list of strings")
        return names
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def max_label(annotations: list) -> int:
    """The largest integer label of the annotations (-1: none); malformed ones are left to read_file."""
    top = -1
    for ann in annotations:
        try:
            top = max(top, int(ann.get("label", -1)))
        except (AttributeError, TypeError, ValueError):
            continue
    return top


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
        self._names = read_class_names(options.get("class_names") or [])
        self._cache: tuple[Path, dict] | None = None  # the last pickle loaded (they can be large)
        self._num_labels: int | None = None  # largest label + 1 over the pickles (learnt with the protocols)

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
        """The names given by the class_names option, else class_<label> up to the largest label in the
        pickles (a PYSKL pickle names no classes; training needs names)."""
        if not self._names:
            self.protocols  # noqa: B018 - one pass over the pickles learns the splits and the labels
            if self._num_labels:
                self._names = [f"class_{i}" for i in range(self._num_labels)]
                self.notes.append(
                    f"{self.name}: the pickle names no classes; named by label index (class_0 ... "
                    f"class_{self._num_labels - 1}). Pass -O class_names=FILE (one name per line, or a JSON list) "
                    "to name them.")
        return list(self._names)

    @property
    def protocols(self) -> dict[str, Protocol]:
        if not hasattr(self, "_protocols"):
            pairs: dict[str, tuple[set, set]] = {}
            top = -1
            for path in self.files():
                data = self._load(path)
                for name, (train, test) in pair_splits(data.get("split") or {}).items():
                    old = pairs.setdefault(name, (set(), set()))
                    old[0].update(train)
                    old[1].update(test)
                top = max(top, max_label(data["annotations"]))
            self._num_labels = top + 1
            self._protocols = {n: make_protocol(n, tr, te) for n, (tr, te) in sorted(pairs.items())}
            if not self._protocols:
                self._protocols = {"holdout": holdout}
        return self._protocols

    def read_file(self, path: Path) -> Iterator[SkeletonSequence | Rejection]:
        path = Path(path)
        data = self._load(path)
        names = self.class_names  # (while this pickle is still cached)
        self._cache = None  # read once: let the annotations go with the caller's items
        for i, ann in enumerate(data["annotations"]):
            yield self._sequence(path, i, ann, names)

    def _sequence(self, path: Path, i: int, ann, names: list[str]) -> SkeletonSequence:
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
            label_name=names[label] if 0 <= label < len(names) else "", dataset=self.name,
            subject=str(ids[2]) if ids else "", view=str(ids[1]) if ids else "", fps=self.fps, meta=meta,
        )
