"""actionllm/checks.py: a shard folder or recognizer folder damaged in each way gives one problem line naming the
file and what is wrong; an intact one none. No Ray."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError

from actionllm import checks
from actionllm.checks import check_path, check_recognizer, check_shards, shards_report
from actionllm.errors import validation_line
from actionllm.skeleton import synth_gait
from actionllm.skeleton.prepare import convert
from actionllm.skeleton.shards import Manifest


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("intact") / "shards"
    convert(synth_gait.generate(subjects=4, per_subject=1, seconds=0.5, fps=30.0, seed=0), out, dataset="synth-gait",
            source_format="synth-gait", source_path="test", layout="coco17", class_names=synth_gait.CLASS_NAMES,
            protocol_name="cross-subject", protocol=synth_gait.PROTOCOLS["cross-subject"], val_fraction=0.3,
            shard_size=2)
    return out


@pytest.fixture
def shards(intact, tmp_path) -> Path:
    """A fresh copy of the intact folder, to damage."""
    return Path(shutil.copytree(intact, tmp_path / "shards"))


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_an_intact_folder_has_no_problem_and_its_hashes(intact):
    manifest = Manifest.read(intact)
    assert set(manifest.hashes) == set(manifest.shards) and len(manifest.shards) == 2
    assert all(len(h) == 64 for h in manifest.hashes.values())
    report = shards_report(intact)
    assert report.problems == [] and report.summary == "2 shards, 4 sequences"
    assert check_path(intact).kind == "shards"


def test_truncated_shard(shards):
    truncate(shards / "part-00000.parquet")
    (problem,) = check_shards(shards)
    assert problem.startswith(f"{shards / 'part-00000.parquet'}: not a readable Parquet file (")


def test_shard_without_a_column(shards):
    path = shards / "part-00001.parquet"
    pq.write_table(pq.read_table(path).drop(["label"]), path)
    problems = check_shards(shards)
    assert f"{path}: missing column(s) label of the skeleton shard schema" in problems
    assert f"{path}: changed since prepare (sha256 differs from manifest.json)" in problems


def test_column_of_the_wrong_type(shards):
    path = shards / "part-00001.parquet"
    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(["x"] * table.num_rows))
    pq.write_table(table, path)
    assert f"{path}: column 'label' is string, expected int32" in check_shards(shards, hashes=False)


def test_deleted_and_unlisted_shards(shards):
    shutil.copy(shards / "part-00001.parquet", shards / "part-00007.parquet")
    (shards / "part-00001.parquet").unlink()
    assert check_shards(shards) == [
        f"{shards / 'part-00001.parquet'}: listed in manifest.json but missing",
        f"{shards / 'part-00007.parquet'}: not listed in manifest.json (a shard of another prepare?)",
    ]


def test_one_changed_byte_is_a_hash_mismatch(shards):
    path = shards / "part-00000.parquet"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    assert check_shards(shards) == [f"{path}: changed since prepare (sha256 differs from manifest.json)"]
    assert check_shards(shards, hashes=False) == []  # the bytes still parse: only the hash tells


def test_hashes_none_skips_them_over_the_limit(shards, monkeypatch):
    path = shards / "part-00000.parquet"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    assert check_shards(shards, hashes=None)  # 2 small shards: under the limit, hashed
    monkeypatch.setattr(checks, "HASH_LIMIT", 10)
    report = shards_report(shards, hashes=None)
    assert report.problems == [] and "hashes not checked" in report.summary


def test_manifest_counts_that_do_not_match(shards):
    m = json.loads((shards / "manifest.json").read_text())
    m["counts"]["train"] += 1
    (shards / "manifest.json").write_text(json.dumps(m))
    train = m["counts"]["train"]
    assert check_shards(shards) == [f"{shards / 'manifest.json'}: counts.train is {train} but the shards hold "
                                    f"{train - 1} train sequences"]


def test_labels_outside_the_classes(shards):
    m = json.loads((shards / "manifest.json").read_text())
    m["class_names"] = ["normal"]
    (shards / "manifest.json").write_text(json.dumps(m))
    problems = check_shards(shards)
    assert problems and all("label(s) 1 outside the 1 classes of manifest.json" in p for p in problems)


def test_unreadable_manifest_is_one_line(shards):
    (shards / "manifest.json").write_text('{"dataset": "x", "dims": "three"')
    (problem,) = check_shards(shards)
    assert problem.startswith(f"{shards / 'manifest.json'}: not a readable manifest (") and "\n" not in problem
    with pytest.raises(ValueError, match="not a readable manifest"):
        Manifest.read(shards)


def test_old_manifest_without_hashes_still_reads(shards):
    m = json.loads((shards / "manifest.json").read_text())
    del m["hashes"]
    (shards / "manifest.json").write_text(json.dumps(m))
    assert Manifest.read(shards).hashes == {}
    report = shards_report(shards)
    assert report.problems == [] and report.summary.endswith("no hashes recorded")


def test_video_shards_name_missing_clips(tmp_path):
    from actionllm.video.folder import VIDEO_SCHEMA

    folder = tmp_path / "vshards"
    folder.mkdir()
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"not decoded by the check")
    rows = [{"sample_id": s, "dataset": "d", "uri": str(u), "label": 0, "label_name": "walk", "subject": "",
             "view": "", "split": "train", "num_frames": 8, "fps": 25.0, "width": 16, "height": 16, "codec": "h264"}
            for s, u in (("a", clip), ("b", tmp_path / "gone.mp4"))]
    pq.write_table(pa.Table.from_pylist(rows, schema=VIDEO_SCHEMA), folder / "part-00000.parquet")
    Manifest(dataset="d", source_format="video-folder", source_path="x", layout="video", dims=3, modality="video",
             class_names=["walk"], protocol="holdout", counts={"accepted": 2, "train": 2, "val": 0, "test": 0},
             shards=["part-00000.parquet"]).write(folder)
    report = check_path(folder)
    assert report.problems == [f"{folder / 'part-00000.parquet'}: video {tmp_path / 'gone.mp4'} does not exist"]
    assert report.summary == "1 video shards, 2 sequences, no hashes recorded"


def test_neither_kind_of_folder(tmp_path):
    assert check_path(tmp_path).problems == [f"{tmp_path}: not a shard folder or recognizer folder (no manifest.json, "
                                             "no config.json)"]
    assert check_path(tmp_path / "nowhere").problems == [f"{tmp_path / 'nowhere'} does not exist"]
    assert check_shards(tmp_path) == [f"{tmp_path} is not a shard folder: manifest.json is missing (run `actionllm "
                                      "prepare`)"]


# --- recognizer folders ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stgcn_folder(tmp_path_factory) -> Path:
    from actionllm.methods.stgcn.model import STGCNRecognizer

    rec = STGCNRecognizer({"clip": {"frames": 8}, "preset": "small"}, synth_gait.CLASS_NAMES, "coco17", 2, seed=0)
    return rec.save(tmp_path_factory.mktemp("rec") / "stgcn")


def test_an_intact_recognizer(stgcn_folder):
    report = check_path(stgcn_folder)
    assert report.kind == "recognizer" and report.problems == []
    assert report.summary == "stgcn recognizer, 1 safetensors file"


def test_truncated_and_missing_weights(stgcn_folder, tmp_path):
    folder = Path(shutil.copytree(stgcn_folder, tmp_path / "rec"))
    truncate(folder / "model.safetensors")
    (problem,) = check_recognizer(folder)
    assert problem.startswith(f"{folder / 'model.safetensors'}: not a readable safetensors file (")
    (folder / "model.safetensors").unlink()
    assert check_recognizer(folder) == [f"{folder / 'model.safetensors'} is missing (the recognizer folder is "
                                        "incomplete)"]


def test_config_json_that_is_not_a_recognizers(stgcn_folder, tmp_path):
    folder = Path(shutil.copytree(stgcn_folder, tmp_path / "rec"))
    (folder / "config.json").write_text("{not json")
    (problem,) = check_recognizer(folder)
    assert problem.startswith(f"{folder / 'config.json'}: not an ActionLLM recognizer config")
    (folder / "config.json").write_text(json.dumps({"format": "actionllm-recognizer", "recipe": "nope"}))
    (problem,) = check_recognizer(folder)
    assert problem.startswith(f"{folder / 'config.json'}: unknown recipe 'nope'")


def test_lora_adapter_truncated_is_named_by_check_and_loader(tmp_path):
    """A LoRA recipe's adapter (and the tiny base it carries): `check` names the file, and so does loading it
    (before this, PEFT's SafetensorError escaped as a traceback)."""
    from actionllm.methods import load_recognizer
    from actionllm.methods.joints_llm.model import JointsLLMRecognizer

    cfg = {"bridge": {"window": 12, "stride": 6, "precision": 1}, "backbone": {"name_or_path": "tiny"},
           "max_length": 4096}
    folder = JointsLLMRecognizer(cfg, synth_gait.CLASS_NAMES, "coco17", 2, seed=0).save(tmp_path / "jl")
    assert check_recognizer(folder) == []
    truncate(folder / "adapter_model.safetensors")
    truncate(folder / "base" / "model.safetensors")
    problems = check_recognizer(folder)
    assert [p.split(":")[0] for p in problems] == [str(folder / "adapter_model.safetensors"),
                                                   str(folder / "base" / "model.safetensors")]
    with pytest.raises(ValueError, match="adapter_model.safetensors: not a readable safetensors file"):
        load_recognizer(folder)


# --- configs ---------------------------------------------------------------------------------------------------
def test_yaml_config_of_the_wrong_type_is_one_line(tmp_path):
    from training.config import TrainConfig

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"recipe": "stgcn", "data": "d", "output": "o", "epochs": "many"}))
    with pytest.raises(ValidationError) as err:
        TrainConfig.from_yaml(path)
    assert validation_line(err.value) == "epochs: Input should be a valid integer, unable to parse string as an integer"
    path.write_text("recipe: stgcn\nepochs: [1\n")
    with pytest.raises(ValueError, match=r"config.yaml, line \d+, column \d+: not valid YAML \(") as err:
        TrainConfig.from_yaml(path)
    assert "\n" not in str(err.value)


def test_recipe_config_error_has_its_path():
    from actionllm.methods import get_recipe

    with pytest.raises(ValidationError) as err:
        get_recipe("joints-llm").config({"lora": {"r": "x"}})
    assert validation_line(err.value, "recipe_config").startswith("recipe_config.lora.r: Input should be a valid "
                                                                  "integer")
