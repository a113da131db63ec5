"""`actionllm train`: shards -> Ray Data (windows -> bridge encoding) -> TorchTrainer(train_loop_per_worker).

The driver reads the manifest, builds the streamed datasets, runs the trainer with checkpointing and
fault tolerance, and copies the latest recognizer folder (the last epoch's, not the best on validation) to
`<output>/recognizer`; after an LLM stage it chooses the prior weight on the val split (actionllm/fusion.py).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from actionllm import storage
from actionllm.components.backbone import check_available
from actionllm.components.text_encoder import check_available as check_text_encoder
from actionllm.components.visual_encoder import VisualEncoderConfig
from actionllm.components.visual_encoder import check_available as check_visual_encoder
from actionllm.fusion import fit_prior_weight
from actionllm.recognizer_folder import write_sample
from actionllm.registry import get_recipe
from actionllm.skeleton.shards import Manifest, read_shards, shard_files
from actionllm.skeleton.transforms import window_starts

from .config import TrainConfig
from .data import init_ray, window_dataset, window_items
from .loop import train_loop_per_worker
from .resume import inspect_run
from .run_storage import checkpoint_path, publish, with_run_dir
from .telemetry import TrainMetricsExporter
from .video import ensure_features, feature_items


def count_windows(data: str, split: str, window: int | None, stride: int | None,
                  exclude: frozenset[int] = frozenset()) -> tuple[int, list[int], int]:
    """Windows per split and per class, from two small columns (no joints read); labels in `exclude`
    (held-out classes) are not counted."""
    manifest = Manifest.read(data)
    total, per_class = 0, [0] * max(len(manifest.class_names), 1)
    for path in shard_files(data):
        t = pq.read_table(path, columns=["num_frames", "label", "split"]).to_pydict()
        for n, label, s in zip(t["num_frames"], t["label"], t["split"], strict=True):
            if s == split and label not in exclude:
                w = len(window_starts(n, window, stride))
                total += w
                if 0 <= label < len(per_class):
                    per_class[label] += w
    return total, per_class, len(manifest.class_names)


def first_sequence(data: str, exclude: frozenset[int] = frozenset()):
    """The first test (else val) sequence of the data, for the recognizer folder's sample.json."""
    for split in ("test", "val"):
        for seq, _ in read_shards(data, split=split):
            if seq.label not in exclude:
                return seq
    return None


def held_out_labels(recipe_cfg, class_names: list[str]) -> frozenset[int]:
    """Label ids of the classes a recipe config holds out of training (the unseen-class protocol)."""
    held = list(getattr(recipe_cfg, "held_out", []) or [])
    unknown = [c for c in held if c not in class_names]
    if unknown:
        raise ValueError(f"held_out names classes the data does not have: {unknown} (classes: {class_names})")
    return frozenset(class_names.index(c) for c in held)


def split_windows(data: str, split: str, recipe_cfg, exclude: frozenset[int] = frozenset()):
    """The windows of one split, as Ray Data rows (not yet preprocessed); labels in `exclude` left out."""
    window, stride = recipe_cfg.windowing()
    windows = window_dataset(data, window, stride, split, shuffle=split == "train")
    return windows.filter(lambda row: int(row["label"]) not in exclude) if exclude else windows


def preprocessed(data: str, split: str, recipe, recipe_cfg, stage: str | None, layout: str, dims: int,
                 workers: int, exclude: frozenset[int] = frozenset()):
    """Windows of one split -> the stage's preprocessor (Joint2Text + tokenisation, clips, ...), run in Ray tasks
    (one preprocessor per worker process and configuration). The train split augments when the recipe's config
    switches augmentation on (fresh OS entropy: the pipeline re-runs every epoch, so a fixed seed would repeat
    the same draws)."""
    spec = {"recipe": recipe.name, "stage": stage, "config": recipe_cfg.model_dump(mode="json"), "layout": layout,
            "dims": dims, "train": split == "train"}
    # at most one preprocessing task per Train worker at a time: every extra parallel task can start a fresh
    # Ray worker process (torch + transformers imports), which on a few cores costs more than it gains; tasks,
    # not actors: Ray's pooled worker processes keep their preprocessor across epochs and trials
    return split_windows(data, split, recipe_cfg, exclude).map_batches(
        preprocess_in_task, fn_kwargs={"spec": spec}, batch_size=16,
        compute=ray.data.TaskPoolStrategy(size=max(1, workers)), batch_format="numpy")


