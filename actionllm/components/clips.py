"""Clips: a skeleton window as a fixed-size tensor, as the GCN toolkits prepare it (PYSKL's pipeline).

`prepare_clip`, named steps in PYSKL's order: keep up to `max_bodies` bodies; (training) random temporal crop;
`align` the view (PYSKL's PreNormalize3D: spine onto z, shoulders onto x; 2D: scale by the spine length);
`centre` on the body centre (shoulder midpoint of body 0, per frame or of the first frame); (training) random
rotation / scale / shear; the input `modality` (PYSKL's GenSkeFeat: joint, bone, joint motion, bone motion);
uniform temporal sampling to a fixed number of frames (PYSKL's UniformSampleFrames).
`ClipPreprocessor` runs it over batches of window rows in the data pipeline; `ClipCollate` stacks clips of
varying body counts. Used by every method that reads clips (stgcn, llm-ar's VQ-VAE, ...).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from ..skeleton.augment import AugmentConfig, augment_sequence, crop_bounds, uniform_sample_indices
from ..skeleton.layouts import Layout, get_layout
from ..skeleton.transforms import body_axes, body_centre, rotate_about, view_frame
from .gcn import adjacency, graph_centre, hop_distances


class ClipConfig(BaseModel):
    """How a clip-reading method sees a sequence: optional windows, then a fixed-length uniform resampling."""

    window: int | None = Field(None, ge=1, description="cut sequences into windows of N frames (None: whole)")
    stride: int | None = Field(None, ge=1, description="window stride (None: no stride)")
    frames: int = Field(64, ge=4, description="frames after uniform temporal resampling (PYSKL: 100 on NTU)")
    centre: Literal["frame", "first", "none"] = Field(
        "frame", description="subtract the body centre (shoulder midpoint of body 0) of each frame "
        "(PYSKL's PreNormalize3D), of the first frame only (keeps global motion), or nothing")
    max_bodies: int = Field(2, ge=1, description="bodies kept per sequence (PYSKL: 2)")
    # PYSKL's NTU configs start with PreNormalize3D ("view"); "none" keeps the results and recognizer folders made
    # before the step existed. Which one the stgcn recipe should use is for a measurement to decide.
    align: Literal["none", "view"] = Field(
        "none", description="view: rotate each window so body 0's spine (hip -> shoulder midpoint) lies along +z "
        "and its shoulder line (left -> right) along +x, read in its first valid frame (3D, PYSKL's "
        "PreNormalize3D); 2D: divide by the median spine length")
    # PYSKL trains one network per modality (j, b, jm, bm) and sums their scores; "joint" is its first stream
    modality: Literal["joint", "bone", "joint_motion", "bone_motion"] = Field(
        "joint", description="input features (PYSKL's GenSkeFeat): joints, bones (joint minus its parent towards "
        "the graph centre), or their frame differences (last frame zero)")


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


def align_view(joints: np.ndarray, layout: str) -> np.ndarray:
    """PYSKL's PreNormalize3D for [M, T, V, 3]: one rotation per window, about body 0's centre in its first frame
    with hips and shoulders valid, taking its spine to +z and its shoulder line to +x (`view_frame`). PYSKL also
    drops the frames where body 0 is missing and centres on the first frame; here frames are kept and centring is
    the `centre` step's. 2D [M, T, V, 2]: scaled about that centre by 1 / the median spine length of body 0
    # not specified for these data (PYSKL's PreNormalize2D divides by the image half-size, which shards lack):
    # chosen: the spine length, a size that does not change with the pose of the arms and legs.
    A window without one valid frame is returned unchanged."""
    spine, shoulders, centre, ok = body_axes(joints, layout)
    if not ok.any():
        return joints
    first = int(np.argmax(ok))
    if joints.shape[-1] == 3:
        return rotate_about(joints, view_frame(spine[first], shoulders[first]), centre[first])
    length = float(np.median(np.linalg.norm(spine[ok], axis=-1)))
    return rotate_about(joints, np.eye(2) / length, centre[first]) if length > 1e-9 else joints


def bone_parents(layout: str | Layout) -> np.ndarray:
    """Parent of each joint [V]: its neighbour along the layout's bones one hop closer to the graph centre (the
    first such bone when several are; as PYSKL's NTU pairs, which point every joint towards spine_shoulder). The
    centre, and a joint not connected to it, is its own parent (a zero bone, as PYSKL's (20, 20))."""
    lay = get_layout(layout) if isinstance(layout, str) else layout
    adj = adjacency(lay)
    dist = hop_distances(adj, graph_centre(lay))
    parents = np.arange(lay.num_joints)
    for a, b in lay.bone_index:
        for child, parent in ((a, b), (b, a)):
            if parents[child] == child and dist[parent] == dist[child] - 1:
                parents[child] = parent
    return parents


def modality_features(joints: np.ndarray, layout: str, modality: str) -> np.ndarray:
    """PYSKL's GenSkeFeat (JointToBone, ToMotion) on [M, T, V, C]: bone_v = p_v - p_parent(v); motion_t =
    x_{t+1} - x_t with the last frame zero. A bone or motion that involves a missing (all-zero) joint is zero."""
    if modality == "joint":
        return joints
    valid = np.any(joints != 0, axis=-1)  # [M, T, V]
    x = joints
    if modality.startswith("bone"):
        parents = bone_parents(layout)
        x = np.where((valid & valid[..., parents])[..., None], joints - joints[..., parents, :], 0.0)
        valid = valid & valid[..., parents]
    if modality.endswith("motion"):
        motion = np.zeros_like(x)
        both = valid[:, 1:] & valid[:, :-1]
        motion[:, :-1] = np.where(both[..., None], x[:, 1:] - x[:, :-1], 0.0)
        x = motion
    return np.asarray(x, np.float32)


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
    if clip.align == "view":
        joints = align_view(joints, layout)
    joints = centre_joints(joints, layout, clip.centre)
    if augment is not None:
        joints = augment_sequence(joints, augment.model_copy(update={"crop": 1.0}), rng)
    joints = modality_features(joints, layout, clip.modality)  # PYSKL: GenSkeFeat before UniformSample
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
