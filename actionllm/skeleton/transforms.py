"""Transforms on SkeletonSequence: joint selection, mapping to coco17, virtual joints, per-frame
normalisation, sliding windows and fps resampling; and on joint arrays [M, T, V, C]: the body's axes (spine,
shoulder line), the rotation that aligns them with the camera's (PYSKL's PreNormalize3D), and a rotation of
the view about the vertical (`evaluate --rotate`). Pure numpy; each returns a new sequence or array."""

from __future__ import annotations

import numpy as np

from .layouts import COCO17, coco17_mapping, derived_layout, get_layout
from .sequence import SkeletonSequence

BODY_CENTRE = "body_centre"


def select_joints(seq: SkeletonSequence, joints: list[str], layout_name: str | None = None) -> SkeletonSequence:
    """Keep `joints` (by name, in the given order) as a derived layout."""
    idx = seq.layout_spec.indices(joints)
    lay = derived_layout(seq.layout_spec, joints, layout_name)
    scores = None if seq.scores is None else seq.scores[:, :, idx]
    return seq.with_(joints=seq.joints[:, :, idx], scores=scores, layout=lay.name)


def drop_face(seq: SkeletonSequence) -> SkeletonSequence:
    """Drop the layout's face joints (eyes, ears, nose for COCO: Action-JointsLLM sec. 4.1.2)."""
    lay = seq.layout_spec
    keep = [j for j in lay.joints if j not in lay.face]
    return select_joints(seq, keep, f"{lay.name}-noface") if len(keep) < lay.num_joints else seq


def to_coco17(seq: SkeletonSequence) -> SkeletonSequence:
    """Map any layout onto coco17. Joints the source lacks are zeros with score 0 (never invented)."""
    if seq.layout == COCO17.name:
        return seq
    mapping = coco17_mapping(seq.layout)
    m, t, _, c = seq.joints.shape
    joints = np.zeros((m, t, COCO17.num_joints, c), np.float32)
    scores = np.zeros((m, t, COCO17.num_joints), np.float32)
    src_scores = seq.scores if seq.scores is not None else np.ones(seq.joints.shape[:3], np.float32)
    for k, target in enumerate(COCO17.joints):
        src = mapping[target]
        if src is not None:
            i = seq.layout_spec.index(src)
            joints[:, :, k] = seq.joints[:, :, i]
            scores[:, :, k] = src_scores[:, :, i]
    return seq.with_(joints=joints, scores=scores, layout=COCO17.name,
                     meta={**seq.meta, "coco17_from": seq.layout})


def body_centre(joints: np.ndarray, left: int, right: int) -> np.ndarray:
    """Eq. 1 of Action-JointsLLM: the body centre is the shoulder midpoint, c_t = (p_t^ls + p_t^rs) / 2."""
    return 0.5 * (joints[..., left, :] + joints[..., right, :])


def add_body_centre(seq: SkeletonSequence) -> SkeletonSequence:
    """Append the virtual joint `body_centre` (shoulder midpoint); its score is the weaker shoulder's."""
    lay = seq.layout_spec
    ls, rs = lay.index("left_shoulder"), lay.index("right_shoulder")
    centre = body_centre(seq.joints, ls, rs)[:, :, None]
    new = derived_layout(lay, (*lay.joints, BODY_CENTRE), f"{lay.name}+centre",
                         extra_bones=((BODY_CENTRE, "left_shoulder"), (BODY_CENTRE, "right_shoulder")))
    scores = None
    if seq.scores is not None:
        scores = np.concatenate([seq.scores, np.minimum(seq.scores[:, :, ls], seq.scores[:, :, rs])[:, :, None]], 2)
    return seq.with_(joints=np.concatenate([seq.joints, centre], axis=2), scores=scores, layout=new.name)


def normalise_frames(joints: np.ndarray, eps: float = 1e-6, per_axis: bool = True) -> np.ndarray:
    """Eqs. 2-4 of Action-JointsLLM: per frame, mu_t = mean_v p_tv, sigma_t^2 = mean_v (p_tv - mu_t)^2,
    p'_tv = (p_tv - mu_t) / sqrt(sigma_t^2 + eps). Works on [..., V, C].
    # not specified in the paper: whether mu/sigma are per axis or pooled over x and y; default per axis.
    """
    axes = (-2,) if per_axis else (-2, -1)
    mu = joints.mean(axis=axes, keepdims=True)
    var = ((joints - mu) ** 2).mean(axis=axes, keepdims=True)
    return ((joints - mu) / np.sqrt(var + eps)).astype(np.float32)


