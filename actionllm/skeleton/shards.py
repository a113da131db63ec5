"""The one Parquet schema for skeleton shards, and the manifest written beside them.

One row per *sequence* (windows are cut on the fly, never stored). Joints are flattened row-major
[M, T, V, C]; the house plan's [T, V, C] is the M = 1 case. `num_bodies` (M) is our addition to the plan's
schema, for multi-body sources (NTU, PYSKL); `split` holds the chosen protocol's train/val/test.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, ValidationError

from .. import storage
from ..errors import validation_line
from .sequence import SkeletonSequence

CONVERTER_VERSION = "1"
MANIFEST = "manifest.json"

SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("dataset", pa.string()),
    ("layout", pa.string()),
    ("num_frames", pa.int32()),
    ("dims", pa.int8()),
    ("num_bodies", pa.int8()),
    ("joints", pa.list_(pa.float32())),
    pa.field("scores", pa.list_(pa.float32()), nullable=True),
    ("label", pa.int32()),
    ("label_name", pa.string()),
    ("subject", pa.string()),
    ("view", pa.string()),
    ("fps", pa.float32()),
    ("split", pa.string()),
])


class RejectedSequence(BaseModel):
    sample_id: str
    source: str
    reason: str


class Manifest(BaseModel):
    """What a shard folder holds and how it was made (written as manifest.json)."""

    dataset: str
    source_format: str
    source_path: str
    layout: str
    dims: int
    class_names: list[str]
    protocol: str
    protocols_available: list[str] = Field(default_factory=list)
    val_fraction: float = 0.0
    counts: dict[str, int] = Field(default_factory=dict)  # total, accepted, rejected, train, val, test
    per_class: dict[str, dict[str, int]] = Field(default_factory=dict)  # class -> split -> count
    rejected: list[RejectedSequence] = Field(default_factory=list)
    shards: list[str] = Field(default_factory=list)
    frames: dict[str, float] = Field(default_factory=dict)  # min / median / max frames per sequence
    order: str = "source"  # how sequences were ordered in the shards
    converter_version: str = CONVERTER_VERSION
    seconds: float = 0.0
    notes: list[str] = Field(default_factory=list)  # what the user should know (e.g. classes named by index)
    modality: str = "skeleton"  # "video" for video shards (actionllm/video/folder.py); old manifests: skeleton
    # shard file name -> sha256 of its bytes, as written (`actionllm check` finds a shard changed since; old
    # manifests have none)
    hashes: dict[str, str] = Field(default_factory=dict)

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST
        path.write_text(json.dumps(self.model_dump(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        """From a local folder or a storage URI (s3://, gs://, file://; see actionllm/storage.py)."""
        path = storage.join(folder, MANIFEST)
        if not storage.exists(path):
            raise FileNotFoundError(f"{folder} is not a shard folder: {MANIFEST} is missing (run `actionllm prepare`)")
        try:
            return cls.model_validate_json(storage.read_text(path))
        except ValidationError as err:  # not JSON, or a field of the wrong type: one line naming the file
            raise ValueError(f"{path}: not a readable manifest ({validation_line(err)})") from None


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (a local path or a storage URI), read 1 MiB at a time."""
    digest = hashlib.sha256()
    fs, p = storage.resolve(path)
    with fs.open_input_stream(p) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def shard_hashes(folder: str | Path, files: list[str]) -> dict[str, str]:
    """{file name: sha256} of the shard files of a folder (what prepare records in manifest.json)."""
    return {name: file_sha256(storage.join(folder, name)) for name in files}


# --- rows <-> sequences -------------------------------------------------------------------------------------
def sequences_to_table(seqs: list[SkeletonSequence], splits: list[str]) -> pa.Table:
    def flat_list(arrays: list[np.ndarray | None]) -> pa.Array:
        lengths = np.array([0 if a is None else a.size for a in arrays], dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        values = [a.reshape(-1) for a in arrays if a is not None]
        flat = np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32)
        mask = pa.array([a is None for a in arrays])
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=mask)

    cols = {
        "sample_id": [s.sample_id for s in seqs],
        "dataset": [s.dataset for s in seqs],
        "layout": [s.layout for s in seqs],
        "num_frames": [s.num_frames for s in seqs],
        "dims": [s.dims for s in seqs],
        "num_bodies": [s.num_bodies for s in seqs],
        "joints": flat_list([s.joints for s in seqs]),
        "scores": flat_list([s.scores for s in seqs]),
        "label": [s.label for s in seqs],
        "label_name": [s.label_name for s in seqs],
        "subject": [s.subject for s in seqs],
        "view": [s.view for s in seqs],
        "fps": [s.fps for s in seqs],
        "split": splits,
    }
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def row_to_sequence(row: dict) -> SkeletonSequence:
    """Rebuild a sequence from one shard row (a dict as pyarrow's to_pylist or Ray Data's rows give)."""
    m, t, c = int(row["num_bodies"]), int(row["num_frames"]), int(row["dims"])
    joints = np.asarray(row["joints"], dtype=np.float32)
    v = joints.size // max(m * t * c, 1)
    if m * t * v * c != joints.size:
        raise ValueError(f"{row['sample_id']}: {joints.size} joint values do not fill [M={m},T={t},V,C={c}]")
    scores = row.get("scores")
    return SkeletonSequence(
        sample_id=row["sample_id"], layout=row["layout"], joints=joints.reshape(m, t, v, c),
        scores=None if scores is None else np.asarray(scores, dtype=np.float32).reshape(m, t, v),
        label=int(row["label"]), label_name=row["label_name"], dataset=row["dataset"],
        subject=row["subject"], view=row["view"], fps=float(row["fps"]),
    )


class ShardWriter:
    """Buffers sequences and writes `part-NNNNN.parquet` files of `shard_size` sequences each."""

    def __init__(self, folder: str | Path, shard_size: int = 256):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        stale = sorted(self.folder.glob("part-*.parquet"))
        if stale:
            raise FileExistsError(f"{self.folder} already holds shards ({stale[0].name}, ...); choose an empty folder")
        self.shard_size = shard_size
        self.files: list[str] = []
        self._seqs: list[SkeletonSequence] = []
        self._splits: list[str] = []

    def add(self, seq: SkeletonSequence, split: str) -> None:
        self._seqs.append(seq)
        self._splits.append(split)
        if len(self._seqs) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._seqs:
            return
        name = f"part-{len(self.files):05d}.parquet"
        pq.write_table(sequences_to_table(self._seqs, self._splits), self.folder / name, compression="zstd")
        self.files.append(name)
        self._seqs, self._splits = [], []

    def close(self) -> list[str]:
        self.flush()
        return self.files


def write_shards(seqs: Iterable[SkeletonSequence], folder: str | Path, split: str = "train",
                 shard_size: int = 256) -> list[str]:
    writer = ShardWriter(folder, shard_size)
    for s in seqs:
        writer.add(s, split)
    return writer.close()


def shard_files(folder: str | Path) -> list[Path] | list[str]:
    """The shard files of a folder: Paths for a local folder, URIs (str) for a storage URI."""
    if storage.is_uri(folder):
        files = storage.list_files(folder, "part-*.parquet")
    else:
        files = sorted(Path(folder).glob("part-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no shards (part-*.parquet) in {folder}")
    return files


def read_shards(folder: str | Path, split: str | None = None) -> Iterator[tuple[SkeletonSequence, str]]:
    """Yield (sequence, split) from every shard in a folder, streaming one record batch at a time."""
    for path in shard_files(folder):
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=64):
            for row in batch.to_pylist():
                if split is None or row["split"] == split:
                    yield row_to_sequence(row), row["split"]
