"""The frame-feature cache of a video shard folder: the visual encoder is frozen, so each video is decoded and
encoded once per (encoder, frames, image size) and every epoch, stage and trial after that reads the features.

  <shards>/features/<key>/features.parquet   one row per video: sample_id, split, label, steps, feat_dim,
                                             features (float32, flat [steps, feat_dim])
  <shards>/features/<key>/cache.json         what the key stands for (encoder, frames, size, shard files)

The key hashes the encoder's identity (components/visual_encoder.py: encoder_id), the frames per video and the
shard files' names, sizes and modification times: a changed shard or another encoder is a new cache. A shard
folder that is not a local directory (s3://, gs://) caches under ~/.cache/actionllm/features/<key>. Frames are
sampled at the segments' middles (decode.sample_indices, eval mode): training reads the same frames every epoch
(the price of encoding once; README of lvlm-var).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..skeleton.shards import shard_files
from .decode import read_frames

FEATURES = "features.parquet"
SCHEMA = pa.schema([("sample_id", pa.string()), ("split", pa.string()), ("label", pa.int32()),
                    ("steps", pa.int32()), ("feat_dim", pa.int32()), ("features", pa.list_(pa.float32()))])


def cache_key(shards: str, encoder_id: str, frames: int) -> str:
    files = []
    for path in shard_files(shards):
        p = Path(str(path))
        stat = p.stat() if p.exists() else None
        files.append([p.name, stat.st_size if stat else None, int(stat.st_mtime) if stat else None])
    text = json.dumps({"encoder": encoder_id, "frames": int(frames), "files": files}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cache_folder(shards: str, key: str) -> Path:
    if not storage.is_uri(str(shards)) and Path(shards).is_dir() and os.access(shards, os.W_OK):
        return Path(shards) / "features" / key
    return Path.home() / ".cache" / "actionllm" / "features" / key


def encode_rows(rows: list[dict], encoder, frames: int) -> list[dict]:
    """Video shard rows -> feature rows (decoded with the encoder's image size, encoded in one batch)."""
    clips = np.stack([read_frames(r["uri"], frames, encoder.image_size, num_frames=r.get("num_frames"))
                      for r in rows])
    feats = encoder.encode(clips).numpy().astype(np.float32)  # [B, T', D]
    return [{"sample_id": r["sample_id"], "split": r["split"], "label": int(r["label"]), "steps": int(f.shape[0]),
             "feat_dim": int(f.shape[1]), "features": f.reshape(-1)} for r, f in zip(rows, feats, strict=True)]


def write_cache(folder: Path, rows: Iterable[dict], meta: dict) -> Path:
    """Feature rows -> the cache folder, written whole or not at all (a temporary file renamed at the end; two
    processes building the same cache both finish, the last rename wins with the same content)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    table = pa.table({"sample_id": [r["sample_id"] for r in rows], "split": [r["split"] for r in rows],
                      "label": pa.array([r["label"] for r in rows], pa.int32()),
                      "steps": pa.array([r["steps"] for r in rows], pa.int32()),
                      "feat_dim": pa.array([r["feat_dim"] for r in rows], pa.int32()),
                      "features": pa.array([np.asarray(r["features"], np.float32) for r in rows],
                                           pa.list_(pa.float32()))}, schema=SCHEMA)
    tmp = folder / f"{FEATURES}.{os.getpid()}.tmp"  # parallel builders (tune trials) never share a file
    pq.write_table(table, tmp)
    (folder / "cache.json").write_text(json.dumps({**meta, "videos": len(rows)}, indent=2) + "\n")
    tmp.rename(folder / FEATURES)
    return folder / FEATURES


def read_cache(folder: Path, split: str | None = None, exclude: frozenset[int] = frozenset()) -> list[dict]:
    """The cached rows of one split (labels in `exclude` left out), features as numpy slices."""
    table = pq.read_table(folder / FEATURES)
    arr = table.column("features").combine_chunks()
    plain = table.drop_columns(["features"]).to_pylist()
    out = []
    for i, row in enumerate(plain):
        if (split is not None and row["split"] != split) or row["label"] in exclude:
            continue
        row["features"] = arr.values[arr.offsets[i].as_py(): arr.offsets[i + 1].as_py()].to_numpy()
        out.append(row)
    return out


def build_cache(shards: str, rows: list[dict], encoder, frames: int, batch: int = 8,
                on_batch: Callable[[int], None] | None = None) -> Path:
    """Encode `rows` in this process (no Ray; training/video.py runs the same in Ray Data tasks)."""
    from ..components.visual_encoder import encoder_id

    key = cache_key(shards, encoder_id(encoder.cfg), frames)
    out = []
    for s in range(0, len(rows), batch):
        out += encode_rows(rows[s:s + batch], encoder, frames)
        if on_batch:
            on_batch(len(out))
    return write_cache(cache_folder(shards, key), out, {"encoder": encoder.name, "frames": frames})
