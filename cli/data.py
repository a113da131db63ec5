"""Data commands: formats, prepare, synth-gait, info, stream (shards in; nothing here trains)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import app, console, fail, out, parse_option


def print_summary(manifest, output: Path | None = None) -> None:
    """The dataset summary: counts per split, per class, rejections with reasons."""
    c = manifest.counts
    title = f"{manifest.dataset} -> {output}" if output else manifest.dataset
    out.print(f"[bold]{title}[/]  layout={manifest.layout} dims={manifest.dims} protocol={manifest.protocol} "
              f"classes={len(manifest.class_names) or len(manifest.per_class)}", highlight=False)
    out.print(f"sequences: {c.get('total', 0)} read, {c.get('accepted', 0)} accepted, {c.get('rejected', 0)} rejected"
              f" | train {c.get('train', 0)}, val {c.get('val', 0)}, test {c.get('test', 0)}"
              f" | frames min/median/max {manifest.frames.get('min', 0):.0f}/{manifest.frames.get('median', 0):.0f}"
              f"/{manifest.frames.get('max', 0):.0f} | {len(manifest.shards)} shard(s), {manifest.seconds:.1f} s",
              highlight=False)
    table = Table("class", "train", "val", "test", box=None, pad_edge=False)
    for name, counts in manifest.per_class.items():
        table.add_row(name, *(str(counts.get(s, 0)) for s in ("train", "val", "test")))
    out.print(table)
    for r in manifest.rejected[:20]:
        out.print(f"  rejected {r.sample_id}: {r.reason}", highlight=False)
    if len(manifest.rejected) > 20:
        out.print(f"  ... and {len(manifest.rejected) - 20} more (see manifest.json)")


@app.command()
def formats() -> None:
    """List the source formats `prepare` reads and the registered joint layouts."""
    from actionllm.skeleton.formats import READERS, load_all
    from actionllm.skeleton.layouts import LAYOUTS

    load_all()
    table = Table("format", "layout", "description", title="formats")
    for name, cls in sorted(READERS.items()):
        table.add_row(name, cls.layout or "(option)", cls.description + ("  [pickle]" if cls.trusted_pickle else ""))
    from .video import VIDEO_FORMAT, VIDEO_FORMAT_HELP

    table.add_row(VIDEO_FORMAT, "video", VIDEO_FORMAT_HELP)
    out.print(table)
    table = Table("layout", "joints", "bones", "face joints", title="layouts")
    for name, lay in LAYOUTS.items():
        table.add_row(name, str(lay.num_joints), str(len(lay.bones)), ", ".join(sorted(lay.face)) or "-")
    out.print(table)



@app.command()
def prepare(
    format: str = typer.Option(..., "--format", "-f", help="source format (see `actionllm formats`)"),
    input: Path = typer.Option(..., "--input", "-i", help="the dataset's folder or file, as published"),
    output: Path = typer.Option(..., "--output", "-o", help="new folder for the Parquet shards + manifest.json"),
    protocol: str = typer.Option(None, help="split protocol, e.g. cross-subject, cross-view, split1 (default: the "
                                 "format's own; cross-subject where offered)"),
    shard_size: int = typer.Option(256, min=1, help="sequences per Parquet shard"),
    val_fraction: float = typer.Option(0.1, min=0.0, max=0.9, help="share of train moved to val (by id hash)"),
    skip_bad: bool = typer.Option(False, help="record malformed files as rejected instead of stopping"),
    min_frames: int = typer.Option(2, min=1, help="shorter sequences are rejected"),
    shuffle_buffer: int = typer.Option(4096, min=0, help="sequences held to shuffle shard order (0/1: keep the source order)"),
    seed: int = typer.Option(0, help="seed of the file-order and buffer shuffle"),
    option: list[str] = typer.Option([], "--option", "-O", help="reader option KEY=VALUE, e.g. -O split=2"),
    csv: Path = typer.Option(None, "--csv", help="video-folder only: CSV path,label[,subject,view,split] "
                             "(default: <input>/videos.csv when present)"),
) -> None:
    """Convert a skeleton dataset into Parquet shards and a manifest (counts, classes, rejections).

    Every sequence is either written with its train/val/test split or listed as rejected with its reason.
    A malformed file stops with its name and line (exit 2) unless --skip-bad.

    [bold yellow]Pickles run code:[/] the jhmdb and pyskl formats are Python pickles; load only local files
    you trust.
    """
    from . import video

    if format == video.VIDEO_FORMAT:  # clips, not skeletons: actionllm/video/folder.py
        print_summary(video.prepare_video(input, output, csv, options=dict(parse_option(o) for o in option),
                                          val_fraction=val_fraction, shard_size=shard_size, seed=seed), output)
        return
    if csv is not None:
        fail(f"--csv is for --format {video.VIDEO_FORMAT} only")
    from actionllm.skeleton.formats import FormatError, get_reader
    from actionllm.skeleton.prepare import prepare as run_prepare

    try:
        reader = get_reader(format)(input, **dict(parse_option(o) for o in option))
    except (KeyError, FileNotFoundError, TypeError, ValueError) as err:
        fail(str(err).strip('"'))
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(f"reading {format}", total=None)
        try:
            manifest = run_prepare(
                reader, output, protocol, val_fraction=val_fraction, shard_size=shard_size, skip_bad=skip_bad,
                min_frames=min_frames, shuffle_buffer=shuffle_buffer, seed=seed,
                on_start=lambda n: bar.update(task, total=n),
                on_file=lambda _: bar.advance(task))
        except (FormatError, FileExistsError, FileNotFoundError, ValueError, KeyError) as err:
            fail(str(err).strip('"'))
    print_summary(manifest, output)


@app.command("synth-gait")
def synth_gait(
    out_dir: Path = typer.Option(..., "--out", help="new folder for the Parquet shards + manifest.json"),
    subjects: int = typer.Option(12, min=2, help="walkers; half normal, half parkinsonian"),
    per_subject: int = typer.Option(4, min=1, help="recordings per walker"),
    seconds: float = typer.Option(6.0, min=0.5, help="length of each recording"),
    fps: float = typer.Option(30.0, min=1.0, help="frame rate"),
    seed: int = typer.Option(0, help="random seed (same seed, same data)"),
    shard_size: int = typer.Option(256, min=1, help="sequences per Parquet shard"),
    val_fraction: float = typer.Option(0.1, min=0.0, max=0.9, help="share of train moved to val"),
) -> None:
    """Generate the synthetic gait demo set (COCO-17 2D walkers: normal vs parkinsonian) as shards.

    A stand-in for demos and tests, [bold]not clinical data[/]: real gait recordings cannot be redistributed.
    """
    from actionllm.skeleton import synth_gait as sg
    from actionllm.skeleton.prepare import convert

    items = sg.generate(subjects=subjects, per_subject=per_subject, seconds=seconds, fps=fps, seed=seed)
    try:
        manifest = convert(items, out_dir, dataset="synth-gait", source_format="synth-gait",
                           source_path=f"actionllm synth-gait --seed {seed}", layout="coco17",
                           class_names=sg.CLASS_NAMES, protocol_name="cross-subject",
                           protocol=sg.PROTOCOLS["cross-subject"], protocols_available=sorted(sg.PROTOCOLS),
                           val_fraction=val_fraction, shard_size=shard_size)
    except (FileExistsError, ValueError) as err:
        fail(str(err))
    print_summary(manifest, out_dir)


@app.command()
def info(data: Path = typer.Argument(..., help="a shard folder written by prepare or synth-gait")) -> None:
    """Print the summary of a shard folder (from its manifest.json)."""
    from actionllm.skeleton.shards import Manifest

    try:
        manifest = Manifest.read(data)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    print_summary(manifest, data)


@app.command()
def check(paths: list[str] = typer.Argument(..., help="shard folders (manifest.json) and/or recognizer folders "
                                            "(config.json); a shard folder may be a storage URI")) -> None:
    """Check shard folders and recognizer folders without training: every file there, readable, whole and as
    described (a shard folder: its manifest's shards, schema, counts, labels and sha256 hashes -- a shard changed
    since prepare is named; a recognizer folder: config.json and every safetensors file its recipe loads).

    Prints `ok: DIR (...)` for each intact folder and each problem on its own line; exit 2 when any."""
    from actionllm.checks import check_path

    bad = False
    for path in paths:
        report = check_path(path)
        for problem in report.problems:
            console.print(f"[bold red]error:[/] {problem}", highlight=False)
        if report.problems:
            bad = True
        else:
            out.print(f"ok: {path} ({report.summary})", highlight=False)
    if bad:
        raise typer.Exit(2)


@app.command()
def stream(
    data: Path = typer.Option(..., "--data", help="shard folder"),
    window: int = typer.Option(18, min=1, help="window size N (frames)"),
    stride: int = typer.Option(0, min=0, help="stride; 0 = no stride (stride = N)"),
    split: str = typer.Option("train", help="train, val, test or all"),
    batch_size: int = typer.Option(64, min=1, help="windows per batch"),
    address: str = typer.Option(None, help="Ray cluster address (default: start a local Ray)"),
    local: bool = typer.Option(False, help="start an embedded local Ray even if RAY_ADDRESS is set"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show Ray's logs here (default: a log file)"),
) -> None:
    """Stream windows from shards through Ray Data (read_parquet -> windows -> batches) and count them."""
    from training.data import stream_stats

    from .progress import run_log, scratch_log, stop_ray

    t0 = time.perf_counter()
    try:
        with run_log(scratch_log("stream"), verbose):
            try:
                stats = stream_stats(str(data), window=window, stride=stride or None,
                                     split=None if split == "all" else split, batch_size=batch_size,
                                     address=None if local else address)
            finally:
                stop_ray()
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    stats["wall_s"] = round(time.perf_counter() - t0, 2)
    out.print_json(data=stats)


