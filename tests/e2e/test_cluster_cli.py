"""The README's cluster path against a real Ray head on this machine: `actionllm cluster up` (token auth on,
dashboard on 127.0.0.1), `actionllm submit` of a short training run that reads its shards from and writes its run
folder to storage URIs (file://, the same code path as s3:// and gs://), `jobs list/logs`, the training gauges
on the head's Prometheus endpoint, a wrong or missing token refused with a clear message, `cluster down`.

The head gets its own ports, temp dir and token file (never ~/.ray/auth_token), so it cannot be mistaken for
another Ray on the machine; the fixture's finalizer stops it whatever happens."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli_helpers import ACTIONLLM, ENV  # noqa: E402
from conftest import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEMO_YAML = ROOT / "actionllm" / "methods" / "joints_llm" / "configs" / "demo.yaml"


def actionllm(*args, env: dict, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([ACTIONLLM, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"actionllm {' '.join(map(str, args))} -> {proc.returncode}\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def cluster():
    """A local head (3 logical CPUs: one Train worker + the data pipeline), stopped by the finalizer."""
    base = Path(tempfile.mkdtemp(prefix="alr", dir="/tmp"))  # short: Ray's socket paths live under it
    (base / "token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in ENV.items() if k not in ("RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update({"ACTIONLLM_CLUSTER_STATE": str(base / "state.json"), "RAY_AUTH_TOKEN_PATH": str(base / "token"),
                "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"})
    metrics_port = free_port()
    try:
        proc = actionllm("cluster", "up", "--port", free_port(), "--dashboard-port", free_port(), "--num-cpus", 3,
                         "--temp-dir", base / "ray", "--metrics-export-port", metrics_port, env=env, timeout=240)
        state = json.loads(proc.stdout)
        yield {"env": env, "state": state, "base": base, "metrics_port": metrics_port, "stderr": proc.stderr}
    finally:
        actionllm("cluster", "down", env=env, check=False, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def test_cluster_up_binds_the_dashboard_to_loopback_with_token_auth(cluster):
    state = cluster["state"]
    assert state["dashboard"].startswith("http://127.0.0.1:") and state["token"] == str(cluster["base"] / "token")
    with pytest.raises(urllib.error.HTTPError) as err:  # no token: refused by the dashboard itself
        urllib.request.urlopen(f"{state['dashboard']}/api/jobs/", timeout=30)
    assert err.value.code == 401
    status = subprocess.run(["bash", str(ROOT / "cluster/local.sh"), "status"], capture_output=True, text=True,
                            env={**cluster["env"], "ACTIONLLM": ACTIONLLM}, timeout=120)
    assert status.returncode == 0 and json.loads(status.stdout)["running"] is True, status.stderr


def test_submit_trains_from_and_to_storage_uris(cluster, tmp_path):
    env = cluster["env"]
    bucket = tmp_path / "bucket"
    actionllm("synth-gait", "--out", bucket / "shards", "--subjects", 8, "--per-subject", 1, "--seconds", 0.8,
              "--val-fraction", 0.3, env=env)
    t0 = time.time()
    proc = actionllm("submit", "--", "train", "--config", DEMO_YAML.relative_to(ROOT), "--data",
                     f"file://{bucket}/shards", "--output", f"file://{bucket}/run", "--workers", 1, "--max-steps", 2,
                     "--epochs", 1, env=env, timeout=600)
    print(f"submitted training job: {time.time() - t0:.0f} s")
    assert "SUCCEEDED" in proc.stderr and "shipped: " + str(ROOT) in proc.stderr
    job_id = proc.stderr.split("submitted ", 1)[1].split()[0]
    summary = json.loads((bucket / "run" / "summary.json").read_text())
    assert summary["recognizer"] == f"file://{bucket}/run/recognizer" and summary["metrics"]["step"] == 2
    assert (bucket / "run/recognizer/config.json").is_file() and list((bucket / "run/ray/train").glob("checkpoint_*"))

    listed = actionllm("jobs", "list", env=env)
    assert job_id[:20] in listed.stdout and "SUCCEEDED" in listed.stdout
    logs = actionllm("jobs", "logs", job_id, env=env).stdout
    # the job's log is the CLI's own output (epoch lines, summary); Ray's worker logs are in the run's train.log
    assert "Running entrypoint for job" in logs and "epoch 1: train_loss" in logs and '"recognizer": "file://' in logs
    assert json.loads(actionllm("jobs", "status", job_id, env=env).stdout)["status"] == "SUCCEEDED"

    # the run's epoch report reached Prometheus through Ray's metrics agent (training/telemetry.py)
    url, deadline, text = f"http://127.0.0.1:{cluster['metrics_port']}/metrics", time.time() + 60, ""
    while time.time() < deadline and "ray_actionllm_train_loss{" not in text:
        time.sleep(2)
        text = urllib.request.urlopen(url, timeout=30).read().decode()
    assert "ray_actionllm_train_loss{" in text and 'run="run"' in text and "ray_actionllm_val_accuracy{" in text


def test_wrong_or_missing_token_is_refused_clearly(cluster, tmp_path):
    wrong = {**cluster["env"], "RAY_AUTH_TOKEN": "not-the-token"}
    proc = actionllm("jobs", "list", env=wrong, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())
    assert "refused the authentication token from RAY_AUTH_TOKEN" in message
    proc = actionllm("submit", "--no-wait", "--", "info", "/nowhere", env=wrong, check=False)
    assert proc.returncode == 2 and "refused the authentication token" in " ".join(proc.stderr.split())
    none = {k: v for k, v in cluster["env"].items() if k != "RAY_AUTH_TOKEN_PATH"}
    none["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    proc = actionllm("jobs", "list", env=none, check=False)
    assert proc.returncode == 2 and "requires an authentication token and none was sent" in " ".join(proc.stderr.split())


def test_submit_a_search_then_stop_it(cluster, tmp_path):
    """The README's search submission: its trials start on the cluster (the space passed validation), then
    `jobs stop` ends it (a full search is tests/ray/test_tune.py's business)."""
    env = cluster["env"]
    actionllm("synth-gait", "--out", tmp_path / "shards", "--subjects", 6, "--per-subject", 1, "--seconds", 2,
              "--val-fraction", 0.3, env=env)
    proc = actionllm("submit", "--no-wait", "--", "tune", "--recipe", "joints-llm", "--data", tmp_path / "shards",
                     "--backbone", "tiny", "--samples", 4, "--max-concurrent", 2, "--max-steps", 10, "--output",
                     tmp_path / "search", env=env)
    job_id = proc.stdout.split()[-1]
    assert job_id.startswith("raysubmit_"), proc.stdout
    deadline, logs, status, polls = time.time() + 240, "", "PENDING", 0
    while time.time() < deadline and "[tune]" not in logs and status in ("PENDING", "RUNNING"):
        time.sleep(3)
        logs, polls = actionllm("jobs", "logs", job_id, env=env).stdout, polls + 1
        if polls % 4 == 0:  # a job that failed early stops the wait
            status = json.loads(actionllm("jobs", "status", job_id, env=env).stdout)["status"]
    status = json.loads(actionllm("jobs", "status", job_id, env=env).stdout)["status"]
    assert "[tune]" in logs and status == "RUNNING", (status, logs[-3000:])
    assert "stopping" in actionllm("jobs", "stop", job_id, env=env).stderr
    deadline = time.time() + 60
    while time.time() < deadline and status != "STOPPED":
        time.sleep(2)
        status = json.loads(actionllm("jobs", "status", job_id, env=env).stdout)["status"]
    assert status == "STOPPED"


def test_cluster_down_stops_this_head_only(cluster):
    import psutil

    state = cluster["state"]
    ours = [p for p in psutil.process_iter(["cmdline"]) if state["temp_dir"] in " ".join(p.info["cmdline"] or [])]
    assert ours, "no process of the head found"
    proc = actionllm("cluster", "down", env=cluster["env"], timeout=120)
    assert "stopped" in proc.stderr
    time.sleep(1)
    left = [p for p in ours if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, left
    assert not Path(cluster["env"]["ACTIONLLM_CLUSTER_STATE"]).exists()
    again = actionllm("cluster", "status", env=cluster["env"], check=False)
    assert again.returncode == 1 and "no local cluster" in again.stderr
    assert not os.path.exists(cluster["env"]["ACTIONLLM_CLUSTER_STATE"])
