"""Training metrics for Prometheus: every epoch report of a Ray Train run becomes Ray metrics.

`TrainMetricsExporter` is a `ray.train.UserCallback`; it runs in the Train controller, sets Ray gauges
(`ray.util.metrics`), and Ray's metrics agent on that node exports them with the `ray_` prefix on its
metrics-export port, next to Ray's own (`ray_train_*`, `ray_node_gpus_utilization`, ...). Names:
ray_actionllm_train_loss, ray_actionllm_train_accuracy, ray_actionllm_val_loss, ray_actionllm_val_accuracy,
ray_actionllm_train_tokens_per_second, ray_actionllm_train_samples_per_second, ray_actionllm_train_epoch,
ray_actionllm_train_step -- tagged run (the output folder's name) and recipe. deploy/grafana/ plots them.
"""

from __future__ import annotations

import ray.train

# reported metric -> (gauge name, description)
GAUGES = {
    "train_loss": ("actionllm_train_loss", "Training loss of the last epoch (mean over windows and workers)"),
    "train_accuracy": ("actionllm_train_accuracy", "Training window accuracy of the last epoch"),
    "val_loss": ("actionllm_val_loss", "Validation loss at the last evaluation"),
    "val_accuracy": ("actionllm_val_accuracy", "Validation window accuracy at the last evaluation"),
    "tokens_per_s": ("actionllm_train_tokens_per_second", "LLM tokens per second in the last epoch (all workers)"),
    "samples_per_s": ("actionllm_train_samples_per_second", "Windows per second in the last epoch (all workers)"),
    "epoch": ("actionllm_train_epoch", "Last finished epoch"),
    "step": ("actionllm_train_step", "Optimiser steps so far"),
}
TAG_KEYS = ("run", "recipe")


class TrainMetricsExporter(ray.train.UserCallback):
    """Rank 0's report of each epoch -> Ray gauges (created lazily in the controller process)."""

    def __init__(self, run: str, recipe: str):
        self.tags = {"run": run, "recipe": recipe}
        self._gauges: dict | None = None

    def __getstate__(self):  # the gauges live in the controller; only the tags travel
        return {"tags": self.tags, "_gauges": None}

    def gauges(self) -> dict:
        if self._gauges is None:
            from ray.util.metrics import Gauge

            self._gauges = {key: Gauge(name, description=desc, tag_keys=TAG_KEYS)
                            for key, (name, desc) in GAUGES.items()}
        return self._gauges

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        reported = metrics[0] if metrics else {}
        for key, gauge in self.gauges().items():
            value = reported.get(key)
            if isinstance(value, int | float):
                gauge.set(float(value), tags=self.tags)
