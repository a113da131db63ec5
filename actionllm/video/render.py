"""Skeleton shards -> MP4 stick figures, so that a video recipe (LVLM-VAR) can learn from skeleton datasets.

Projection (`project`): 3D joints are in the Kinect camera-space convention every 3D reader here yields
(right-handed, metres, y up, z away from the sensor, +x to the sensor's LEFT; checked on MSR, UTKinect,
Florence and UTD-MHAD: the right shoulder has the larger x). The camera is orthographic and looks along +z,
so image u = -x and image v = -y (the person upright, not mirrored). `view_deg` first turns the skeleton
about the vertical axis: +90 shows the subject's right side (a camera orbiting toward the sensor's left).
2D layouts are image coordinates already (y down) and are drawn as they are. One scale and one offset per
sequence fit every valid joint of every frame and body into the frame with a margin, so global motion
(walking across, bending down) stays visible and the figure's size does not flicker.

Drawing (`render_sequence`): Pillow ImageDraw on a dark background, no anti-aliasing; bones of the left
side orange, right side blue, centre light grey; joints as small dots on top. A missing joint (score 0, or
exactly zero coordinates, or non-finite) is neither drawn nor used for the fit, and neither is any bone
touching it.

Encoding (`write_mp4`): H.264 (libx264, yuv420p, CRF 18, preset veryfast) when the PyAV wheel's FFmpeg has it,
else MPEG-4 part 2 (mpeg4); the first that opens and encodes a test frame is used.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from ..skeleton.layouts import Layout
from ..skeleton.sequence import SkeletonSequence
from ..skeleton.shards import Manifest, read_shards

BACKGROUND = (16, 16, 16)
LEFT = (255, 140, 0)     # orange
RIGHT = (30, 144, 255)   # blue
CENTRE = (230, 230, 230)  # light grey
MARGIN = 0.08  # share of the frame left free on each side
CODECS = ("libx264", "mpeg4")
CSV_NAME = "videos.csv"
CSV_COLUMNS = ("path", "label", "subject", "view", "split")


# --- projection -----------------------------------------------------------------------------------------------
def valid_mask(seq: SkeletonSequence) -> np.ndarray:
    """[M, T, V] True where a joint has a position: finite and not exactly zero; for 2D also score > 0.

    A 3D score is not used: MSR Action3D's confidence column is 0 for the centre joints (hip_center, spine,
    shoulder_center) in over 90% of frames while their coordinates are sound (Kinect's "inferred" joints),
    and dropping them would cut every figure in two. A 2D pose estimator's score 0 means "not found"."""
    j = seq.joints
    ok = np.isfinite(j).all(-1) & (np.abs(j).sum(-1) > 0)
    if seq.scores is not None and seq.dims == 2:
        ok &= seq.scores > 0
    return ok


def _camera_plane(seq: SkeletonSequence, view_deg: float) -> np.ndarray:
    """[M, T, V, 2] image-oriented coordinates (u right, v down), before the fit."""
    j = seq.joints.astype(np.float64)
    if seq.dims == 2:
        if view_deg:
            raise ValueError(f"{seq.sample_id}: a 2D sequence ({seq.layout}) cannot be rotated (view {view_deg:g})")
        return j.copy()
    theta = math.radians(view_deg)
    x = j[..., 0] * math.cos(theta) + j[..., 2] * math.sin(theta)
    return np.stack([-x, -j[..., 1]], axis=-1)


def project(seq: SkeletonSequence, size: int, view_deg: float = 0.0) -> np.ndarray:
    """Pixel coordinates [T, M, V, 2] (x right, y down) of every joint in a size x size frame; NaN where a
    joint is missing. One scale/offset for the whole sequence (aspect kept, centred, MARGIN on each side)."""
    plane = _camera_plane(seq, view_deg)
    ok = valid_mask(seq)
    pts = np.where(ok[..., None], plane, np.nan)
    if ok.any():
        lo, hi = np.nanmin(pts[ok], axis=0), np.nanmax(pts[ok], axis=0)
        span = float(max(hi[0] - lo[0], hi[1] - lo[1]))
        usable = size * (1 - 2 * MARGIN) - 1
        scale = usable / span if span > 0 else 1.0
        centre = (lo + hi) / 2
        pts = (pts - centre) * scale + (size - 1) / 2
    return np.transpose(pts, (1, 0, 2, 3))  # [M, T, V, 2] -> [T, M, V, 2]


# --- drawing --------------------------------------------------------------------------------------------------
def _side(name: str) -> str:
    low = name.lower()
    if low.startswith(("left", "l_")) or "_left" in low:
        return "left"
    if low.startswith(("right", "r_")) or "_right" in low:
        return "right"
    return "centre"


def _colour(side: str) -> tuple[int, int, int]:
    return {"left": LEFT, "right": RIGHT}.get(side, CENTRE)


def bone_colours(layout: Layout) -> list[tuple[int, int, tuple[int, int, int]]]:
    """(joint a, joint b, colour) for every bone: left if either end is a left joint, right likewise."""
    out = []
    for a, b in layout.bones:
        sides = {_side(a), _side(b)}
        side = "left" if "left" in sides else "right" if "right" in sides else "centre"
        out.append((layout.index(a), layout.index(b), _colour(side)))
    return out


def render_sequence(seq: SkeletonSequence, size: int = 112, fps: float | None = None,
                    view_deg: float = 0.0) -> np.ndarray:
    """The sequence drawn as stick figures: uint8 RGB [T, size, size, 3].

    `fps` None keeps one video frame per skeleton frame (played at seq.fps); a number resamples time to that
    rate (nearest skeleton frame), e.g. 15 fps MSR -> 30 fps doubles each frame."""
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    pts = project(seq, size, view_deg)  # [T, M, V, 2]
    t_src = pts.shape[0]
    if fps is not None and seq.fps > 0 and fps != seq.fps:
        t_out = max(1, round(t_src * fps / seq.fps))
        order = np.minimum((np.arange(t_out) * seq.fps / fps).astype(np.int64), t_src - 1)
    else:
        order = np.arange(t_src)
    layout = seq.layout_spec
    bones = bone_colours(layout)
    joint_colours = [_colour(_side(n)) for n in layout.joints]
    width = max(1, round(size / 64))
    radius = max(1, round(size / 56))
    out = np.empty((len(order), size, size, 3), dtype=np.uint8)
    cache: dict[int, np.ndarray] = {}
    for k, t in enumerate(order):
        t = int(t)
        if t not in cache:
            img = Image.new("RGB", (size, size), BACKGROUND)
            draw = ImageDraw.Draw(img)
            for body in pts[t]:
                finite = np.isfinite(body).all(-1)
                xy = np.rint(body).tolist()
                for a, b, colour in bones:
                    if finite[a] and finite[b]:
                        draw.line([tuple(xy[a]), tuple(xy[b])], fill=colour, width=width)
                for v in np.flatnonzero(finite):
                    x, y = xy[v]
                    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=joint_colours[v])
            cache = {t: np.asarray(img)}  # keep only the last frame (repeats are consecutive)
        out[k] = cache[t]
    return out


