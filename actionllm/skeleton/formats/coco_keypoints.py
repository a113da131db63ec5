"""COCO-keypoints JSON, one file = one video (``person_keypoints`` style), plus MMPose prediction files.

COCO form: ``{"images": [{"id", "file_name", "frame_id"?}], "annotations": [{"image_id", "keypoints":
[x, y, v] * 17, "track_id"?/"person_id"?, "score"?}], "categories": [{"keypoints": [names]}]}``. Each
image is a frame. Frames are ordered by integer ``frame_id`` when every image has one (gaps in the
numbering become empty frames), else by ``file_name`` (natural order: frame_9 before frame_10), else by
``id``. One person per frame: when annotations carry track/person ids, the most frequent id is followed
(frames without it are empty); otherwise the annotation with the most visible keypoints is taken.
Scores: a per-keypoint ``score``/``keypoint_scores`` list of 17 when present, else visibility v -> 0 for 0,
1 for 1 and 2 (and coordinates of v=0 keypoints are zeroed). Empty frames: zeros, score 0. Category
keypoint names that are a permutation of the coco17 names are reordered by name.

MMPose form (``--save-predictions``): a list, or ``{"instance_info": [...]}``, of ``{"frame_id",
"instances": [{"keypoints": [[x, y]] * 17, "keypoint_scores": [17]}]}``; the instance with the highest
mean score is taken per frame.

Labels: option ``labels`` (a JSON object or a 2-column CSV mapping file stem -> label name), else a
top-level ``action``/``label`` key. Names (strings) are indexed into ``class_names`` = the sorted unique
names over all files (found lazily, which reads every file once); an integer label is used as the index
itself. Top-level ``subject`` and ``fps`` (else option ``fps``, default 30) are read when present.

Protocol: these files carry no official split, so the only one is ``holdout`` (see `holdout`).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..layouts import get_layout
from ..sequence import SkeletonSequence
from .base import FormatError, Reader, Rejection, holdout, register_reader
from .io import load_json

COCO = get_layout("coco17").joints


def natural_key(s: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def load_label_map(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = load_json(path)
        if not isinstance(data, dict):
            raise FormatError(path, "label file must be a JSON object {file stem: label name}")
        return {str(k): str(v) for k, v in data.items()}
    with open(path, newline="") as f:
        return {row[0].strip(): row[1].strip() for row in csv.reader(f) if len(row) >= 2 and row[0].strip()}


def _coco_frames(path: Path, data: dict) -> tuple[list[list[dict]], list[str] | None]:
    """Per-frame annotation lists in frame order, and the category keypoint names (if any)."""
    images = data.get("images")
    anns = data.get("annotations", [])
    if not isinstance(images, list) or not isinstance(anns, list):
        raise FormatError(path, "expected 'images' and 'annotations' lists")
    try:
        if images and all(isinstance(im.get("frame_id"), int) for im in images):
            base = min(im["frame_id"] for im in images)
            slot = {im["id"]: im["frame_id"] - base for im in images}
            count = max(slot.values()) + 1
        else:
            key = (lambda im: natural_key(str(im["file_name"]))) if all("file_name" in im for im in images) \
                else (lambda im: im["id"])
            slot = {im["id"]: k for k, im in enumerate(sorted(images, key=key))}
            count = len(images)
        frames: list[list[dict]] = [[] for _ in range(count)]
        for a in anns:
            frames[slot[a["image_id"]]].append(a)
    except (KeyError, TypeError, AttributeError) as e:
        raise FormatError(path, f"image/annotation entry lacks a usable field: {e!r}") from None
    cats = data.get("categories") or []
    names = cats[0].get("keypoints") if cats and isinstance(cats[0], dict) else None
    return frames, names


def _coco_person(path: Path, a: dict) -> tuple[np.ndarray, np.ndarray]:
    kp = np.asarray(a.get("keypoints", []), dtype=np.float64).reshape(-1)
    if kp.size != 51:
        raise FormatError(path, f"annotation {a.get('id', '?')}: {kp.size} keypoint values, expected 17*3")
    kp = kp.reshape(17, 3)
    explicit = a.get("keypoint_scores", a.get("score"))
    if isinstance(explicit, list) and len(explicit) == 17:
        return kp[:, :2], np.asarray(explicit, dtype=np.float64)
    vis = (kp[:, 2] > 0).astype(np.float64)
    return kp[:, :2] * vis[:, None], vis


def _read_coco(path: Path, data: dict) -> tuple[np.ndarray, np.ndarray]:
    frames, names = _coco_frames(path, data)
    ids = Counter(a.get("track_id", a.get("person_id")) for f in frames for a in f)
    ids.pop(None, None)
    track = ids.most_common(1)[0][0] if ids else None
    xy, sc = np.zeros((len(frames), 17, 2)), np.zeros((len(frames), 17))
    for t, anns in enumerate(frames):
        if track is not None:
            anns = [a for a in anns if a.get("track_id", a.get("person_id")) == track]
        people = [_coco_person(path, a) for a in anns]
        if people:
            xy[t], sc[t] = max(people, key=lambda p: ((p[1] > 0).sum(), p[1].sum()))
    if names and len(names) == 17:
        norm = [str(n).strip().lower().replace(" ", "_").replace("-", "_") for n in names]
        if set(norm) == set(COCO):
            order = [norm.index(j) for j in COCO]
            xy, sc = xy[:, order], sc[:, order]
    return xy, sc


def _read_mmpose(path: Path, frames: list) -> tuple[np.ndarray, np.ndarray]:
    try:
        ids = [int(f["frame_id"]) for f in frames]
        base, count = (min(ids), max(ids) - min(ids) + 1) if ids else (0, 0)
        xy, sc = np.zeros((count, 17, 2)), np.zeros((count, 17))
        for fid, f in zip(ids, frames, strict=True):
            people = [(np.asarray(p["keypoints"], dtype=np.float64),
                       np.asarray(p["keypoint_scores"], dtype=np.float64)) for p in f.get("instances", [])]
            for k, s in people:
                if k.shape != (17, 2) or s.shape != (17,):
                    raise FormatError(path, f"frame {fid}: keypoints {k.shape} / scores {s.shape}, expected 17")
            if people:
                xy[fid - base], sc[fid - base] = max(people, key=lambda p: p[1].mean())
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FormatError(path, f"malformed MMPose prediction entry: {e!r}") from None
    return xy, sc


def to_arrays(data, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A parsed COCO-keypoints object or MMPose prediction list (a file's, or a request's) -> xy [T,17,2],
    scores [T,17]; `path` names the source in errors."""
    if isinstance(data, dict) and "instance_info" in data:
        return _read_mmpose(path, data["instance_info"])
    if isinstance(data, list):
        return _read_mmpose(path, data)
    if isinstance(data, dict):
        return _read_coco(path, data)
    raise FormatError(path, "expected a COCO keypoints object or a list of MMPose frames")