def normalise_sequence(seq: SkeletonSequence, eps: float = 1e-6, per_axis: bool = True) -> SkeletonSequence:
    return seq.with_(joints=normalise_frames(seq.joints, eps, per_axis))


def window_starts(num_frames: int, size: int | None, stride: int | None = None) -> list[int]:
    """Start frames of the sliding windows [s, s + size). `stride=None` ('no stride') means stride = size;
    `size=None` means the whole sequence is one window (GCN baselines resample it to a fixed length).

    T=72, N=18, stride 9 -> 0, 9, ..., 54 (7 windows); no stride -> 0, 18, 36, 54 (4 windows). A sequence
    shorter than one window gives one window at 0 that the consumer pads; a tail shorter than a window
    is not a window of its own (as the paper's sliding sampling).
    """
    if size is None:
        return [0]
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    stride = size if stride is None else stride
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if num_frames <= size:
        return [0]
    return list(range(0, num_frames - size + 1, stride))


def sliding_windows(seq: SkeletonSequence, size: int | None, stride: int | None = None,
                    pad: bool = True) -> list[SkeletonSequence]:
    """Cut windows of `size` frames; a short sequence is padded by repeating its last frame (pad=True).
    `size=None`: the whole sequence as one window."""
    size = seq.num_frames if size is None else size
    out = []
    for s in window_starts(seq.num_frames, size, stride):
        joints = seq.joints[:, s:s + size]
        scores = None if seq.scores is None else seq.scores[:, s:s + size]
        if pad and joints.shape[1] < size:
            extra = size - joints.shape[1]
            joints = np.concatenate([joints, np.repeat(joints[:, -1:], extra, axis=1)], axis=1)
            if scores is not None:
                scores = np.concatenate([scores, np.zeros_like(scores[:, :1]).repeat(extra, 1)], axis=1)
        out.append(seq.with_(sample_id=f"{seq.sample_id}@{s}", joints=joints, scores=scores,
                             meta={**seq.meta, "window_start": s, "source_id": seq.sample_id}))
    return out


def resample_fps(seq: SkeletonSequence, target_fps: float) -> SkeletonSequence:
    """Resample to `target_fps` by linear interpolation in time (scores: nearest frame)."""
    if target_fps <= 0:
        raise ValueError(f"target fps must be > 0, got {target_fps}")
    if seq.num_frames < 2 or abs(seq.fps - target_fps) < 1e-6:
        return seq.with_(fps=float(target_fps))
    t_src = np.arange(seq.num_frames) / seq.fps
    n_out = max(int(np.floor(t_src[-1] * target_fps + 1e-9)) + 1, 1)
    t_out = np.arange(n_out) / target_fps
    pos = np.clip(t_out * seq.fps, 0, seq.num_frames - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, seq.num_frames - 1)
    w = (pos - lo)[None, :, None, None].astype(np.float32)
    joints = (1 - w) * seq.joints[:, lo] + w * seq.joints[:, hi]
    scores = None if seq.scores is None else seq.scores[:, np.rint(pos).astype(int)]
    return seq.with_(joints=joints.astype(np.float32), scores=scores, fps=float(target_fps))




# --- views: the body's own axes, rotations about them ---------------------------------------------------------
# The spine runs from the hip midpoint to the shoulder midpoint and the shoulder line from the left to the right
# shoulder, in every layout (all registered layouts name both hips and both shoulders). PYSKL's PreNormalize3D
# reads NTU's joints 1 -> 2 (spine base -> spine mid) and 5 -> 9 (left -> right shoulder: it aligns r - l with +x);
# the midpoints are the same directions in a layout-independent form.


def _joint(joints: np.ndarray, layout: str, names: tuple[str, str]) -> np.ndarray:
    """Midpoint of two named joints, [..., C] from [..., V, C]."""
    lay = get_layout(layout)
    missing = [n for n in names if n not in lay.joints]
    if missing:
        raise ValueError(f"layout {layout!r} has no {missing}: it cannot define the body's axes")
    return 0.5 * (joints[..., lay.index(names[0]), :] + joints[..., lay.index(names[1]), :])


