"""Is a shard folder or a recognizer folder intact? What `actionllm check` prints, and what `train` and `evaluate`
ask before they start (so a damaged input gives one line naming the file, not a traceback from a Ray worker).

  check_shards(folder)      manifest.json readable; every shard it lists there and no other .parquet; each opens
                            as Parquet with every column of its modality's schema (SCHEMA, VIDEO_SCHEMA) in a
                            compatible type; rows per split as manifest.json counts them; labels within its
                            classes; the bytes as prepare hashed them (sha256, when manifest.json has hashes);
                            video shards: every local clip a row names exists (not decoded)
  check_recognizer(folder)  config.json readable and a recognizer's; every safetensors file its recipe loads
                            (weight_files; LoRA recipes: the adapter, and the base weights a folder carries)
                            present and whole (its header covers the file; no tensor is loaded); no pickle file
                            (.bin .pt .pth .pkl .pickle .ckpt .joblib) anywhere in it (refuse_pickles)
  check_path(path)          whichever of the two the folder is (manifest.json: shards; config.json: recognizer)

Each returns the problems found, one line each naming the file ([] when none). Cost of check_shards: the
Parquet footers, the `split` and `label` columns (video: `uri`), and -- when hashes are checked -- one read of
every shard's bytes. `hashes=None` (what train and evaluate use) checks them when the shards are local and
together under HASH_LIMIT (2 GiB: the read costs about what one epoch's read of the data does, and is then in
the page cache); above it, or for a storage URI (a download), the hashes are skipped without a word and the other
checks still run. `actionllm check` always checks them (hashes=True). Nothing here imports ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import storage
from .components.no_pickles import PICKLE_SUFFIXES, pickle_files, pickle_problem, refuse_pickles  # noqa: F401
from .skeleton.shards import MANIFEST, SCHEMA, Manifest, file_sha256

HASH_LIMIT = 2 * 1024**3  # bytes of shards hashed when hashes=None (see the module docstring)
MAX_MISSING_VIDEOS = 5  # missing clips named one by one; the rest counted on one line


@dataclass
class Report:
    """What a check found: the folder's kind ("shards", "recognizer", or "" when it is neither), its problems
    (one line each; [] when intact) and a short description for the `ok:` line."""

    kind: str
    problems: list[str] = field(default_factory=list)
    summary: str = ""


# --- shard folders ---------------------------------------------------------------------------------------------
def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Can a column of type `actual` stand where the schema says `expected`? Same type, or the same kind:
    integers of any width, floats of any width, (large) strings, lists of compatible values; dictionary-encoded
    columns by their values."""
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    if actual.equals(expected):
        return True
    for kind in (pa.types.is_integer, pa.types.is_floating, _is_text):
        if kind(actual) and kind(expected):
            return True
    return _is_list(actual) and _is_list(expected) and compatible(actual.value_type, expected.value_type)


def _schema_of(manifest: Manifest) -> pa.Schema:
    if manifest.modality == "video":
        from .video.folder import VIDEO_SCHEMA

        return VIDEO_SCHEMA
    return SCHEMA


def _open_parquet(path: str) -> pq.ParquetFile:
    fs, p = storage.resolve(path)
    return pq.ParquetFile(fs.open_input_file(p)) if storage.is_uri(path) else pq.ParquetFile(p)


def _size(path: str) -> int:
    fs, p = storage.resolve(path)
    info = fs.get_file_info(p)
    return info.size if info.type == pafs.FileType.File and info.size is not None else 0


def _parquet_names(folder: str | Path) -> list[str]:
    return [Path(f).name if not storage.is_uri(f) else f.rsplit("/", 1)[-1]
            for f in storage.list_files(folder, "*.parquet")]


