"""The video data path (actionllm/video): decoding and frame sampling, the stick-figure renderer, and video
shards prepared from a folder of clips; plus the `render` and `prepare --format video-folder` commands."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from actionllm.skeleton.layouts import get_layout
from actionllm.skeleton.prepare import convert
from actionllm.skeleton.sequence import SkeletonSequence
from actionllm.skeleton.shards import Manifest
from actionllm.video import folder, render
from actionllm.video.decode import VideoError, probe, read_frames, sample_indices
from cli import app

KINECT = get_layout("kinect20")
# A standing figure in Kinect camera space (metres; y up, z away from the sensor, +x to the sensor's left,
# so the subject's right side has the larger x), facing the sensor 3 m away.
POSE = {
    "hip_center": (0.0, 0.0), "spine": (0.0, 0.25), "shoulder_center": (0.0, 0.5), "head": (0.0, 0.7),
    "left_shoulder": (-0.2, 0.45), "left_elbow": (-0.25, 0.2), "left_wrist": (-0.27, 0.0), "left_hand": (-0.28, -0.05),
    "right_shoulder": (0.2, 0.45), "right_elbow": (0.25, 0.2), "right_wrist": (0.27, 0.0), "right_hand": (0.28, -0.05),
    "left_hip": (-0.1, -0.05), "left_knee": (-0.1, -0.5), "left_ankle": (-0.1, -0.9), "left_foot": (-0.1, -0.95),
    "right_hip": (0.1, -0.05), "right_knee": (0.1, -0.5), "right_ankle": (0.1, -0.9), "right_foot": (0.1, -0.95),
}


def stick(sample_id: str = "s1", frames: int = 10, label: int = 0, label_name: str = "wave", subject: str = "1",
          walk: float = 0.05) -> SkeletonSequence:
    """The standing figure, drifting `walk` metres per frame along x, right hand waving."""
    base = np.array([[*POSE[j], 3.0] for j in KINECT.joints], dtype=np.float32)
    joints = np.repeat(base[None], frames, axis=0)
    joints[:, :, 0] += walk * np.arange(frames)[:, None]
    joints[:, KINECT.index("right_hand"), 1] += 0.3 * np.sin(np.arange(frames))
    return SkeletonSequence(sample_id=sample_id, layout="kinect20", joints=joints, label=label,
                            label_name=label_name, dataset="synthetic", subject=subject, view="front", fps=15.0)


def skeleton_shards(path: Path, seqs: list[SkeletonSequence], class_names: list[str]) -> Path:
    """Shards of `seqs`, odd subjects train / even test, no val (convert, as `actionllm prepare` writes)."""
    convert(seqs, path, dataset="synthetic", source_format="test", source_path="test", layout="kinect20",
            class_names=class_names, protocol_name="cross-subject",
            protocol=lambda s: "train" if int(s.subject) % 2 else "test", val_fraction=0.0, shuffle_buffer=0)
    return path


def grey_clip(path: Path, frames: int = 20, size: int = 64) -> Path:
    """Frame i is a flat grey of level 10 * i: which frame came back can be read off its colour."""
    levels = (10 * np.arange(frames)).astype(np.uint8)
    video = np.broadcast_to(levels[:, None, None, None], (frames, size, size, 3)).copy()
    return render.write_mp4(video, path, fps=10)


# --- projection and drawing -----------------------------------------------------------------------------------
def test_drawn_joints_sit_where_project_puts_them():
    seq = stick(frames=6)
    size = 64
    video = render.render_sequence(seq, size=size)
    pts = render.project(seq, size)
    assert video.shape == (6, size, size, 3) and video.dtype == np.uint8
    assert pts.shape == (6, 1, KINECT.num_joints, 2) and np.isfinite(pts).all()
    assert pts.min() >= 0 and pts.max() <= size - 1
    for t in range(6):
        for v in range(KINECT.num_joints):
            x, y = np.rint(pts[t, 0, v]).astype(int)
            assert tuple(video[t, y, x]) != render.BACKGROUND, (t, KINECT.joints[v])
    # background where nothing is drawn (a corner: the margin)
    assert tuple(video[0, 0, 0]) == render.BACKGROUND
    # camera view, upright: head above the feet, the subject's right side on the image's left
    head, foot = KINECT.index("head"), KINECT.index("left_foot")
    assert (pts[:, 0, head, 1] < pts[:, 0, foot, 1]).all()
    assert (pts[:, 0, KINECT.index("right_shoulder"), 0] < pts[:, 0, KINECT.index("left_shoulder"), 0]).all()


def test_one_scale_per_sequence_keeps_global_motion():
    pts = render.project(stick(frames=10, walk=0.1), 96)
    height = pts[:, 0, KINECT.index("head"), 1] - pts[:, 0, KINECT.index("left_foot"), 1]
    np.testing.assert_allclose(height, height[0], atol=1e-6)  # same size in every frame
    hip_x = pts[:, 0, KINECT.index("hip_center"), 0]
    assert np.all(np.diff(hip_x) < 0)  # walking toward +x = toward the image's left, frame after frame


def test_view_rotation_and_missing_joints():
    seq = stick(frames=3, walk=0.0)
    shoulders = [KINECT.index("left_shoulder"), KINECT.index("right_shoulder")]
    front = render.project(seq, 64, 0.0)[0, 0, shoulders, 0]
    side = render.project(seq, 64, 90.0)[0, 0, shoulders, 0]
    assert abs(front[0] - front[1]) > 10 and abs(side[0] - side[1]) < 1
    # a missing joint (zero coordinates) is NaN in the projection, not drawn, and not part of the fit
    joints = seq.joints.copy()
    joints[0, 1, KINECT.index("head")] = 0
    pts = render.project(seq.with_(joints=joints), 64)
    assert np.isnan(pts[1, 0, KINECT.index("head")]).all() and np.isfinite(pts[0]).all()
    flat = SkeletonSequence(sample_id="x", layout="jhmdb15", joints=np.random.rand(4, 15, 2) * 100)
    with pytest.raises(ValueError, match="2D"):
        render.project(flat, 64, 30.0)
    assert render.render_sequence(flat, size=32).shape == (4, 32, 32, 3)


def test_render_resamples_time():
    seq = stick(frames=6)
    assert len(render.render_sequence(seq, size=32, fps=30.0)) == 12
    assert len(render.render_sequence(seq, size=32, fps=15.0)) == 6


@pytest.mark.data
def test_msr_renders_upright(data_root):
    from actionllm.skeleton.formats import get_reader

    reader = get_reader("msr-action3d")(data_root / "msr_action3d")
    head, feet = KINECT.index("head"), [KINECT.index("left_foot"), KINECT.index("right_foot")]
    for path in reader.files()[::150]:  # 4 sequences, several actions and subjects
        seq = next(iter(reader.read_file(path)))
        pts = render.project(seq, 112)
        assert np.nanmedian(pts[:, 0, head, 1]) < np.nanmedian(pts[:, 0, feet, 1]) - 50, seq.sample_id
        assert np.nanmin(pts) >= 0 and np.nanmax(pts) <= 111
        video = render.render_sequence(seq, size=112)
        assert video.shape == (seq.num_frames, 112, 112, 3)
        assert (video != np.array(render.BACKGROUND, np.uint8)).any(-1).mean() > 0.01  # a figure, not a blank


# --- encoding and decoding ------------------------------------------------------------------------------------
def test_write_mp4_then_read_frames(tmp_path):
    path = grey_clip(tmp_path / "grey.mp4")
    info = probe(path)
    assert info["num_frames"] == 20 and info["width"] == 64 and info["fps"] == pytest.approx(10)
    assert info["codec"] in ("h264", "mpeg4") and info["duration_s"] == pytest.approx(2.0, abs=0.11)
    assert probe(path, decode_all=True)["num_frames"] == 20
    frames = read_frames(path, frames=5, size=32)
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    expected = 10 * sample_indices(20, 5, train=False)
    np.testing.assert_allclose(frames.reshape(5, -1).mean(1), expected, atol=4)  # the right frames came back
    more = read_frames(f"file://{path}", frames=30, size=16, train=True, rng=np.random.default_rng(0))
    assert more.shape == (30, 16, 16, 3)
    # a count from the shard row that is too high: the missing indices get the last frame
    late = read_frames(path, frames=4, size=16, num_frames=40)
    assert late.shape == (4, 16, 16, 3) and late[-1].mean() == pytest.approx(190, abs=4)


def test_storage_uris_open_through_pyarrow(tmp_path, monkeypatch):
    """s3:// and gs:// go through a seekable pyarrow input file (a local SubTree filesystem stands in)."""
    import pyarrow.fs as pafs

    from actionllm import storage

    grey_clip(tmp_path / "remote.mp4", frames=8)
    monkeypatch.setattr(storage, "resolve", lambda uri: (pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()),
                                                         str(uri).split("/", 3)[3]))
    assert probe("s3://bucket/remote.mp4")["num_frames"] == 8
    assert read_frames("gs://bucket/remote.mp4", frames=4, size=16).shape == (4, 16, 16, 3)
    with pytest.raises(VideoError, match="file not found"):
        probe("s3://bucket/absent.mp4")


