"""Video shards: `prepare --format video-folder` turns a folder of clips into Parquet shards + manifest.json.

Input: ``<input>/<class>/<clip>.<ext>`` (mp4, avi, mkv, webm, mov), optionally described by a CSV (``--csv``,
default ``<input>/videos.csv`` when present) with columns ``path,label[,subject,view,split]`` (path relative to
the CSV's folder, or absolute, or a storage URI). With a CSV the CSV lists the clips; without one every video
file one level down is a clip of the class named by its folder.

Every clip is probed (decode.probe); one that cannot be read is listed in the manifest's `rejected` with its
reason, so nothing is dropped silently. The video bytes stay in their files: a shard row (VIDEO_SCHEMA) holds
the clip's URI and what probe found. Splits: the CSV's split column when present; else cross-subject (a seeded
hash ranks the subjects, the first `test_fraction` of them are test) when every clip names a subject; else
by a hash of the sample id; then a `val_fraction` of train moves to val (skeleton prepare's `val_split`).
A CSV's split column is kept exactly as written (no val carved out): it is a protocol someone chose, e.g. the
one `actionllm render` carries over from skeleton shards, val included.
"""

from __future__ import annotations

import csv
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..skeleton.formats.base import unit_hash
from ..skeleton.prepare import SPLITS, val_split
from ..skeleton.shards import Manifest, RejectedSequence, shard_files, shard_hashes
from .decode import VIDEO_EXTENSIONS, VideoError, probe

FORMAT = "video-folder"
DEFAULT_CSV = "videos.csv"

VIDEO_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("dataset", pa.string()),
    ("uri", pa.string()),  # absolute local path, or the storage URI as given
    ("label", pa.int32()),
    ("label_name", pa.string()),
    ("subject", pa.string()),
    ("view", pa.string()),
    ("split", pa.string()),
    ("num_frames", pa.int32()),
    ("fps", pa.float32()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("codec", pa.string()),
])


def _entries_from_csv(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        missing = {"path", "label"} - set(fields)
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)} (need path,label[,subject,view,split]; "
                             f"found {fields})")
        entries = []
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not row.get("path"):
                raise ValueError(f"{csv_path}, line {line}: empty path")
            if not row.get("label"):
                raise ValueError(f"{csv_path}, line {line}: empty label for {row['path']}")
            split = row.get("split", "")
            if split and split not in SPLITS:
                raise ValueError(f"{csv_path}, line {line}: split {split!r} is not one of {list(SPLITS)}")
            path = row["path"]
            uri = path if storage.is_uri(path) else str((csv_path.parent / path).resolve())
            entries.append({"rel": path, "uri": uri, "label_name": row["label"], "subject": row.get("subject", ""),
                            "view": row.get("view", ""), "split": split})
    if not entries:
        raise ValueError(f"{csv_path}: no rows")
    return entries


def _entries_from_folders(root: Path) -> tuple[list[dict], list[RejectedSequence]]:
    entries, rejected = [], []
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
            rejected.append(RejectedSequence(sample_id=path.stem, source=str(path.resolve()),
                                             reason="not inside a class subfolder (<input>/<class>/<clip>)"))
        if not path.is_dir():
            continue
        for clip in sorted(path.iterdir()):
            if clip.is_file() and clip.suffix.lower() in VIDEO_EXTENSIONS:
                entries.append({"rel": f"{path.name}/{clip.name}", "uri": str(clip.resolve()),
                                "label_name": path.name, "subject": "", "view": "", "split": ""})
    return entries, rejected


def _sample_ids(entries: list[dict]) -> None:
    """The clip's file stem, or its relative path without extension where stems repeat."""
    stems = Counter(Path(e["rel"]).stem for e in entries)
    for e in entries:
        stem = Path(e["rel"]).stem
        e["sample_id"] = stem if stems[stem] == 1 else str(Path(e["rel"]).with_suffix("")).replace("\\", "/")
    ids = Counter(e["sample_id"] for e in entries)
    dup = [i for i, n in ids.items() if n > 1]
    if dup:
        raise ValueError(f"the same clip is listed more than once: {dup[:5]}")


def _splitter(entries: list[dict], seed: int, test_fraction: float) -> tuple[str, list[str], Callable[[dict], str]]:
    """(protocol name, protocols available, entry -> train|val|test before the val carve-out)."""
    if entries and all(e["split"] for e in entries):
        return "csv", ["csv"], lambda e: e["split"]
    if any(e["split"] for e in entries):
        raise ValueError("the CSV's split column is filled for some clips only; fill it for all or none")
    subjects = sorted({e["subject"] for e in entries})
    if len(subjects) >= 2 and all(e["subject"] for e in entries):
        ranked = sorted(subjects, key=lambda s: unit_hash(f"{seed}:subject:{s}"))
        test = set(ranked[:max(1, round(test_fraction * len(ranked)))])
        return "cross-subject", ["cross-subject", "holdout"], lambda e: "test" if e["subject"] in test else "train"
    return "holdout", ["holdout"], (
        lambda e: "test" if unit_hash(f"{seed}:holdout:{e['sample_id']}") < test_fraction else "train")


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=VIDEO_SCHEMA)


