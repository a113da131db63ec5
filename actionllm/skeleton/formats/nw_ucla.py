"""Northwestern-UCLA Multiview Action3D (Wang et al., CVPR 2014), in the JSON release used by CTR-GCN.

Input: a folder (searched recursively) of ``aAA_sSS_eEE_vVV.json`` files, each
``{"file_name": str, "skeletons": T x 20 x 3 nested lists, "label": int}``: 20 Kinect v1 joints in the
SDK order (``kinect20`` as is), 3D, no confidence (scores None).

Labels: the dataset's ten action ids are 1..6, 8, 9, 11, 12 (7 and 10 do not exist). The label index is
the position of the file name's action id in that list. The JSON's own ``label`` is not used: releases
disagree on whether it is 1-based, the action id minus one, or the 0..9 index, so the name is the
single source of truth (a disagreeing JSON label is ignored, not recorded). An action id outside the
list is a FormatError.

Protocols: ``cross-view`` (the standard one: views 1 and 2 train, view 3 tests) and ``cross-subject``
(odd subjects train). The Kinect recorded at 30 fps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..sequence import SkeletonSequence
from .base import FormatError, Reader, Rejection, odd_subjects_train, parse_ids, register_reader
from .io import load_json

ACTION_IDS = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)
ACTION_NAMES = ("pick up with one hand", "pick up with two hands", "drop trash", "walk around", "sit down",
                "stand up", "donning", "doffing", "throw", "carry")


def cross_view(seq: SkeletonSequence) -> str:
    return "train" if int(seq.view) in (1, 2) else "test"


@register_reader
class NWUCLAReader(Reader):
    name = "nw-ucla"
    description = "NW-UCLA Multiview Action3D JSON files (20 Kinect v1 joints, 3D, 10 classes, 3 views)"
    layout = "kinect20"

    def files(self) -> list[Path]:
        if self.input.is_file():
            return [self.input]
        return sorted(self.input.rglob("a*_s*_e*_v*.json"))

    @property
    def class_names(self) -> list[str]:
        return list(ACTION_NAMES)

    @property
    def protocols(self):
        return {"cross-view": cross_view, "cross-subject": odd_subjects_train}

    def read_file(self, path: Path) -> Iterator[SkeletonSequence | Rejection]:
        path = Path(path)
        ids = parse_ids(path.stem, "asev")
        if ids["a"] not in ACTION_IDS:
            raise FormatError(path, f"action a{ids['a']:02d} is not an NW-UCLA action id {list(ACTION_IDS)}")
        data = load_json(path)
        if not isinstance(data, dict) or "skeletons" not in data:
            raise FormatError(path, "expected a JSON object with a 'skeletons' key")
        try:
            joints = np.asarray(data["skeletons"], dtype=np.float64)
        except (ValueError, TypeError) as e:
            raise FormatError(path, f"'skeletons' is not a T x 20 x 3 array of numbers: {e}") from None
        if joints.size == 0:
            joints = joints.reshape(0, 20, 3)
        if joints.ndim != 3 or joints.shape[1:] != (20, 3):
            raise FormatError(path, f"'skeletons' has shape {joints.shape}, expected T x 20 x 3")
        label = ACTION_IDS.index(ids["a"])
        yield SkeletonSequence(
            sample_id=f"a{ids['a']:02d}_s{ids['s']:02d}_e{ids['e']:02d}_v{ids['v']:02d}",
            layout=self.layout, joints=joints, scores=None, label=label, label_name=ACTION_NAMES[label],
            dataset=self.name, subject=str(ids["s"]), view=str(ids["v"]), fps=30.0,
            meta={"source": str(path), "environment": ids["e"]},
        )