# --- encoding -------------------------------------------------------------------------------------------------
def _rate(fps: float) -> Fraction:
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def _add_stream(container, codec: str, width: int, height: int, fps: float):
    stream = container.add_stream(codec, rate=_rate(fps))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if codec == "libx264":
        stream.options = {"crf": "18", "preset": "veryfast"}
    else:
        stream.bit_rate = 2_000_000
    return stream


@lru_cache(maxsize=1)
def video_codec() -> str:
    """The first of CODECS that this FFmpeg build can open and encode a frame with."""
    tried = []
    for codec in CODECS:
        try:
            buf = io.BytesIO()
            with av.open(buf, mode="w", format="mp4") as container:
                stream = _add_stream(container, codec, 16, 16, 10)
                frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
                for packet in [*stream.encode(frame), *stream.encode(None)]:
                    container.mux(packet)
            return codec
        except (av.error.FFmpegError, ValueError, KeyError, OSError) as err:  # codec absent or unusable
            tried.append(f"{codec}: {err}")
    raise RuntimeError(f"no usable MP4 video encoder in this PyAV/FFmpeg build ({'; '.join(tried)})")


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: float) -> Path:
    """Encode uint8 RGB [T, H, W, 3] as an MP4 (yuv420p, so H and W must be even)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 [T>0, H, W, 3], got {frames.dtype} {frames.shape}")
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs an even width and height, got {w}x{h}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = _add_stream(container, video_codec(), w, h, fps)
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode(None))
    return path


# --- shards -> video folder -----------------------------------------------------------------------------------
def safe_name(text: str) -> str:
    """A file/folder name: runs of anything but letters, digits, '.', '-' become '_' ('high arm wave' ->
    'high_arm_wave')."""
    name = re.sub(r"[^A-Za-z0-9.\-]+", "_", str(text)).strip("._")
    return name or "unnamed"


def parse_views(text: str) -> tuple[float, ...]:
    """'0,30,-45' -> (0.0, 30.0, -45.0); ValueError naming the bad item."""
    views = []
    for item in str(text).split(","):
        item = item.strip()
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"--views: {item!r} is not a number of degrees (expected e.g. 0,30,60)") from None
        if not math.isfinite(value):
            raise ValueError(f"--views: {item!r} is not a finite angle")
        views.append(value)
    if len(set(views)) != len(views):
        raise ValueError(f"--views: repeated angle in {text!r}")
    return tuple(views)


def render_shards(shards: str | os.PathLike, output: str | os.PathLike, size: int = 112,
                  views: Iterable[float] = (0.0,), splits: Iterable[str] | None = None,
                  limit: int | None = None, on_file: Callable[[Path], None] | None = None) -> dict:
    """Render every sequence of a shard folder (optionally only some splits, the first `limit` sequences) as
    `<output>/<class>/<sample_id>[_v<deg>].mp4`, and list them in `<output>/videos.csv`
    (path relative to output, label = class name, subject, view, split from the shards).

    The `_v<deg>` suffix is added when anything but the single view 0 is asked; rotated renders get the view
    `rot<deg>`, the unrotated ones keep the source's view. Returns counts."""
    start = time.perf_counter()
    views = tuple(float(v) for v in views)
    if not views:
        raise ValueError("views: at least one angle is needed")
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16 (yuv420p), got {size}")
    manifest = Manifest.read(shards)  # FileNotFoundError for a folder that is not a shard folder
    if getattr(manifest, "modality", "skeleton") != "skeleton":
        raise ValueError(f"{shards} holds {manifest.modality} shards, not skeletons")
    if manifest.dims == 2 and any(views):
        raise ValueError(f"{shards}: 2D joints ({manifest.layout}) cannot be rendered from other views; use --views 0")
    wanted = None if splits is None else set(splits)
    output = Path(output)
    if (output / CSV_NAME).exists():
        raise FileExistsError(f"{output} already holds {CSV_NAME}; choose a new folder or remove it")
    output.mkdir(parents=True, exist_ok=True)
    suffix = not (views == (0.0,))
    rows: list[dict] = []
    per_split: Counter = Counter()
    per_class: Counter = Counter()
    used: set[str] = set()
    sequences = frames = 0
    fps_default = 30.0
    for seq, split in read_shards(shards):
        if wanted is not None and split not in wanted:
            continue
        if limit is not None and sequences >= limit:
            break
        sequences += 1
        label = seq.label_name or str(seq.label)
        folder = safe_name(label)
        for view in views:
            stem = safe_name(seq.sample_id) + (f"_v{view:g}" if suffix else "")
            rel = f"{folder}/{stem}.mp4"
            if rel in used:
                raise ValueError(f"two sequences render to {rel}: sample ids clash after making them file names")
            used.add(rel)
            video = render_sequence(seq, size=size, view_deg=view)
            path = write_mp4(video, output / rel, seq.fps if seq.fps > 0 else fps_default)
            rows.append({"path": rel, "label": label, "subject": seq.subject,
                         "view": seq.view if view == 0 else f"rot{view:g}", "split": split})
            per_split[split] += 1
            per_class[label] += 1
            frames += len(video)
            if on_file:
                on_file(path)
    if not rows:
        raise ValueError(f"no sequences in {shards}" + (f" for split(s) {sorted(wanted)}" if wanted else ""))
    with open(output / CSV_NAME, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return {"sequences": sequences, "videos": len(rows), "frames": frames, "views": list(views),
            "size": size, "codec": video_codec(), "per_split": dict(per_split), "per_class": dict(per_class),
            "csv": str(output / CSV_NAME), "seconds": round(time.perf_counter() - start, 3)}
