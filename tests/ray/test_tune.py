"""`actionllm tune` on real MSR Action3D shards with the tiny backbone, through the console script: a 4-trial
search is killed (SIGKILL, the whole job: a lost machine) and resumed with --resume, ASHA stops the trials it has to, the table and best.yaml are
written, and best.yaml trains; an invalid space is refused before any trial starts."""

import csv
import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from cli_helpers import kill_job_when, run, start  # noqa: E402

from actionllm.skeleton.formats import get_reader  # noqa: E402
from actionllm.skeleton.prepare import prepare  # noqa: E402
from training.resume import latest_checkpoint  # noqa: E402
from training.tune import STATUS  # noqa: E402

pytestmark = pytest.mark.ray

# Two sane trials run first (max-concurrent 2, grid order), then two at a learning rate that wrecks the model
# (AdamW moves every weight by ~lr per step; the head by 10 x lr): at the first rung they meet a cutoff set by
# the sane ones, so ASHA has to stop them (the second sane trial may be stopped too, if it is the worse one).
SPACE = {
    "inherit": False,
    "space": {"lr": {"grid": [1.0e-4, 2.0e-4, 1.0, 2.0]}},
    "train": {"epochs": 2, "batch_size": 2, "log_every": 1, "shuffle_buffer": 0,
              "recipe_config": {"bridge": {"window": 12, "stride": 12, "precision": 1},
                                "backbone": {"name_or_path": "tiny"}}},
}


@pytest.fixture(scope="module")
def msr_shards(tmp_path_factory, data_root):
    """Real MSR Action3D, its first four actions (all subjects): every trial streams a quarter of the windows,
    which keeps six trial launches (two restarted by the resume) inside CI's budget."""
    out = tmp_path_factory.mktemp("msr-tune") / "shards"
    reader = get_reader("msr-action3d")(data_root / "msr_action3d")
    subset = [f for f in reader.files() if f.name[:3] in ("a01", "a02", "a03", "a04")]
    assert len(subset) > 100
    reader.files = lambda: subset
    prepare(reader, out, "cross-subject", val_fraction=0.15)
    return out


def trial_runs(out: Path) -> list[Path]:
    return sorted((out / "trials").glob("*"))


def starts(run_dir: Path) -> list[int]:
    """The epoch each launch of a trial's training started from (metrics.jsonl's start lines)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(x)["start_epoch"] for x in lines if '"kind": "start"' in x]


@pytest.mark.timeout(1500)  # six trial launches on 2 cores: ~10-13 min
def test_search_killed_resumed_asha_table_best(msr_shards, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    out = tmp_path / "search"
    args = ["tune", "--data", msr_shards, "--output", out, "--space", space, "--samples", 1, "--max-concurrent", 2,
            "--metric", "val_loss", "--max-steps", 2]
    # the whole job (driver, Tune, every trial's Ray Train run) is SIGKILLed once a first trial has ended
    killed = kill_job_when(start(*args), lambda: (out / STATUS).is_file() and (out / STATUS).stat().st_size > 0,
                  timeout=900, what="the end of a first trial")
    assert not (out / "summary.json").exists()
    at_kill = {r: (latest_checkpoint(r), (r / "summary.json").is_file(), len(starts(r)))
               for r in trial_runs(out)}
    assert any(ckpt is not None for ckpt, _, _ in at_kill.values()), killed[-5000:]  # something to resume from

    again = run("tune", "--data", msr_shards, "--output", out, "--space", space, check=False)
    assert again.returncode == 2 and "pass --resume" in again.stderr  # never silently overwritten
    done = run(*args, "--resume", timeout=1400)
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "resumed.txt").is_file()
    assert summary["trials"] == 4 and summary["failed"] == 0 and summary["interrupted"] == 0, done.stderr[-3000:]
    assert summary["stopped_early"] >= 1
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} <= {"completed", "stopped (ASHA)"}
    for r in rows:
        stopped = r["status"] == "stopped (ASHA)"
        assert (int(r["epochs"]) < 2) == stopped and float(r["best_val_loss"]) > 0
        if float(r["lr"]) >= 1.0:
            assert stopped  # the wrecked trials meet the sane ones' cutoff at the first rung
    best = min(rows, key=lambda r: float(r["best_val_loss"]))
    assert float(best["lr"]) < 1e-3
    assert summary["best"]["params"]["lr"] == pytest.approx(float(best["lr"]))
    assert "best" in (out / "results.md").read_text() and (out / "metric_vs_params.png").stat().st_size > 0
    # nothing trained twice: a trial that had finished is not launched again; one that Tune restarts resumes from
    # the checkpoint its Ray Train run had registered before the kill
    for r, (ckpt, finished, launches) in at_kill.items():
        later = starts(r)[launches:]
        assert not (finished and later), f"{r}: finished before the kill, trained again"
        if ckpt is not None and not finished:
            assert all(e == ckpt["epoch"] + 1 for e in later), f"{r}: checkpoint {ckpt}, launches from epochs {later}"
    assert "[tune]" in done.stderr and "stopped early by ASHA" in done.stderr
    # Ray Train's placement-group cleaner could see the stopped trials' controllers die (State API up): no leak
    assert "State API may be temporarily unavailable" not in done.stderr

    best_yaml = yaml.safe_load((out / "best.yaml").read_text())
    assert best_yaml["lr"] == pytest.approx(float(best["lr"])) and best_yaml["recipe"] == "joints-llm"
    # best.yaml is a complete run file: what `actionllm train --config best.yaml` validates before it starts (a
    # training launch here would add a minute; the train tests run such files end to end)
    from actionllm.methods import get_recipe
    from training.config import TrainConfig

    tc = TrainConfig.model_validate({**best_yaml, "output": str(tmp_path / "best-run")})
    assert tc.lr == pytest.approx(float(best["lr"])) and Path(tc.data) == msr_shards.resolve()
    get_recipe(tc.recipe).config(tc.recipe_config).for_data(json.loads((msr_shards / "manifest.json").read_text())
                                                            ["class_names"])


def test_invalid_space_is_refused_before_any_trial(msr_shards, tmp_path):
    space = tmp_path / "bad.yaml"
    space.write_text(yaml.safe_dump(sort_keys=False, data={"inherit": False, "space": {"window": {"choice": [12, 18]},
                                                                 "stride": {"choice": [6, 24]}},
                                     "train": {"recipe_config": {"backbone": {"name_or_path": "tiny"}}}}))
    proc = run("tune", "--data", msr_shards, "--output", tmp_path / "s", "--space", space, check=False)
    assert proc.returncode == 2
    assert "refused before any trial starts" in proc.stderr
    assert "window=12, stride=24: stride 24 > window 12" in proc.stderr
    assert "window=18, stride=24: stride 24 > window 18" in proc.stderr
    assert not (tmp_path / "s" / "search").exists()  # no trial started