def test_read_frames_crops_the_centre(tmp_path):
    video = np.zeros((4, 32, 64, 3), np.uint8)
    video[:, :, 16:48] = 200  # a bright centre square, dark sides
    path = render.write_mp4(video, tmp_path / "wide.mp4", fps=5)
    frames = read_frames(path, frames=2, size=16)
    assert frames.shape == (2, 16, 16, 3) and frames[:, 2:-2, 2:-2].mean() > 180


def test_sample_indices():
    np.testing.assert_array_equal(sample_indices(40, 4, train=False), [5, 15, 25, 35])
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = sample_indices(40, 4, train=True, rng=rng)
        assert all(10 * k <= i < 10 * (k + 1) for k, i in enumerate(idx))
    a = sample_indices(100, 8, True, np.random.default_rng(3))
    np.testing.assert_array_equal(a, sample_indices(100, 8, True, np.random.default_rng(3)))
    short = sample_indices(3, 8, train=False)
    assert len(short) == 8 and short.min() >= 0 and short.max() <= 2 and np.all(np.diff(short) >= 0)
    assert set(short) == {0, 1, 2}
    train_short = sample_indices(3, 8, True, np.random.default_rng(1))
    assert train_short.max() <= 2 and np.all(np.diff(train_short) >= 0)
    assert len(sample_indices(1, 5, train=True)) == 5
    with pytest.raises(ValueError):
        sample_indices(0, 4, train=False)


