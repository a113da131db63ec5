"""`actionllm describe --endpoint` against a real server process: tests/e2e/openai_server.py serving the offline
SmolLM2-135M-Instruct over the OpenAI chat API (the in-process fake of tests/unit/test_sugar_describe.py checks the
request fields). Then what a user meets when the endpoint fails: a wrong key, a server that never answers (the
timeout, retried), a refused connection (retried): each one line, exit 1, no traceback."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli_helpers import ACTIONLLM, ENV  # noqa: E402
from conftest import free_port  # noqa: E402

from actionllm.components.knowledge import read_knowledge  # noqa: E402

SERVER = Path(__file__).resolve().parent / "openai_server.py"


def describe(*args, key: str | None = None, timeout: float = 300):
    env = {**ENV, **({"LLM_KEY": key} if key else {})}
    return subprocess.run([ACTIONLLM, "describe", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def one_error_line(proc) -> str:
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, lines)
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.timeout(600)
def test_describe_against_a_real_openai_compatible_server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, str(SERVER), "--port", str(port), "--api-key-env", "LLM_KEY"],
                              env={**ENV, "LLM_KEY": "sk-local-1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    classes = tmp_path / "classes.txt"
    classes.write_text("jump in place\nwave one hand\n")
    try:
        deadline = time.time() + 240
        while time.time() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer sk-local-1"}, timeout=5).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert server.poll() is None, server.stdout.read()[-2000:]
        out = tmp_path / "k.jsonl"
        ok = describe("--classes", classes, "--out", out, "--endpoint", url, "--api-key-env", "LLM_KEY",
                      "--max-new-tokens", 40, key="sk-local-1")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        knowledge = read_knowledge(out)  # every entry a six-part motion text and a description
        assert list(knowledge) == ["jump in place", "wave one hand"]
        report = json.loads((tmp_path / "k.report.json").read_text())
        assert report["source"] == f"endpoint {url} model smollm2-135m"  # the model named by GET /v1/models
        assert all(c["raw_motion"][0].strip() for c in report["classes"])  # the model's own words were kept
        wrong = describe("--classes", classes, "--out", tmp_path / "w.jsonl", "--endpoint", url, "--api-key-env",
                         "LLM_KEY", key="sk-wrong")
        assert "answered HTTP 401" in one_error_line(wrong) and "invalid API key" in wrong.stderr  # not retried
    finally:
        server.kill()
        server.wait()
    t0 = time.time()
    refused = describe("--classes", classes, "--out", tmp_path / "r.jsonl", "--endpoint", url, "--retries", 1)
    line = one_error_line(refused)
    assert f"endpoint {url}/v1/models is unreachable" in line and "(2 tries)" in line, line
    assert time.time() - t0 >= 1.0  # it waited before the retry
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        slow = f"http://127.0.0.1:{silent.getsockname()[1]}"
        late = describe("--classes", classes, "--out", tmp_path / "t.jsonl", "--endpoint", slow, "--model", "m",
                        "--timeout", 1, "--retries", 1)
    line = one_error_line(late)
    assert f"endpoint {slow}/v1/chat/completions did not answer within 1.0 s (2 tries)" in line, line
    assert not any((tmp_path / f).exists() for f in ("w.jsonl", "r.jsonl", "t.jsonl"))  # nothing half-written