@register_reader
class COCOKeypointsReader(Reader):
    name = "coco-keypoints"
    description = "COCO-keypoints JSON (or MMPose predictions), one file per video, one person, 2D + scores"
    layout = "coco17"

    def __init__(self, input_path, **options):
        super().__init__(input_path, **options)
        self.label_map = load_label_map(options["labels"]) if options.get("labels") else None
        self.fps = float(options.get("fps", 30.0))

    def files(self) -> list[Path]:
        return [self.input] if self.input.is_file() else sorted(self.input.glob("*.json"))

    def _label_of(self, path: Path, data) -> str | int | None:
        if self.label_map is not None:
            return self.label_map.get(path.stem)
        if isinstance(data, dict):
            value = data.get("action", data.get("label"))
            return value if isinstance(value, int) and not isinstance(value, bool) else \
                (str(value) if value is not None else None)
        return None

    @property
    def class_names(self) -> list[str]:
        if not hasattr(self, "_names"):
            seen = {self._label_of(p, None if self.label_map is not None else load_json(p)) for p in self.files()}
            self._names = sorted(n for n in seen if isinstance(n, str))
        return list(self._names)

    @property
    def protocols(self):
        return {"holdout": holdout}

    def read_file(self, path: Path) -> Iterator[SkeletonSequence | Rejection]:
        path = Path(path)
        data = load_json(path)
        xy, sc = to_arrays(data, path)
        value = self._label_of(path, data)
        label, name = (-1, "") if value is None else (value, "") if isinstance(value, int) else \
            (self.class_names.index(value), value)
        meta = data if isinstance(data, dict) else {}
        yield SkeletonSequence(
            sample_id=path.stem, layout=self.layout, joints=xy, scores=sc, label=label, label_name=name,
            dataset=self.name, subject=str(meta.get("subject", "")), fps=float(meta.get("fps", self.fps)),
            meta={"source": str(path)},
        )