def body_axes(joints: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Body 0's spine (hip midpoint -> shoulder midpoint) and shoulder line (left -> right) per frame [T, C],
    its body centre (shoulder midpoint) [T, C], and a mask [T] of the frames where all four joints are valid."""
    body = np.asarray(joints[0], np.float64)  # [T, V, C]
    hips = _joint(body, layout, ("left_hip", "right_hip"))
    centre = _joint(body, layout, ("left_shoulder", "right_shoulder"))
    lay = get_layout(layout)
    ok = np.all(np.any(body[:, lay.indices(("left_hip", "right_hip", "left_shoulder", "right_shoulder"))] != 0,
                       axis=-1), axis=-1)
    shoulders = body[:, lay.index("right_shoulder")] - body[:, lay.index("left_shoulder")]
    return centre - hips, shoulders, centre, ok


def axis_rotation(axis: np.ndarray, theta: float) -> np.ndarray:
    """Rodrigues: the 3x3 rotation by `theta` radians about `axis`, counter-clockwise seen from its tip."""
    k = np.asarray(axis, np.float64)
    k = k / np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def view_frame(spine: np.ndarray, shoulders: np.ndarray) -> np.ndarray:
    """The rotation R (rows x, y, z) that maps the spine onto +z and the shoulder line (left -> right) onto +x.
    The shoulder line is first made perpendicular to the spine (Gram-Schmidt), so both hold exactly; PYSKL's two
    successive axis-angle rotations tilt the spine off z again whenever the shoulders are not perpendicular to it.
    A degenerate input (zero spine, shoulders along the spine) returns the identity."""
    z = np.asarray(spine, np.float64)
    if np.linalg.norm(z) < 1e-9:
        return np.eye(3)
    z = z / np.linalg.norm(z)
    x = np.asarray(shoulders, np.float64) - np.dot(shoulders, z) * z
    if np.linalg.norm(x) < 1e-9:
        return np.eye(3)
    x = x / np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def rotate_about(joints: np.ndarray, matrix: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """p' = A (p - pivot) + pivot for every joint of every body [M, T, V, C]; missing (all-zero) joints stay zero."""
    j = joints.astype(np.float64)
    out = np.einsum("ij,mtvj->mtvi", matrix, j - pivot) + pivot
    return np.where(np.any(joints != 0, axis=-1, keepdims=True), out, 0.0).astype(np.float32)


UP_AXES = ("spine", "x", "y", "z")


def up_direction(joints: np.ndarray, layout: str, up: str = "spine") -> np.ndarray:
    """The vertical of a 3D sequence: "spine" = the mean spine direction of body 0 over its valid frames (the
    data's own up, whatever the camera's tilt; on MSR Action3D's 567 sequences it is a median 7 degrees (95th
    percentile 17) off the camera's +y, their mean (-0.02, 0.997, 0.076)), or a named camera axis."""
    if up in ("x", "y", "z"):
        return np.eye(3)[("x", "y", "z").index(up)]
    if up != "spine":
        raise ValueError(f"up axis {up!r}: choose one of {UP_AXES}")
    spine, _, _, ok = body_axes(joints, layout)
    mean = spine[ok].mean(0) if ok.any() else np.zeros(3)
    return mean / np.linalg.norm(mean) if np.linalg.norm(mean) > 1e-9 else np.array([0.0, 1.0, 0.0])


def rotate_view(joints: np.ndarray, layout: str, degrees: float, up: str = "spine") -> np.ndarray:
    """A 3D sequence [M, T, V, 3] seen from another camera azimuth: every body rotated by `degrees` about the
    vertical (`up_direction`) through body 0's centre in its first valid frame (the subject stays in place).
    0 degrees returns the joints unchanged (the rotation is exactly the identity)."""
    joints = np.asarray(joints, np.float32)
    if joints.shape[-1] != 3:
        raise ValueError(f"a view rotation needs 3D joints, these have {joints.shape[-1]} coordinates")
    _, _, centre, ok = body_axes(joints, layout)
    first = int(np.argmax(ok))  # 0 when no frame is valid
    return rotate_about(joints, axis_rotation(up_direction(joints, layout, up), np.deg2rad(degrees)), centre[first])
