"""`actionllm tune`: a Ray Tune search over a recipe's knobs, each trial a real `run_training` (its own Ray
Train workers, the same streamed shards), ASHA on epochs, optional Optuna / HyperOpt search.

Ray 2.60 runs Train V2: a `TorchTrainer` cannot be handed to a `Tuner` directly, so each trial is a small
driver function (0.1 CPU) that builds the trainer for its parameters and reports every epoch's metrics to
Tune through `TuneReportCallback` (see NOTES-ray-2.60.md).
The search space (its keys and forms, and the checks before any trial starts): search_space.py.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from pathlib import Path

import yaml

from actionllm.components.backbone import check_available
from actionllm.registry import deep_merge, get_recipe

from .config import TrainConfig
from .resume import latest_checkpoint
from .search_space import (
    apply_params,
    dataset_facts,
    load_space_file,
    normalise_space,
    to_tune,
    validate_space,
)

log = logging.getLogger("actionllm.tune")
STATUS = "trial_status.jsonl"


# --- the trial ---------------------------------------------------------------------------------------------
def run_trial(config: dict, base: dict, recipe: str, runs: str) -> None:
    """One trial: its TrainConfig, trained by run_training in `<runs>/<trial id>`, epochs reported to Tune.

    The run folder is in the search's output, not in Tune's trial folder: Tune stages a trial's folder in Ray's
    session directory and copies it to the search's storage only now and then, so a search killed mid-trial would
    lose the trial's Ray Train checkpoints; here they are where the next session's trial finds them."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from .train import run_training

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_dir = Path(runs) / tune.get_context().get_trial_id()
    tc = TrainConfig.model_validate({**apply_params(base, recipe, config["params"]), "output": str(run_dir)})
    # a trial Tune restarts after an interruption (--resume) finds its run folder: the epochs it will not train
    # again are reported first, as they were (Tune's saved state may predate them, and ASHA's rungs need them),
    # then run_training resumes it from its last checkpoint, or returns it as it is when it had finished
    for metrics in kept_epochs(run_dir):
        tune.report(metrics)
    run_training(tc, callbacks=[TuneReportCallback()])


def kept_epochs(run_dir: Path) -> list[dict]:
    """The metrics of each epoch a (restarted) trial's run folder keeps: every epoch when the run finished, else
    those up to its last registered checkpoint (a later one is trained again); an epoch trained twice once."""
    if (run_dir / "summary.json").is_file():
        last = None
    else:
        latest = latest_checkpoint(run_dir)
        if latest is None:
            return []
        last = latest["epoch"]
    by_epoch = {}
    for rec in _epoch_lines(run_dir):
        if last is None or rec["epoch"] <= last:
            by_epoch[rec["epoch"]] = {k: v for k, v in rec.items() if k != "kind"} | {"epochs_done": rec["epoch"] + 1}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _epoch_lines(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if '"kind": "epoch"' in line]


