"""OpenPose ``--write_json`` output: one folder of per-frame ``<name>_<frame:012d>_keypoints.json`` per video.

Each frame file is ``{"version", "people": [{"person_id": [-1], "pose_keypoints_2d": [x, y, c, ...]}]}``
with 18 (COCO-18 model -> ``openpose18``) or 25 (BODY_25 -> ``body25``) keypoints; c is the score.
Input: a folder of frame files (one sequence), or a folder searched recursively for folders that hold
frame files (one sequence each, named after its folder). Frames are ordered by the number in the file
name; numbers missing between the first and the last become empty frames (zeros, score 0), as do frames
with no people. People are not tracked (OpenPose's person_id is -1): in each frame the ``max_bodies``
(option, default 1) people with the highest mean confidence fill body slots 0, 1, ... in that order.

The reader's layout is the option ``layout`` when given, else found from the first frame file that has a
person. A video whose frames mix keypoint counts is a FormatError naming the frame file; a video in the
other layout is yielded and rejected by prepare's layout check.

Labels: option ``labels`` (a JSON object: video folder name -> label name) or ``label_from="parent"``
(the video folder's parent folder name); class_names are the sorted unique names of the videos found.
Protocol: ``holdout`` only (a deterministic 80/20 split by sample id; OpenPose output has no split).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..sequence import SkeletonSequence
from .base import FormatError, Reader, Rejection, holdout, register_reader
from .io import load_json

FRAME_RE = re.compile(r"_(\d+)_keypoints\.json$")
LAYOUT_BY_COUNT = {18: "openpose18", 25: "body25"}


def frame_files(folder: Path) -> list[tuple[int, Path]]:
    out = []
    for p in folder.glob("*_keypoints.json"):
        m = FRAME_RE.search(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def read_people(path: Path) -> list[np.ndarray]:
    """The people of one frame file, each float64 [K, 3] (x, y, confidence)."""
    return people_of(load_json(path), path)


def people_of(data, path: str | Path) -> list[np.ndarray]:
    """The people of one parsed frame object (`path` names it in errors)."""
    people = data.get("people") if isinstance(data, dict) else None
    if not isinstance(people, list):
        raise FormatError(path, "expected an object with a 'people' list")
    out = []
    for i, person in enumerate(people):
        try:
            kp = np.asarray(person["pose_keypoints_2d"], dtype=np.float64).reshape(-1)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(path, f"person {i}: no usable 'pose_keypoints_2d': {e!r}") from None
        if kp.size == 0:  # OpenPose writes [] for a person it found no body for
            continue
        if kp.size % 3 or kp.size // 3 not in LAYOUT_BY_COUNT:
            raise FormatError(path, f"person {i}: {kp.size} values; expected 18*3 or 25*3")
        out.append(kp.reshape(-1, 3))
    return out


@register_reader
class OpenPoseReader(Reader):
    name = "openpose"
    description = "OpenPose per-frame JSON folders (COCO-18 or BODY_25 keypoints, 2D + confidence)"
    layout = "body25"

    def __init__(self, input_path, **options):
        super().__init__(input_path, **options)
        self.max_bodies = int(options.get("max_bodies", 1))
        self.fps = float(options.get("fps", 30.0))
        self.label_from = options.get("label_from")
        self.label_map = None
        if options.get("labels"):
            data = load_json(Path(options["labels"]))
            if not isinstance(data, dict):
                raise FormatError(options["labels"], "label file must be a JSON object {video: label name}")
            self.label_map = {str(k): str(v) for k, v in data.items()}
        self.layout = options.get("layout") or self._detect_layout()

    def _detect_layout(self) -> str:
        for video in self.files():
            for _, f in frame_files(video):
                people = read_people(f)
                if people:
                    return LAYOUT_BY_COUNT[len(people[0])]
        return type(self).layout

    def files(self) -> list[Path]:
        """The video folders (directories), sorted."""
        if not hasattr(self, "_files"):
            if not self.input.is_dir():
                raise FileNotFoundError(f"{self.name}: input {self.input} is not a folder")
            if frame_files(self.input):
                self._files = [self.input]
            else:
                self._files = sorted({p.parent for p in self.input.rglob("*_keypoints.json")
                                      if FRAME_RE.search(p.name)})
        return self._files

    def _label_name(self, video: Path) -> str:
        if self.label_map is not None:
            return self.label_map.get(video.name, "")
        if self.label_from == "parent":
            return video.parent.name
        return ""

    @property
    def class_names(self) -> list[str]:
        return sorted({n for n in (self._label_name(v) for v in self.files()) if n})

    @property
    def protocols(self):
        return {"holdout": holdout}

    def read_file(self, path: Path) -> Iterator[SkeletonSequence | Rejection]:
        video = Path(path)
        frames = frame_files(video)
        if not frames:
            raise FormatError(video, "no *_<frame>_keypoints.json files")
        first = frames[0][0]
        per_frame = {number - first: (read_people(f), f) for number, f in frames}
        xy, sc, layout = assemble(per_frame, frames[-1][0] - first + 1, self.max_bodies, self.layout)
        name = self._label_name(video)
        names = self.class_names
        yield SkeletonSequence(
            sample_id=video.name, layout=layout, joints=xy, scores=sc,
            label=names.index(name) if name else -1, label_name=name, dataset=self.name, fps=self.fps,
            meta={"source": str(video), "first_frame": first},
        )


def assemble(per_frame: dict[int, tuple[list[np.ndarray], str | Path]], num_frames: int, max_bodies: int,
             default_layout: str) -> tuple[np.ndarray, np.ndarray, str]:
    """{frame: (people, where)} -> joints [M,T,K,2], scores [M,T,K], layout. In each frame the `max_bodies`
    most confident people fill body slots 0, 1, ...; a keypoint count that changes is a FormatError."""
    count, source = None, None
    slots: dict[int, list[np.ndarray]] = {}
    for t, (people, where) in per_frame.items():
        for p in people:
            if count is None:
                count, source = len(p), Path(str(where)).name
            elif len(p) != count:
                raise FormatError(where, f"{len(p)} keypoints, but {source} has {count} (mixed models)")
        slots[t] = sorted(people, key=lambda p: -p[:, 2].mean())[:max_bodies]
    layout = LAYOUT_BY_COUNT[count] if count else default_layout
    joints = count or {v: k for k, v in LAYOUT_BY_COUNT.items()}.get(layout, 25)
    data = np.zeros((max_bodies, num_frames, joints, 3))
    for t, people in slots.items():
        for m, p in enumerate(people):
            data[m, t] = p
    used = max([len(p) for p in slots.values()] + [1])
    data = data[:used]
    return data[..., :2], data[..., 2], layout


def frames_to_arrays(frames: list, max_bodies: int = 1, where: str = "frames") -> tuple[np.ndarray, np.ndarray, str]:
    """A list of parsed OpenPose frame objects (in frame order, e.g. from a request) -> joints, scores, layout."""
    if not isinstance(frames, list) or not frames:
        raise FormatError(where, "expected a non-empty list of OpenPose frame objects {'people': [...]}")
    per_frame = {t: (people_of(f, f"{where}[{t}]"), f"{where}[{t}]") for t, f in enumerate(frames)}
    return assemble(per_frame, len(frames), max_bodies, "body25")
