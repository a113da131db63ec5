"""Video commands: `render` (skeleton shards -> MP4 stick figures + videos.csv), and the video-folder branch of
`prepare` (a folder of clips -> video shards), which cli/data.py hands over to `prepare_video`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .common import app, console, fail, out

VIDEO_FORMAT = "video-folder"
VIDEO_FORMAT_HELP = ("a folder of clips <input>/<class>/<clip>.mp4|avi|mkv|webm|mov, optionally with a CSV "
                     "path,label[,subject,view,split] (--csv); writes video shards")


def _bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


@app.command()
def render(
    data: Path = typer.Option(..., "--data", help="skeleton shard folder (from `actionllm prepare`)"),
    output: Path = typer.Option(..., "--output", "-o", help="folder for <class>/<sample>.mp4 and videos.csv"),
    size: int = typer.Option(112, help="frame width and height in pixels (even)"),
    views: str = typer.Option("0", help="comma-separated rotations about the vertical axis in degrees, e.g. 0,30,60 "
                              "(3D skeletons only)"),
    limit: int = typer.Option(None, min=1, help="render only the first N sequences"),
    split: str = typer.Option(None, help="only these splits, e.g. test or train,val (default: all)"),
) -> None:
    """Render skeleton shards as stick-figure MP4 clips (one per sequence and view) plus videos.csv, which
    `actionllm prepare --format video-folder` reads (labels, subjects and the source's splits carry over)."""
    from actionllm.video.render import parse_views, render_shards

    if not data.is_dir():
        fail(f"--data {data} is not a folder")
    try:
        angles = parse_views(views)
    except ValueError as err:
        fail(str(err))
    splits = None if not split or split == "all" else [s.strip() for s in split.split(",") if s.strip()]
    bad = sorted(set(splits or []) - {"train", "val", "test"})
    if bad:
        fail(f"--split {split!r}: {bad} is not one of train, val, test, all")
    with _bar() as bar:
        task = bar.add_task("rendering", total=None)
        try:
            result = render_shards(data, output, size=size, views=angles, splits=splits, limit=limit,
                                   on_file=lambda _: bar.advance(task))
        except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as err:
            fail(str(err).strip('"'))
    out.print(f"[bold]{data} -> {output}[/]  {result['videos']} videos from {result['sequences']} sequences, "
              f"{result['frames']} frames, {result['size']}x{result['size']} {result['codec']}, "
              f"{result['seconds']:.1f} s", highlight=False)
    out.print(f"per split: {result['per_split']} | list: {result['csv']}", highlight=False)


def prepare_video(input: Path, output: Path, csv: Path | None, *, options: dict, val_fraction: float,
                  shard_size: int, seed: int):
    """`actionllm prepare --format video-folder` (cli/data.py prints the returned manifest's summary).
    Options (-O KEY=VALUE): dataset=NAME, test_fraction=0.2, decode_all=true (decode every frame while probing)."""
    from actionllm.video.folder import prepare as run_prepare

    allowed = {"dataset", "test_fraction", "decode_all"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        fail(f"{VIDEO_FORMAT}: unknown option(s) {unknown}; known: {sorted(allowed)}")
    with _bar() as bar:
        task = bar.add_task("probing videos", total=None)
        try:
            manifest = run_prepare(input, output, csv, val_fraction=val_fraction, shard_size=shard_size, seed=seed,
                                   on_start=lambda n: bar.update(task, total=n),
                                   on_file=lambda _: bar.advance(task), **options)
        except (FileExistsError, FileNotFoundError, ValueError, TypeError) as err:
            fail(str(err).strip('"'))
    return manifest
