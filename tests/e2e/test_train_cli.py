"""The README's training commands through the console script: train -> evaluate -> predict (demo-sized)."""

import json
import math
import signal
from pathlib import Path

import numpy as np
from cli_helpers import kill_job_when, run, start

from actionllm.skeleton import synth_gait
from actionllm.skeleton.layouts import COCO17
from training.resume import latest_checkpoint

DEMO_YAML = Path(__file__).resolve().parents[2] / "actionllm" / "methods" / "joints_llm" / "configs" / "demo.yaml"


def write_coco_json(path, joints, scores, label):
    images = [{"id": t, "file_name": f"{t:06d}.jpg", "frame_id": t} for t in range(len(joints))]
    anns = [{"image_id": t, "keypoints": np.column_stack([joints[t], np.where(scores[t] > 0, 2, 0)]).ravel().tolist()}
            for t in range(len(joints))]
    path.write_text(json.dumps({"images": images, "annotations": anns, "label": label,
                                "categories": [{"name": "person", "keypoints": list(COCO17.joints)}]}))


def test_train_evaluate_predict(tmp_path):
    shards, runs = tmp_path / "shards", tmp_path / "run"
    run("synth-gait", "--out", shards, "--subjects", 8, "--per-subject", 1, "--seconds", 0.8, "--val-fraction", 0.3)
    proc = run("train", "--config", DEMO_YAML, "--data", shards, "--output", runs,
               "--max-steps", 2, "--epochs", 1, timeout=600)
    assert '"recognizer"' in proc.stdout  # the summary is printed
    # the default output is the CLI's own: Ray's worker logs and library warnings went to <output>/train.log
    shown = proc.stdout + proc.stderr
    assert not any(marker in shown for marker in ("(RayTrainWorker", "(raylet)", "(pid=", "Warning:")), shown[-3000:]
    assert "trained" in proc.stderr and str(runs / "train.log") in proc.stderr
    assert (runs / "train.log").stat().st_size > 0  # Ray's own lines are kept, not lost
    summary = json.loads((runs / "summary.json").read_text())
    assert summary["metrics"]["step"] == 2 and (runs / "recognizer" / "config.json").is_file()
    proc = run("evaluate", "--checkpoint", runs / "recognizer", "--data", shards, "--report", tmp_path / "report")
    assert (tmp_path / "report" / "confusion.png").is_file() and "auc" in proc.stdout  # binary task: AUC
    top1 = json.loads((tmp_path / "report" / "report.json").read_text())["top1"]
    gate = run("evaluate", "--checkpoint", runs / "recognizer", "--data", shards, "--fail-under", min(top1 + 0.01, 1.0),
               check=False)  # the quality gate `make demo` ends with: a top-1 under it fails, saying so
    assert gate.returncode == (1 if top1 < 1.0 else 0), gate.stderr[-2000:]
    if top1 < 1.0:
        assert "is below --fail-under" in gate.stderr
    assert run("evaluate", "--checkpoint", runs / "recognizer", "--data", shards, "--fail-under", top1).returncode == 0
    # a clinic's pose estimator output (COCO keypoints JSON) -> local prediction, no server
    rng = np.random.default_rng(0)
    joints, scores = synth_gait.walk(synth_gait.GaitParams.sample("parkinsonian", rng), 1.0, 30.0, rng)
    coco = tmp_path / "clip"
    coco.mkdir()
    write_coco_json(coco / "visit1.json", joints, scores, "parkinsonian")
    proc = run("predict", "--checkpoint", runs / "recognizer", "--input", coco, "--format", "coco-keypoints")
    (pred,) = json.loads(proc.stdout)
    assert pred["sample_id"] == "visit1" and pred["label"] in synth_gait.CLASS_NAMES
    assert abs(sum(pred["probabilities"].values()) - 1) < 1e-5 and pred["windows"] == 2