def prepare(input: str | Path, output: str | Path, csv_path: str | Path | None = None, *,
            dataset: str | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
            shard_size: int = 256, seed: int = 0, decode_all: bool = False,
            on_start: Callable[[int], None] | None = None,
            on_file: Callable[[str], None] | None = None) -> Manifest:
    """Probe every clip of a video folder and write VIDEO_SCHEMA shards + manifest.json into `output` (which
    must not exist or be empty). `decode_all` decodes every frame of every clip while probing (slower; proves
    each clip decodes to its end and counts frames exactly). Returns the manifest."""
    start = time.perf_counter()
    root, output = Path(input), Path(output)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of videos")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"output folder {output} is not empty; choose a new one or remove it")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if csv_path is None and (root / DEFAULT_CSV).is_file():
        csv_path = root / DEFAULT_CSV
    rejected: list[RejectedSequence] = []
    if csv_path is not None:
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise FileNotFoundError(f"CSV {csv_path} does not exist")
        entries = _entries_from_csv(csv_path)
    else:
        entries, rejected = _entries_from_folders(root)
    if not entries:
        raise FileNotFoundError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in class subfolders of {root}")
    _sample_ids(entries)
    class_names = sorted({e["label_name"] for e in entries})
    label_of = {name: i for i, name in enumerate(class_names)}
    protocol, protocols, assign = _splitter(entries, seed, test_fraction)
    from_csv = protocol == "csv"
    name = dataset or root.resolve().name
    if on_start:
        on_start(len(entries))

    rows: list[dict] = []
    for e in entries:
        try:
            info = probe(e["uri"], decode_all=decode_all)
        except VideoError as err:
            rejected.append(RejectedSequence(sample_id=e["sample_id"], source=e["uri"], reason=err.reason))
        except ValueError as err:  # a storage URI that cannot be opened
            rejected.append(RejectedSequence(sample_id=e["sample_id"], source=e["uri"], reason=str(err)))
        else:
            split = assign(e)
            if not from_csv:
                split = val_split(e["sample_id"], split, val_fraction)
            rows.append({"sample_id": e["sample_id"], "dataset": name, "uri": e["uri"],
                         "label": label_of[e["label_name"]], "label_name": e["label_name"],
                         "subject": e["subject"], "view": e["view"], "split": split,
                         "num_frames": info["num_frames"], "fps": info["fps"], "width": info["width"],
                         "height": info["height"], "codec": info["codec"]})
        if on_file:
            on_file(e["uri"])
    if not rows:
        reasons = Counter(r.reason for r in rejected).most_common(3)
        raise ValueError(f"no readable videos in {root} ({len(rejected)} rejected; top reasons: {reasons})")

    random.Random(seed).shuffle(rows)  # mix the classes across shards (rows are small: all in memory)
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        files = []
        for k in range(0, len(rows), shard_size):
            part = f"part-{len(files):05d}.parquet"
            pq.write_table(_table(rows[k:k + shard_size]), staging / part, compression="zstd")
            files.append(part)
        splits = Counter(r["split"] for r in rows)
        per_class: dict[str, Counter] = defaultdict(Counter)
        for r in rows:
            per_class[r["label_name"]][r["split"]] += 1
        frames = [r["num_frames"] for r in rows]
        notes = ["splits as the CSV gives them (no val carved out of train)"] if from_csv else []
        manifest = Manifest(
            dataset=name, source_format=FORMAT, source_path=str(csv_path or root), layout="video", dims=3,
            modality="video", class_names=class_names, protocol=protocol, protocols_available=protocols,
            val_fraction=0.0 if from_csv else val_fraction,
            counts={"total": len(rows) + len(rejected), "accepted": len(rows), "rejected": len(rejected),
                    **{s: splits.get(s, 0) for s in SPLITS}},
            per_class={k: dict(v) for k, v in sorted(per_class.items())},
            rejected=sorted(rejected, key=lambda r: r.sample_id), shards=files, hashes=shard_hashes(staging, files),
            order=f"shuffled (seed {seed})",
            frames={"min": float(np.min(frames)), "median": float(np.median(frames)), "max": float(np.max(frames))},
            seconds=round(time.perf_counter() - start, 3), notes=notes,
        )
        manifest.write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if output.exists():
        output.rmdir()
    staging.rename(output)
    return manifest


def read_video_rows(shards: str | Path, split: str | None = None) -> list[dict]:
    """The rows of a video shard folder (local or a storage URI) as plain dicts, optionally one split's."""
    rows = []
    for path in shard_files(shards):
        for row in pq.read_table(path).to_pylist():
            if split is None or row["split"] == split:
                rows.append(row)
    return rows