def make_progress_callback(metric: str, mode: str, max_epochs: int, status_file: Path):
    from ray import tune

    class Progress(tune.Callback):
        """Log trials done / running / stopped early / failed and the best so far as the search moves, and
        record how each trial ended in `status_file` (it outlives an interruption: --resume reads it)."""

        def __init__(self):
            self.best = None

        def _line(self, trials, event: str) -> None:
            status = [t.status for t in trials]
            stopped = sum(1 for t in trials if t.status == "TERMINATED" and _epochs(t) < max_epochs)
            done = sum(1 for s in status if s == "TERMINATED")
            best = f"best {metric}={self.best[0]:.4g} ({self.best[1]})" if self.best else "best: none yet"
            log.info(f"[tune] {event} | trials: {done} done ({stopped} stopped early by ASHA), "
                     f"{status.count('RUNNING')} running, {status.count('PENDING')} pending, "
                     f"{status.count('ERROR')} failed | {best}")

        def _record(self, trial, ended: str) -> None:
            with status_file.open("a") as f:
                f.write(json.dumps({"trial_id": trial.trial_id, "ended": ended, "epochs": _epochs(trial)}) + "\n")

        def _seed_best(self, trials) -> None:
            """After --resume, the best so far includes the trials finished before the interruption."""
            for t in trials:
                stats = (getattr(t, "metric_analysis", None) or {}).get(metric) or {}
                v = stats.get(mode)
                if v is not None and (self.best is None or (v > self.best[0] if mode == "max" else v < self.best[0])):
                    self.best = (float(v), t.trial_id)

        def on_trial_start(self, iteration, trials, trial, **info):
            if self.best is None:
                self._seed_best(trials)
            self._line(trials, f"trial {trial.trial_id} started {trial.config.get('params', {})}")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            v = result.get(metric)
            if v is not None and (self.best is None or (v > self.best[0] if mode == "max" else v < self.best[0])):
                self.best = (float(v), trial.trial_id)
                self._line(trials, f"new best from trial {trial.trial_id} at epoch {_epochs_done(result)}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._record(trial, "completed" if _epochs(trial) >= max_epochs else "stopped (ASHA)")
            self._line(trials, f"trial {trial.trial_id} finished after {_epochs(trial)} epoch(s)")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._record(trial, "failed")
            self._line(trials, f"trial {trial.trial_id} FAILED")

    return Progress()


def _epochs(trial) -> int:
    return _epochs_done(trial.last_result)


def _epochs_done(metrics: dict | None) -> int:
    """Epochs a trial has trained: the loop's `epochs_done`, which stays right when a trial resumed from a
    checkpoint after --resume (Tune's training_iteration then counts only the epochs since)."""
    metrics = metrics or {}
    return int(metrics.get("epochs_done", metrics.get("training_iteration", 0)))


def expected_trials(space: dict, samples: int) -> int:
    grids = [len(v["grid"]) for v in space.values() if isinstance(v, dict) and "grid" in v]
    return samples * math.prod(grids)


# --- the search --------------------------------------------------------------------------------------------
def run_search(recipe: str, data: str, output: str, space_file: str | None = None, samples: int = 16,
               max_concurrent: int = 4, metric: str = "val_accuracy", mode: str | None = None,
               max_steps: int | None = None, search: str = "random", base_overrides: dict | None = None,
               grace_period: int = 1, reduction_factor: int = 2, resume: bool = False,
               address: str | None = None, seed: int = 0) -> dict:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from .data import init_ray

    mode = mode or ("min" if metric.endswith("loss") else "max")
    out = Path(output).resolve()
    exp = out / "search"
    space_override, train_overrides, inherit = load_space_file(space_file)
    space = normalise_space({**(get_recipe(recipe).search_space if inherit else {}), **space_override})
    base = deep_merge(deep_merge({"workers": 1}, train_overrides), base_overrides or {})
    base.update({"data": str(Path(data).resolve()) if "://" not in data else data, "output": "unused"})
    base["recipe"], base["eval_every"] = recipe, 1  # ASHA compares the metric at every epoch
    if max_steps is not None:
        base["max_steps_per_epoch"] = max_steps
    base_tc = TrainConfig.model_validate(base)  # a clear error for a bad base before anything starts
    base = base_tc.model_dump(mode="json", exclude_defaults=False)
    if not resume:
        if search_exists(exp):
            raise ValueError(f"{exp} already holds a search: pass --resume to continue it, or another --output")
        reasons = validate_space(recipe, base, space, dataset_facts(data))
        if reasons:
            shown = "\n  ".join(reasons[:12]) + (f"\n  ... and {len(reasons) - 12} more" if len(reasons) > 12 else "")
            raise ValueError(f"the search space is refused before any trial starts:\n  {shown}")
    backbone = getattr(get_recipe(recipe).config(base_tc.recipe_config), "backbone", None)
    if backbone is not None:  # one clear line before Ray starts, not a failure in every trial
        check_available(backbone)
    out.mkdir(parents=True, exist_ok=True)
    # logical CPUs per trial: its driver (0.1), its Train workers, the encoder actors of the train and val
    # pipelines (up to one per worker each) and the read tasks; too few and Ray Data waits forever
    cpus = math.ceil(max_concurrent * (base_tc.workers * (base_tc.cpus_per_worker + 2) + 1.5))
    init_ray(address, num_cpus=None if address else max(os.cpu_count() or 1, cpus))
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=base, recipe=recipe, runs=str(out / "trials")), {"cpu": 0.1})
    t0 = time.perf_counter()
    if resume:
        if not search_exists(exp):
            raise ValueError(f"--resume: no search to resume under {exp}")
        tuner = tune.Tuner.restore(str(exp), trainable=trainable, resume_unfinished=True, resume_errored=True)
        saved = json.loads((out / "search.json").read_text())
        space, metric, mode, samples = saved["space"], saved["metric"], saved["mode"], saved["samples"]
        base = saved["base"]
        (out / "resumed.txt").open("a").write(time.strftime("%Y-%m-%d %H:%M:%S") + "\n")
    else:
        (out / "search.json").write_text(json.dumps({"recipe": recipe, "space": space, "base": base, "metric": metric,
                                                     "mode": mode, "samples": samples, "search": search}, indent=2))
        scheduler = ASHAScheduler(time_attr="epochs_done", max_t=base_tc.epochs, grace_period=grace_period,
                                  reduction_factor=reduction_factor)
        tuner = tune.Tuner(
            trainable, param_space={"params": to_tune(space)},
            tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=samples, scheduler=scheduler,
                                        max_concurrent_trials=max_concurrent,
                                        search_alg=search_algorithm(search, space, metric, mode, seed)),
            run_config=tune.RunConfig(name="search", storage_path=str(out), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0),
                                      callbacks=[make_progress_callback(metric, mode, base_tc.epochs,
                                                                        out / STATUS)]),
        )
    results = tuner.fit()
    summary = write_results(results, out, recipe, base, space, metric, mode, base_tc.epochs,
                            expected_trials(space, samples))
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def search_exists(path: Path) -> bool:
    from ray import tune

    return path.is_dir() and tune.Tuner.can_restore(str(path))


