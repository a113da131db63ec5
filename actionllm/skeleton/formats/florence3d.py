"""Florence 3D Actions (Seidenari et al., CVPR Workshops 2013), the processed ``skeletal_data.mat``.

Input: the dataset folder (holding ``skeletal_data.mat`` and ``action_names.mat``) or the .mat itself.
``skeletal_data`` is a cell (215, 1) of structs with ``original_skeletal_data`` (3 x 15 x T: the raw
world coordinates / 1000, i.e. metres, with rows y and z swapped by the source's
process_skeletal_data.m), ``subject`` (1..10) and ``action`` (1..9). The reader swaps rows y and z back,
so (x, y, z) has y vertical as in the raw file (checked on the data: with this choice the head's y is
above both ankles' in all 4016 frames, and head > neck > ankles on average in every sequence; the other
row is the ~2.8 m camera depth).
15 joints in the ``florence15`` order (body_model.mat), no confidence. 9 classes, 10 subjects.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np

from ..sequence import SkeletonSequence
from .base import FormatError, Reader, Rejection, odd_subjects_train, register_reader
from .io import load_mat, mat_strings

ACTION_NAMES = ("wave", "drink", "answer phone", "clap", "tight lace", "sit down", "stand up", "read watch", "bow")
# Not specified by the source bundle: the Florence set was captured with a Kinect v1; 15 fps is the rate
# commonly assumed for it (sequences are 8..35 rows long for 2-3 s gestures).
FPS = 15.0


def _scalar(struct, field: str, path: Path, where: str) -> int:
    try:
        return int(np.asarray(struct[field]).ravel()[0].ravel()[0])
    except Exception as e:  # noqa: BLE001
        raise FormatError(path, f"{where}: field {field!r} is not a number ({e})") from None


@register_reader
class Florence3DReader(Reader):
    name = "florence3d"
    description = "Florence 3D Actions skeletal_data.mat (15 joints, 3D metres)"
    layout = "florence15"

    def __init__(self, input_path, **options):
        super().__init__(input_path, **options)
        self.mat = self.input / "skeletal_data.mat" if self.input.is_dir() else self.input

    def files(self) -> list[Path]:
        return [self.mat]

    @cached_property
    def class_names(self) -> list[str]:
        names_mat = self.mat.parent / "action_names.mat"
        return mat_strings(names_mat, "action_names") if names_mat.is_file() else list(ACTION_NAMES)

    @property
    def protocols(self):
        return {"cross-subject": odd_subjects_train}

    def read_file(self, path: Path) -> Iterator[SkeletonSequence | Rejection]:
        path = Path(path)
        cell = np.asarray(load_mat(path, "skeletal_data"), dtype=object).ravel()
        names = self.class_names
        for i, item in enumerate(cell, start=1):
            struct = np.asarray(item).ravel()
            where = f"skeletal_data{{{i}}}"
            if struct.size != 1 or struct.dtype.names is None or "original_skeletal_data" not in struct.dtype.names:
                raise FormatError(path, f"{where} is not a struct with 'original_skeletal_data'")
            struct = struct[0]
            subject = _scalar(struct, "subject", path, where)
            action = _scalar(struct, "action", path, where)
            try:
                raw = np.asarray(struct["original_skeletal_data"], dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise FormatError(path, f"{where}.original_skeletal_data is not numeric ({e})") from None
            if raw.ndim == 2 and raw.shape == (3, 15):  # MATLAB drops a trailing singleton (T = 1)
                raw = raw[:, :, None]
            if raw.ndim != 3 or raw.shape[:2] != (3, 15):
                raise FormatError(path, f"{where}.original_skeletal_data has shape {raw.shape}, expected (3, 15, T)")
            if not 1 <= action <= len(names):
                raise FormatError(path, f"{where}: action {action} outside 1..{len(names)}")
            joints = raw[[0, 2, 1]].transpose(2, 1, 0)  # rows (x, depth, y) -> (x, y, depth); [T, 15, 3]
            yield SkeletonSequence(
                sample_id=f"seq{i:03d}_s{subject:02d}_a{action:02d}",
                layout=self.layout,
                joints=joints,
                label=action - 1,
                label_name=names[action - 1],
                dataset=self.name,
                subject=str(subject),
                fps=FPS,
                meta={"source": str(path), "index": i},
            )
