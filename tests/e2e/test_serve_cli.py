"""`actionllm serve` and `serve run deploy/serve.yaml` as a user runs them: real processes, their own local Ray,
real HTTP on 127.0.0.1."""

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
from cli_helpers import ENV, run, start  # noqa: E402
from conftest import free_port, msr_request  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_serve_answers_then_stops_when_asked(tiny_recognizers, data_root, tmp_path):
    """`actionllm serve` as a user runs it in a terminal: only the project's lines there (Ray's go to the log file
    it names), a real request answered by the named model, then Ctrl-C (SIGINT to the process group, as a terminal
    sends it) while a request is in flight: that request finishes or gets a clear 503, and the prompt is back within
    a few seconds with one "stopped" line (the goal is 5 s; the bound is generous for a loaded CI machine)."""
    import threading

    body, seq = msr_request(data_root, 3)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start("serve", "--checkpoint", tiny_recognizers["alpha"], "--checkpoint",
                 f"second={tiny_recognizers['beta']}", "--port", port)
    said: list[str] = []  # its terminal lines (stderr), read as they come
    reader = threading.Thread(target=lambda: said.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None and not any("serving" in ln for ln in said):
            time.sleep(0.2)  # up when it says so (Serve answers a moment before `serve.run` returns)
        assert any("serving" in ln for ln in said), f"serve did not come up (exit {proc.poll()}): {said}"
        r = httpx.post(f"{url}/v1/recognize", json={**body, "model": "second"}, timeout=300)
        assert r.status_code == 200 and r.json()["model"] == "second", r.text[:500]
        assert len(r.json()["windows"]) == len(range(0, seq.num_frames - 12 + 1, 6))
        late: dict = {}

        def in_flight():
            try:
                late["status"] = httpx.post(f"{url}/v1/recognize", json=body, timeout=60).status_code
            except httpx.HTTPError as err:
                late["status"] = type(err).__name__

        sender = threading.Thread(target=in_flight)
        sender.start()
        time.sleep(0.05)
        t0 = time.time()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
        stopped_s = time.time() - t0
        sender.join(timeout=60)
        reader.join(timeout=10)
        out, err = proc.stdout.read(), "".join(said)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print(f"Ctrl-C -> prompt back in {stopped_s:.1f} s; the request in flight: {late['status']}")
    assert proc.returncode == 0, (proc.returncode, out[-2000:], err[-2000:])
    # finished, told why, or (sent after the port closed) refused: never accepted and then dropped
    assert late["status"] in (200, 503, "ConnectError"), late
    assert stopped_s < 15, stopped_s
    lines = [ln for ln in (out + err).splitlines() if ln.strip()]
    assert lines[0].startswith("Ray's log: ") and Path(lines[0].split(": ", 1)[1]).is_file(), lines
    assert "serving alpha, second at http://127.0.0.1:" in err and "stopped in" in lines[-1], lines
    assert not [ln for ln in lines if "WARNING" in ln or "INFO" in ln or "Traceback" in ln], lines


def test_serve_refuses_bad_configs(tiny_recognizers, tmp_path):
    none = run("serve", check=False)
    assert none.returncode == 2 and "nothing to serve" in none.stderr
    (tmp_path / "empty").mkdir()
    bad = run("serve", "--checkpoint", tmp_path / "empty", check=False)
    assert bad.returncode == 2 and "not a recognizer folder" in bad.stderr
    cfg = tmp_path / "best.yaml"
    cfg.write_text(yaml.safe_dump({"recipe": "joints-llm", "recipe_config": {}, "output": str(tmp_path / "never")}))
    untrained = run("serve", "--config", cfg, check=False)
    assert untrained.returncode == 2 and "train it first" in untrained.stderr
    assert "ACTIONLLM_API_KEY" not in os.environ
    exposed = run("serve", "--checkpoint", tiny_recognizers["alpha"], "--host", "0.0.0.0", check=False)
    assert exposed.returncode == 2 and "serves every route to the network" in exposed.stderr
    assert "--open-without-key" in exposed.stderr  # refused before Ray starts, saying how to do it on purpose


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
