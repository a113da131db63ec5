"""A training run whose `--output` is a storage URI (s3://, gs://, file://): what `run_training` does with it.

Ray Train writes the checkpoints straight to `<output>/ray` (its `storage_path` takes URIs). The run's own
files (train_config.json, summary.json, recognizer/, metrics.jsonl) are written to a local staging folder
(`actionllm.storage.local_run_dir`) and uploaded to `<output>` when the run ends. metrics.jsonl is written by
rank 0 on its own node: it reaches the bucket when rank 0 ran on the driver's node; every epoch's metrics are
in each checkpoint's metrics.json in any case.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

from actionllm import storage


def with_run_dir(loop):
    """The train loop, creating its run folder first on whichever node the worker runs (the driver created it
    only on its own node)."""
    @functools.wraps(loop)
    def run(config: dict):
        Path(config["train"]["output"]).mkdir(parents=True, exist_ok=True)
        return loop(config)

    return run


def checkpoint_path(remote: str | None, out: Path) -> str:
    """Ray Train's storage_path: `<output>/ray`, a URI or a local folder."""
    return storage.join(remote, "ray") if remote else str(out / "ray")


def publish(out: Path, remote: str, summary: dict) -> dict:
    """Upload the staged run folder to `remote` and remove the staging copy; the returned summary names the
    uploaded recognizer."""
    summary = {**summary, "recognizer": storage.join(remote, "recognizer"), "output": remote}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    storage.upload_dir(out, remote)
    shutil.rmtree(out, ignore_errors=True)
    return summary
