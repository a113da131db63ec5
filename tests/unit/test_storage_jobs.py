"""Storage URIs (actionllm/storage.py: shards and run folders behind file:// as behind s3:// or gs://) and the pieces
of `actionllm submit` that need no cluster: token lookup, addresses, runtime_env, entrypoint, path warnings."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from actionllm import storage
from actionllm.skeleton import synth_gait
from actionllm.skeleton.prepare import convert
from actionllm.skeleton.shards import Manifest, read_shards, shard_files
from cluster import jobs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bucket") / "shards"
    items = synth_gait.generate(subjects=4, per_subject=1, seconds=0.5, fps=30.0, seed=0)
    convert(items, out, dataset="synth-gait", source_format="synth-gait", source_path="test", layout="coco17",
            class_names=synth_gait.CLASS_NAMES, protocol_name="cross-subject",
            protocol=synth_gait.PROTOCOLS["cross-subject"], protocols_available=["cross-subject"],
            val_fraction=0.3, shard_size=2)
    return out


def test_uri_helpers():
    assert storage.is_uri("s3://bucket/x") and storage.is_uri("gs://b/x") and storage.is_uri("file:///tmp/x")
    assert not storage.is_uri("/tmp/x") and not storage.is_uri("data/msr") and not storage.is_uri("C:\\data")
    assert storage.join("s3://bucket/runs/", "msr", "ray") == "s3://bucket/runs/msr/ray"
    assert storage.join("/tmp/runs", "msr") == "/tmp/runs/msr"
    with pytest.raises(ValueError, match="nosuchscheme://x"):
        storage.resolve("nosuchscheme://x")


def test_shards_read_through_a_uri_like_a_folder(shards):
    uri = f"file://{shards}"
    assert Manifest.read(uri) == Manifest.read(shards)
    files = shard_files(uri)
    assert files == [f"{uri}/{p.name}" for p in shard_files(shards)] and len(files) >= 2
    by_uri = [(seq.sample_id, split) for seq, split in read_shards(uri)]
    assert by_uri == [(seq.sample_id, split) for seq, split in read_shards(shards)]
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        Manifest.read(f"file://{shards.parent}")


def test_count_windows_reads_uris(shards):
    from training.train import count_windows

    assert count_windows(f"file://{shards}", "train", 8, 4) == count_windows(str(shards), "train", 8, 4)


def test_run_folder_staged_and_uploaded(tmp_path):
    from training.run_storage import checkpoint_path, publish

    dest = f"file://{tmp_path}/bucket/run"
    out = storage.local_run_dir(dest)
    assert out == storage.local_run_dir(dest) and out.is_dir() and not str(out).startswith(str(tmp_path))
    (out / "recognizer").mkdir(exist_ok=True)
    (out / "recognizer" / "config.json").write_text("{}")
    summary = publish(out, dest, {"recognizer": str(out / "recognizer")})
    assert summary["recognizer"] == f"{dest}/recognizer"
    assert json.loads((tmp_path / "bucket/run/summary.json").read_text())["recognizer"] == f"{dest}/recognizer"
    assert (tmp_path / "bucket/run/recognizer/config.json").read_text() == "{}" and not out.exists()
    assert checkpoint_path(dest, out) == f"{dest}/ray" and checkpoint_path(None, tmp_path) == str(tmp_path / "ray")
    assert storage.local_run_dir(tmp_path / "local") == (tmp_path / "local").resolve()


def test_token_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    assert jobs.find_token().value is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray/auth_token").write_text("from-home\n")
    assert jobs.find_token().value == "from-home"
    (tmp_path / "tok").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert jobs.find_token().value == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    token = jobs.find_token()
    assert token.value == "from-env" and token.source == "RAY_AUTH_TOKEN"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(jobs.ClusterError, match="names no file"):
        jobs.find_token()


def test_dashboard_address(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTIONLLM_CLUSTER_STATE", str(tmp_path / "state.json"))
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(jobs.ClusterError, match="actionllm cluster up"):
        jobs.dashboard_address(None)
    (tmp_path / "state.json").write_text(json.dumps({"dashboard": "http://127.0.0.1:9999"}))
    assert jobs.dashboard_address(None) == "http://127.0.0.1:9999"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a GCS address is not the Jobs API
    assert jobs.dashboard_address(None) == "http://127.0.0.1:9999"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://head:8265/")
    assert jobs.dashboard_address(None) == "http://head:8265"
    assert jobs.dashboard_address("other:8265") == "http://other:8265"


def test_runtime_env_ships_the_checkout_or_the_package():
    env = jobs.runtime_env("workdir", root=ROOT, env_vars={"A": "1"})
    assert env["working_dir"] == str(ROOT) and {".venv", "data", "runs", ".git"} <= set(env["excludes"])
    assert env["env_vars"]["A"] == "1"
    env = jobs.runtime_env("package", requirements=ROOT / "constraints.txt")
    assert [Path(p).name for p in env["py_modules"]] == ["actionllm", "training", "services", "cli", "cluster"]
    assert "torch==2.13.0" in env["pip"]["packages"] and not any(p.startswith("#") for p in env["pip"]["packages"])
    assert "working_dir" not in jobs.runtime_env("none")
    with pytest.raises(jobs.ClusterError, match="--ship"):
        jobs.runtime_env("zip")
    assert jobs.project_root(ROOT / "training") == ROOT


def test_entrypoint_and_path_warnings():
    cmd = jobs.entrypoint(["train", "--data", "s3://b/my shards", "--output", "gs://b/run"])
    assert shlex.split(cmd) == ["python", "-m", "cli", "train", "--data", "s3://b/my shards", "--output", "gs://b/run"]
    with pytest.raises(jobs.ClusterError, match="nothing to run"):
        jobs.entrypoint([])
    with pytest.raises(jobs.ClusterError, match="not 'actionllm'"):
        jobs.entrypoint(["actionllm", "train"])
    warnings = jobs.path_warnings(["train", "--config", "actionllm/methods/joints_llm/configs/demo.yaml", "--data", "data/demo/shards",
                                   "--output", "runs/demo"], ROOT)
    assert len(warnings) == 2 and "--data data/demo/shards" in warnings[0] and "--output runs/demo" in warnings[1]
    assert jobs.path_warnings(["train", "--data", "/abs/shards", "--output", "s3://b/r"], ROOT) == []
