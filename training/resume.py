"""A run folder that already holds a run: the same `train` command resumes it, never silently starts it over.

Ray Train restores a run by itself when its storage folder (`<output>/ray/train`) holds a checkpoint-manager
snapshot: the workers get the latest registered checkpoint (recognizer weights, optimiser, scheduler, epoch, step;
the loop in loop.py picks up from the next epoch, and its shuffle seed is `seed + epoch`, so the data order of
the remaining epochs is the one the first run would have used). This module is the driver's side of it, run before
Ray starts:

- `inspect_run` says what the folder holds: nothing, a run cut off before its first checkpoint, a run to resume
  (which checkpoint, which epoch), or a finished run;
- a rerun with other settings than the stored `train_config.json` is refused, naming the settings that differ,
  except the FREE ones (where and how the run is supervised: workers, GPU, failure budget, ...);
- `clear_run` is `train --restart`: it removes what a run wrote, so that it starts from epoch 0 on purpose.

Storage URIs (`--output s3://...`) are not inspected here: Ray Train still restores from the URI's snapshot.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

# fields that may differ between an interrupted run and its rerun: where the run executes and how it is
# supervised, not what it learns (a checkpoint holds full weights, so another worker count reads it too)
FREE = frozenset({"output", "workers", "use_gpu", "cpus_per_worker", "max_failures", "fail_at_epoch", "num_to_keep",
                  "log_every"})
# what a run writes into its folder (train.log is kept: the rerun appends to it)
RUN_FILES = ("ray", "recognizer", "summary.json", "metrics.jsonl", "train_config.json", ".injected_failure")
SNAPSHOT = Path("ray") / "train" / "checkpoint_manager_snapshot.json"


@dataclass
class PreviousRun:
    state: str  # "none" | "no-checkpoint" | "resume" | "done"
    checkpoint: str | None = None  # the checkpoint folder the run resumes from
    epoch: int | None = None  # the last finished epoch (0-based)
    step: int | None = None
    summary: dict | None = None  # state "done": the finished run's summary.json

    def describe(self, out: Path, epochs: int) -> str:
        if self.state == "resume":
            return (f"resuming {out} from its last checkpoint: epoch {self.epoch + 1} of {epochs} done, step "
                    f"{self.step} ({self.checkpoint}); --restart starts over")
        if self.state == "no-checkpoint":
            return f"{out} holds a run stopped before its first checkpoint: starting again from epoch 0"
        if self.state == "done":
            return f"{out} is already trained ({out / 'recognizer'}): nothing to do; --restart trains it again"
        return ""


def latest_checkpoint(out: Path) -> dict | None:
    """The latest checkpoint Ray Train registered in `out` (its folder name, epoch, step), or None."""
    path = out / SNAPSHOT
    if not path.is_file():
        return None
    try:
        latest = json.loads(path.read_text()).get("latest_checkpoint_result") or {}
    except (OSError, ValueError):
        return None
    name, metrics = latest.get("checkpoint_dir_name"), latest.get("metrics") or {}
    if not name or "epoch" not in metrics or not (path.parent / name).is_dir():
        return None
    return {"dir": name, "epoch": int(metrics["epoch"]), "step": int(metrics.get("step", 0))}


def config_changes(old: dict, new: dict) -> list[str]:
    """The settings of `new` that differ from the stored run's `old` (FREE fields aside), as `key old -> new`;
    nested recipe_config values by their dotted path."""
    def flat(d: dict, prefix: str = "") -> dict:
        items = {}
        for k, v in d.items():
            if isinstance(v, dict) and v:
                items.update(flat(v, f"{prefix}{k}."))
            else:
                items[f"{prefix}{k}"] = v
        return items

    a, b = flat({k: v for k, v in old.items() if k not in FREE}), flat({k: v for k, v in new.items() if k not in FREE})
    if "data" in a and "data" in b and "://" not in str(a["data"]) + str(b["data"]):
        a["data"], b["data"] = str(Path(a["data"]).resolve()), str(Path(b["data"]).resolve())
    return [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def inspect_run(out: Path, new_config: dict) -> PreviousRun:
    """What `out` holds for a run of `new_config` (a TrainConfig dumped as JSON). Raises ValueError when it
    holds a run with other settings."""
    stored = out / "train_config.json"
    if not stored.is_file():
        return PreviousRun("no-checkpoint" if (out / "ray" / "train").is_dir() else "none")
    try:
        old = json.loads(stored.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{stored}: not readable ({err}); --restart starts the run over") from None
    changes = config_changes(old, new_config)
    if changes:
        shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        raise ValueError(f"--output {out} holds a run with other settings ({shown}): run the same command to "
                         "resume it, add --restart to start over with the new settings, or give another --output")
    summary = _read_json(out / "summary.json")
    if summary and summary.get("recognizer") == str(out / "recognizer") and (out / "recognizer" / "config.json").is_file():
        return PreviousRun("done", summary=summary)
    latest = latest_checkpoint(out)
    if latest is None:
        return PreviousRun("no-checkpoint")
    return PreviousRun("resume", checkpoint=latest["dir"], epoch=latest["epoch"], step=latest["step"])


def clear_run(out: Path, stages: list[str] | None = None) -> list[str]:
    """`train --restart`: remove what a run wrote in `out` (and in `out/<stage>` for each earlier stage named in
    `stages`); returns what was removed."""
    removed = []
    for folder in [out, *(out / s for s in stages or [])]:
        for name in RUN_FILES:
            path = folder / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            removed.append(str(path))
    return removed


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None
