"""Video shards -> the frame-feature cache (actionllm/video/features.py), built with Ray Data: the shard rows are
decoded (PyAV) and encoded by the frozen visual encoder in an actor pool (the encoder loads once per actor), and
the driver writes the cache. Training then holds the cached features in memory (train.stage_datasets)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import ray

from actionllm.components.visual_encoder import encoder_id, load_visual_encoder
from actionllm.video.features import cache_folder, cache_key, encode_rows, read_cache, write_cache
from actionllm.video.folder import read_video_rows


class EncodeVideos:
    """Ray Data actor: a batch of video shard rows -> their feature rows."""

    def __init__(self, encoder_cfg: dict, frames: int):
        import torch

        from actionllm.components.visual_encoder import VisualEncoderConfig

        torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        self.encoder = load_visual_encoder(VisualEncoderConfig.model_validate(encoder_cfg))
        self.frames = frames

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["sample_id"]))]
        out = encode_rows(rows, self.encoder, self.frames)
        col = np.empty(len(out), dtype=object)
        col[:] = [r["features"] for r in out]
        return {"sample_id": np.array([r["sample_id"] for r in out]), "split": np.array([r["split"] for r in out]),
                "label": np.array([r["label"] for r in out], np.int32),
                "steps": np.array([r["steps"] for r in out], np.int32),
                "feat_dim": np.array([r["feat_dim"] for r in out], np.int32), "features": col}


def ensure_features(data: str, recipe_cfg, cpus: float = 1.0, batch: int = 8) -> tuple[str, dict]:
    """The feature cache of a video shard folder for this recipe config's encoder and frames, built if missing.
    Returns (cache folder, {"built": bool, "videos", "seconds"})."""
    enc, frames = recipe_cfg.encoder, recipe_cfg.video.frames
    folder = cache_folder(data, cache_key(data, encoder_id(enc), frames))
    if (folder / "features.parquet").is_file():
        return str(folder), {"built": False}
    t0 = time.perf_counter()
    rows = read_video_rows(data)
    keep = ("sample_id", "split", "label", "uri", "num_frames")
    ds = ray.data.from_items([{k: r[k] for k in keep} for r in rows]).map_batches(
        EncodeVideos, fn_constructor_kwargs={"encoder_cfg": enc.model_dump(mode="json"), "frames": frames},
        batch_size=batch, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=cpus, batch_format="numpy")
    out = []
    for b in ds.iter_batches(batch_size=64, batch_format="numpy"):
        out += [{k: b[k][i] for k in b} for i in range(len(b["sample_id"]))]
    if len(out) != len(rows):
        raise RuntimeError(f"{data}: {len(rows)} videos but {len(out)} feature rows came back")
    write_cache(folder, out, {"encoder": enc.name_or_path, "encoder_id": encoder_id(enc), "frames": frames})
    dt = time.perf_counter() - t0
    return str(folder), {"built": True, "videos": len(out), "seconds": round(dt, 2),
                         "videos_per_s": round(len(out) / dt, 2) if dt > 0 else None}


def feature_items(folder: str, split: str, exclude: frozenset[int] = frozenset(), seed: int | None = None
                  ) -> list[dict]:
    """One split's cached feature rows (train: shuffled once with `seed`)."""
    rows = read_cache(Path(folder), split, exclude)
    if seed is not None:
        rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
    return rows