def shards_report(folder: str | Path, hashes: bool | None = True) -> Report:
    """The problems of a shard folder (local or a storage URI) and its `N shards, M sequences` summary.
    hashes: True checks the sha256 of every shard that manifest.json records one for, False never, None when the
    folder is local and its shards total under HASH_LIMIT (see the module docstring)."""
    folder = str(folder)
    report = Report("shards")
    problems = report.problems
    try:
        manifest = Manifest.read(folder)
    except (FileNotFoundError, ValueError, OSError) as err:
        problems.append(str(err))
        return report
    manifest_path = storage.join(folder, MANIFEST)
    if manifest.modality not in ("skeleton", "video"):
        problems.append(f"{manifest_path}: modality {manifest.modality!r} is neither skeleton nor video")
        return report
    schema = _schema_of(manifest)
    on_disk = _parquet_names(folder)
    listed = list(manifest.shards) or [n for n in on_disk if n.startswith("part-")]  # old manifests: all parts
    for name in listed:
        if name not in on_disk:
            problems.append(f"{storage.join(folder, name)}: listed in {MANIFEST} but missing")
    for name in on_disk:
        if name not in listed:
            problems.append(f"{storage.join(folder, name)}: not listed in {MANIFEST} (a shard of another prepare?)")
    present = [n for n in listed if n in on_disk]
    if not listed:
        problems.append(f"{folder}: no shards (part-*.parquet)")
    if hashes is None:
        hashes = not storage.is_uri(folder) and sum(_size(storage.join(folder, n)) for n in present) < HASH_LIMIT
    splits: dict[str, int] = {}
    rows, missing_videos, complete = 0, [], len(present) == len(listed)  # counts compare only a whole folder
    classes = len(manifest.class_names)
    for name in present:
        path = storage.join(folder, name)
        try:
            pf = _open_parquet(path)
            file_schema = pf.schema_arrow
        except (OSError, ValueError, pa.ArrowException) as err:
            problems.append(f"{path}: not a readable Parquet file ({err})")
            complete = False
            continue
        missing = [f.name for f in schema if f.name not in file_schema.names]
        if missing:
            problems.append(f"{path}: missing column(s) {', '.join(missing)} of the {manifest.modality} shard schema")
        for f in schema:
            if f.name in file_schema.names and not compatible(file_schema.field(f.name).type, f.type):
                problems.append(f"{path}: column {f.name!r} is {file_schema.field(f.name).type}, expected {f.type}")
        if hashes and manifest.hashes:
            if name not in manifest.hashes:
                problems.append(f"{path}: no sha256 recorded in {MANIFEST}")
            else:
                try:
                    if file_sha256(path) != manifest.hashes[name]:
                        problems.append(f"{path}: changed since prepare (sha256 differs from {MANIFEST})")
                except OSError as err:
                    problems.append(f"{path}: cannot be read ({err})")
        columns = [c for c in ("split", "label", "uri") if c in file_schema.names
                   and compatible(file_schema.field(c).type, schema.field(c).type)]
        complete = complete and "split" in columns
        try:
            table = pf.read(columns=columns).to_pydict()
        except (OSError, ValueError, pa.ArrowException) as err:
            problems.append(f"{path}: not a readable Parquet file ({err})")
            complete = False
            continue
        rows += pf.metadata.num_rows
        for s in table.get("split", []):
            splits[s] = splits.get(s, 0) + 1
        labels = table.get("label", [])
        if None in labels:
            problems.append(f"{path}: {labels.count(None)} row(s) without a label")
        bad = sorted({v for v in labels if v is not None and not 0 <= v < classes}) if classes else []
        if bad:
            problems.append(f"{path}: label(s) {', '.join(map(str, bad[:5]))} outside the {classes} classes of "
                            f"{MANIFEST}")
        if manifest.modality == "video":
            missing_videos += [(path, u) for u in table.get("uri", []) if u and not storage.is_uri(u)
                               and not Path(u).is_file()]
    for path, uri in missing_videos[:MAX_MISSING_VIDEOS]:
        problems.append(f"{path}: video {uri} does not exist")
    if len(missing_videos) > MAX_MISSING_VIDEOS:
        problems.append(f"{folder}: ... and {len(missing_videos) - MAX_MISSING_VIDEOS} more videos that do not exist")
    if present and complete:
        for split in ("train", "val", "test"):
            if split in manifest.counts and manifest.counts[split] != splits.get(split, 0):
                problems.append(f"{manifest_path}: counts.{split} is {manifest.counts[split]} but the shards hold "
                                f"{splits.get(split, 0)} {split} sequences")
        if "accepted" in manifest.counts and manifest.counts["accepted"] != rows:
            problems.append(f"{manifest_path}: counts.accepted is {manifest.counts['accepted']} but the shards hold "
                            f"{rows} sequences")
    note = "" if manifest.hashes else ", no hashes recorded"
    if manifest.hashes and not hashes:
        note = ", hashes not checked"
    kind = "video " if manifest.modality == "video" else ""
    report.summary = f"{len(present)} {kind}shards, {rows} sequences{note}"
    return report


