"""bench/gpu_suite.py is run on a short GPU lease, where a broken script wastes the lease: its CPU path (`--shape
tiny`) runs here, through the same recognizers, and writes the figures it promises."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_suite_prepares_and_runs_on_cpu_with_the_tiny_shape(tmp_path):
    script = str(ROOT / "bench" / "gpu_suite.py")
    subprocess.run([sys.executable, script, "prepare", str(tmp_path / "assets")], check=True, cwd=ROOT,
                   capture_output=True, timeout=300)
    for shape in ("llama3-8b", "smollm2-135m", "tiny"):  # each a config beside the tokenizer
        assert (tmp_path / "assets" / shape / "config.json").is_file()
        assert (tmp_path / "assets" / shape / "tokenizer.json").is_file()
    conf = json.loads((tmp_path / "assets" / "llama3-8b" / "config.json").read_text())
    assert (conf["hidden_size"], conf["num_hidden_layers"], conf["num_key_value_heads"]) == (4096, 32, 8)
    out = tmp_path / "gpu.json"
    run = subprocess.run([sys.executable, script, "run", "--assets", str(tmp_path / "assets"), "--shape", "tiny",
                          "--parts", "train,serve", "--batch", "1", "--big-batch", "2", "--steps", "1",
                          "--serve-windows", "2", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(out.read_text())
    train = [r for r in figures["rows"] if r["part"] == "train"]
    assert {(r["kernel"], r["format"]) for r in train} == {("eager", "compact"), ("sdpa", "compact"),
                                                           ("sdpa", "paper")}
    assert all(r["tokens_per_s"] > 0 and r["tokens"] > 0 for r in train)
    paper = next(r for r in train if r["format"] == "paper")
    compact = next(r for r in train if r["format"] == "compact" and r["batch"] == 1)
    assert paper["tokens"] > 3 * compact["tokens"]  # the same window, written in both formats
    eager, sdpa = (next(r for r in train if r["kernel"] == k and r["batch"] == 1 and r["format"] == "compact")
                   for k in ("eager", "sdpa"))
    assert abs(eager["first_loss"] - sdpa["first_loss"]) < 1e-4  # two kernels, one function
    serve = [r for r in figures["rows"] if r["part"] == "serve"]
    assert {(r["recipe"], r["batch_size"]) for r in serve} == {(rec, b) for rec in ("joints-llm", "sugar")
                                                                for b in (1, 8, 32)}
    assert "liger" not in {r["part"] for r in figures["rows"]}  # not asked for
