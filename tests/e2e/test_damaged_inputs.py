"""Damaged inputs through the console script: `check`, `train`, `evaluate` and `predict` each answer one line
naming the file and what is wrong, exit 2, no traceback -- and `train` before Ray starts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cli_helpers import run

from actionllm.skeleton import synth_gait
from actionllm.skeleton.prepare import convert


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def error_lines(proc) -> list[str]:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    return [ln for ln in proc.stderr.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """An intact shard folder and stgcn recognizer, and damaged copies of each (a truncated shard, a truncated
    model.safetensors)."""
    from actionllm.methods.stgcn.model import STGCNRecognizer

    root = tmp_path_factory.mktemp("damaged")
    shards = root / "shards"
    convert(synth_gait.generate(subjects=6, per_subject=1, seconds=0.5, fps=30.0, seed=0), shards,
            dataset="synth-gait", source_format="synth-gait", source_path="test", layout="coco17",
            class_names=synth_gait.CLASS_NAMES, protocol_name="cross-subject",
            protocol=synth_gait.PROTOCOLS["cross-subject"], val_fraction=0.5, shard_size=2)
    rec = STGCNRecognizer({"clip": {"frames": 8}, "preset": "small"}, synth_gait.CLASS_NAMES, "coco17", 2,
                          seed=0).save(root / "rec")
    bad_shards, bad_rec = shutil.copytree(shards, root / "bad_shards"), shutil.copytree(rec, root / "bad_rec")
    truncate(Path(bad_shards) / "part-00000.parquet")
    truncate(Path(bad_rec) / "model.safetensors")
    return {"root": root, "shards": shards, "rec": rec, "bad_shards": Path(bad_shards), "bad_rec": Path(bad_rec)}


def test_check(folders):
    """One run over intact and damaged folders (each start imports the recipes: one start, not two)."""
    proc = run("check", folders["shards"], folders["rec"], folders["bad_shards"], folders["bad_rec"], check=False)
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [f"ok: {folders['shards']} (3 shards, 6 sequences)",
                                        f"ok: {folders['rec']} (stgcn recognizer, 1 safetensors file)"]
    assert error_lines(proc) == [
        f"error: {folders['bad_shards'] / 'part-00000.parquet'}: not a readable Parquet file (Parquet magic bytes "
        "not found in footer. Either the file is corrupted or this is not a parquet file.)",
        f"error: {folders['bad_rec'] / 'model.safetensors'}: not a readable safetensors file (Error while "
        "deserializing header: incomplete metadata, file not fully covered)"]
    proc = run("check", folders["shards"], check=False)  # shards only: no recipe is imported
    assert proc.returncode == 0 and proc.stdout.startswith("ok:") and not proc.stderr


def test_train_on_a_truncated_shard_fails_before_ray(folders):
    output = folders["root"] / "run"
    proc = run("train", "--recipe", "stgcn", "--data", folders["bad_shards"], "--output", output, "--epochs", 1,
               check=False)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith(f"error: {folders['bad_shards'] / 'part-00000.parquet'}: not a readable Parquet file")
    assert not output.exists()  # refused before the run folder (its train.log) and Ray


def test_train_config_of_the_wrong_type(folders):
    bad = folders["root"] / "bad.yaml"
    bad.write_text(f"recipe: stgcn\ndata: {folders['shards']}\noutput: {folders['root'] / 'run2'}\nepochs: many\n")
    proc = run("train", "--config", bad, check=False)
    assert proc.returncode == 2
    assert error_lines(proc) == [f"error: {bad}: epochs: Input should be a valid integer, unable to parse string as "
                                 "an integer"]


def test_evaluate_and_predict_with_a_truncated_safetensors(folders):
    named = f"error: {folders['bad_rec'] / 'model.safetensors'}: not a readable safetensors file ("
    proc = run("evaluate", "--checkpoint", folders["bad_rec"], "--data", folders["shards"], check=False)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith(named)
    proc = run("predict", "--checkpoint", folders["bad_rec"], "--input", folders["root"], "--format", "coco-keypoints",
               check=False)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith(named)