def check_shards(folder: str | Path, hashes: bool | None = True) -> list[str]:
    """The problems of a shard folder, one line each naming the file; [] when it is intact (see shards_report)."""
    return shards_report(folder, hashes).problems


# --- recognizer folders ----------------------------------------------------------------------------------------
def recognizer_report(folder: str | Path) -> Report:
    """The problems of a recognizer folder (an ensemble's: its members') and a `<recipe> recognizer` summary."""
    from .errors import check_safetensors
    from .recognizer_folder import read_config

    folder = Path(folder)
    report = Report("recognizer")
    report.problems += [pickle_problem(p) for p in pickle_files(folder)]
    try:
        meta = read_config(folder)
    except (FileNotFoundError, ValueError, OSError) as err:
        report.problems.append(str(err))
        return report
    from .ensemble import RECIPE as ENSEMBLE
    from .methods import folder_class, get_recipe

    if meta["recipe"] == ENSEMBLE:
        members = (meta.get("config") or {}).get("members") if isinstance(meta.get("config"), dict) else None
        if not isinstance(members, list) or len(members) < 2:
            report.problems.append(f"{folder / 'config.json'}: an ensemble names two or more members")
            return report
        for m in members:
            report.problems += recognizer_report(folder / str(m)).problems
        report.problems = list(dict.fromkeys(report.problems))  # a member inside the folder: its pickles once
        report.summary = f"ensemble of {len(members)} recognizers"
        return report
    try:
        cls = folder_class(meta)
        recipe = get_recipe(meta["recipe"])
        for stage in recipe.stages:  # an earlier stage's folder (llm-ar's vqvae): that stage's files
            stage_cls = recipe.recognizer_cls(stage)
            if meta.get("stage") is not None and meta.get("stage") in (stage_cls.stage, *stage_cls.legacy_stages):
                cls = stage_cls
    except (KeyError, ValueError) as err:
        report.problems.append(f"{folder / 'config.json'}: {str(err).strip(chr(34))}")
        return report
    files = [folder / name for name in cls.weight_files]
    from .components.lora import ADAPTER, LoraRecognizer

    if issubclass(cls, LoraRecognizer):
        files.append(folder / ADAPTER)
        if not (folder / "adapter_config.json").is_file():
            report.problems.append(f"{folder / 'adapter_config.json'} is missing (the recognizer folder is incomplete)")
        if meta.get("base_weights"):
            base = folder / meta["base_weights"]
            stored = sorted(base.glob("*.safetensors"))
            if not stored:
                report.problems.append(f"{base}: no base weights (*.safetensors) (the recognizer folder is incomplete)")
            files += stored
    for path in files:
        try:
            check_safetensors(path)
        except (FileNotFoundError, ValueError) as err:
            report.problems.append(str(err))
    stage = f" ({meta['stage']} stage)" if meta.get("stage") else ""
    report.summary = f"{meta['recipe']} recognizer{stage}, {len(files)} safetensors file{'s' * (len(files) != 1)}"
    return report


def check_recognizer(folder: str | Path) -> list[str]:
    """The problems of a recognizer folder, one line each naming the file; [] when it loads as far as files go."""
    return recognizer_report(folder).problems


# --- either ----------------------------------------------------------------------------------------------------
def check_path(path: str | Path) -> Report:
    """Check a shard folder (it has manifest.json) or a recognizer folder (config.json); anything else is one
    problem saying so."""
    if storage.is_uri(path):
        if storage.exists(storage.join(path, MANIFEST)):
            return shards_report(path)
    elif (Path(path) / MANIFEST).is_file():
        return shards_report(path)
    elif (Path(path) / "config.json").is_file():
        return recognizer_report(path)
    elif not Path(path).exists():
        return Report("", [f"{path} does not exist"])
    return Report("", [f"{path}: not a shard folder or recognizer folder (no {MANIFEST}, no config.json)"])
