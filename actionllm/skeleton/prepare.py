"""Convert a source (a registered reader, or any iterable of sequences) into Parquet shards + manifest.

Nothing is dropped silently: every sequence is either written (with its split) or listed in the
manifest's `rejected` with its reason. A malformed file stops the conversion with a message that names
the file and line, unless `skip_bad`, in which case it is listed as rejected too.
"""

from __future__ import annotations

import random
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from .formats.base import FormatError, Protocol, Reader, Rejection, unit_hash
from .sequence import SkeletonSequence
from .shards import Manifest, RejectedSequence, ShardWriter, shard_hashes

SPLITS = ("train", "val", "test")


def val_split(sample_id: str, split: str, val_fraction: float) -> str:
    """Move a deterministic `val_fraction` of the training sequences to 'val' (a SHA-256 of the id, so the
    choice depends neither on order nor on the machine; crc32 was too regular on ids like 'a01_s01_e01')."""
    if split != "train" or val_fraction <= 0:
        return split
    return "val" if unit_hash("val:" + sample_id) < val_fraction else split


def iter_reader(reader: Reader, files: list[Path], skip_bad: bool,
                on_file: Callable[[Path], None] | None = None) -> Iterator[SkeletonSequence | Rejection]:
    """Every item of every file; a file that fails to parse raises FormatError or becomes a Rejection."""
    for path in files:
        try:
            items = list(reader.read_file(path))
        except FormatError as err:
            if not skip_bad:
                raise
            items = [Rejection(path.stem, str(path), f"malformed file: {err}")]
        except Exception as err:  # a library error inside a reader: still name the file
            wrapped = FormatError(path, f"{type(err).__name__}: {err}")
            if not skip_bad:
                raise wrapped from err
            items = [Rejection(path.stem, str(path), f"malformed file: {wrapped}")]
        if on_file:
            on_file(path)
        yield from items


def shuffled(items: Iterable, buffer: int, seed: int) -> Iterator:
    """A seeded, bounded-memory shuffle: keep `buffer` items, emit a random one as each new item arrives.

    Readers yield sequences grouped by file and usually by class (a01..., a02...); a trainer streaming the
    shards in that order would see one class at a time. Together with a shuffled file order this mixes the
    shards without holding the dataset in memory. buffer <= 1 keeps the source order."""
    if buffer <= 1:
        yield from items
        return
    rng = random.Random(seed)
    pool: list = []
    for item in items:
        if len(pool) < buffer:
            pool.append(item)
            continue
        k = rng.randrange(buffer)
        yield pool[k]
        pool[k] = item
    rng.shuffle(pool)
    yield from pool