def window_bytes(data: str, splits: tuple[str, ...], window: int | None, stride: int | None) -> int:
    """An estimate of the bytes the windows of `splits` take in memory: each shard file's uncompressed bytes per
    frame (Parquet metadata) times the frames its windows of those splits hold (overlapping windows count twice)."""
    total = 0
    for path in shard_files(data):
        meta = pq.ParquetFile(path).metadata
        size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        t = pq.read_table(path, columns=["num_frames", "split"]).to_pydict()
        frames = sum(t["num_frames"]) or 1
        win_frames = sum(len(window_starts(n, window, stride)) * (window or n)
                         for n, s in zip(t["num_frames"], t["split"], strict=True) if s in splits)
        total += int(size / frames * win_frames)
    return total


def stage_datasets(tc: TrainConfig, recipe, recipe_cfg, manifest, exclude: frozenset[int]) -> tuple[dict, bool]:
    """The train and val datasets of a stage, and whether they are held in memory (`TrainConfig.data_cache`).

    Streamed (never): the whole pipeline (read -> windows -> preprocessing tasks) runs again every epoch, and every
    run starts its read and preprocessing tasks: seconds per epoch whatever the data's size (ray-project/ray#49190).
    In memory (always, or auto when the windows' estimate fits in a quarter of the object store): the driver reads
    each split's windows once (pyarrow, `window_items`; the train split shuffled once with the run's seed) into
    Ray's object store, and each Train worker runs the stage's preprocessor in its batch collation (the train
    split's augmentation draws afresh every epoch), so an epoch starts no Ray task at all."""
    window, stride = recipe_cfg.windowing()
    if manifest.modality == "video":  # the frozen encoder's features, cached once per shard folder, in memory
        if recipe.modality != "video":
            raise ValueError(f"{tc.data} holds videos; recipe {recipe.name!r} reads skeletons")
        folder, built = ensure_features(tc.data, recipe_cfg, cpus=tc.cpus_per_worker)
        if built["built"]:
            print(f"video features cached in {folder}: {built['videos']} videos in {built['seconds']} s", flush=True)
        return {s: ray.data.from_items(feature_items(folder, s, exclude, seed=tc.seed if s == "train" else None))
                for s in ("train", "val")}, True
    if recipe.modality == "video":
        raise ValueError(f"recipe {recipe.name!r} reads videos; {tc.data} holds {manifest.modality} shards "
                         "(prepare a video folder: actionllm prepare --format video-folder, or actionllm render)")
    if tc.data_cache == "never":
        cache = False
    else:
        need = window_bytes(tc.data, ("train", "val"), window, stride)
        cache = tc.data_cache == "always" or need < ray.cluster_resources().get("object_store_memory", 0.0) / 4
    if cache:
        return {s: ray.data.from_items(window_items(tc.data, s, window, stride, exclude,
                                                    seed=tc.seed if s == "train" else None))
                for s in ("train", "val")}, True
    return {s: preprocessed(tc.data, s, recipe, recipe_cfg, tc.stage, manifest.layout, manifest.dims, tc.workers,
                            exclude) for s in ("train", "val")}, False


_PREPROCESSORS: dict[str, object] = {}


def preprocess_in_task(batch: dict, spec: dict) -> dict:
    """Run a stage's preprocessor inside a Ray task: one instance per worker process and configuration."""
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in _PREPROCESSORS:
        recipe = get_recipe(spec["recipe"])
        _PREPROCESSORS[key] = recipe.recognizer_cls(spec["stage"]).preprocessor(
            recipe.config(spec["config"]), spec["layout"], spec["dims"], train=spec["train"])
    return _PREPROCESSORS[key](batch)


def fit_keeping_sigint(trainer):
    """trainer.fit(), then the SIGINT handler from before it, and a Ctrl-C received during it never lost.

    Ray Train installs its own handler (Ctrl-C aborts the run) and leaves it installed; a Ctrl-C after fit, e.g.
    between two stages, would then go to the finished run's controller and be lost, and the next stage would
    train on. And Ray's handler asks the controller to abort, which does nothing when the run has not started
    yet: the run then trains to its end. So Ray's handler is wrapped to also note the Ctrl-C, and a noted one
    raises KeyboardInterrupt once fit returns."""
    main = threading.current_thread() is threading.main_thread()
    if not main:  # a Tune trial: Ray Train registers no handler outside the main thread
        return trainer.fit()
    before = signal.getsignal(signal.SIGINT)
    noted = threading.Event()
    register = getattr(trainer, "_register_sigint_handler", None)  # Ray Train 2.60's hook (private: checked)
    if callable(register):
        def register_and_note(controller):
            register(controller)
            ray_handler = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                noted.set()
                if callable(ray_handler):
                    ray_handler(signum, frame)

            signal.signal(signal.SIGINT, handler)

        trainer._register_sigint_handler = register_and_note
    try:
        result = trainer.fit()
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)
    if noted.is_set():
        raise KeyboardInterrupt("Ctrl-C during training")
    return result


