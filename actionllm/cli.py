"""The `actionllm` command. The one place that reaches into training/ and services/ (imported lazily,
so `actionllm prepare` and friends never start Ray)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="ActionLLM: LLM-based skeleton action recognition, trained and served on Ray.")
console = Console(stderr=True)
out = Console()


def _parse_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise typer.BadParameter(f"reader option {text!r} must look like KEY=VALUE")
    key, value = text.split("=", 1)
    try:
        return key.strip().replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.strip().replace("-", "_"), value


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


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
    from actionllm.skeleton.formats import READERS, _load_all
    from actionllm.skeleton.layouts import LAYOUTS

    _load_all()
    table = Table("format", "layout", "description", title="formats")
    for name, cls in sorted(READERS.items()):
        table.add_row(name, cls.layout or "(option)", cls.description + ("  [pickle]" if cls.trusted_pickle else ""))
    out.print(table)
    table = Table("layout", "joints", "bones", "face joints", title="layouts")
    for name, lay in LAYOUTS.items():
        table.add_row(name, str(lay.num_joints), str(len(lay.bones)), ", ".join(sorted(lay.face)) or "-")
    out.print(table)


@app.command()
def recipes() -> None:
    """List the registered recipes, their CLI knobs and training defaults."""
    from actionllm.recipes import RECIPES

    table = Table("recipe", "description", "knobs (train flags, tune keys)", "trains with", title="recipes")
    for name, r in RECIPES.items():
        table.add_row(name, r.description, " ".join(f"--{k.replace('_', '-')}" for k in r.knobs),
                      ", ".join(f"{k}={v}" for k, v in r.train_defaults.items()) or "defaults")
    out.print(table)


@app.command()
def prepare(
    format: str = typer.Option(..., "--format", "-f", help="source format (see `actionllm formats`)"),
    input: Path = typer.Option(..., "--input", "-i", help="the dataset's folder or file, as published"),
    output: Path = typer.Option(..., "--output", "-o", help="new folder for the Parquet shards + manifest.json"),
    protocol: str = typer.Option("cross-subject", help="split protocol, e.g. cross-subject, cross-view, split1"),
    shard_size: int = typer.Option(256, min=1, help="sequences per Parquet shard"),
    val_fraction: float = typer.Option(0.1, min=0.0, max=0.9, help="share of train moved to val (by id hash)"),
    skip_bad: bool = typer.Option(False, help="record malformed files as rejected instead of stopping"),
    min_frames: int = typer.Option(2, min=1, help="shorter sequences are rejected"),
    shuffle_buffer: int = typer.Option(4096, min=0, help="sequences held to shuffle shard order (0/1: keep the source order)"),
    seed: int = typer.Option(0, help="seed of the file-order and buffer shuffle"),
    option: list[str] = typer.Option([], "--option", "-O", help="reader option KEY=VALUE, e.g. -O split=2"),
) -> None:
    """Convert a skeleton dataset into Parquet shards and a manifest (counts, classes, rejections).

    Every sequence is either written with its train/val/test split or listed as rejected with its reason.
    A malformed file stops with its name and line (exit 2) unless --skip-bad.

    [bold yellow]Pickles run code:[/] the jhmdb and pyskl formats are Python pickles; load only local files
    you trust.
    """
    from actionllm.skeleton.formats import FormatError, get_reader
    from actionllm.skeleton.prepare import prepare as run_prepare

    try:
        reader = get_reader(format)(input, **dict(_parse_option(o) for o in option))
    except (KeyError, FileNotFoundError, TypeError, ValueError) as err:
        _fail(str(err).strip('"'))
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
            _fail(str(err).strip('"'))
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
        _fail(str(err))
    print_summary(manifest, out_dir)


@app.command()
def info(data: Path = typer.Argument(..., help="a shard folder written by prepare or synth-gait")) -> None:
    """Print the summary of a shard folder (from its manifest.json)."""
    from actionllm.skeleton.shards import Manifest

    try:
        manifest = Manifest.read(data)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    print_summary(manifest, data)


@app.command()
def stream(
    data: Path = typer.Option(..., "--data", help="shard folder"),
    window: int = typer.Option(18, min=1, help="window size N (frames)"),
    stride: int = typer.Option(0, min=0, help="stride; 0 = no stride (stride = N)"),
    split: str = typer.Option("train", help="train, val, test or all"),
    batch_size: int = typer.Option(64, min=1, help="windows per batch"),
    address: str = typer.Option(None, help="Ray cluster address (default: start a local Ray)"),
    local: bool = typer.Option(False, help="start an embedded local Ray even if RAY_ADDRESS is set"),
) -> None:
    """Stream windows from shards through Ray Data (read_parquet -> windows -> batches) and count them."""
    from training.data import stream_stats

    t0 = time.perf_counter()
    try:
        stats = stream_stats(str(data), window=window, stride=stride or None,
                             split=None if split == "all" else split, batch_size=batch_size,
                             address=None if local else address)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    stats["wall_s"] = round(time.perf_counter() - t0, 2)
    out.print_json(data=stats)


def _recipe_overrides(recipe: str, **flags) -> dict:
    """CLI flags -> nested recipe-config overrides through the recipe's knobs (only the flags the user gave).
    A flag the recipe has no knob for is an error naming the flags it does take."""
    from actionllm.recipes import get_recipe, set_path

    knobs = get_recipe(recipe).knobs
    cfg: dict = {}
    for name, value in flags.items():
        if value is None:
            continue
        if name not in knobs:
            takes = ", ".join(f"--{k.replace('_', '-')}" for k in knobs) or "none"
            raise ValueError(f"recipe {recipe!r} has no --{name.replace('_', '-')} (its flags: {takes})")
        set_path(cfg, knobs[name], None if name == "stride" and value == 0 else value)
        if name == "rank" and "alpha" in knobs and flags.get("alpha") is None:  # alpha = 2 x rank unless given
            set_path(cfg, knobs["alpha"], 2 * value)
    return cfg


def _deep_update(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        base[k] = _deep_update(dict(base.get(k) or {}), v) if isinstance(v, dict) else v
    return base


@app.command()
def train(
    recipe: str = typer.Option(None, help="registered recipe: joints-llm (default) | stgcn | llm-ar (see "
                               "`actionllm recipes`)"),
    stage: str = typer.Option(None, help="multi-stage recipes: train one stage only (llm-ar: tokenizer = the "
                              "action VQ-VAE, llm = LoRA on the LLM); default: every stage in order"),
    data: str = typer.Option(None, help="shard folder from `prepare` / `synth-gait`"),
    backbone: str = typer.Option(None, help="'tiny' (built-in small Llama), 'smollm2-135m', a hub id, a folder or a .gguf"),
    gguf_file: str = typer.Option(None, help="GGUF file inside the --backbone repo/folder"),
    workers: int = typer.Option(None, min=1, help="Ray Train workers (default 2)"),
    use_gpu: bool = typer.Option(None, "--gpu/--cpu", help="one GPU per worker"),
    window: int = typer.Option(None, min=1, help="window size N (joints-llm paper: 18; stgcn: whole sequence)"),
    stride: int = typer.Option(None, min=0, help="stride; 0 = no stride (paper default N/2 = 9)"),
    frames: int = typer.Option(None, min=4, help="stgcn: frames after uniform temporal resampling (64)"),
    preset: str = typer.Option(None, help="stgcn: standard (the paper's 10 blocks) | small (6 blocks, CPU)"),
    rank: int = typer.Option(None, min=1, help="LoRA rank (alpha = 2 x rank; paper: 8)"),
    precision: int = typer.Option(None, min=0, max=6, help="decimals of the coordinates in the text"),
    prompt: str = typer.Option(None, help="task prompt appended to the joint text"),
    pooling: str = typer.Option(None, help="attn | mean | last"),
    epochs: int = typer.Option(None, min=1, help="epochs (default 3)"),
    max_steps: int = typer.Option(None, min=1, help="stop after K optimiser steps (smoke run)"),
    batch_size: int = typer.Option(None, min=1, help="windows per worker per step"),
    lr: float = typer.Option(None, help="learning rate of the LoRA weights"),
    output: str = typer.Option(None, help="run folder (checkpoints, metrics.jsonl, recognizer/)"),
    config: Path = typer.Option(None, "--config", help="YAML TrainConfig; flags override it"),
    address: str = typer.Option(None, help="Ray cluster address (default: an embedded local Ray)"),
) -> None:
    """Train a recognizer with Ray Train: LoRA on the backbone + the head (joints-llm), a whole GCN (stgcn), or
    the action VQ-VAE then LoRA on a generative LLM (llm-ar: --stage tokenizer, --stage llm, or both in order).

    Streams windows from the shards through Ray Data, trains on --workers workers with DDP, checkpoints every
    epoch and resumes after a worker crash; writes <output>/recognizer (the folder evaluate/serve load).
    """
    from pydantic import ValidationError

    from training.config import TrainConfig
    from training.train import run_training

    flags = {"recipe": recipe, "stage": stage, "data": data, "output": output, "workers": workers, "use_gpu": use_gpu,
             "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr}
    try:
        if config is not None:
            tc = TrainConfig.from_yaml(config, **flags)
        else:
            tc = TrainConfig.model_validate({k: v for k, v in flags.items() if v is not None})
        overrides = _recipe_overrides(tc.recipe, window=window, stride=stride, rank=rank, backbone=backbone,
                                      gguf_file=gguf_file, precision=precision, prompt=prompt, pooling=pooling,
                                      frames=frames, preset=preset)
        tc = tc.model_copy(update={"recipe_config": _deep_update(dict(tc.recipe_config), overrides)})
        from actionllm.recipes import get_recipe

        get_recipe(tc.recipe).config(tc.recipe_config)  # validate before starting Ray
        summary = run_training(tc, address=address)
    except ValidationError as err:
        _fail(f"invalid training config:\n{err}")
    except (FileNotFoundError, ValueError, KeyError) as err:
        _fail(str(err).strip('"'))
    out.print_json(data=summary)


@app.command()
def tune(
    recipe: str = typer.Option("joints-llm", help="registered recipe (see `actionllm recipes`)"),
    data: str = typer.Option(..., help="shard folder (every trial streams the same shards)"),
    output: Path = typer.Option(..., help="search folder: results.csv/.md, metric_vs_params.png, best.yaml"),
    space: Path = typer.Option(None, help="YAML: `space:` (overrides the recipe's space key by key) and "
                               "`train:` (TrainConfig values for every trial)"),
    backbone: str = typer.Option(None, help="backbone of every trial (joints-llm): tiny, smollm2-135m, a hub id"),
    samples: int = typer.Option(16, min=1, help="trials (x the size of any grid)"),
    max_concurrent: int = typer.Option(4, min=1, help="trials running at once"),
    metric: str = typer.Option("val_accuracy", help="what ASHA and the search optimise (val_accuracy, val_loss)"),
    mode: str = typer.Option(None, help="max | min (default: min for *loss, else max)"),
    epochs: int = typer.Option(None, min=1, help="epochs per trial = ASHA's max_t (default: the config's)"),
    max_steps: int = typer.Option(None, min=1, help="cap every epoch (an ASHA rung) at K optimiser steps"),
    workers: int = typer.Option(None, min=1, help="Ray Train workers per trial (default 1)"),
    search: str = typer.Option("random", help="random | optuna | hyperopt (the last two: pip install "
                               "'actionllm\\[tune]')"),
    grace_period: int = typer.Option(1, min=1, help="ASHA: epochs before a trial may be stopped"),
    reduction_factor: int = typer.Option(2, min=2, help="ASHA: keep the top 1/rf at each rung"),
    resume: bool = typer.Option(False, "--resume", help="continue the interrupted search in --output"),
    seed: int = typer.Option(0, help="seed of the search algorithm"),
    address: str = typer.Option(None, help="Ray cluster address (default: an embedded local Ray)"),
) -> None:
    """Search window size, stride, LoRA rank, token length and learning rate with Ray Tune (ASHA).

    Every trial is a real `actionllm train` run on its own Ray Train workers; invalid combinations (stride > N,
    a window longer than the sequences, a token length over the backbone's context) are refused before any
    trial starts. Writes results.csv, results.md, metric_vs_params.png and best.yaml (a config that
    `actionllm train --config` takes).
    """
    import logging

    from pydantic import ValidationError

    from training.tune import run_search

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if mode not in (None, "max", "min"):
        _fail(f"--mode must be max or min, got {mode!r}")
    try:
        base: dict = {"workers": workers} if workers else {}
        if epochs is not None:
            base["epochs"] = epochs
        overrides = _recipe_overrides(recipe, backbone=backbone)
        if overrides:
            base["recipe_config"] = overrides
        summary = run_search(recipe, data, str(output), space_file=str(space) if space else None, samples=samples,
                             max_concurrent=max_concurrent, metric=metric, mode=mode, max_steps=max_steps,
                             search=search, base_overrides=base, grace_period=grace_period,
                             reduction_factor=reduction_factor, resume=resume, address=address, seed=seed)
    except ValidationError as err:
        _fail(f"invalid training config:\n{err}")
    except (FileNotFoundError, ValueError, KeyError) as err:
        _fail(str(err).strip('"'))
    out.print_json(data=summary)
    if summary.get("interrupted"):
        console.print(f"[yellow]search interrupted:[/] {summary['interrupted']} of {summary['expected_trials']} trials "
                      f"unfinished; continue with the same command and --resume", highlight=False)
        raise typer.Exit(130)


@app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., help="a recognizer folder (<run>/recognizer)"),
    data: Path = typer.Option(..., help="shard folder"),
    split: str = typer.Option("test", help="train, val or test"),
    report: Path = typer.Option(None, help="folder for report.json, confusion.png and attention PNGs"),
    limit: int = typer.Option(None, min=1, help="evaluate only the first N sequences"),
    classes: str = typer.Option(None, help="comma-separated class names: evaluate only their sequences (e.g. "
                                "the held-out classes of an unseen-class llm-ar run)"),
) -> None:
    """Sequence-level top-1/top-5/macro-F1 (AUC, sensitivity, specificity for binary tasks) + explanations."""
    from training.evaluate import evaluate as run_eval

    try:
        result = run_eval(str(checkpoint), str(data), split=split, report=str(report) if report else None, limit=limit,
                          classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    keys = ["sequences", "top1", "top5", "macro_f1", "window_top1", "chance", "candidates", "auc", "sensitivity",
            "specificity"]
    out.print_json(data={k: result[k] for k in keys if k in result})
    if report:
        out.print(f"report: {report / 'report.json'}", highlight=False)


@app.command()
def predict(
    checkpoint: Path = typer.Option(..., help="a recognizer folder"),
    input: Path = typer.Option(..., help="a file or folder in a source format"),
    format: str = typer.Option(..., "--format", "-f", help="source format (see `actionllm formats`)"),
    option: list[str] = typer.Option([], "--option", "-O", help="reader option KEY=VALUE"),
) -> None:
    """Recognise the sequences of a local file or folder (no server, no Ray). Pickle formats run code."""
    from actionllm.inference import recognize
    from actionllm.recognizer import load_recognizer
    from actionllm.skeleton.formats import FormatError, Rejection, get_reader

    try:
        reader = get_reader(format)(input, **dict(_parse_option(o) for o in option))
        rec = load_recognizer(checkpoint)
        results = []
        for item in reader:
            if isinstance(item, Rejection) or item.problem() is not None:
                reason = item.reason if isinstance(item, Rejection) else item.problem()
                results.append({"sample_id": item.sample_id, "error": reason})
                continue
            if item.layout != rec.layout:
                raise ValueError(f"{item.sample_id}: layout {item.layout!r}, the recognizer reads {rec.layout!r}")
            answer = recognize(rec, item)
            results.append({"sample_id": item.sample_id, "label": answer["label"],
                            "probabilities": answer["probabilities"], "windows": len(answer["windows"])})
    except (KeyError, FileNotFoundError, FormatError, ValueError) as err:
        _fail(str(err).strip('"'))
    out.print_json(data=results)


@app.command()
def serve(
    checkpoint: list[str] = typer.Option([], help="a recognizer folder, as DIR or NAME=DIR (repeatable; the first is "
                                          "the default model)"),
    config: Path = typer.Option(None, help="YAML: a serve config (deploy/serve.yaml, or its `args:`), or a training "
                                "config such as tune's best.yaml (serves the recognizer it trained)"),
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 exposes it: set ACTIONLLM_API_KEY)"),
    port: int = typer.Option(8000, min=1, max=65535),
    min_replicas: int = typer.Option(None, min=0, help="recognizer replicas at least (autoscaling)"),
    max_replicas: int = typer.Option(None, min=1, help="recognizer replicas at most (autoscaling)"),
    max_models: int = typer.Option(None, min=1, help="recognizers one replica holds (LRU-evicted beyond)"),
    num_cpus: float = typer.Option(None, min=0, help="CPUs per recognizer replica"),
    address: str = typer.Option(None, help="Ray cluster address (default: an embedded local Ray)"),
    once: Path = typer.Option(None, help="send one request and stop: a JSON request body, or a shard folder "
                              "(its first test sequence); prints the answer"),
) -> None:
    """Serve recognizers over HTTP with Ray Serve: POST /v1/recognize, WS /v1/stream, /v1/models, /metrics, a
    web page at /. Runs until Ctrl-C (or, with --once, answers one request and stops)."""
    from pydantic import ValidationError

    from services.launch import serve_config, start

    try:
        cfg = serve_config(checkpoint, config, min_replicas=min_replicas, max_replicas=max_replicas,
                           max_models=max_models, num_cpus=num_cpus)
    except ValidationError as err:
        _fail(f"invalid serve config:\n{err}")
    except (FileNotFoundError, ValueError, KeyError) as err:
        _fail(str(err).strip('"'))
    start(cfg, host=host, port=port, address=address, once=once, say=lambda m: console.print(m, highlight=False),
          show=lambda data: out.print_json(data=data))


# --- cluster and jobs (training/cluster.py, training/jobs.py) -------------------------------------------------

cluster_app = typer.Typer(no_args_is_help=True, help="A local Ray head on this machine (token auth, loopback "
                          "dashboard) for `actionllm submit`.")
jobs_app = typer.Typer(no_args_is_help=True, help="Ray jobs on a cluster: list, status, logs, stop.")
app.add_typer(cluster_app, name="cluster")
app.add_typer(jobs_app, name="jobs")
ADDRESS_HELP = ("the cluster's Ray dashboard, http://HOST:8265 (default: RAY_API_SERVER_ADDRESS, else the local "
                "cluster of `actionllm cluster up`)")


@cluster_app.command("up")
def cluster_up(
    port: int = typer.Option(6379, help="GCS port of the head"),
    dashboard_port: int = typer.Option(8265, help="dashboard + Jobs API port (bound to 127.0.0.1)"),
    num_cpus: int = typer.Option(None, min=1, help="logical CPUs (default: the machine's)"),
    num_gpus: int = typer.Option(None, min=0, help="GPUs (default: detected)"),
    temp_dir: str = typer.Option(None, help="Ray's temp dir, short (default /tmp/actionllm-ray-UID)"),
    metrics_export_port: int = typer.Option(None, help="Prometheus metrics port of the head (default: a free one)"),
) -> None:
    """Start a real Ray head on 127.0.0.1 with token authentication on; `actionllm submit` then finds it."""
    from training.cluster import up

    try:
        state = up(port=port, dashboard_port=dashboard_port, num_cpus=num_cpus, num_gpus=num_gpus, temp_dir=temp_dir,
                   metrics_export_port=metrics_export_port, say=lambda m: console.print(m, highlight=False))
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    console.print(f"Ray head up: dashboard {state['dashboard']} (token: {state['token']}), metrics {state['metrics']}"
                  f"\n  submit: actionllm submit -- train --config training/configs/demo.yaml --data $PWD/data/demo/"
                  f"shards --output $PWD/runs/demo\n  stop:   actionllm cluster down", highlight=False)
    out.print_json(data=state)


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop the head `cluster up` started (only its processes; other Ray instances keep running)."""
    from training.cluster import down

    if down(say=lambda m: console.print(m, highlight=False)) == 0:
        console.print("no local cluster was running", highlight=False)


@cluster_app.command("status")
def cluster_status() -> None:
    """The local cluster's addresses and whether its processes are running."""
    from training.cluster import status

    state = status()
    if state is None:
        _fail("no local cluster (start one: actionllm cluster up)", code=1)
    out.print_json(data=state)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    address: str = typer.Option(None, help=ADDRESS_HELP),
    ship: str = typer.Option("workdir", help="workdir: this checkout (minus data/, runs/, .venv, .gitignore'd files) | "
                             "package: the installed actionllm/training/services | none: the cluster's image has it"),
    requirements: Path = typer.Option(None, help="pinned requirements for the job's own virtualenv, e.g. "
                                      "constraints.txt (default: the cluster's environment)"),
    env: list[str] = typer.Option([], "--env", "-e", help="KEY=VALUE for the job's environment (repeatable)"),
    num_cpus: float = typer.Option(None, min=0, help="CPUs reserved for the job's driver"),
    num_gpus: float = typer.Option(None, min=0, help="GPUs reserved for the job's driver"),
    job_id: str = typer.Option(None, help="submission id (default: Ray makes one)"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="follow the logs until the job ends (exit 0 only if "
                              "it succeeded)"),
) -> None:
    """Run any actionllm command as a Ray job on a cluster: `actionllm submit [OPTIONS] -- train --config ...`.

    The job runs `python -m actionllm <command>` in the shipped working directory. Data and outputs must be
    where the cluster can reach them: s3://, gs:// or absolute paths on shared storage. Token auth: RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
    """
    from training import jobs

    args = list(ctx.args)
    try:
        env_vars = dict(kv.split("=", 1) for kv in env)
    except ValueError:
        _fail(f"--env takes KEY=VALUE, got {env}")
    try:
        command = jobs.entrypoint(args)
        root = jobs.project_root() if ship == "workdir" else None
        renv = jobs.runtime_env(ship, root=root, requirements=requirements, env_vars=env_vars)
        for warning in jobs.path_warnings(args, root):
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        client = jobs.Jobs(address)
        jid = client.submit(command, renv, num_cpus=num_cpus, num_gpus=num_gpus, submission_id=job_id)
        console.print(f"submitted {jid} to {client.address}: {command}\n  shipped: {jobs.describe(renv)}\n  follow: "
                      f"actionllm jobs logs {jid} --follow   stop: actionllm jobs stop {jid}", highlight=False)
        if not wait:
            out.print(jid, highlight=False)
            return
        status = client.follow(jid, lambda chunk: (sys.stdout.write(chunk), sys.stdout.flush()))
    except jobs.ClusterError as err:
        _fail(str(err))
    console.print(f"job {jid}: {status}", highlight=False)
    raise typer.Exit(0 if status == "SUCCEEDED" else 1)