def convert(items: Iterable[SkeletonSequence | Rejection], output: str | Path, *, dataset: str,
            source_format: str, source_path: str, layout: str, class_names: list[str], protocol_name: str,
            protocol: Protocol, protocols_available: list[str] = (), val_fraction: float = 0.1,
            shard_size: int = 256, min_frames: int = 2, shuffle_buffer: int = 4096, seed: int = 0,
            notes: list[str] = ()) -> Manifest:
    """Write shards + manifest.json into `output` (which must not already hold shards).

    Writing goes to `<output>.partial` and is renamed at the end, so a failed conversion leaves no
    half-written shard folder behind.
    """
    start = time.perf_counter()
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"output folder {output} is not empty; choose a new one or remove it")
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    writer = ShardWriter(staging, shard_size)
    rejected: list[RejectedSequence] = []
    per_class: dict[str, Counter] = defaultdict(Counter)
    splits: Counter = Counter()
    frames: list[int] = []
    dims: set[int] = set()
    try:
        for item in shuffled(items, shuffle_buffer, seed):
            if isinstance(item, Rejection):
                rejected.append(RejectedSequence(**item.__dict__))
                continue
            reason = item.problem(min_frames)
            if reason is None and class_names and not (0 <= item.label < len(class_names)):
                reason = f"label {item.label} outside the {len(class_names)} classes"
            if reason is None and item.layout != layout:
                reason = f"layout {item.layout!r} differs from the dataset's {layout!r}"
            if reason is not None:
                rejected.append(RejectedSequence(sample_id=item.sample_id,
                                                 source=str(item.meta.get("source", source_path)), reason=reason))
                continue
            split = val_split(item.sample_id, protocol(item), val_fraction)
            if split not in SPLITS:
                raise ValueError(f"protocol {protocol_name!r} returned {split!r} for {item.sample_id}")
            writer.add(item, split)
            splits[split] += 1
            per_class[item.label_name or str(item.label)][split] += 1
            frames.append(item.num_frames)
            dims.add(item.dims)
        files = writer.close()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    accepted = sum(splits.values())
    if accepted == 0:
        shutil.rmtree(staging, ignore_errors=True)
        reasons = Counter(r.reason for r in rejected).most_common(3)
        raise ValueError(f"no usable sequences in {source_path} ({len(rejected)} rejected; top reasons: {reasons})")
    if len(dims) > 1:
        shutil.rmtree(staging, ignore_errors=True)
        raise ValueError(f"{source_path}: sequences mix 2D and 3D joints ({sorted(dims)})")
    manifest = Manifest(
        dataset=dataset, source_format=source_format, source_path=source_path, layout=layout, dims=dims.pop(),
        class_names=list(class_names), protocol=protocol_name, protocols_available=list(protocols_available),
        val_fraction=val_fraction,
        counts={"total": accepted + len(rejected), "accepted": accepted, "rejected": len(rejected),
                **{s: splits.get(s, 0) for s in SPLITS}},
        per_class={k: dict(v) for k, v in sorted(per_class.items())},
        rejected=sorted(rejected, key=lambda r: r.sample_id), shards=files, hashes=shard_hashes(staging, files),
        order=f"shuffled (files and a {shuffle_buffer}-sequence buffer, seed {seed})" if shuffle_buffer > 1 else "source",
        frames={"min": float(np.min(frames)), "median": float(np.median(frames)), "max": float(np.max(frames))},
        seconds=round(time.perf_counter() - start, 3), notes=list(notes),
    )
    manifest.write(staging)
    if output.exists():
        output.rmdir()
    staging.rename(output)
    return manifest


def prepare(reader: Reader, output: str | Path, protocol: str | None = None, *, val_fraction: float = 0.1,
            shard_size: int = 256, skip_bad: bool = False, min_frames: int = 2,
            on_file: Callable[[Path], None] | None = None,
            on_start: Callable[[int], None] | None = None, shuffle_buffer: int = 4096,
            seed: int = 0, on_note: Callable[[str], None] | None = None) -> Manifest:
    """`actionllm prepare`: run a reader over its input and convert what it yields.

    `protocol` None: the reader's default (`Reader.default_protocol`: cross-subject where offered, else the
    format's own, e.g. a PYSKL pickle's 'official'). The reader's notes (e.g. classes named by index) go to
    `on_note` (default: printed to stderr) and into manifest.json's `notes`."""
    if protocol is None:
        protocol = reader.default_protocol()
    proto = reader.protocol(protocol)  # refuse an unknown protocol before reading anything
    files = reader.files()  # before class_names: a reader may learn its classes from the file list
    if not files:
        raise FileNotFoundError(f"{reader.name}: no source files found under {reader.input}")
    if on_start:
        on_start(len(files))
    if shuffle_buffer > 1:
        random.Random(seed).shuffle(files)
    class_names = reader.class_names
    notes = list(getattr(reader, "notes", []))
    for note in notes:
        (on_note or _print_note)(note)
    items = iter_reader(reader, files, skip_bad, on_file)
    return convert(items, output, dataset=reader.name, source_format=reader.name,
                   source_path=str(reader.input), layout=reader.layout, class_names=class_names,
                   protocol_name=protocol, protocol=proto, protocols_available=sorted(reader.protocols),
                   val_fraction=val_fraction, shard_size=shard_size, min_frames=min_frames,
                   shuffle_buffer=shuffle_buffer, seed=seed, notes=notes)


def _print_note(note: str) -> None:
    print(f"note: {note}", file=sys.stderr)