def run_training(tc: TrainConfig, address: str | None = None, callbacks: list | None = None, say=print) -> dict:
    """Train; returns a summary with the recognizer folder and the last metrics. `callbacks` go to the
    trainer's RunConfig (Ray Tune's TuneReportCallback when this runs as a trial of a search). `say` gets the
    lines a user should read (resuming from which checkpoint, a stage already trained).

    An `--output` that holds this run already (training/resume.py) is resumed from its last checkpoint, or
    returned as it is when it finished (the summary then has `already_trained: true`); one that holds a run
    with other settings is refused.

    A multi-stage recipe (llm-ar: vqvae, then llm) runs its stages in order unless `tc.stage` names one:
    stage k writes <output>/<stage>/ (its recognizer folder is what the next stage reads), the last stage
    writes <output>/ itself (so <output>/recognizer is always the folder to evaluate and serve)."""
    recipe = get_recipe(tc.recipe)
    backbone = getattr(recipe.config(tc.recipe_config), "backbone", None)
    if backbone is not None:  # one clear line now, not a traceback from every Ray worker later
        check_available(backbone)
    visual = getattr(recipe.config(tc.recipe_config), "encoder", None)
    if isinstance(visual, VisualEncoderConfig):
        check_visual_encoder(visual)
    text_encoder = getattr(recipe.config(tc.recipe_config), "text_encoder", None)
    if text_encoder is not None:
        check_text_encoder(text_encoder)
    if len(recipe.stages) == 1:
        return _run_stage(tc, address, callbacks, say)
    if storage.is_uri(tc.output):
        raise ValueError(f"--output {tc.output}: a multi-stage recipe ({recipe.name}) writes to a local or shared-"
                         "filesystem folder for now (its second stage reads the first stage's folder as a path)")
    out = Path(tc.output).resolve()
    stages = [tc.stage] if tc.stage else list(recipe.stages)
    summaries = {}
    for i, stage in enumerate(stages):
        last = stage == recipe.stages[-1]
        stc = tc.for_stage(stage, str(out if last else out / stage))
        key = recipe.stage_input  # where a stage's config names the previous stage's folder
        if i > 0 or (stage != recipe.stages[0] and not stc.recipe_config.get(key)):
            prev = recipe.stages[recipe.stages.index(stage) - 1]
            folder = out / prev / "recognizer"
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"stage {stage!r} reads stage {prev!r}'s folder {folder}, which does not "
                                        f"exist: train --stage {prev} first (same --output), or set "
                                        f"recipe_config.{key}")
            stc = stc.model_copy(update={"recipe_config": {**stc.recipe_config, key: str(folder)}})
        elif stc.recipe_config.get(key):  # the user's folder: absolute (Ray's workers run elsewhere), checked now
            folder = Path(stc.recipe_config[key]).expanduser().resolve()
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"recipe_config.{key} {folder} is not a recognizer folder (config.json "
                                        "missing): give the earlier stage's <run>/<stage>/recognizer")
            stc = stc.model_copy(update={"recipe_config": {**stc.recipe_config, key: str(folder)}})
        summaries[stage] = _run_stage(stc, address, callbacks if last else None,
                                      say if last else (lambda line, s=stage: say(f"stage {s}: {line}")))
    summary = summaries[stages[-1]]
    fusion = fit_prior(tc, stages[-1], summary, say)
    if fusion is not None:
        summary = {**summary, "prior": fusion}
    if len(stages) > 1:
        summary = {**summary, "stages": {s: {"recognizer": v["recognizer"], "metrics": v["metrics"]}
                                         for s, v in summaries.items()}}
    # <output>/summary.json names the recognizer folder to evaluate, also when only an earlier stage ran
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def fit_prior(tc: TrainConfig, stage: str, summary: dict, say=print) -> dict | None:
    """After an LLM stage whose first stage scores classes: choose its prior weight on the val split and write it
    into the recognizer folder (actionllm/fusion.py); None when there is nothing to choose."""
    recipe = get_recipe(tc.recipe)
    cfg = recipe.config(tc.recipe_config)
    if stage != recipe.stages[-1] or getattr(cfg, "prior", "off") != "fit" or summary.get("already_trained"):
        return None
    choice = fit_prior_weight(summary["recognizer"], tc.data, "val")
    if choice is not None:
        row = next(r for r in choice["rows"] if r["weight"] == choice["weight"])
        alone = next(r for r in choice["rows"] if r["weight"] == 0.0)
        say(f"prior weight {choice['weight']:g} chosen on {choice['sequences']} val sequences (accuracy "
            f"{row['accuracy']:.3f}; the LLM alone {alone['accuracy']:.3f}); written to {summary['recognizer']}")
    return choice


