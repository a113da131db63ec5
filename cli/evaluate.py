"""Evaluation commands: evaluate (a shard split -> report), predict (local files, no server, no Ray) and ensemble
(several recognizer folders joined into one)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import app, console, fail, out, parse_option, refuse_damaged


@app.command()
def evaluate(
    checkpoint: list[Path] = typer.Option(..., help="a recognizer folder (<run>/recognizer); give it several "
                                          "times to evaluate their ensemble (sum of the members' probabilities)"),
    data: Path = typer.Option(..., help="shard folder"),
    split: str = typer.Option("test", help="train, val or test"),
    report: Path = typer.Option(None, help="folder for report.json, confusion.png and attention PNGs"),
    limit: int = typer.Option(None, min=1, help="evaluate only the first N sequences"),
    classes: str = typer.Option(None, help="comma-separated class names: evaluate only their sequences (e.g. "
                                "the held-out classes of an unseen-class llm-ar run)"),
    rotate: str = typer.Option(None, help="comma-separated angles in degrees (e.g. 0,30,60,90): also evaluate "
                               "every 3D test sequence rotated by each about its vertical -> top-1 per angle"),
    up: str = typer.Option("spine", help="the vertical for --rotate: spine (the sequence's mean hip -> shoulder "
                           "direction) or a camera axis x, y, z"),
    fail_under: float = typer.Option(None, min=0.0, max=1.0, help="exit with status 1 when top-1 is below this "
                                     "(a quality gate for scripts and CI; the report is written first)"),
    candidates: Path = typer.Option(None, help="open-vocabulary recognizers (sugar): answer among these classes "
                                    "instead of the trained ones -- a knowledge .jsonl (names + their texts) or a "
                                    "text file of names, one a line; sequences are matched to them by class name, so "
                                    "the data may be another dataset's (cross-dataset zero-shot)"),
    no_adapter: bool = typer.Option(False, "--no-adapter", help="LoRA recipes: answer with the LoRA adapter "
                                    "switched off (the pretrained LLM on the trained inputs: the zero-shot ablation "
                                    "of LVLM-VAR's Table 2)"),
    prior_weight: float = typer.Option(None, min=0.0, help="LLM stages with a first-stage prior (sugar, lvlm-var): "
                                       "its fusion weight instead of the folder's (0 = the LLM alone, the paper)"),
) -> None:
    """Sequence-level top-1/top-5/macro-F1 (AUC, sensitivity, specificity for binary tasks) + explanations."""
    from actionllm.checks import check_recognizer, check_shards
    from actionllm.evaluation import evaluate as run_eval

    try:
        angles = [float(a) for a in rotate.split(",") if a.strip()] if rotate else None
    except ValueError:
        fail(f"--rotate {rotate!r}: give angles in degrees separated by commas, e.g. 0,30,60,90")
    for c in checkpoint:  # damaged inputs: one line naming the file (actionllm/checks.py), before loading anything
        refuse_damaged(check_recognizer(c), c)
    refuse_damaged(check_shards(data, hashes=None), data)
    try:
        result = run_eval([str(c) for c in checkpoint], str(data), split=split, report=str(report) if report else None,
                          limit=limit, classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None,
                          rotate=angles, up=up, candidates=read_candidates(candidates) if candidates else None,
                          adapter=not no_adapter, prior_weight=prior_weight)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    if "ensemble" in result:
        for m in result["ensemble"]["members"]:
            console.print(f"  member {m['checkpoint']} ({m['recipe']}): top-1 {m['top1']:.3f}", highlight=False,
                          soft_wrap=True)
    keys = ["sequences", "top1", "top5", "macro_f1", "window_top1", "chance", "prior_weight", "candidates", "auc",
            "sensitivity", "specificity"]
    out.print_json(data={k: result[k] for k in keys if k in result})
    top = f"top-1 {result['top1']:.3f} on {result['sequences']} sequences (chance {result['chance']:.3f})"
    if "auc" in result and result["auc"] is not None:
        top += f", AUC {result['auc']:.3f}"
    console.print(f"[bold]{top}[/]", highlight=False)
    for angle, m in result.get("rotated", {}).items():
        console.print(f"  rotated {angle:>5} deg: top-1 {m['top1']:.3f}, macro-F1 {m['macro_f1']:.3f}", highlight=False)
    if report:
        out.print(f"report: {report / 'report.json'}", highlight=False)
        pngs = [f for f in result.get("files", []) if f.endswith(".png")]
        console.print("  pictures: " + ", ".join(str(report / f) for f in pngs), highlight=False, soft_wrap=True)
    if fail_under is not None and result["top1"] < fail_under:
        fail(f"top-1 {result['top1']:.3f} is below --fail-under {fail_under}", code=1)


def read_candidates(path: Path) -> list[dict]:
    """--candidates FILE: a knowledge .jsonl (components/knowledge.py: each class's motion and visual texts) or
    plain names, one a line (# comments and blank lines skipped)."""
    if path.suffix == ".jsonl":
        from actionllm.components.knowledge import read_knowledge

        return [{"name": k.label, "texts": list(k.texts)} for k in read_knowledge(path).values()]
    if not path.is_file():
        raise FileNotFoundError(f"--candidates {path}: no such file")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [{"name": n} for n in names]


@app.command()
def predict(
    checkpoint: Path = typer.Option(..., help="a recognizer folder"),
    input: Path = typer.Option(..., help="a file or folder in a source format"),
    format: str = typer.Option(..., "--format", "-f", help="source format (see `actionllm formats`), or video"),
    option: list[str] = typer.Option([], "--option", "-O", help="reader option KEY=VALUE"),
) -> None:
    """Recognise the sequences of a local file or folder (no server, no Ray). Pickle formats run code.
    `--format video`: a video file, or a folder of them (an lvlm-var recognizer)."""
    from actionllm.checks import check_recognizer
    from actionllm.inference import predict_items, predict_videos
    from actionllm.methods import load_recognizer
    from actionllm.skeleton.formats import FormatError, get_reader

    refuse_damaged(check_recognizer(checkpoint), checkpoint)  # a missing or truncated file: one line naming it
    if format == "video":
        from actionllm.video.decode import VIDEO_EXTENSIONS

        if not input.exists():
            fail(f"--input {input} does not exist")
        paths = sorted(p for p in input.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS) if input.is_dir() \
            else [input]
        if not paths:
            fail(f"--input {input}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
        try:
            results = predict_videos(load_recognizer(checkpoint), paths)
        except (FileNotFoundError, ValueError) as err:
            fail(str(err).strip('"'))
        out.print_json(data=results)
        return
    try:
        reader = get_reader(format)(input, **dict(parse_option(o) for o in option))
        results = predict_items(load_recognizer(checkpoint), reader)
    except (KeyError, FileNotFoundError, FormatError, ValueError) as err:
        fail(str(err).strip('"'))
    out.print_json(data=results)




@app.command()
def ensemble(
    member: list[Path] = typer.Option(..., help="a recognizer folder; give two or more (e.g. the joint, bone, "
                                      "joint-motion and bone-motion streams of one recipe)"),
    output: Path = typer.Option(..., help="the ensemble's folder (new): evaluate, predict and serve it as any other"),
) -> None:
    """Join trained recognizers into one folder that fuses them (mean of their window probabilities, PYSKL's
    multi-stream fusion): they must recognise the same classes, in the same order, from the same layout, and cut
    sequences into the same windows. The members' folders are copied in."""
    from actionllm.ensemble import write_ensemble
    from actionllm.methods import load_recognizer

    try:
        folder = write_ensemble(member, output, load_recognizer)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        fail(str(err))
    console.print(f"ensemble of {len(member)} recognizers: {folder}", highlight=False, soft_wrap=True)
