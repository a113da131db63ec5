"""MSR Action3D skeletons (Li, Zhang & Liu, CVPR Workshops 2010), as shipped with the Lie-group code.

Input: the dataset folder holding ``real_world_coordinates/`` (or that folder itself). Each
``aXX_sYY_eZZ_skeleton3D.txt`` holds 20*T rows ``x y z c`` -- 20 Kinect v1 joints per frame, real-world
metres with y vertical and z the depth, and c a per-joint tracking confidence in [0, 1] (kept as the
score). The files' joint order is not the SDK order: it is the one of ``body_model.mat``/``drawskt.m``
(1-based: 1 left_shoulder, 2 right_shoulder, 3 shoulder_center, 4 spine, 5 left_hip, 6 right_hip,
7 hip_center, 8/9 elbows, 10/11 wrists, 12/13 hands, 14/15 knees, 16/17 ankles, 18/19 feet, 20 head;
checked on the data: joint 20 is the highest). The reader reorders it into ``kinect20`` by name.

Labels: ``aXX`` (1..20) -> label XX-1, names from ``action_names.mat``. ``a13_s09_e02`` is all zeros in
the source; it is yielded as is and rejected downstream by ``SkeletonSequence.problem``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np

from ..layouts import get_layout
from ..sequence import SkeletonSequence
from .base import FormatError, Reader, Rejection, odd_subjects_train, parse_ids, register_reader
from .io import mat_strings, parse_rows

# Joint order of the text files (index = file row within a frame).
FILE_ORDER = (
    "left_shoulder", "right_shoulder", "shoulder_center", "spine", "left_hip", "right_hip", "hip_center",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_foot", "right_foot", "head",
)
TO_KINECT20 = np.array([FILE_ORDER.index(j) for j in get_layout("kinect20").joints])

# Fallback when action_names.mat is absent (same list, index = aXX - 1).
ACTION_NAMES = (
    "high arm wave", "horizontal arm wave", "hammer", "hand catch", "forward punch", "high throw", "draw X",
    "draw tick", "draw circle", "hand clap", "two hand wave", "side boxing", "bend", "forward kick",
    "side kick", "jogging", "tennis swing", "tennis serve", "golf swing", "pickup and throw",
)

# "captured at about 15 frames per second" (Li, Zhang & Liu 2010, the dataset paper).
FPS = 15.0


@register_reader
class MSRAction3DReader(Reader):
    name = "msr-action3d"
    description = "MSR Action3D real-world skeleton text files (20 Kinect v1 joints, 3D + confidence)"
    layout = "kinect20"

    def __init__(self, input_path, **options):
        super().__init__(input_path, **options)
        self.dir, self.root = self.data_dir("real_world_coordinates")

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("a*_s*_e*_skeleton3D.txt"))

    @cached_property
    def class_names(self) -> list[str]:
        mat = self.root / "action_names.mat"
        if not mat.is_file():
            return list(ACTION_NAMES)
        return mat_strings(mat, "action_names")

    @property
    def protocols(self):
        return {"cross-subject": odd_subjects_train}

    def read_file(self, path: Path) -> Iterator[SkeletonSequence | Rejection]:
        path = Path(path)
        ids = parse_ids(path.name.replace("_skeleton3D", ""), "ase")
        data, lines = parse_rows(path, 4)
        if len(data) == 0 or len(data) % 20:
            raise FormatError(path, f"{len(data)} rows is not a positive multiple of 20 joints",
                              line=lines[-1] if lines else None)
        data = data.reshape(-1, 20, 4)[:, TO_KINECT20]
        names = self.class_names
        if not 1 <= ids["a"] <= len(names):
            raise FormatError(path, f"action a{ids['a']:02d} outside 1..{len(names)}")
        yield SkeletonSequence(
            sample_id=f"a{ids['a']:02d}_s{ids['s']:02d}_e{ids['e']:02d}",
            layout=self.layout,
            joints=data[..., :3],
            scores=data[..., 3],
            label=ids["a"] - 1,
            label_name=names[ids["a"] - 1],
            dataset=self.name,
            subject=str(ids["s"]),
            fps=FPS,
            meta={"source": str(path)},
        )
