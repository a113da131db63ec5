"""SkeletonSequence: one labelled recording of one or more bodies, in a registered layout."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .layouts import Layout, get_layout


@dataclass
class SkeletonSequence:
    """Joints as float32 [M, T, V, C] (bodies, frames, joints, 2|3 coordinates).

    `scores` [M, T, V] is the per-joint confidence (None when the source has none); a joint with score 0 is
    missing (its coordinates are 0 and mean nothing). `label` is the class index, -1 when unlabelled.
    """

    sample_id: str
    layout: str
    joints: np.ndarray
    scores: np.ndarray | None = None
    label: int = -1
    label_name: str = ""
    dataset: str = ""
    subject: str = ""
    view: str = ""
    fps: float = 30.0
    meta: dict = field(default_factory=dict)  # reader-specific facts (source file, segment bounds); not stored

    def __post_init__(self) -> None:
        self.joints = np.asarray(self.joints, dtype=np.float32)
        if self.joints.ndim == 3:  # [T, V, C] -> one body
            self.joints = self.joints[None]
        if self.joints.ndim != 4:
            raise ValueError(f"{self.sample_id}: joints must be [M,T,V,C] or [T,V,C], got shape {self.joints.shape}")
        m, t, v, c = self.joints.shape
        if c not in (2, 3):
            raise ValueError(f"{self.sample_id}: joints must have 2 or 3 coordinates, got {c}")
        lay = get_layout(self.layout)
        if v != lay.num_joints:
            raise ValueError(f"{self.sample_id}: layout {self.layout!r} has {lay.num_joints} joints, data has {v}")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32)
            if self.scores.ndim == 2:
                self.scores = self.scores[None]
            if self.scores.shape != (m, t, v):
                raise ValueError(f"{self.sample_id}: scores shape {self.scores.shape} != {(m, t, v)}")

    # --- shape ------------------------------------------------------------------------------------------
    @property
    def num_bodies(self) -> int:
        return self.joints.shape[0]

    @property
    def num_frames(self) -> int:
        return self.joints.shape[1]

    @property
    def num_joints(self) -> int:
        return self.joints.shape[2]

    @property
    def dims(self) -> int:
        return self.joints.shape[3]

    @property
    def layout_spec(self) -> Layout:
        return get_layout(self.layout)

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else float("nan")

    def with_(self, **changes) -> SkeletonSequence:
        """A copy with some fields replaced (arrays are not copied unless replaced)."""
        return replace(self, **changes)

    def problem(self, min_frames: int = 2) -> str | None:
        """Why this sequence cannot be used, or None. The reasons prepare writes into the manifest."""
        if self.num_frames < min_frames:
            return f"too short: {self.num_frames} frame(s), need at least {min_frames}"
        if not np.isfinite(self.joints).all():
            bad = int((~np.isfinite(self.joints)).any(axis=(0, 2, 3)).sum())
            return f"non-finite coordinates (NaN/inf) in {bad} of {self.num_frames} frames"
        if not np.any(self.joints):
            return "all joint coordinates are zero (no skeleton tracked)"
        if self.scores is not None and not np.isfinite(self.scores).all():
            return "non-finite joint scores"
        return None

    def equals(self, other: SkeletonSequence) -> bool:
        """Exact equality of every stored field (what a shard round trip must preserve)."""
        same_scores = (self.scores is None and other.scores is None) or (
            self.scores is not None and other.scores is not None and np.array_equal(self.scores, other.scores)
        )
        return (
            same_scores
            and np.array_equal(self.joints, other.joints)
            and (self.sample_id, self.layout, self.label, self.label_name, self.dataset, self.subject, self.view)
            == (other.sample_id, other.layout, other.label, other.label_name, other.dataset, other.subject, other.view)
            and np.float32(self.fps) == np.float32(other.fps)
        )
