"""Skeleton augmentations and fixed-length temporal sampling, as the GCN toolkits do them (pure numpy).

- `uniform_sample`: PYSKL's UniformSampleFrames -- split the frames into `length` equal segments and take one
  frame from each (a random one when training, the middle one at test); shorter sequences repeat frames.
- `temporal_crop`: keep a random contiguous part of the frames (CTR-GCN / 2s-AGCN's valid_crop_resize,
  p_interval [min_fraction, 1]) before resampling.
- `random_rotate` (3D: about x, y and z; 2D: in-plane), `random_scale`, `random_shear` (2s-AGCN / CTR-GCN):
  one random linear map per sequence, applied about the origin (centre the skeleton first).

All act on joints [M, T, V, C]; missing joints (all-zero coordinates) stay zero.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field


class AugmentConfig(BaseModel):
    """Training-time augmentation of a recipe (switched off at evaluation and serving)."""

    rotate: float = Field(0.0, ge=0.0, le=np.pi, description="max rotation angle per axis, radians (PYSKL: 0.3)")
    scale: float = Field(0.0, ge=0.0, lt=1.0, description="max relative scale change per axis (PYSKL: 0.1)")
    shear: float = Field(0.0, ge=0.0, le=1.0, description="max shear coefficient (2s-AGCN: 0.5)")
    crop: float = Field(1.0, gt=0.0, le=1.0, description="random temporal crop keeps [crop, 1] of the frames")

    @property
    def active(self) -> bool:
        return self.rotate > 0 or self.scale > 0 or self.shear > 0 or self.crop < 1.0


def valid_mask(joints: np.ndarray) -> np.ndarray:
    """[M, T, V] True where a joint has any non-zero coordinate (zeros mean 'missing' in the shards)."""
    return np.any(joints != 0, axis=-1)


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """3 angles (about x, y, z) -> R = Rz @ Ry @ Rx (3x3); 1 angle -> the 2D in-plane rotation."""
    if len(angles) == 1:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]], np.float64)
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def apply_linear(joints: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """p' = A p for every joint; missing joints stay exactly zero."""
    out = np.einsum("ij,mtvj->mtvi", matrix, joints.astype(np.float64))
    return np.where(valid_mask(joints)[..., None], out, 0.0).astype(np.float32)


def random_linear(dims: int, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """The product of a random rotation, shear and per-axis scale (identity when all are off)."""
    a = np.eye(dims)
    if cfg.rotate > 0:
        a = rotation_matrix(rng.uniform(-cfg.rotate, cfg.rotate, 3 if dims == 3 else 1)) @ a
    if cfg.shear > 0:
        sh = np.eye(dims)
        off = ~np.eye(dims, dtype=bool)
        sh[off] = rng.uniform(-cfg.shear, cfg.shear, off.sum())
        a = sh @ a
    if cfg.scale > 0:
        a = np.diag(rng.uniform(1 - cfg.scale, 1 + cfg.scale, dims)) @ a
    return a


def crop_bounds(t: int, min_fraction: float, rng: np.random.Generator) -> tuple[int, int]:
    """(start, length) of a random contiguous run of round(f * t) frames, f ~ U[min_fraction, 1]."""
    if min_fraction >= 1.0 or t < 2:
        return 0, t
    keep = max(1, int(round(rng.uniform(min_fraction, 1.0) * t)))
    return int(rng.integers(0, t - keep + 1)), keep


def temporal_crop(joints: np.ndarray, min_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Keep a random contiguous run of round(f * T) frames, f ~ U[min_fraction, 1]."""
    start, keep = crop_bounds(joints.shape[1], min_fraction, rng)
    return joints[:, start:start + keep]


def uniform_sample_indices(num_frames: int, length: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """PYSKL's UniformSampleFrames (one clip): `length` frame indices, one per equal segment of the sequence;
    random within each segment when `rng` is given (training), the segment middle otherwise. A sequence
    shorter than `length` repeats frames in order (every frame used, none invented)."""
    if num_frames < 1 or length < 1:
        raise ValueError(f"cannot sample {length} frames from {num_frames}")
    edges = np.linspace(0, num_frames, length + 1)
    lo = np.floor(edges[:-1]).astype(np.int64)
    hi = np.maximum(np.ceil(edges[1:]).astype(np.int64) - 1, lo)
    if rng is None:
        idx = (lo + hi) // 2
    else:
        idx = lo + np.floor(rng.random(length) * (hi - lo + 1)).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


def augment_sequence(joints: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Temporal crop, then one random linear map for the whole sequence (all bodies alike)."""
    joints = temporal_crop(joints, cfg.crop, rng)
    if cfg.rotate > 0 or cfg.scale > 0 or cfg.shear > 0:
        joints = apply_linear(joints, random_linear(joints.shape[-1], cfg, rng))
    return joints
