"""Ray Train on a real local Ray: 2 workers, tiny Llama + LoRA, real MSR Action3D shards; crash and resume.
(stgcn through the same loop on real MSR: tests/e2e/test_train_cli.py, through the console script.)"""

import json
from pathlib import Path

import pytest

from actionllm.evaluation import evaluate
from actionllm.skeleton.formats import get_reader
from actionllm.skeleton.prepare import prepare
from training.config import TrainConfig
from training.train import run_training

pytestmark = pytest.mark.ray

SMALL = {"bridge": {"window": 12, "stride": 12, "precision": 1}, "backbone": {"name_or_path": "tiny"}}


@pytest.fixture(scope="module")
def msr_shards(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("msr") / "shards"
    prepare(get_reader("msr-action3d")(data_root / "msr_action3d"), out, "cross-subject", val_fraction=0.1)
    return out


def test_two_worker_training_on_msr_then_evaluate(ray_local, msr_shards, tmp_path):
    tc = TrainConfig(data=str(msr_shards), output=str(tmp_path / "run"), workers=2, epochs=1, max_steps=4,
                     batch_size=2, log_every=1, recipe_config=SMALL, lr=1e-3, data_cache="never")
    summary = run_training(tc)
    assert summary["data_cache"] is False  # the Ray Data pipeline, as for data larger than memory
    rec = Path(summary["recognizer"])
    assert (rec / "adapter_model.safetensors").is_file() and (rec / "head.safetensors").is_file()
    m = summary["metrics"]
    assert m["step"] == 4 and m["val_windows"] > 0 and 0 <= m["val_accuracy"] <= 1
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert [x["step"] for x in steps] == [1, 2, 3, 4]
    assert all(x["tokens_per_s"] > 0 and x["samples_per_s"] > 0 for x in steps)
    report = evaluate(str(rec), str(msr_shards), split="test", report=str(tmp_path / "report"), limit=6)
    assert report["sequences"] == 6 and 0 <= report["top1"] <= 1 and report["top5"] >= report["top1"]
    for name in ["report.json", "confusion.png", "attention_frames.png", "attention_joints.png"]:
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_worker_crash_resumes_from_checkpoint(ray_local, tmp_path):
    from actionllm.skeleton import synth_gait
    from actionllm.skeleton.prepare import convert

    shards = tmp_path / "gait"
    convert(synth_gait.generate(subjects=8, per_subject=1, seconds=0.8, seed=1), shards, dataset="synth-gait",
            source_format="synth-gait", source_path="test", layout="coco17", class_names=synth_gait.CLASS_NAMES,
            protocol_name="cross-subject", protocol=synth_gait.PROTOCOLS["cross-subject"], val_fraction=0.3)
    out = tmp_path / "run"
    cfg = {**SMALL, "bridge": {"window": 12, "stride": 12, "precision": 1}}
    tc = TrainConfig(data=str(shards), output=str(out), workers=2, epochs=2, batch_size=2,
                     recipe_config=cfg, fail_at_epoch=0, max_failures=1, log_every=1)
    summary = run_training(tc)
    assert summary["data_cache"] is True  # small data: read once, held in memory (auto), also after the restart
    assert (out / ".injected_failure").is_file()  # the crash happened
    epochs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"kind": "epoch"' in x]
    assert [e["epoch"] for e in epochs] == [0, 1]  # epoch 0 was not re-run after the crash
    assert "killed at the first step of epoch 1" in (out / ".injected_failure").read_text()
    assert summary["metrics"]["epoch"] == 1 and summary["metrics"]["step"] == epochs[1]["step"]
