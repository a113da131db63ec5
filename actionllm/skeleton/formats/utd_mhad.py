"""UTD-MHAD Kinect skeletons (Chen, Jafari & Kehtarnavaz, ICIP 2015).

Input: the dataset folder (holding ``Skeleton/``) or ``Skeleton/`` itself. ``aNN_sMM_tKK_skeleton.mat``
holds ``d_skel`` (20 joints x 3 xyz x T), Kinect v1, metres, y vertical, no confidence. The files' joint
order (``Skeleton_joint_order.txt``) is head, shoulder_center, spine, hip_center, then left/right
shoulder-elbow-wrist-hand and hip-knee-ankle-foot; the reader reorders it into ``kinect20`` by name.
27 actions (label = NN-1), 8 subjects, 4 trials; 861 files (three trials are missing in the source).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np

from ..layouts import get_layout
from ..sequence import SkeletonSequence
from .base import FormatError, Reader, Rejection, odd_subjects_train, parse_ids, register_reader
from .io import load_mat

FILE_ORDER = (
    "head", "shoulder_center", "spine", "hip_center",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
)
TO_KINECT20 = np.array([FILE_ORDER.index(j) for j in get_layout("kinect20").joints])

# Fallback when action_names_from_source_notebook.txt is absent (index = aNN - 1).
ACTION_NAMES = (
    "right arm swipe to the left", "right arm swipe to the right", "right hand wave", "two hand front clap",
    "right arm throw", "cross arms in the chest", "basketball shooting", "draw x", "draw circle (clockwise)",
    "draw circle (counter clockwise)", "draw triangle", "bowling (right hand)", "front boxing",
    "baseball swing from right", "tennis forehand swing", "arm curl (two arms)", "tennis serve",
    "two hand push", "knock on door", "hand catch", "pick up and throw", "jogging", "walking", "sit to stand",
    "stand to sit", "forward lunge (left foot forward)", "squat",
)
FPS = 30.0  # the dataset paper: Kinect skeletons captured at 30 frames per second


@register_reader
class UTDMHADReader(Reader):
    name = "utd-mhad"
    description = "UTD-MHAD Kinect skeleton .mat files (20 Kinect v1 joints, 3D)"
    layout = "kinect20"

    def __init__(self, input_path, **options):
        super().__init__(input_path, **options)
        self.dir, self.root = self.data_dir("Skeleton")

    def files(self) -> list[Path]:
        paths = self.dir.glob("a*_s*_t*_skeleton.mat")
        return sorted(paths, key=lambda p: tuple(parse_ids(p.stem, "ast").values()))

    @cached_property
    def class_names(self) -> list[str]:
        notes = self.root / "action_names_from_source_notebook.txt"
        if not notes.is_file():
            return list(ACTION_NAMES)
        names = {}
        for no, line in enumerate(notes.read_text().splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) < 2 or not parts[0].strip().isdigit():
                raise FormatError(notes, f"expected 'number<TAB>name<TAB>...', got {line!r}", line=no)
            names[int(parts[0])] = parts[1].strip()
        if sorted(names) != list(range(1, len(names) + 1)):
            raise FormatError(notes, f"action numbers are not 1..{len(names)}")
        return [names[k] for k in sorted(names)]

    @property
    def protocols(self):
        return {"cross-subject": odd_subjects_train}  # the standard protocol: s1, s3, s5, s7 train

    def read_file(self, path: Path) -> Iterator[SkeletonSequence | Rejection]:
        path = Path(path)
        ids = parse_ids(path.stem, "ast")
        skel = load_mat(path, "d_skel")
        try:
            skel = np.asarray(skel, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise FormatError(path, f"d_skel is not numeric ({e})") from None
        if skel.ndim == 2 and skel.shape == (20, 3):  # MATLAB drops a trailing singleton (T = 1)
            skel = skel[:, :, None]
        if skel.ndim != 3 or skel.shape[:2] != (20, 3):
            raise FormatError(path, f"d_skel has shape {skel.shape}, expected (20, 3, T)")
        names = self.class_names
        if not 1 <= ids["a"] <= len(names):
            raise FormatError(path, f"action a{ids['a']} outside 1..{len(names)}")
        yield SkeletonSequence(
            sample_id=f"a{ids['a']:02d}_s{ids['s']}_t{ids['t']}",
            layout=self.layout,
            joints=skel.transpose(2, 0, 1)[:, TO_KINECT20],
            label=ids["a"] - 1,
            label_name=names[ids["a"] - 1],
            dataset=self.name,
            subject=str(ids["s"]),
            fps=FPS,
            meta={"source": str(path)},
        )