@jobs_app.command("list")
def jobs_list(address: str = typer.Option(None, help=ADDRESS_HELP)) -> None:
    """The cluster's jobs, newest first."""
    from training.jobs import ClusterError, Jobs

    try:
        rows = Jobs(address).list()
    except ClusterError as err:
        _fail(str(err))
    table = Table("job id", "status", "duration s", "entrypoint", title="jobs")
    for r in rows:
        table.add_row(r["job_id"], r["status"], "" if r["duration_s"] is None else str(r["duration_s"]),
                      r["entrypoint"][:100])
    out.print(table)


@jobs_app.command("status")
def jobs_status(job_id: str = typer.Argument(...), address: str = typer.Option(None, help=ADDRESS_HELP)) -> None:
    """One job's status, message, times and entrypoint (JSON)."""
    from training.jobs import ClusterError, Jobs

    try:
        out.print_json(data=Jobs(address).status(job_id))
    except ClusterError as err:
        _fail(str(err))


@jobs_app.command("logs")
def jobs_logs(job_id: str = typer.Argument(...), address: str = typer.Option(None, help=ADDRESS_HELP),
              follow: bool = typer.Option(False, "--follow", "-f", help="stream until the job ends")) -> None:
    """A job's driver output (what `actionllm <command>` printed on the cluster)."""
    from training.jobs import ClusterError, Jobs

    try:
        jobs = Jobs(address)
        if follow:
            jobs.follow(job_id, lambda chunk: (sys.stdout.write(chunk), sys.stdout.flush()))
        else:
            sys.stdout.write(jobs.logs(job_id))
    except ClusterError as err:
        _fail(str(err))


@jobs_app.command("stop")
def jobs_stop(job_id: str = typer.Argument(...), address: str = typer.Option(None, help=ADDRESS_HELP)) -> None:
    """Ask the cluster to stop a job (SIGTERM to its driver, then SIGKILL)."""
    from training.jobs import ClusterError, Jobs

    try:
        stopped = Jobs(address).stop(job_id)
    except ClusterError as err:
        _fail(str(err))
    console.print(f"job {job_id}: {'stopping' if stopped else 'already finished'}", highlight=False)


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
