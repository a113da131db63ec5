"""`actionllm serve` and `serve run deploy/serve.yaml` as a user runs them: real processes, their own local Ray,
real HTTP on 127.0.0.1."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli_helpers import ENV, run  # noqa: E402
from conftest import free_port, msr_request  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_serve_once_answers_a_real_request(tiny_recognizers, data_root, tmp_path):
    body, seq = msr_request(data_root, 3)
    req = tmp_path / "request.json"
    req.write_text(json.dumps({**body, "model": "second"}))
    proc = run("serve", "--checkpoint", tiny_recognizers["alpha"], "--checkpoint", f"second={tiny_recognizers['beta']}",
               "--port", free_port(), "--once", req, timeout=540)
    answer, _ = json.JSONDecoder().raw_decode(proc.stdout.lstrip())  # Ray's own log lines may follow
    assert answer["status"] == 200 and answer["model"] == "second"
    assert answer["windows"] == len(range(0, seq.num_frames - 12 + 1, 6)) and 0 < answer["top_probability"] <= 1
    assert "serving alpha, second at http://127.0.0.1:" in proc.stderr


def test_serve_refuses_bad_configs(tmp_path):
    none = run("serve", check=False)
    assert none.returncode == 2 and "nothing to serve" in none.stderr
    (tmp_path / "empty").mkdir()
    bad = run("serve", "--checkpoint", tmp_path / "empty", check=False)
    assert bad.returncode == 2 and "not a recognizer folder" in bad.stderr
    cfg = tmp_path / "best.yaml"
    cfg.write_text(yaml.safe_dump({"recipe": "joints-llm", "recipe_config": {}, "output": str(tmp_path / "never")}))
    untrained = run("serve", "--config", cfg, check=False)
    assert untrained.returncode == 2 and "train it first" in untrained.stderr


@pytest.mark.timeout(600)
def test_deploy_serve_yaml_starts_the_app_with_serve_run(tiny_recognizers, data_root, tmp_path):
    """deploy/serve.yaml, its model path pointed at a recognizer folder, run by Ray's own `serve run`."""
    conf = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    port = free_port()
    conf["http_options"]["port"] = port
    conf["applications"][0]["args"]["models"] = [{"name": "demo", "path": str(tiny_recognizers["gamma"])}]
    conf["applications"][0]["args"]["num_cpus"] = 0.5
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(conf))
    serve_bin = str(Path(sys.executable).with_name("serve"))
    proc = subprocess.Popen([serve_bin, "run", str(path)], cwd=ROOT, env={**ENV, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, ok = time.time() + 400, False
        while time.time() < deadline and proc.poll() is None and not ok:
            try:
                ok = httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                time.sleep(1)
        assert ok, f"serve run did not come up (exit {proc.poll()})"
        body, _ = msr_request(data_root, 0)
        r = httpx.post(f"{url}/v1/recognize", json=body, timeout=300)
        assert r.status_code == 200 and r.json()["model"] == "demo", r.text[:500]
        assert "actionllm_requests_total" in httpx.get(f"{url}/metrics", timeout=60).text
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
