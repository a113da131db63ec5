"""LVLM-VAR through the console script on real data: MSR Action3D skeletons rendered to MP4 stick figures, the video
folder prepared into shards (a corrupt clip among them rejected with its reason), both stages trained on Ray with the
feature cache, then evaluate and predict on the videos."""

import json

from cli_helpers import run

LVLM_YAML = """
recipe: lvlm-var
workers: 1
recipe_config:
  video: {frames: 8}
  encoder: {name_or_path: efficientnet-lite0, image_size: 32}
  backbone: {name_or_path: tiny}
  vst: {codebook_size: 32, hidden: 32, heads: 2}
  lora: {r: 4, alpha: 8}
  max_new_tokens: 6
stages:
  vst: {epochs: 2, batch_size: 8, lr: 1.0e-3}
  llm: {epochs: 1, max_steps: 3, batch_size: 2}
"""


def test_lvlm_var_render_prepare_train_evaluate_predict(tmp_path, data_root):
    skel, videos, shards, runs = (tmp_path / n for n in ("skel", "videos", "shards", "run"))
    run("prepare", "--format", "msr-action3d", "--input", data_root / "msr_action3d", "--output", skel,
        "--protocol", "cross-subject", "--val-fraction", 0.2)
    run("render", "--data", skel, "--output", videos, "--size", 48, "--limit", 40)
    bad = videos / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    csv = videos / "videos.csv"
    csv.write_text(csv.read_text() + "broken.mp4,hammer,s01,v0,train\n")
    run("prepare", "--format", "video-folder", "--input", videos, "--output", shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["modality"] == "video" and manifest["counts"]["accepted"] == 40
    assert [r["source"].endswith("broken.mp4") for r in manifest["rejected"]] == [True]
    cfg = tmp_path / "lvlm.yaml"
    cfg.write_text(LVLM_YAML)
    proc = run("train", "--recipe", "stgcn", "--data", shards, "--output", tmp_path / "x", check=False)
    assert proc.returncode == 2 and "holds videos" in proc.stderr  # a skeleton recipe on videos: one line
    run("train", "--config", cfg, "--data", shards, "--output", runs, timeout=900)
    summary = json.loads((runs / "summary.json").read_text())
    vst = summary["stages"]["vst"]["metrics"]
    assert vst["epoch"] == 1 and 1 <= vst["train_tokens_per_video"] <= 8 and vst["train_codes_used"] >= 1
    assert (shards / "features").is_dir()  # the frozen encoder's features, cached beside the shards
    final = json.loads((runs / "recognizer" / "config.json").read_text())
    assert final["recipe"] == "lvlm-var" and final["stage"] == "llm" and final["encoder"] == "efficientnet-lite0"
    run("evaluate", "--checkpoint", runs / "recognizer", "--data", shards, "--split", "test",
        "--report", tmp_path / "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["sequences"] > 0 and report["chance"] == 1 / len(final["class_names"])
    assert (tmp_path / "report" / "confusion.png").is_file()
    videos_expl = json.loads((tmp_path / "report" / "explanations.json").read_text())["videos"]
    assert all(1 <= len(v["semantic_tokens"]) <= 8 and len(v["frame_weights"]) == 8 for v in videos_expl)
    clips = sorted(videos.rglob("*.mp4"))[:2]
    answers = json.loads(run("predict", "--checkpoint", runs / "recognizer", "--input", clips[0],
                             "--format", "video").stdout)
    assert answers[0]["label"] in final["class_names"] and "text" in answers[0]["explanation"]
    answers = json.loads(run("predict", "--checkpoint", runs / "recognizer", "--input", videos,
                             "--format", "video").stdout)
    broken = [a for a in answers if a["source"].endswith("broken.mp4")]
    assert len(answers) == 41 and broken and "error" in broken[0] and "label" not in broken[0]