def search_algorithm(name: str, space: dict, metric: str, mode: str, seed: int):
    """random (Tune's variant generator), optuna (TPE) or hyperopt; the latter two are optional installs."""
    if name == "random":
        return None
    if any(isinstance(v, dict) and "grid" in v for v in space.values()):
        raise ValueError(f"--search {name} does not take grid entries; use choice")
    try:
        if name == "optuna":
            import optuna
            from ray.tune.search.optuna import OptunaSearch

            return OptunaSearch(metric=metric, mode=mode, sampler=optuna.samplers.TPESampler(seed=seed))
        if name == "hyperopt":
            from ray.tune.search.hyperopt import HyperOptSearch

            return HyperOptSearch(metric=metric, mode=mode, random_state_seed=seed)
    except ImportError as err:
        raise ValueError(f"--search {name} needs its package: pip install 'actionllm[tune]' ({err})") from None
    raise ValueError(f"unknown --search {name!r}: random, optuna or hyperopt")


# --- the results -------------------------------------------------------------------------------------------
def write_results(results, out: Path, recipe: str, base: dict, space: dict, metric: str, mode: str,
                  max_epochs: int, expected: int) -> dict:
    """results.csv / results.md (a row per trial), metric_vs_params.png, best.yaml. A trial's status comes
    from the progress callback's record (completed / stopped (ASHA) / failed); none = interrupted."""
    ended = {}
    if (out / STATUS).is_file():
        for line in (out / STATUS).read_text().splitlines():
            rec = json.loads(line)
            ended[rec["trial_id"]] = rec["ended"]
    rows = []
    keys = list(space)
    for r in results:
        params = (r.config or {}).get("params", {})
        epochs = _epochs_done(r.metrics)
        trial_id = (r.metrics or {}).get("trial_id") or Path(r.path).name
        status = "failed" if r.error else ended.get(trial_id, "interrupted")
        trial_dir = out / "trials" / trial_id  # the trial's run folder (run_trial)
        values = epoch_values(trial_dir, metric)
        if not values:  # no run folder (a trial that failed early): what Tune kept
            hist = r.metrics_dataframe
            values = [] if hist is None or metric not in hist else [v for v in hist[metric].tolist() if v == v]
        best_v = (max(values) if mode == "max" else min(values)) if values else None
        rows.append({"trial": trial_id,
                     **{k: params.get(k) for k in keys}, metric: (r.metrics or {}).get(metric),
                     f"best_{metric}": best_v, "epochs": epochs, "status": status,
                     "wall_s": round(float((r.metrics or {}).get("time_total_s", 0.0)), 1),
                     "error": str(r.error).splitlines()[0][:200] if r.error else "", "dir": str(trial_dir)})
    ok = [x for x in rows if x[f"best_{metric}"] is not None]
    best = (max if mode == "max" else min)(ok, key=lambda x: x[f"best_{metric}"]) if ok else None
    cols = ["trial", *keys, metric, f"best_{metric}", "epochs", "status", "wall_s", "error"]
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for x in sorted(rows, key=lambda x: (x[f"best_{metric}"] is None, -(x[f"best_{metric}"] or 0)
                                         if mode == "max" else (x[f"best_{metric}"] or 0))):
        md.append("| " + " | ".join(_fmt(x.get(c)) + (" **(best)**" if x is best and c == "trial" else "")
                                    for c in cols) + " |")
    (out / "results.md").write_text("\n".join(md) + "\n")
    plot_params(rows, keys, metric, out / "metric_vs_params.png")
    interrupted = sum(x["status"] == "interrupted" for x in rows) + max(0, expected - len(rows))
    summary = {"trials": len(rows), "expected_trials": expected, "interrupted": interrupted,
               "completed": sum(x["status"] == "completed" for x in rows),
               "stopped_early": sum(x["status"] == "stopped (ASHA)" for x in rows),
               "failed": sum(x["status"] == "failed" for x in rows), "metric": metric, "mode": mode,
               "files": ["results.csv", "results.md", "metric_vs_params.png"]}
    if best is not None:
        params = {k: best[k] for k in keys}
        tc = TrainConfig.model_validate({**apply_params(base, recipe, params), "output": str(out / "best-run")})
        doc = tc.model_dump(mode="json", exclude={"fail_at_epoch"})
        header = (f"# best trial {best['trial']} of {out}: {metric}={best[f'best_{metric}']:.4g}\n"
                  f"# parameters: {json.dumps(params)}\n# train it: actionllm train --config {out / 'best.yaml'}\n")
        (out / "best.yaml").write_text(header + yaml.safe_dump(doc, sort_keys=False))
        summary.update({"best": {"trial": best["trial"], metric: best[f"best_{metric}"], "params": params},
                        "best_yaml": str(out / "best.yaml")})
        summary["files"].append("best.yaml")
    return summary


