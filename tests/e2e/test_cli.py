"""The README's commands, run as a user runs them: the `actionllm` console script in a subprocess."""

import json
import shutil

import pytest
from cli_helpers import run

# dataset folder, format, protocol, reader options, accepted, rejected, classes
GOLDEN = [
    ("msr_action3d", "msr-action3d", "cross-subject", [], 566, 1, 20),
    ("utkinect_action3d", "utkinect", "cross-subject", [], 199, 1, 10),
    ("florence3d", "florence3d", "cross-subject", [], 215, 0, 9),
    ("utd_mhad_skeleton", "utd-mhad", "cross-subject", [], 861, 0, 27),
    ("jhmdb_ddnet", "jhmdb", "split1", ["-O", "split=1"], 609, 0, 14),
]


@pytest.mark.parametrize("folder,fmt,protocol,opts,accepted,rejected,classes", GOLDEN, ids=[g[1] for g in GOLDEN])
def test_prepare_real_datasets(tmp_path, data_root, folder, fmt, protocol, opts, accepted, rejected, classes):
    out = tmp_path / "shards"
    proc = run("prepare", "--format", fmt, "--input", data_root / folder, "--output", out, "--protocol", protocol,
               "--shard-size", 200, *opts)
    assert f"{accepted} accepted, {rejected} rejected" in proc.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["accepted"] == accepted and m["counts"]["rejected"] == rejected
    assert len(m["class_names"]) == classes and len(m["rejected"]) == rejected
    assert m["counts"]["train"] + m["counts"]["val"] + m["counts"]["test"] == accepted
    assert m["counts"]["test"] > 0 and m["counts"]["val"] > 0
    assert len(m["shards"]) == -(-accepted // 200)
    if fmt == "msr-action3d":
        assert m["rejected"][0]["sample_id"] == "a13_s09_e02" and "zero" in m["rejected"][0]["reason"]
    if fmt == "jhmdb":
        assert m["counts"]["test"] == 176 and m["counts"]["train"] + m["counts"]["val"] == 433


def test_prepare_malformed_file_exits_2_naming_file_and_line(tmp_path, data_root):
    src = tmp_path / "msr"
    shutil.copytree(data_root / "msr_action3d" / "real_world_coordinates", src,
                    ignore=shutil.ignore_patterns("a0[2-9]*", "a1*", "a2*"))
    bad = src / "a01_s01_e01_skeleton3D.txt"
    lines = bad.read_text().splitlines()
    lines[6] = "0.1 0.2 oops 1.0"
    bad.write_text("\n".join(lines) + "\n")
    proc = run("prepare", "-f", "msr-action3d", "-i", src, "-o", tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert "a01_s01_e01_skeleton3D.txt:7" in proc.stderr.replace("\n", "")
    assert not (tmp_path / "out").exists()
    proc = run("prepare", "-f", "msr-action3d", "-i", src, "-o", tmp_path / "out", "--skip-bad")
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert any(r["sample_id"].startswith("a01_s01_e01") and "malformed" in r["reason"] for r in m["rejected"])


def test_prepare_refuses_bad_arguments(tmp_path, data_root):
    proc = run("prepare", "-f", "nope", "-i", tmp_path, "-o", tmp_path / "o", check=False)
    assert proc.returncode == 2 and "unknown format 'nope'" in proc.stderr
    proc = run("prepare", "-f", "florence3d", "-i", data_root / "florence3d", "-o", tmp_path / "o",
               "--protocol", "cross-view", check=False)
    assert proc.returncode == 2 and "no protocol 'cross-view'" in proc.stderr


def test_help_warns_about_pickles():
    proc = run("prepare", "--help")
    assert "Pickles run code" in proc.stdout


def test_formats_lists_everything():
    proc = run("formats")
    for name in ["msr-action3d", "utkinect", "florence3d", "utd-mhad", "jhmdb", "nw-ucla", "ntu", "pyskl",
                 "coco-keypoints", "openpose", "coco17", "kinect20", "halpe26", "openpose18", "ntu25"]:
        assert name in proc.stdout


def test_demo_commands(tmp_path):
    """What `make demo` runs: synth-gait -> info -> stream on an embedded local Ray."""
    out = tmp_path / "demo"
    proc = run("synth-gait", "--out", out, "--subjects", 8, "--per-subject", 2, "--seconds", 3)
    assert "16 accepted, 0 rejected" in proc.stdout
    assert "parkinsonian" in run("info", out).stdout
    proc = run("stream", "--data", out, "--window", 18, "--stride", 9, "--split", "all", "--local")
    stats = json.loads(proc.stdout)
    # 3 s at 30 fps = 90 frames -> (90 - 18) / 9 + 1 = 9 windows per sequence
    assert stats["sequences"] == 16 and stats["windows"] == 16 * 9
    assert run("synth-gait", "--out", out, check=False).returncode == 2  # refuses to overwrite
