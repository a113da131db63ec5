"""Training commands: recipes, train, tune (the Ray layer in training/, imported when a command runs)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import app, console, fail, out


@app.command()
def recipes() -> None:
    """List the registered recipes: stages, CLI knobs, config class (every field reachable with --set) and
    training defaults."""
    from actionllm.methods import RECIPES

    table = Table("recipe", "description", "stages", "knobs (train flags, tune keys)", "config (--set a.b=v)",
                  "trains with", title="recipes")
    for name, r in RECIPES.items():
        table.add_row(name, r.description, ", ".join(r.stages), " ".join(f"--{k.replace('_', '-')}" for k in r.knobs),
                      f"{r.config_cls.__module__.removeprefix('actionllm.')}.{r.config_cls.__name__}",
                      ", ".join(f"{k}={v}" for k, v in r.train_defaults.items()) or "defaults")
    out.print(table)



@app.command()
def train(
    recipe: str = typer.Option(None, help="registered recipe: joints-llm (default) | stgcn | llm-ar (see "
                               "`actionllm recipes`)"),
    stage: str = typer.Option(None, help="multi-stage recipes: train one stage only (llm-ar: vqvae = the "
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
    settings: list[str] = typer.Option([], "--set", help="dotted.path=value, repeatable: any TrainConfig field "
                                       "(lr=1e-3) or field of the recipe's config (bridge.window=12, lora.dropout=0.1)"),
    address: str = typer.Option(None, help="Ray cluster address (default: an embedded local Ray)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show Ray's logs and library warnings here "
                                 "(default: they go to <output>/train.log)"),
    restart: bool = typer.Option(False, "--restart", help="start over: remove the run --output holds (checkpoints, "
                                 "recognizer, metrics; train.log is kept) instead of resuming it"),
) -> None:
    """Train a recognizer with Ray Train: LoRA on the backbone + the head (joints-llm), a whole GCN (stgcn), or
    the action VQ-VAE then LoRA on a generative LLM (llm-ar: --stage vqvae, --stage llm, or both in order).

    Streams windows from the shards through Ray Data, trains on --workers workers with DDP, checkpoints every
    epoch and resumes after a worker crash; writes <output>/recognizer (the folder evaluate/serve load).

    Run the same command again after the whole job died (killed, Ctrl-C, machine gone): it resumes from the last
    checkpoint in --output and says which; a multi-stage recipe skips the stages it finished. --restart starts over.
    """
    from pydantic import ValidationError

    from actionllm import storage
    from actionllm.checks import check_shards
    from actionllm.errors import validation_line
    from actionllm.registry import get_recipe, knob_overrides
    from training.config import TrainConfig

    from .common import refuse_damaged
    from .progress import TrainProgress, run_log, stop_ray

    log = None

    def invalid(err: ValidationError, prefix: str = "") -> None:
        """One line naming the YAML file (or --set, when a --set value is at fault) and each field at fault:
        `bad.yaml: epochs: Input should be a valid integer, ...`."""
        line = validation_line(err, prefix)
        keys = {t.split("=", 1)[0].strip() for t in settings}
        by_set = line.split(":", 1)[0] in keys | {f"recipe_config.{k}" for k in keys}
        fail(f"{'--set' if by_set else config or 'invalid training config'}: {line}")

    flags = {"recipe": recipe, "stage": stage, "data": data, "output": output, "workers": workers, "use_gpu": use_gpu,
             "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr}
    try:
        if config is not None:
            tc = TrainConfig.from_yaml(config, **flags)
        else:
            tc = TrainConfig.model_validate({k: v for k, v in flags.items() if v is not None})
        tc = tc.with_recipe_config(knob_overrides(get_recipe(tc.recipe), {
            "window": window, "stride": stride, "rank": rank, "backbone": backbone, "gguf_file": gguf_file,
            "precision": precision, "prompt": prompt, "pooling": pooling, "frames": frames, "preset": preset}))
        tc = tc.with_settings(settings)
    except ValidationError as err:
        invalid(err)
    except (FileNotFoundError, ValueError, KeyError) as err:
        fail(str(err).strip('"'))
    try:
        get_recipe(tc.recipe).config(tc.recipe_config)  # validate before starting Ray
        # the data folder, before Ray starts: a damaged shard is one line naming it, not a traceback from a Ray
        # worker (footers, schema, counts, labels; the sha256 hashes while the shards total under 2 GiB and are
        # local: actionllm/checks.py)
        problems = check_shards(tc.data, hashes=None)
    except ValidationError as err:
        invalid(err, "recipe_config")
    except (FileNotFoundError, ValueError, KeyError, OSError) as err:
        fail(str(err).strip('"'))
    refuse_damaged(problems, tc.data)
    from training.resume import clear_run
    from training.train import run_training

    def say(line: str) -> None:
        console.print(line, highlight=False, soft_wrap=True)

    run_dir = storage.local_run_dir(tc.output)
    if restart:
        recipe_stages = list(get_recipe(tc.recipe).stages)
        earlier = [] if tc.stage else recipe_stages[:-1]  # --stage S --restart: that stage's folder only
        target = run_dir / tc.stage if tc.stage and tc.stage != recipe_stages[-1] else run_dir
        if clear_run(target, earlier):
            say(f"--restart: removed the earlier run in {target}")
    try:
        with run_log(run_dir / "train.log", verbose) as log, TrainProgress(run_dir):
            try:
                summary = run_training(tc, address=address, say=say)
            finally:  # Ray's log monitor keeps printing while Ray runs: stop it before the terminal is ours again
                stop_ray()
    except ValidationError as err:  # a stage's config (for_stage)
        invalid(err)
    except (FileNotFoundError, ValueError, KeyError) as err:
        fail(str(err).strip('"'))
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C: Ray Train's own SIGINT handler aborts the run, then exits
        fail(f"interrupted: run the same command again to resume from the last checkpoint in {run_dir}", code=130)
    except Exception as err:  # a failure inside Ray: its traceback is in the log
        if verbose:
            raise
        fail(f"training failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}\n"
             f"  the full log: {log}\n  run the same command again to resume from the last checkpoint in {run_dir}",
             code=1)
    metrics = summary.get("metrics", {})
    shown = "  ".join(f"{k} {metrics[k]:.3g}" for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
                      if isinstance(metrics.get(k), float))
    console.print(f"[bold green]trained[/] {summary['recognizer']}  ({shown})" + (f"\n  log: {log}" if log else ""),
                  highlight=False, soft_wrap=True)
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
        fail(f"--mode must be max or min, got {mode!r}")
    try:
        base: dict = {"workers": workers} if workers else {}
        if epochs is not None:
            base["epochs"] = epochs
        from actionllm.registry import get_recipe, knob_overrides

        overrides = knob_overrides(get_recipe(recipe), {"backbone": backbone})
        if overrides:
            base["recipe_config"] = overrides
        summary = run_search(recipe, data, str(output), space_file=str(space) if space else None, samples=samples,
                             max_concurrent=max_concurrent, metric=metric, mode=mode, max_steps=max_steps,
                             search=search, base_overrides=base, grace_period=grace_period,
                             reduction_factor=reduction_factor, resume=resume, address=address, seed=seed)
    except ValidationError as err:
        from actionllm.errors import validation_line

        fail(f"invalid training config: {validation_line(err)}")
    except (FileNotFoundError, ValueError, KeyError) as err:
        fail(str(err).strip('"'))
    out.print_json(data=summary)
    if summary.get("interrupted"):
        console.print(f"[yellow]search interrupted:[/] {summary['interrupted']} of {summary['expected_trials']} trials "
                      f"unfinished; continue with the same command and --resume", highlight=False)
        raise typer.Exit(130)