def epoch_values(run_dir: Path, metric: str) -> list[float]:
    """`metric` at each epoch a trial trained, from its run folder's metrics.jsonl (kept across an interruption,
    unlike Tune's own history of a trial it restarted); an epoch trained twice (cut off by a kill) counts once."""
    by_epoch = {rec["epoch"]: float(rec[metric]) for rec in _epoch_lines(run_dir)
                if isinstance(rec.get(metric), (int, float))}
    return list(by_epoch.values())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "none" if v is None else str(v)


def plot_params(rows: list[dict], keys: list[str], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = keys or ["trial"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        xs = [x.get(k) for x in rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
        labels = sorted({str(v) for v in xs})
        pos = xs if numeric else [labels.index(str(v)) for v in xs]
        for x, p in zip(rows, pos, strict=True):
            y = x.get(f"best_{metric}")
            if y is None:
                continue
            style = {"completed": ("o", "tab:blue"), "stopped (ASHA)": ("x", "tab:orange")}.get(x["status"],
                                                                                               ("s", "tab:red"))
            ax.scatter([p], [y], marker=style[0], color=style[1])
        if not numeric:
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        elif k in ("lr", "head_lr", "weight_decay") and all(v and v > 0 for v in xs):
            ax.set_xscale("log")
        ax.set_xlabel(k)
        ax.set_ylabel(metric)
    fig.suptitle(f"{metric} per trial (o completed, x stopped by ASHA)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
