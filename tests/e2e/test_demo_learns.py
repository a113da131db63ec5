"""`make demo` learns (issue 15, item 3): the demo's data and config through the console script, as the
Makefile runs them (synth-gait -> train -> evaluate), reach test top-1 >= 0.90 and AUC >= 0.95."""

import json
from pathlib import Path

from cli_helpers import run

DEMO_YAML = Path(__file__).resolve().parents[2] / "actionllm" / "methods" / "stgcn" / "configs" / "demo-gait.yaml"


def test_demo_config_learns_synthetic_gait(tmp_path):
    shards, out, report = tmp_path / "shards", tmp_path / "run", tmp_path / "report"
    run("synth-gait", "--out", shards, "--subjects", 12, "--per-subject", 4, "--seconds", 4)  # the Makefile's set
    run("train", "--config", DEMO_YAML, "--data", shards, "--output", out, timeout=600)
    run("evaluate", "--checkpoint", out / "recognizer", "--data", shards, "--split", "test", "--report", report)
    result = json.loads((report / "report.json").read_text())
    assert result["sequences"] == 16
    assert result["top1"] >= 0.90 and result["auc"] >= 0.95, result
