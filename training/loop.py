"""One `train_loop_per_worker` for every recipe: the loop knows recipes only through the registry and the
recognizer contract (actionllm.contract.RecognizerBase: forward, collate_fn, param_groups, load_weights,
save). Checkpoint every epoch (recognizer folder + optimiser/scheduler state), resume from
the latest after a worker-group restart, metrics per step on rank 0."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.data.collate_fn import NumpyBatchCollateFn

from actionllm.contract import RecognizerBase
from actionllm.registry import get_recipe

from .config import TrainConfig
from .resume import SNAPSHOT

STATE = "train_state.pt"
# Ray Train V2 patches print() in workers and tees it (each line twice in the driver); a logger prints once
log = logging.getLogger("actionllm.train")


class RecipeCollate(NumpyBatchCollateFn):
    """The recognizer's collate_fn (numpy rows -> tensors) as Ray Data's collate class; with `preprocess`, the
    stage's preprocessor first (window rows -> its inputs: data held in memory, see train.stage_datasets)."""

    def __init__(self, fn, preprocess=None):
        self.fn, self.preprocess = fn, preprocess

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return self.fn(self.preprocess(batch) if self.preprocess is not None else batch)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX: Zen 4, Sapphire Rapids and later)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def training_autocast(mode: str, device: torch.device) -> torch.autocast:
    """The training forward's autocast (TrainConfig.autocast): bf16 on CUDA unless off, on CPU only if asked."""
    on = mode == "bf16" or (mode == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def slow_autocast_warning(mode: str, device: torch.device) -> str | None:
    """What to tell a user who asked for bf16 on a CPU that emulates it (None when that is not the case)."""
    if mode == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        return ("autocast bf16 on a CPU without native bf16 instructions (avx512_bf16 / amx_bf16): expect it to be "
                "slower than autocast: off")
    return None


def timed(batches, clock: dict):
    """The batches of an iterator, with the time spent waiting for each added to clock["data_s"] and the wait for
    the first one kept in clock["first_batch_s"] (the pipeline's start-up each epoch)."""
    it = iter(batches)
    while True:
        t = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        wait = time.perf_counter() - t
        clock.setdefault("first_batch_s", wait)
        clock["data_s"] = clock.get("data_s", 0.0) + wait
        yield batch


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def class_weight_tensor(mode: str, counts: list[int]) -> torch.Tensor | None:
    """'balanced': w_k = n / (K * n_k) (inverse frequency, as scikit-learn's)."""
    if mode != "balanced":
        return None
    counts_t = torch.tensor(counts, dtype=torch.float32).clamp(min=1)
    return counts_t.sum() / (len(counts) * counts_t)


def _all_reduce(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def _add_stats(acc: dict, out: dict) -> None:
    """Sum a forward's optional `stats` (tensors: counts, sums) into `acc` (numpy)."""
    for k, v in (out.get("stats") or {}).items():
        v = v.detach().double().cpu().numpy()
        acc[k] = acc[k] + v if k in acc else v


def _reduce_stats(acc: dict) -> dict:
    """Sum each stat over workers (every rank holds the same keys: same recognizer, same forward)."""
    out = {}
    for k in sorted(acc):
        t = torch.as_tensor(acc[k], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(t)
        out[k] = t.numpy()
    return out


def evaluate_shard(model, shard, batch_size: int, collate_fn, device, preprocess=None) -> dict:
    """Window loss/accuracy on this worker's shard, summed over workers (+ the recognizer's own summary of
    its `stats`, prefixed val_). A recognizer without logits (a VQ-VAE stage) reports no accuracy."""
    model.eval()
    loss_sum, correct, total, stats, has_logits = 0.0, 0.0, 0.0, {}, False
    with torch.no_grad():
        for batch in shard.iter_torch_batches(batch_size=batch_size, collate_fn=RecipeCollate(collate_fn, preprocess)):
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            loss_sum += float(out["loss"]) * len(batch["labels"])
            if out.get("logits") is not None:
                has_logits = True
                correct += float((out["logits"].argmax(-1) == batch["labels"]).sum())
            total += len(batch["labels"])
            _add_stats(stats, out)
    model.train()
    loss_sum, correct, total = _all_reduce([loss_sum, correct, total])
    result = {"val_loss": loss_sum / max(total, 1), "val_windows": int(total)}
    if has_logits:
        result["val_accuracy"] = correct / max(total, 1)
    if stats:
        result.update({f"val_{k}": v for k, v in _unwrap(model).summarise(_reduce_stats(stats)).items()})
    return result


def build_optimiser(rec: RecognizerBase, tc: TrainConfig, total_steps: int):
    groups = rec.param_groups(tc.lr, tc.head_lr)
    if tc.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, nesterov=tc.momentum > 0,
                              weight_decay=tc.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    from transformers import get_cosine_schedule_with_warmup  # (imported only where a run trains)

    sched = get_cosine_schedule_with_warmup(opt, math.ceil(tc.warmup_ratio * total_steps), total_steps)
    return opt, sched


def save_checkpoint(rec: RecognizerBase, opt, sched, epoch: int, step: int, metrics: dict, rank: int) -> None:
    """Rank 0 writes the recognizer folder + optimiser state and reports it; other ranks report metrics."""
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        rec.save(Path(tmp) / "recognizer")
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch, "step": step},
                   Path(tmp) / STATE)
        (Path(tmp) / "metrics.json").write_text(json.dumps(metrics))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def maybe_inject_failure(tc: TrainConfig, epoch: int, rank: int, world: int) -> None:
    """Testing fault tolerance: the last worker dies hard (os._exit, not an exception the loop could catch)
    at the first optimiser step after epoch `fail_at_epoch` was checkpointed -- once per run folder.

    "Checkpointed" means registered by Ray Train's controller, which collects the workers' reports when it polls
    them (every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: 2 s, 0.5 s on our own Ray) and then writes its checkpoint_manager_snapshot.json:
    a worker that dies within that poll of its report loses that checkpoint, and the run resumes from the one
    before. The injected failure waits (at most 30 s) for the snapshot to be written, so that it tests a resume
    from the reported epoch; with data held in memory the next epoch's first step follows the report at once."""
    if tc.fail_at_epoch is None or epoch != tc.fail_at_epoch + 1 or rank != world - 1:
        return
    marker = Path(tc.output) / ".injected_failure"
    if not marker.exists():
        snapshot = Path(tc.output) / SNAPSHOT
        deadline = time.time() + 30
        while not snapshot.is_file() and time.time() < deadline:
            time.sleep(0.2)
        marker.write_text(f"worker {rank} killed at the first step of epoch {epoch}\n")
        os._exit(1)


def train_loop_per_worker(config: dict) -> None:
    tc = TrainConfig.model_validate(config["train"])
    ds_meta = config["dataset"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(tc.seed)
    device = ray.train.torch.get_device()
    rec = get_recipe(tc.recipe).recognizer_cls(tc.stage)(tc.recipe_config, ds_meta["class_names"], ds_meta["layout"],
                                                         ds_meta["dims"], seed=tc.seed)
    steps_per_epoch = max(1, math.ceil(ds_meta["train_windows"] / world / tc.batch_size / tc.grad_accum))
    if tc.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, tc.max_steps_per_epoch)
    total_steps = min(tc.max_steps or 10**12, steps_per_epoch * tc.epochs)
    opt, sched = build_optimiser(rec, tc, total_steps)
    start_epoch, step = 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            rec.load_weights(Path(d) / "recognizer")
            state = torch.load(Path(d) / STATE, weights_only=True)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start_epoch, step = state["epoch"] + 1, state["step"]
        if rank == 0:
            log.info(f"[rank 0] resumed from checkpoint: epoch {start_epoch}, step {step}")
    collate_fn = rec.collate_fn()
    # data held in memory (train.stage_datasets) reaches the workers as raw windows: preprocess here, the train
    # split augmented (a stream of draws per worker), the val split as evaluation and serving see it
    preprocess, val_preprocess = ((type(rec).preprocessor(rec.cfg, ds_meta["layout"], ds_meta["dims"], train=True,
                                                          seed=tc.seed * 1000 + rank),
                                   type(rec).preprocessor(rec.cfg, ds_meta["layout"], ds_meta["dims"], train=False))
                                  if ds_meta.get("preprocess_in_worker") else (None, None))
    cw = class_weight_tensor(rec.cfg.class_weights, ds_meta["class_counts"])
    cw = cw.to(device) if cw is not None else None
    model = ray.train.torch.prepare_model(rec)
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    log_path = Path(tc.output) / "metrics.jsonl"
    if rank == 0:  # what the CLI's progress bar needs to know before the first step line
        with log_path.open("a") as f:
            f.write(json.dumps({"kind": "start", "epochs": tc.epochs, "steps_per_epoch": steps_per_epoch,
                                "total_steps": total_steps, "start_epoch": start_epoch, "workers": world,
                                "time": time.time()}) + "\n")
    first_step = True
    autocast = training_autocast(tc.autocast, device)
    slow = slow_autocast_warning(tc.autocast, device)
    if rank == 0 and slow:
        log.warning(slow)
    for epoch in range(start_epoch, tc.epochs):
        t0, tokens, samples, micro = time.perf_counter(), 0, 0, 0
        epoch_start_step = step
        run_loss, run_correct, run_n, stats = 0.0, 0.0, 0, {}
        step_loss, step_n = 0.0, 0  # this optimiser step's windows (its grad_accum micro-batches), on this rank
        clock: dict[str, float] = {}  # where the epoch's time went (rank 0's view): waiting for data, validating
        for batch in timed(train_shard.iter_torch_batches(batch_size=tc.batch_size,
                                                          local_shuffle_buffer_size=tc.shuffle_buffer or None,
                                                          local_shuffle_seed=tc.seed + epoch,
                                                          collate_fn=RecipeCollate(collate_fn, preprocess)),
                           clock):
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast:
                out = model(**batch, class_weights=cw)
            (out["loss"] / tc.grad_accum).backward()
            micro += 1
            tokens += _unwrap(model).count_tokens(batch)
            samples += len(batch["labels"])
            loss_value = out["loss"].detach().item()  # detach: no grad-carrying tensor -> Python float
            run_loss += loss_value * len(batch["labels"])
            step_loss, step_n = step_loss + loss_value * len(batch["labels"]), step_n + len(batch["labels"])
            if out.get("logits") is not None:  # a generative/VQ-VAE stage may not score classes in training
                run_correct += float((out["logits"].argmax(-1) == batch["labels"]).sum())
            run_n += len(batch["labels"])
            _add_stats(stats, out)
            if micro % tc.grad_accum:
                continue
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], tc.max_grad_norm)
            opt.step()
            _unwrap(model).after_step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if rank == 0 and first_step:  # wall clock of this run's first optimiser step (bench/train_overhead.py)
                first_step = False
                with log_path.open("a") as f:
                    f.write(json.dumps({"kind": "first_step", "step": step, "time": time.time()}) + "\n")
            maybe_inject_failure(tc, epoch, rank, world)
            if rank == 0 and step % tc.log_every == 0:
                dt = time.perf_counter() - t0
                # loss: this step's (rank 0's windows); running_*: means over the epoch so far (rank 0)
                line = {"epoch": epoch, "step": step, "loss": step_loss / max(step_n, 1),
                        "running_loss": run_loss / run_n,
                        **({"running_accuracy": run_correct / run_n} if out.get("logits") is not None else {}),
                        "lr": sched.get_last_lr()[0], "samples_per_s": samples * world / dt}
                if tokens:
                    line["tokens_per_s"] = tokens * world / dt
                log.info("[rank 0] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in line.items()))
                with log_path.open("a") as f:
                    f.write(json.dumps(line) + "\n")
            step_loss, step_n = 0.0, 0
            if step >= total_steps or (tc.max_steps_per_epoch and step - epoch_start_step >= tc.max_steps_per_epoch):
                break
        dt = time.perf_counter() - t0
        train_stats = _all_reduce([run_loss, run_correct, float(run_n), float(tokens)])
        # epochs_done: ASHA's time axis in a search (it stays right for a trial resumed from a checkpoint)
        metrics = {"epoch": epoch, "epochs_done": epoch + 1, "step": step,
                   "train_loss": train_stats[0] / max(train_stats[2], 1),
                   **({"train_accuracy": train_stats[1] / max(train_stats[2], 1)}
                      if out.get("logits") is not None else {}),
                   "samples_per_s": train_stats[2] / dt, "epoch_s": dt,
                   **({"tokens_per_s": train_stats[3] / dt} if train_stats[3] else {})}
        if stats:
            metrics.update({f"train_{k}": v for k, v in _unwrap(model).summarise(_reduce_stats(stats)).items()})
        last = epoch == tc.epochs - 1 or step >= total_steps
        metrics.update(clock)  # first_batch_s, data_s: inside epoch_s
        if last or (epoch + 1) % tc.eval_every == 0:
            t_val = time.perf_counter()
            metrics.update(evaluate_shard(model, val_shard, tc.batch_size, collate_fn, device, val_preprocess))
            metrics["val_s"] = time.perf_counter() - t_val
        if rank == 0:
            log.info(f"[rank 0] epoch {epoch} done: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                               for k, v in metrics.items()}))
            with log_path.open("a") as f:
                f.write(json.dumps({"kind": "epoch", **metrics}) + "\n")
        t_ckpt = time.perf_counter()
        save_checkpoint(_unwrap(model), opt, sched, epoch, step, metrics, rank)
        if rank == 0:  # the checkpoint's write and report: between this epoch's end and the next one's start
            with log_path.open("a") as f:
                f.write(json.dumps({"kind": "checkpoint", "epoch": epoch,
                                    "checkpoint_s": time.perf_counter() - t_ckpt}) + "\n")
        if step >= total_steps:
            break
