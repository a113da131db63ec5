"""Clips: a skeleton window as a fixed-size tensor, as the GCN toolkits prepare it (PYSKL's pipeline).

`prepare_clip`: keep up to `max_bodies` bodies; (training) random temporal crop; centre on the body centre
(shoulder midpoint of body 0, per frame as PYSKL's PreNormalize3D, or of the first frame); (training) random
rotation / scale / shear; uniform temporal sampling to a fixed number of frames (PYSKL's UniformSampleFrames).
`ClipPreprocessor` runs it over batches of window rows in the data pipeline; `ClipCollate` stacks clips of
varying body counts. Used by every method that reads clips (stgcn, llm-ar's VQ-VAE, ...).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from ..skeleton.augment import AugmentConfig, augment_sequence, crop_bounds, uniform_sample_indices
from ..skeleton.layouts import get_layout
from ..skeleton.transforms import body_centre
from .gcn import graph_centre


class ClipConfig(BaseModel):
    """How a clip-reading method sees a sequence: optional windows, then a fixed-length uniform resampling."""

    window: int | None = Field(None, ge=1, description="cut sequences into windows of N frames (None: whole)")
    stride: int | None = Field(None, ge=1, description="window stride (None: no stride)")
    frames: int = Field(64, ge=4, description="frames after uniform temporal resampling (PYSKL: 100 on NTU)")
    centre: Literal["frame", "first", "none"] = Field(
        "frame", description="subtract the body centre (shoulder midpoint of body 0) of each frame "
        "(PYSKL's PreNormalize3D), of the first frame only (keeps global motion), or nothing")
    max_bodies: int = Field(2, ge=1, description="bodies kept per sequence (PYSKL: 2)")


def centre_indices(layout: str) -> tuple[int, int] | int:
    """(left, right) shoulder indices for the shoulder midpoint, or the graph centre joint if a layout lacks them."""
    lay = get_layout(layout)
    if "left_shoulder" in lay.joints and "right_shoulder" in lay.joints:
        return lay.index("left_shoulder"), lay.index("right_shoulder")
    return graph_centre(lay)


def centre_joints(joints: np.ndarray, layout: str, mode: str) -> np.ndarray:
    """Subtract body 0's centre (per frame or of the first frame) from every valid joint of every body."""
    if mode == "none":
        return joints
    idx = centre_indices(layout)
    centre = body_centre(joints[0], *idx) if isinstance(idx, tuple) else joints[0, :, idx]  # [T, C]
    if mode == "first":
        centre = np.broadcast_to(centre[:1], centre.shape)
    valid = np.any(joints != 0, axis=-1, keepdims=True)
    return np.where(valid, joints - centre[None, :, None, :], 0.0).astype(np.float32)


def prepare_clip(joints: np.ndarray, clip: ClipConfig, layout: str, rng: np.random.Generator | None = None,
                 augment: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One window/sequence [M, N, V, C] -> the clip [M', frames, V, C] and the source frame index of each clip
    frame. `rng` None = deterministic (evaluation, serving); `augment` (with an rng) = training augmentation."""
    joints = np.asarray(joints, np.float32)
    if joints.ndim == 3:
        joints = joints[None]
    joints = joints[: clip.max_bodies]
    offset = np.arange(joints.shape[1])
    augment = augment if rng is not None and augment is not None and augment.active else None
    if augment is not None and augment.crop < 1.0:
        start, keep = crop_bounds(joints.shape[1], augment.crop, rng)
        joints, offset = joints[:, start:start + keep], offset[start:start + keep]
    joints = centre_joints(joints, layout, clip.centre)
    if augment is not None:
        joints = augment_sequence(joints, augment.model_copy(update={"crop": 1.0}), rng)
    idx = uniform_sample_indices(joints.shape[1], clip.frames, rng if augment is not None else None)
    return np.ascontiguousarray(joints[:, idx]), offset[idx]


def object_column(items: list) -> np.ndarray:
    """A numpy object column of arrays of varying shapes (what Ray Data batches carry)."""
    col = np.empty(len(items), dtype=object)
    col[:] = items
    return col


class ClipPreprocessor:
    """Ray Data `map_batches` callable: window rows -> fixed-length clips (augmented when `train`)."""

    def __init__(self, clip: ClipConfig, layout: str, augment: AugmentConfig | None = None, train: bool = False,
                 seed: int | None = None):
        self.clip, self.layout, self.train = clip, layout, train
        self.augment = augment if train else None
        self.rng = np.random.default_rng(seed)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        clips = []
        for i in range(len(batch["joints"])):
            m, n, c = int(batch["num_bodies"][i]), int(batch["num_frames"][i]), int(batch["dims"][i])
            joints = np.asarray(batch["joints"][i], np.float32).reshape(m, n, -1, c)
            clip, _ = prepare_clip(joints, self.clip, self.layout, self.rng if self.train else None, self.augment)
            clips.append(clip)
        out = {k: batch[k] for k in ("label", "source_id", "window_start") if k in batch}
        out["x"] = object_column(clips)
        out["bodies"] = np.asarray([c.shape[0] for c in clips], np.int64)
        return out


class ClipCollate:
    """Clips of varying body counts -> x [B, M, T, V, C] (zero-padded bodies) + body_mask [B, M] (+ labels)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        clips = [np.asarray(c, np.float32) for c in batch["x"]]
        m = max(c.shape[0] for c in clips)
        x = np.zeros((len(clips), m, *clips[0].shape[1:]), np.float32)
        mask = np.zeros((len(clips), m), np.float32)
        for i, c in enumerate(clips):
            x[i, : c.shape[0]] = c
            mask[i, : c.shape[0]] = 1.0
        out = {"x": torch.from_numpy(x), "body_mask": torch.from_numpy(mask)}
        if "label" in batch:
            out["labels"] = torch.from_numpy(np.array(batch["label"], np.int64))
        return out


def clip_batch(windows: list[np.ndarray], clip: ClipConfig, layout: str) -> tuple[dict[str, torch.Tensor], list]:
    """Windows at inference -> the collated batch and each clip's source frame indices."""
    clips = [prepare_clip(w, clip, layout) for w in windows]
    return ClipCollate()({"x": object_column([c for c, _ in clips])}), [src for _, src in clips]
