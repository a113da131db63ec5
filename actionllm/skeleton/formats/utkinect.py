"""UTKinect-Action3D skeletons (Xia, Chen & Aggarwal, CVPR Workshops 2012).

Input: the dataset folder ``utkinect_action3d/`` (or its ``joints/`` subfolder). ``joints_sNN_eMM.txt``
holds one continuous recording: each line is ``frame_number x1 y1 z1 ... x20 y20 z20`` (61 numbers),
20 Kinect v1 joints in the SDK order (hip_center first; checked on the data), metres, y vertical, no
confidence. Frame numbers may repeat or skip; rows are kept in file order.

``actionLabel.txt`` (option ``labels``, e.g. ``actionLabel_modified.txt`` with the Lie-group code's
corrected bounds) lists per recording ``sNN_eMM`` then ten lines ``action: start end`` (inclusive frame
numbers). A segment = the rows whose frame number lies in [start, end]. One ``carry`` segment has NaN
bounds: it is yielded as a Rejection. 10 classes, 10 subjects, 199 usable segments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..sequence import SkeletonSequence
from .base import FormatError, Reader, Rejection, odd_subjects_train, register_reader
from .io import parse_rows

CLASSES = ("walk", "sitDown", "standUp", "pickUp", "carry", "throw", "push", "pull", "waveHands", "clapHands")
# Frame numbers count Kinect v1 frames at 30 f/s (the dataset page), but the stored rows are sparser: numbers
# step by 2-8 (mostly 4) and sometimes repeat. A segment's fps is therefore its rows' rate, 30 / median step
# (about 7.5), so that durations and fps resampling are right; the frame numbers stay in meta["frames"].
KINECT_FPS = 30.0


def segment_fps(frame_numbers: np.ndarray) -> float:
    """Rows per second of a segment: 30 / the median positive step between frame numbers."""
    steps = np.diff(frame_numbers)
    steps = steps[steps > 0]
    return KINECT_FPS / float(np.median(steps)) if steps.size else KINECT_FPS
_HEADER = re.compile(r"^s(\d+)_e(\d+)$")


@register_reader
class UTKinectReader(Reader):
    name = "utkinect"
    description = "UTKinect-Action3D joint text files segmented by actionLabel.txt (20 Kinect v1 joints, 3D)"
    layout = "kinect20"

    def __init__(self, input_path, labels: str = "actionLabel.txt", **options):
        super().__init__(input_path, labels=labels, **options)
        self.dir, _ = self.data_dir("joints")
        self.labels_path = self.dir / labels
        if not self.labels_path.is_file():
            raise FileNotFoundError(f"{self.name}: label file {self.labels_path} does not exist")
        self._segments: dict[str, list[tuple[str, float, float, int]]] | None = None

    @property
    def segments(self) -> dict[str, list[tuple[str, float, float, int]]]:
        """{'s01_e01': [(action, start, end, line_number), ...]} parsed from the label file."""
        if self._segments is None:
            out: dict[str, list[tuple[str, float, float, int]]] = {}
            current = None
            for no, line in enumerate(self.labels_path.read_text().splitlines(), start=1):
                text = line.strip()
                if not text:
                    continue
                if _HEADER.match(text):
                    current = text
                    if current in out:
                        raise FormatError(self.labels_path, f"recording {current} listed twice", line=no)
                    out[current] = []
                    continue
                name, sep, rest = text.partition(":")
                bounds = rest.split()
                if not sep or current is None or len(bounds) != 2 or name.strip() not in CLASSES:
                    raise FormatError(self.labels_path, f"expected 'sNN_eMM' or '<action>: start end', got {text!r}",
                                      line=no)
                try:
                    start, end = float(bounds[0]), float(bounds[1])
                except ValueError:
                    raise FormatError(self.labels_path, f"bounds are not numbers: {rest.strip()!r}", line=no) from None
                out[current].append((name.strip(), start, end, no))
            self._segments = out
        return self._segments

    def files(self) -> list[Path]:
        paths = []
        for rec in self.segments:
            path = self.dir / f"joints_{rec}.txt"
            if not path.is_file():
                raise FormatError(self.labels_path, f"recording {rec} has no joints file {path.name}")
            paths.append(path)
        return sorted(paths)

    @property
    def class_names(self) -> list[str]:
        return list(CLASSES)

    @property
    def protocols(self):
        return {"cross-subject": odd_subjects_train}

    def read_file(self, path: Path) -> Iterator[SkeletonSequence | Rejection]:
        path = Path(path)
        rec = path.stem.removeprefix("joints_")
        m = _HEADER.match(rec)
        if not m or rec not in self.segments:
            raise FormatError(path, f"no recording {rec!r} in {self.labels_path.name}")
        data, lines = parse_rows(path, 61)
        frames = data[:, 0]
        joints = data[:, 1:].reshape(-1, 20, 3)
        for action, start, end, no in self.segments[rec]:
            sample_id = f"{rec}_{action}"
            if math.isnan(start) or math.isnan(end):
                yield Rejection(sample_id, str(path),
                                f"segment bounds are NaN ({self.labels_path.name} line {no})")
                continue
            keep = (frames >= start) & (frames <= end)
            if not keep.any():
                yield Rejection(sample_id, str(path), f"no frames within [{start:g}, {end:g}]")
                continue
            yield SkeletonSequence(
                sample_id=sample_id,
                layout=self.layout,
                joints=joints[keep],
                label=CLASSES.index(action),
                label_name=action,
                dataset=self.name,
                subject=str(int(m.group(1))),
                fps=segment_fps(frames[keep]),
                meta={"source": str(path), "start_frame": start, "end_frame": end,
                      "frames": np.asarray(frames[keep], dtype=np.int64)},
            )
