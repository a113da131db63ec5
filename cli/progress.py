"""What a person sees while `train` runs: its own lines, not Ray's.

`run_log(path)` sends everything the process and its children write to fd 1/2 (Ray's driver logs, worker
output forwarded by Ray, library warnings) to a log file in the run folder, while the CLI's consoles keep
writing to the terminal. `TrainProgress` follows the run's `metrics.jsonl` files (rank 0 writes a start record,
a line every `log_every` steps and one per epoch) and shows a rich progress bar per epoch with the step's loss,
accuracy and windows/s, and one line per finished epoch.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .common import console, out


@contextlib.contextmanager
def run_log(path: Path, verbose: bool = False):
    """Redirect fd 1 and 2 (this process and the processes it starts) to `path`; the consoles stay on the
    terminal. With `verbose`, nothing is redirected."""
    if verbose:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = open(path, "a", buffering=1)  # noqa: SIM115  (closed below, after the fds are restored)
    real_out, real_err = os.fdopen(os.dup(saved[0]), "w", buffering=1), os.fdopen(os.dup(saved[1]), "w", buffering=1)
    files = out.file, console.file
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    out.file, console.file = real_out, real_err
    try:
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        out.file, console.file = files
        for f in (real_out, real_err, log):
            f.close()
        for fd in saved:
            os.close(fd)


def stop_ray() -> None:
    """Shut down the Ray this process started or joined (its log monitor prints as long as it runs)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def scratch_log(name: str) -> Path:
    """A log file for a command that has no run folder of its own (stream, serve --once)."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"actionllm-{os.getuid() if hasattr(os, 'getuid') else 0}" / f"{name}.log"


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


class TrainProgress:
    """Follow <output>/**/metrics.jsonl (each stage of a multi-stage recipe has its own) from where they end now."""

    def __init__(self, output: Path, interval: float = 0.5):
        self.output, self.interval = Path(output), interval
        self.offsets: dict[Path, int] = {p: p.stat().st_size for p in self._files()}
        self.stop = threading.Event()
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                            disable=not console.is_terminal)
        self.task = None
        self.epochs: list[dict] = []

    def _files(self) -> list[Path]:
        if not self.output.is_dir():
            return []
        return sorted(p for p in self.output.rglob("metrics.jsonl") if "ray" not in p.relative_to(self.output).parts)

    def _stage(self, path: Path) -> str:
        rel = path.parent.relative_to(self.output).parts
        return f"{rel[0]} " if rel else ""

    def poll(self) -> None:
        for path in self._files():
            start = self.offsets.get(path, 0)
            with path.open() as f:
                f.seek(start)
                text = f.read()
            complete = text[: text.rfind("\n") + 1]  # a line still being written waits for the next poll
            self.offsets[path] = start + len(complete.encode())
            for line in complete.splitlines():
                try:
                    self.show(json.loads(line), self._stage(path))
                except (json.JSONDecodeError, TypeError, KeyError):
                    continue

    def show(self, rec: dict, stage: str) -> None:
        kind = rec.get("kind", "step")
        if kind == "start":
            self.steps_per_epoch = rec.get("steps_per_epoch")
            self.total_epochs = rec.get("epochs")
        elif kind == "step":
            epoch = rec["epoch"]
            desc = f"{stage}epoch {epoch + 1}/{getattr(self, 'total_epochs', '?')}"
            total = getattr(self, "steps_per_epoch", None)
            done = rec["step"] - epoch * total if total else rec["step"]
            named = {"loss": "loss", "running_accuracy": "acc (epoch so far)", "accuracy": "acc (epoch so far)"}
            info = "  ".join(f"{label} {_fmt(rec[k])}" for k, label in named.items() if k in rec)
            info += f"  {rec.get('samples_per_s', 0):.1f} windows/s"
            if self.task is None or self.bar.tasks[self.task].description != desc:
                if self.task is not None:
                    self.bar.update(self.task, visible=False)
                self.task = self.bar.add_task(desc, total=total, info=info)
            self.bar.update(self.task, completed=done, info=info)
        elif kind == "epoch":
            self.epochs.append(rec)
            keys = [k for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "samples_per_s", "epoch_s",
                                "data_s")
                    if k in rec]
            self.bar.console.print(f"{stage}epoch {rec['epoch'] + 1}: " + "  ".join(f"{k} {_fmt(rec[k])}" for k in keys),
                                   highlight=False)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.poll()

    def __enter__(self):
        self.bar.start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.poll()
        self.bar.stop()
