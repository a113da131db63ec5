"""Ray Data pipelines over skeleton shards: read_parquet -> (split filter) -> sliding windows -> batches.

Sequences are streamed shard by shard and windows are cut on the fly (never stored), so a dataset
larger than memory flows through with Ray Data's backpressure; nothing here calls `materialize()`.
Later recipes append their bridge encoding (Joint2Text + tokenisation) as one more `map_batches`.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col

from actionllm.skeleton.shards import Manifest, row_to_sequence, shard_files
from actionllm.skeleton.transforms import sliding_windows

WINDOW_COLUMNS = ("sample_id", "source_id", "window_start", "label", "split", "layout", "num_frames", "dims",
                  "num_bodies", "joints", "scores")


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool | None = None) -> None:
    """Connect to `address` (or RAY_ADDRESS), or start an embedded local Ray. Progress bars are off when
    stderr is not a terminal (CI logs), on for people."""
    env_address = os.environ.get("RAY_ADDRESS", "")  # the GCS address, set inside a Ray job (`actionllm submit`)
    address = address or (env_address if env_address and "://" not in env_address else None)
    if not ray.is_initialized():
        # An embedded Ray gets its dashboard (bound to loopback): it serves the State API, which Ray Train's
        # PlacementGroupCleaner needs to see that a controller died. Without it, every trial that Tune stops
        # (ASHA) leaks its workers' placement group, and a long search deadlocks once the leaks hold every CPU.
        kwargs = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": True,
                                                       "dashboard_host": "127.0.0.1"}
        if not address:  # our own Ray: its processes inherit this environment (a user's cluster keeps its own)
            # Ray Train's controller moves a run from state to state (workers up, running, finished) on its health
            # check poll, 2 s by default: 0.5 s takes 2-4 s off every fit here (a bare 2-worker fit: 19-21 s ->
            # 15-17 s) and notices a dead worker sooner, for 2 cheap calls per worker per second
            os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
        ray.init(configure_logging=False, **kwargs)
    quiet = (not os.isatty(2)) if quiet is None else quiet
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not quiet
    ctx.print_on_execution_start = not quiet


def window_rows(row: dict, size: int | None, stride: int | None) -> list[dict]:
    """One shard row (a sequence) -> one row per sliding window, joints flattened [M, N, V, C]."""
    seq = row_to_sequence(row)
    out = []
    for win in sliding_windows(seq, size, stride):
        out.append({
            "sample_id": win.sample_id, "source_id": seq.sample_id, "window_start": win.meta["window_start"],
            "label": seq.label, "split": row["split"], "layout": seq.layout, "num_frames": win.num_frames,
            "dims": win.dims, "num_bodies": win.num_bodies, "joints": win.joints.reshape(-1),
            "scores": (np.ones(win.joints.shape[:3], np.float32) if win.scores is None else win.scores).reshape(-1),
        })
    return out


def window_items(data: str, split: str, size: int | None, stride: int | None,
                 exclude: frozenset[int] = frozenset(), seed: int | None = None) -> list[dict]:
    """The rows `window_dataset` streams for one split, read here with pyarrow (no Ray tasks), labels in `exclude`
    left out; shuffled once with `seed` (None: in file order)."""
    rows: list[dict] = []
    for path in shard_files(data):
        table = pq.read_table(path)
        keep = [i for i, (s, label) in enumerate(zip(table.column("split").to_pylist(),
                                                     table.column("label").to_pylist(), strict=True))
                if s == split and label not in exclude]
        if not keep:
            continue
        table = table.take(keep)
        lists = {c: table.column(c).combine_chunks() for c in ("joints", "scores") if c in table.column_names}
        plain = table.drop_columns(list(lists)).to_pylist()
        for i, row in enumerate(plain):
            for c, arr in lists.items():  # numpy slices of the flat values, not Python lists of floats
                row[c] = None if not arr[i].is_valid else arr.values[arr.offsets[i].as_py():
                                                                          arr.offsets[i + 1].as_py()].to_numpy()
            rows.extend(window_rows(row, size, stride))
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(rows))
        rows = [rows[i] for i in order]
    return rows


def read_sequences(data: str, split: str | None = None, shuffle: bool = False) -> ray.data.Dataset:
    """The shards of a prepared folder as a Ray Dataset of sequence rows (optionally one split).
    `shuffle` reads the shard files in a new random order each epoch (prepare already mixed the rows)."""
    Manifest.read(data)  # a clear error if this is not a shard folder
    files = [str(p) for p in shard_files(data)]
    ds = ray.data.read_parquet(files, shuffle="files" if shuffle else None)
    if split is not None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        ds = ds.filter(expr=col("split") == split)
    return ds


def window_dataset(data: str, window: int | None, stride: int | None = None, split: str | None = None,
                   shuffle: bool = False) -> ray.data.Dataset:
    """Sequences -> sliding windows of `window` frames (stride None = no stride; window None = whole
    sequences), streamed."""
    if (window is not None and window < 1) or (stride is not None and stride < 1):
        raise ValueError(f"window must be >= 1 and stride >= 1 (got window={window}, stride={stride})")
    return read_sequences(data, split, shuffle).flat_map(window_rows, fn_kwargs={"size": window, "stride": stride})


def stream_stats(data: str, window: int, stride: int | None = None, split: str | None = "train",
                 batch_size: int = 64, address: str | None = None) -> dict:
    """Stream every window once through `iter_batches` and count: what `actionllm stream` prints."""
    if not Path(data).exists() and "://" not in data:
        raise FileNotFoundError(f"shard folder {data} does not exist")
    init_ray(address)
    t0 = time.perf_counter()
    windows, batches, sources, labels = 0, 0, set(), Counter()
    for batch in window_dataset(data, window, stride, split).iter_batches(batch_size=batch_size,
                                                                           batch_format="numpy"):
        batches += 1
        windows += len(batch["label"])
        sources.update(batch["source_id"].tolist())
        labels.update(int(x) for x in batch["label"])
    dt = time.perf_counter() - t0
    return {"data": data, "split": split or "all", "window": window, "stride": stride or window,
            "sequences": len(sources), "windows": windows, "batches": batches,
            "windows_per_label": dict(sorted(labels.items())), "stream_s": round(dt, 2),
            "windows_per_s": round(windows / dt, 1) if dt > 0 else None}