def test_train_refuses_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: joints-llm\ndata: nowhere\noutput: x\nworkers: 0\n")
    proc = run("train", "--config", bad, check=False)
    assert proc.returncode == 2 and "workers" in proc.stderr
    proc = run("train", "--data", tmp_path, "--output", tmp_path / "o", "--recipe", "nope", check=False)
    assert proc.returncode == 2 and "unknown recipe 'nope'" in proc.stderr
    proc = run("train", "--data", tmp_path, "--output", tmp_path / "o", "--recipe", "stgcn", "--rank", "4", check=False)
    assert proc.returncode == 2 and "recipe 'stgcn' has no --rank" in proc.stderr
    proc = run("train", "--data", tmp_path, "--output", tmp_path / "o", "--recipe", "stgcn", "--preset", "huge",
               check=False)
    assert proc.returncode == 2 and "preset" in proc.stderr


def test_recipes_lists_both():
    proc = run("recipes")
    assert "joints-llm" in proc.stdout and "stgcn" in proc.stdout and "--frames" in proc.stdout
    assert "llm-ar" in proc.stdout


def test_stgcn_through_the_same_commands_on_real_msr(tmp_path, data_root):
    """The README's stgcn commands on real MSR Action3D: prepare, train (the baseline recipe, PYSKL's SGD), evaluate
    and predict, like joints-llm; the loss falls over the epochs, and the saved recognizer reproduces the validation
    accuracy the training loop measured on its in-memory model."""
    shards, runs = tmp_path / "shards", tmp_path / "run"
    run("prepare", "--format", "msr-action3d", "--input", data_root / "msr_action3d", "--output", shards,
        "--protocol", "cross-subject", "--val-fraction", 0.1)
    train = ["train", "--recipe", "stgcn", "--data", shards, "--output", runs, "--workers", 1, "--epochs", 3,
             "--frames", 16]
    # the whole job dies (driver and its local Ray SIGKILLed) once the first epoch's checkpoint is registered;
    # the same command resumes from the last registered checkpoint, saying so, and does not redo its epochs
    kill_job_when(start(*train), lambda: latest_checkpoint(runs) is not None, what="the first checkpoint")
    done = latest_checkpoint(runs)["epoch"]
    assert done < 2, "the run finished before it could be killed"
    again = run(*train, timeout=600)
    assert f"resuming {runs} from its last checkpoint: epoch {done + 1} of 3 done" in again.stderr, again.stderr
    starts = [json.loads(x) for x in (runs / "metrics.jsonl").read_text().splitlines() if '"kind": "start"' in x]
    assert [s["start_epoch"] for s in starts] == [0, done + 1]
    summary = json.loads((runs / "summary.json").read_text())
    assert summary["metrics"]["epoch"] == 2 and "val_accuracy" in summary["metrics"]
    # a finished run is not trained again; other settings are refused, not mixed into it (--restart: at the end)
    assert "is already trained" in run(*train).stderr
    other = run(*train[:-2], "--frames", 24, check=False)
    assert other.returncode == 2 and "holds a run with other settings (recipe_config.clip.frames 16 -> 24)" in other.stderr
    config = json.loads((runs / "recognizer" / "config.json").read_text())
    assert config["recipe"] == "stgcn" and config["config"]["clip"]["frames"] == 16
    train_config = json.loads((runs / "train_config.json").read_text())
    assert train_config["optimizer"] == "sgd"
    epochs = [json.loads(x) for x in (runs / "metrics.jsonl").read_text().splitlines() if '"kind": "epoch"' in x]
    epochs = list({e["epoch"]: e for e in epochs}.values())  # an epoch cut off by the kill was trained again
    assert [e["epoch"] for e in epochs] == [0, 1, 2] and "tokens_per_s" not in epochs[0]  # not a token model
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] - 0.1
    val = json.loads(run("evaluate", "--checkpoint", runs / "recognizer", "--data", shards, "--split", "val").stdout)
    assert abs(val["window_top1"] - summary["metrics"]["val_accuracy"]) < 1e-9
    run("evaluate", "--checkpoint", runs / "recognizer", "--data", shards, "--report", tmp_path / "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["recipe"] == "stgcn" and report["top1"] > report["chance"]
    for name in ["confusion.png", "attention_frames.png", "attention_joints.png"]:
        assert (tmp_path / "report" / name).stat().st_size > 0
    clip = tmp_path / "clip"
    clip.mkdir()
    source = sorted((data_root / "msr_action3d").rglob("a05_s02_e01*"))[0]  # a high arm wave, subject 2
    (clip / source.name).symlink_to(source)
    (pred,) = json.loads(run("predict", "--checkpoint", runs / "recognizer", "--input", clip,
                             "--format", "msr-action3d").stdout)
    assert pred["label"] in config["class_names"] and pred["windows"] == 1  # stgcn reads the whole sequence
    # --restart starts over on purpose, here with settings the finished run would refuse (1 epoch, not 3)
    restarted = run(*train[:-4], "--epochs", 1, "--frames", 16, "--restart")
    assert f"--restart: removed the earlier run in {runs}" in restarted.stderr and "resuming" not in restarted.stderr
    starts = [json.loads(x) for x in (runs / "metrics.jsonl").read_text().splitlines() if '"kind": "start"' in x]
    assert [s["start_epoch"] for s in starts] == [0]  # the old run's metrics went with it
    assert json.loads((runs / "summary.json").read_text())["metrics"]["epoch"] == 0
    assert "is already trained" in run(*train[:-4], "--epochs", 1, "--frames", 16).stderr


LLM_AR_YAML = """
recipe: llm-ar
workers: 1
recipe_config:
  backbone: {name_or_path: tiny}
  clip: {frames: 16}
  vqvae: {codebook_size: 16, hidden: 16}
  lora: {r: 4, alpha: 8}
  max_new_tokens: 2
stages:
  vqvae: {epochs: 2, batch_size: 4, eval_every: 1}
  llm: {epochs: 1, max_steps: 2, batch_size: 2}
"""


def test_llm_ar_both_stages_through_the_cli_then_evaluate(tmp_path):
    """llm-ar: the action VQ-VAE stage then the LoRA LLM stage in one `train`, through the shared loop, each
    checkpointed with its metrics; evaluate reads the final folder unchanged; misuse is refused clearly."""
    shards, runs, cfg = tmp_path / "shards", tmp_path / "run", tmp_path / "llm-ar.yaml"
    cfg.write_text(LLM_AR_YAML)
    run("synth-gait", "--out", shards, "--subjects", 8, "--per-subject", 1, "--seconds", 1.0, "--val-fraction", 0.3)
    proc = run("train", "--config", cfg, "--stage", "llm", "--data", shards, "--output", tmp_path / "x", check=False)
    assert proc.returncode == 2 and "train --stage vqvae first" in proc.stderr
    # Ctrl-C once the first stage has finished: the same command skips that stage and trains the second
    job = start("train", "--config", cfg, "--data", shards, "--output", runs)
    said = kill_job_when(job, lambda: (runs / "vqvae" / "summary.json").is_file(), timeout=900,
                         what="the end of stage vqvae", sig=signal.SIGINT)
    assert job.returncode == 130 and "interrupted: run the same command again to resume" in said, said[-2000:]
    again = run("train", "--config", cfg, "--data", shards, "--output", runs, timeout=900)
    assert f"stage vqvae: {runs / 'vqvae'} is already trained" in again.stderr, again.stderr
    assert (runs / "vqvae" / "metrics.jsonl").read_text().count('"kind": "start"') == 1  # not trained again
    summary = json.loads((runs / "summary.json").read_text())
    tok, llm = summary["stages"]["vqvae"]["metrics"], summary["stages"]["llm"]["metrics"]
    assert tok["epoch"] == 1 and {"train_codebook_usage", "train_codebook_perplexity", "train_zipf_js",
                                  "val_recon_error", "val_codebook_usage"} <= set(tok)
    assert "val_accuracy" in llm and llm["step"] == 2 and "train_accuracy" not in llm  # generative in training
    assert json.loads((runs / "vqvae" / "recognizer" / "config.json").read_text())["stage"] == "vqvae"
    final = json.loads((runs / "recognizer" / "config.json").read_text())
    assert final["stage"] == "llm" and (runs / "recognizer" / "vqvae.safetensors").is_file()
    assert (runs / "recognizer" / "adapter_model.safetensors").is_file()
    proc = run("evaluate", "--checkpoint", runs / "recognizer", "--data", shards)
    assert '"top1"' in proc.stdout
    proc = run("evaluate", "--checkpoint", runs / "vqvae" / "recognizer", "--data", shards, check=False)
    assert proc.returncode == 2 and "vqvae" in proc.stderr and "<run>/recognizer" in proc.stderr
    assert "ok:" in run("check", runs / "vqvae" / "recognizer").stdout  # an earlier stage's folder is whole


SUGAR_YAML = """
recipe: sugar
workers: 1
recipe_config:
  knowledge: {knowledge}
  clip: {{frames: 16}}
  backbone: {{name_or_path: tiny}}
  lora: {{r: 4, alpha: 8}}
  bridge: {{hidden: 32, layers: 1, heads: 2, tokens: 4, segments: 2}}
  max_new_tokens: 3
stages:
  align: {{epochs: 1, max_steps: 2, batch_size: 4}}
  llm: {{epochs: 1, max_steps: 2, batch_size: 2, autocast: bf16}}
"""
GAIT_KNOWLEDGE = [
    {"label": "normal", "motion": ["head level; hand swings freely; arm swings opposite the legs; hip rotates "
                                   "smoothly; leg takes long even steps; foot strikes heel first"],
     "description": "The person walks with long, even steps and free arm swing."},
    {"label": "parkinsonian", "motion": ["head bent forward; hand held still; arm barely swings; hip flexed; "
                                         "leg takes short shuffling steps; foot drags flat"],
     "description": "The person shuffles forward with short steps, stooped and with little arm swing."},
]


def test_sugar_both_stages_through_the_cli_with_a_users_knowledge_file(tmp_path):
    """sugar through the shared machinery only: a user's knowledge file (in place of the project's own for these
    classes, components/knowledge/synth_gait.jsonl), the align stage then the TQP + LoRA stage in one `train`, each
    folder evaluated; a knowledge file that lacks a class -> refused before Ray starts, naming the class (no file
    at all for a dataset's classes: tests/unit/test_sugar.py)."""
    shards, runs = tmp_path / "shards", tmp_path / "run"
    run("synth-gait", "--out", shards, "--subjects", 8, "--per-subject", 1, "--seconds", 1.0, "--val-fraction", 0.3)
    knowledge = tmp_path / "gait.jsonl"
    knowledge.write_text("".join(json.dumps(k) + "\n" for k in GAIT_KNOWLEDGE))
    cfg = tmp_path / "sugar.yaml"
    cfg.write_text(SUGAR_YAML.format(knowledge=knowledge))
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps(GAIT_KNOWLEDGE[0]) + "\n")  # "normal" only
    bare = run("train", "--recipe", "sugar", "--data", shards, "--output", tmp_path / "x", "--set",
               f"knowledge={partial}", check=False)
    assert bare.returncode == 2 and "has no entry for class(es)" in bare.stderr and "parkinsonian" in bare.stderr
    assert "actionllm describe" in bare.stderr
    run("train", "--config", cfg, "--data", shards, "--output", runs, timeout=900)
    summary = json.loads((runs / "summary.json").read_text())
    assert set(summary["stages"]) == {"align", "llm"} and summary["metrics"]["step"] == 2
    align = json.loads((runs / "align" / "recognizer" / "config.json").read_text())
    assert align["stage"] == "align" and [k["label"] for k in align["knowledge"]] == ["normal", "parkinsonian"]
    final = json.loads((runs / "recognizer" / "config.json").read_text())
    assert final["stage"] == "llm" and final["align"]["source"] == str(runs / "align" / "recognizer")
    assert final["descriptions"]["normal"] == GAIT_KNOWLEDGE[0]["description"]
    llm_config = json.loads((runs / "train_config.json").read_text())  # the llm stage trained under bf16 autocast
    assert llm_config["autocast"] == "bf16" and math.isfinite(summary["metrics"]["train_loss"])
    for folder in (runs / "recognizer", runs / "align" / "recognizer"):  # both stages are recognizers
        proc = run("evaluate", "--checkpoint", folder, "--data", shards)
        assert '"top1"' in proc.stdout and "chance 0.500" in proc.stderr