def _run_stage(tc: TrainConfig, address: str | None = None, callbacks: list | None = None, say=print) -> dict:
    started_at = time.time()
    manifest = Manifest.read(tc.data)
    if not manifest.class_names:
        raise ValueError(f"{tc.data}: the manifest names no classes; a classifier needs them")
    recipe = get_recipe(tc.recipe)
    recipe_cfg = recipe.config(tc.recipe_config).for_data(manifest.class_names)
    window, stride = recipe_cfg.windowing()
    exclude = held_out_labels(recipe_cfg, manifest.class_names)
    train_windows, class_counts, _ = count_windows(tc.data, "train", window, stride, exclude)
    val_windows, _, _ = count_windows(tc.data, "val", window, stride, exclude)
    if train_windows == 0:
        raise ValueError(f"{tc.data}: no training windows (split 'train' is empty)")
    if val_windows < tc.workers:
        raise ValueError(f"{tc.data}: {val_windows} validation windows for {tc.workers} workers; "
                         "prepare with a larger --val-fraction")
    remote = tc.output if storage.is_uri(tc.output) else None  # s3:// gs:// file://: see training/run_storage.py
    out = storage.local_run_dir(tc.output)
    tc = tc.model_copy(update={"output": str(out), "recipe_config": recipe_cfg.model_dump(mode="json")})
    stored = tc.model_copy(update={"output": remote or str(out)})
    if remote is None:  # a URI's run is restored by Ray Train from the URI's snapshot, without this check
        previous = inspect_run(out, stored.model_dump(mode="json"))
        if previous.state != "none":
            say(previous.describe(out, tc.epochs))
        if previous.state == "done":
            return {**previous.summary, "already_trained": True}
    start_epoch = previous.epoch + 1 if remote is None and previous.state == "resume" else 0
    (out / "train_config.json").write_text(stored.model_dump_json(indent=2) + "\n")
    clock = {"started_at": started_at, "checks_s": round(time.time() - started_at, 3), "t": time.perf_counter()}

    def lap(name: str) -> None:  # the driver's phases -> summary["timings"] (bench/train_overhead.py)
        now = time.perf_counter()
        clock[name], clock["t"] = round(now - clock["t"], 3), now

    # An embedded local Ray gets logical CPUs for the trainer's workers plus the data pipeline's tasks
    # (read, windows, tokeniser actors): with only physical cores the pipeline would wait forever.
    init_ray(address, num_cpus=None if address else max(os.cpu_count() or 1,
                                                       math.ceil(tc.workers * tc.cpus_per_worker) + 2))
    lap("ray_init_s")
    datasets, cached = stage_datasets(tc, recipe, recipe_cfg, manifest, exclude)
    lap("datasets_s")
    trainer = TorchTrainer(
        with_run_dir(train_loop_per_worker),
        train_loop_config={"train": tc.model_dump(mode="json"),
                           "dataset": {"class_names": manifest.class_names, "layout": manifest.layout,
                                       "dims": manifest.dims, "train_windows": train_windows,
                                       "class_counts": class_counts, "preprocess_in_worker": cached}},
        scaling_config=ScalingConfig(num_workers=tc.workers, use_gpu=tc.use_gpu,
                                     resources_per_worker={"CPU": tc.cpus_per_worker}),
        run_config=RunConfig(name="train", storage_path=checkpoint_path(remote, out),
                             checkpoint_config=CheckpointConfig(num_to_keep=tc.num_to_keep),
                             failure_config=FailureConfig(max_failures=tc.max_failures),
                             callbacks=[*(callbacks or []), TrainMetricsExporter(Path(remote or out).name, tc.recipe)]),
        datasets=datasets,
    )
    result = fit_keeping_sigint(trainer)
    lap("fit_s")
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint (error: {result.error})")
    final = out / "recognizer"
    shutil.rmtree(final, ignore_errors=True)
    with result.checkpoint.as_directory() as d:
        shutil.copytree(Path(d) / "recognizer", final)
        metrics = json.loads((Path(d) / "metrics.json").read_text())
    sample = first_sequence(tc.data, exclude) if manifest.modality == "skeleton" else None
    if sample is not None:
        write_sample(final, sample)
    summary = {"recognizer": str(final), "checkpoint": result.checkpoint.path, "metrics": metrics,
               "start_epoch": start_epoch, "train_windows": train_windows, "val_windows": val_windows,
               "data_cache": cached,
               "timings": {k: v for k, v in clock.items() if k != "t"}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return publish(out, remote, summary) if remote else summary