def test_probe_rejects_unreadable_files(tmp_path):
    good = grey_clip(tmp_path / "good.mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    for path in (truncated, text, tmp_path / "missing.mp4"):
        with pytest.raises(VideoError) as err:
            probe(path)
        assert str(path) in str(err.value) and err.value.reason
    with pytest.raises(VideoError, match="file not found"):
        read_frames(tmp_path / "missing.mp4", 4, 16)


def test_write_mp4_refuses_odd_sizes(tmp_path):
    with pytest.raises(ValueError, match="even"):
        render.write_mp4(np.zeros((2, 15, 16, 3), np.uint8), tmp_path / "odd.mp4", fps=10)


# --- video folder -> shards -----------------------------------------------------------------------------------
def clip_folder(root: Path) -> Path:
    for cls, names in {"jump": ["j1", "j2"], "wave": ["w1", "w2"]}.items():
        for name in names:
            grey_clip(root / cls / f"{name}.mp4", frames=6, size=32)
    (root / "wave" / "broken.mp4").write_text("not a video")
    (root / "wave" / "readme.txt").write_text("ignored: not a video extension")
    return root


def test_prepare_keeps_good_clips_and_lists_the_bad_one(tmp_path):
    src = clip_folder(tmp_path / "clips")
    manifest = folder.prepare(src, tmp_path / "shards", val_fraction=0.0)
    assert manifest.modality == "video" and manifest.layout == "video" and manifest.source_format == "video-folder"
    assert manifest.class_names == ["jump", "wave"]
    assert manifest.counts["accepted"] == 4 and manifest.counts["rejected"] == 1 and manifest.counts["total"] == 5
    [bad] = manifest.rejected
    assert bad.sample_id == "broken" and bad.source.endswith("broken.mp4") and bad.reason
    assert Manifest.read(tmp_path / "shards").rejected[0].reason == bad.reason
    rows = folder.read_video_rows(tmp_path / "shards")
    assert sorted(r["sample_id"] for r in rows) == ["j1", "j2", "w1", "w2"]
    for r in rows:
        assert Path(r["uri"]).is_absolute() and Path(r["uri"]).is_file()
        assert r["label_name"] == manifest.class_names[r["label"]] and r["num_frames"] == 6
        assert (r["width"], r["height"]) == (32, 32) and r["split"] in ("train", "test")
    assert manifest.protocol == "holdout" and manifest.frames["max"] == 6
    assert sum(manifest.per_class["wave"].values()) == 2
    with pytest.raises(FileExistsError):
        folder.prepare(src, tmp_path / "shards")


def test_csv_splits_and_subjects(tmp_path):
    src = clip_folder(tmp_path / "clips")
    table = tmp_path / "list.csv"
    table.write_text("path,label,subject,view,split\n"
                     "jump/j1.mp4,jump,1,front,train\njump/j2.mp4,jump,2,side,test\n"
                     "wave/w1.mp4,wave,1,front,val\nwave/w2.mp4,wave,2,front,train\n"
                     "wave/gone.mp4,wave,3,front,test\n")
    shutil.move(table, src / "list.csv")
    manifest = folder.prepare(src, tmp_path / "a", csv_path=src / "list.csv", val_fraction=0.5)
    rows = {r["sample_id"]: r for r in folder.read_video_rows(tmp_path / "a")}
    assert {k: r["split"] for k, r in rows.items()} == {"j1": "train", "j2": "test", "w1": "val", "w2": "train"}
    assert rows["j2"]["view"] == "side" and rows["j2"]["subject"] == "2"
    assert manifest.protocol == "csv" and [r.sample_id for r in manifest.rejected] == ["gone"]
    assert "file not found" in manifest.rejected[0].reason
    assert [r["sample_id"] for r in folder.read_video_rows(tmp_path / "a", split="test")] == ["j2"]
    # subjects but no split column: cross-subject, each subject on one side only
    (src / "subjects.csv").write_text("path,label,subject\n" + "".join(
        f"{c}/{n}.mp4,{c},{s}\n" for c, n, s in [("jump", "j1", "a"), ("jump", "j2", "b"), ("wave", "w1", "a"),
                                                  ("wave", "w2", "b")]))
    manifest = folder.prepare(src, tmp_path / "b", csv_path=src / "subjects.csv", val_fraction=0.0)
    assert manifest.protocol == "cross-subject"
    sides = {}
    for r in folder.read_video_rows(tmp_path / "b"):
        sides.setdefault(r["subject"], set()).add(r["split"])
    assert sorted(len(s) for s in sides.values()) == [1, 1] and {"test"} in sides.values()


def test_old_skeleton_manifests_still_read(tmp_path):
    shards = skeleton_shards(tmp_path / "skel", [stick("a", subject="1"), stick("b", subject="2")], ["wave"])
    raw = json.loads((shards / "manifest.json").read_text())
    raw.pop("modality")
    (shards / "manifest.json").write_text(json.dumps(raw))
    assert Manifest.read(shards).modality == "skeleton"


def test_render_shards_then_prepare_round_trip(tmp_path):
    seqs = [stick("a01", label=0, label_name="high wave", subject="1"),
            stick("a02", label=0, label_name="high wave", subject="2"),
            stick("b01", label=1, label_name="bend/down", subject="1", frames=8),
            stick("b02", label=1, label_name="bend/down", subject="2", frames=8)]
    shards = skeleton_shards(tmp_path / "skel", seqs, ["high wave", "bend/down"])
    result = render.render_shards(shards, tmp_path / "videos", size=32, views=(0.0, 30.0))
    assert result["videos"] == 8 and result["sequences"] == 4 and result["frames"] == 2 * (10 + 10 + 8 + 8)
    assert (tmp_path / "videos" / "high_wave" / "a01_v30.mp4").is_file()
    assert (tmp_path / "videos" / "bend_down" / "b02_v0.mp4").is_file()
    with open(tmp_path / "videos" / "videos.csv") as f:
        listed = list(csv.DictReader(f))
    assert len(listed) == 8 and {r["view"] for r in listed} == {"front", "rot30"}
    manifest = folder.prepare(tmp_path / "videos", tmp_path / "vshards")
    assert sorted(manifest.class_names) == ["bend/down", "high wave"] and manifest.protocol == "csv"
    assert manifest.counts["accepted"] == 8 and not manifest.rejected
    assert manifest.counts["train"] == 4 and manifest.counts["test"] == 4  # the source's cross-subject split
    rows = folder.read_video_rows(tmp_path / "vshards")
    assert {r["sample_id"]: r["num_frames"] for r in rows}["b01_v30"] == 8
    assert all(r["split"] == ("train" if r["subject"] == "1" else "test") for r in rows)
    with pytest.raises(FileExistsError):
        render.render_shards(shards, tmp_path / "videos")
    only_test = render.render_shards(shards, tmp_path / "test_only", size=32, splits=["test"], limit=1)
    assert only_test["videos"] == 1 and only_test["per_split"] == {"test": 1}


# --- commands -------------------------------------------------------------------------------------------------
@pytest.mark.data
def test_cli_prepare_render_prepare(tmp_path, data_root):
    src = tmp_path / "msr"
    src.mkdir()
    for name in ("a01_s01_e01", "a01_s02_e01", "a13_s01_e01", "a13_s02_e01"):
        shutil.copy(data_root / "msr_action3d" / "real_world_coordinates" / f"{name}_skeleton3D.txt", src)
    runner = CliRunner()
    res = runner.invoke(app, ["prepare", "--format", "msr-action3d", "--input", str(src), "--output",
                              str(tmp_path / "skel"), "--val-fraction", "0"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["render", "--data", str(tmp_path / "skel"), "--output", str(tmp_path / "videos"),
                              "--size", "48", "--views", "0,90"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "videos").rglob("*.mp4"))) == 8
    res = runner.invoke(app, ["prepare", "--format", "video-folder", "--input", str(tmp_path / "videos"),
                              "--output", str(tmp_path / "vshards")])
    assert res.exit_code == 0, res.output
    manifest = Manifest.read(tmp_path / "vshards")
    assert manifest.class_names == ["bend", "high arm wave"] and manifest.counts["accepted"] == 8
    assert manifest.counts["train"] == 4 and manifest.counts["test"] == 4  # MSR cross-subject: s01 train, s02 test
    # one-line errors, exit 2
    res = runner.invoke(app, ["render", "--data", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x")])
    assert res.exit_code == 2 and "not a folder" in res.output
    res = runner.invoke(app, ["render", "--data", str(tmp_path / "skel"), "--output", str(tmp_path / "x"),
                              "--views", "0,abc"])
    assert res.exit_code == 2 and "'abc'" in res.output
    res = runner.invoke(app, ["prepare", "--format", "video-folder", "--input", str(tmp_path / "videos"),
                              "--output", str(tmp_path / "vshards")])
    assert res.exit_code == 2 and "not empty" in res.output
    res = runner.invoke(app, ["formats"])
    assert res.exit_code == 0 and "video-folder" in res.output
