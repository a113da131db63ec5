"""ST-GCN baseline: adjacency partitions against hand-checked entries, shapes (2D/3D, M > 1), preprocessing,
augmentations, save/load, and the recipe's place in the registry and TrainConfig."""

import numpy as np
import pytest
import torch

from actionllm.components.clips import ClipCollate, ClipPreprocessor, prepare_clip
from actionllm.components.gcn import adjacency, graph_centre, hop_distances, spatial_partition
from actionllm.methods import get_recipe, load_recognizer
from actionllm.methods.stgcn.model import STGCNRecognizer
from actionllm.registry import knob_overrides
from actionllm.skeleton.augment import (
    AugmentConfig,
    apply_linear,
    augment_sequence,
    random_linear,
    temporal_crop,
    uniform_sample_indices,
)
from actionllm.skeleton.layouts import Layout, get_layout
from training.config import TrainConfig

ROOT, CENTRIPETAL, CENTRIFUGAL = 0, 1, 2


def test_kinect20_partition_hand_checked():
    a = spatial_partition("kinect20")
    lay = get_layout("kinect20")
    j = lay.index
    assert lay.joints[graph_centre(lay)] == "shoulder_center"
    # shoulder_center: neighbours spine, head, both shoulders + itself -> degree 5; all neighbours are farther out
    sc = j("shoulder_center")
    assert a[ROOT, sc, sc] == pytest.approx(1 / 5)
    for n in ("spine", "head", "left_shoulder", "right_shoulder"):
        assert a[CENTRIFUGAL, j(n), sc] == pytest.approx(1 / 5)
    assert a[CENTRIPETAL, :, sc].sum() == 0
    # spine (r=1): shoulder_center (r=0) is centripetal, hip_center (r=2) centrifugal; degree 3
    sp = j("spine")
    assert a[CENTRIPETAL, sc, sp] == pytest.approx(1 / 3)
    assert a[CENTRIFUGAL, j("hip_center"), sp] == pytest.approx(1 / 3)
    assert a[ROOT, sp, sp] == pytest.approx(1 / 3)
    # hip_center (r=2): degree 4 (spine, two hips, itself)
    hc = j("hip_center")
    assert a[CENTRIPETAL, sp, hc] == pytest.approx(1 / 4)
    assert a[CENTRIFUGAL, j("left_hip"), hc] == pytest.approx(1 / 4)
    # a leaf: left_hand has its wrist (closer) and itself
    lh = j("left_hand")
    assert a[ROOT, lh, lh] == pytest.approx(1 / 2) and a[CENTRIPETAL, j("left_wrist"), lh] == pytest.approx(1 / 2)
    # degree normalisation: every joint averages its neighbourhood (columns of the sum are stochastic)
    np.testing.assert_allclose(a.sum(0).sum(0), np.ones(20), atol=1e-6)
    # no message along a non-bone
    assert a[:, j("head"), j("left_foot")].sum() == 0


def test_coco17_partition_hand_checked():
    a = spatial_partition("coco17")
    lay = get_layout("coco17")
    j = lay.index
    assert graph_centre(lay) == 0  # nose, PYSKL's coco centre
    le = j("left_eye")  # nose (r=0), left_ear (r=2), itself -> degree 3
    assert a[CENTRIPETAL, j("nose"), le] == pytest.approx(1 / 3)
    assert a[CENTRIFUGAL, j("left_ear"), le] == pytest.approx(1 / 3)
    lhip = j("left_hip")  # left_shoulder (r=1) closer, left_knee (r=3) farther
    assert a[CENTRIPETAL, j("left_shoulder"), lhip] == pytest.approx(1 / 3)
    assert a[CENTRIFUGAL, j("left_knee"), lhip] == pytest.approx(1 / 3)
    assert a[ROOT, 0, 0] == pytest.approx(1 / 5)
    assert (a[ROOT] > 0).sum() == 17  # a tree: only self-loops are in the root subset
    np.testing.assert_allclose(a.sum(0).sum(0), np.ones(17), atol=1e-6)


def test_equal_distance_neighbours_join_the_root_subset():
    # a triangle a-b-c: b and c are both 1 hop from the centre a, so each is in the other's root subset
    tri = Layout(name="triangle-test", joints=("a", "b", "c"), bones=(("a", "b"), ("a", "c"), ("b", "c")))
    a = spatial_partition(tri, centre=0)
    assert a[ROOT, 2, 1] == pytest.approx(1 / 3) and a[ROOT, 1, 2] == pytest.approx(1 / 3)
    assert a[CENTRIPETAL, 0, 1] == pytest.approx(1 / 3)
    assert a[CENTRIFUGAL, 1, 0] == pytest.approx(1 / 3)


def test_hop_distance_is_the_true_distance():
    lay = get_layout("kinect20")
    r = hop_distances(adjacency(lay), lay.index("shoulder_center"))
    assert r[lay.index("left_foot")] == 6  # shoulder_center-spine-hip_center-left_hip-knee-ankle-foot


@pytest.mark.parametrize("layout,dims,bodies", [("kinect20", 3, 1), ("coco17", 2, 2), ("ntu25", 3, 2),
                                                ("jhmdb15", 2, 1)])
def test_shapes_2d_3d_and_several_bodies(layout, dims, bodies):
    rec = STGCNRecognizer({"clip": {"frames": 32}}, ["a", "b", "c"], layout, dims)
    v = get_layout(layout).num_joints
    x = torch.randn(4, bodies, 32, v, dims)
    out = rec(x, torch.ones(4, bodies), labels=torch.tensor([0, 1, 2, 0]))
    assert out["logits"].shape == (4, 3)
    assert out["features"].shape == (4, bodies, 128, 8, v)  # small preset: 2 temporal stride-2 blocks
    out["loss"].backward()
    assert rec.net.blocks[0].gcn.importance.grad is not None


def test_standard_preset_is_the_papers_ten_blocks():
    rec = STGCNRecognizer({"preset": "standard"}, ["a"] * 60, "ntu25", 3)
    assert len(rec.net.blocks) == 10
    chans = [b.tcn.conv.out_channels for b in rec.net.blocks]
    assert chans == [64] * 4 + [128] * 3 + [256] * 3
    n = sum(p.numel() for p in rec.net.parameters())
    assert 2.9e6 < n < 3.3e6  # ST-GCN is ~3.1M parameters on NTU


def test_zero_padded_bodies_do_not_change_the_prediction():
    rec = STGCNRecognizer({"clip": {"frames": 16}}, ["a", "b"], "coco17", 2).eval()
    one = torch.randn(2, 1, 16, 17, 2)
    two = torch.cat([one, torch.zeros_like(one)], 1)
    a = rec(one, torch.ones(2, 1))["logits"]
    b = rec(two, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))["logits"]
    torch.testing.assert_close(a, b)


def test_prepare_clip_centres_and_resamples():
    rng = np.random.default_rng(0)
    joints = rng.normal(size=(1, 50, 20, 3)).astype(np.float32) + 5.0
    cfg = get_recipe("stgcn").config({"clip": {"frames": 24}}).clip
    clip, src = prepare_clip(joints, cfg, "kinect20")
    assert clip.shape == (1, 24, 20, 3) and len(src) == 24 and np.all(np.diff(src) >= 0)
    lay = get_layout("kinect20")
    mid = 0.5 * (clip[0, :, lay.index("left_shoulder")] + clip[0, :, lay.index("right_shoulder")])
    np.testing.assert_allclose(mid, 0, atol=1e-5)  # per-frame centre = shoulder midpoint of body 0
    again, _ = prepare_clip(joints, cfg, "kinect20")
    np.testing.assert_array_equal(clip, again)  # no rng: deterministic
    first = get_recipe("stgcn").config({"clip": {"frames": 24, "centre": "first"}}).clip
    clip_f, src_f = prepare_clip(joints, first, "kinect20")
    centre0 = 0.5 * (joints[0, 0, lay.index("left_shoulder")] + joints[0, 0, lay.index("right_shoulder")])
    np.testing.assert_allclose(clip_f[0], joints[0, src_f] - centre0, atol=1e-5)  # one shift for all frames


def test_uniform_sampling():
    np.testing.assert_array_equal(uniform_sample_indices(8, 4), [0, 2, 4, 6])
    short = uniform_sample_indices(3, 8)
    assert set(short) == {0, 1, 2} and np.all(np.diff(short) >= 0)  # every frame, repeated in order
    rng = np.random.default_rng(1)
    draws = np.stack([uniform_sample_indices(100, 10, rng) for _ in range(50)])
    assert np.all(draws // 10 == np.arange(10))  # one frame from each segment
    assert len(np.unique(draws[:, 0])) > 1  # and a random one
    with pytest.raises(ValueError):
        uniform_sample_indices(0, 4)


def test_augmentations_keep_missing_joints_and_bone_lengths():
    rng = np.random.default_rng(2)
    joints = rng.normal(size=(1, 10, 20, 3)).astype(np.float32)
    joints[0, :, 5] = 0.0  # a missing joint
    rot = apply_linear(joints, random_linear(3, AugmentConfig(rotate=0.5), rng))
    assert np.all(rot[0, :, 5] == 0)
    bones = get_layout("kinect20").bone_index
    ok = (bones != 5).all(1)
    before = np.linalg.norm(joints[..., bones[ok, 0], :] - joints[..., bones[ok, 1], :], axis=-1)
    after = np.linalg.norm(rot[..., bones[ok, 0], :] - rot[..., bones[ok, 1], :], axis=-1)
    np.testing.assert_allclose(before, after, rtol=1e-4)  # a rotation is rigid
    assert not np.allclose(rot, joints)
    m2 = random_linear(2, AugmentConfig(scale=0.1, shear=0.3), rng)
    assert m2.shape == (2, 2) and not np.allclose(m2, np.eye(2))
    np.testing.assert_array_equal(random_linear(3, AugmentConfig(), rng), np.eye(3))
    crop = temporal_crop(joints, 0.5, rng)
    assert 5 <= crop.shape[1] <= 10
    out = augment_sequence(joints, AugmentConfig(rotate=0.3, crop=0.8), rng)
    assert 8 <= out.shape[1] <= 10


def test_encoder_augments_only_in_training():
    cfg = get_recipe("stgcn").config({"clip": {"frames": 16}})
    rng = np.random.default_rng(3)
    batch = {"joints": np.empty(2, dtype=object), "num_bodies": np.array([1, 2]), "num_frames": np.array([30, 20]),
             "dims": np.array([2, 2]), "label": np.array([0, 1])}
    batch["joints"][:] = [rng.normal(size=(1, 30, 17, 2)).reshape(-1), rng.normal(size=(2, 20, 17, 2)).reshape(-1)]
    ev = STGCNRecognizer.preprocessor(cfg, "coco17", 2)
    a, b = ev(batch), ev(batch)
    np.testing.assert_array_equal(a["x"][1], b["x"][1])
    tr = STGCNRecognizer.preprocessor(cfg, "coco17", 2, train=True, seed=0)
    assert not np.allclose(tr(batch)["x"][0], a["x"][0])
    col = ClipCollate()(a)
    assert col["x"].shape == (2, 2, 16, 17, 2)
    np.testing.assert_array_equal(col["body_mask"].numpy(), [[1, 0], [1, 1]])
    np.testing.assert_array_equal(col["labels"].numpy(), [0, 1])


def test_save_load_predicts_identically_with_explanations(tmp_path):
    rec = STGCNRecognizer({"clip": {"frames": 16}}, ["a", "b", "c"], "florence15", 3, seed=1)
    with torch.no_grad():  # move BatchNorm statistics off their defaults so that loading them matters
        rec.train()
        rec(torch.randn(8, 1, 16, 15, 3) * 3 + 1, torch.ones(8, 1))
    rng = np.random.default_rng(4)
    wins = [rng.normal(size=(1, n, 15, 3)).astype(np.float32) for n in (12, 40, 25)]
    before = rec.predict_windows(wins)
    folder = rec.save(tmp_path / "rec")
    again = load_recognizer(folder)
    assert isinstance(again, STGCNRecognizer)
    after = again.predict_windows(wins)
    np.testing.assert_allclose(before["probabilities"], after["probabilities"], rtol=1e-5, atol=1e-6)
    for fw, w in zip(after["frame_weights"], wins, strict=True):
        assert fw.shape == (w.shape[1],) and fw.sum() == pytest.approx(1.0, abs=1e-4) and (fw >= 0).all()
    assert after["joint_weights"][0].shape == (15,) and after["joint_names"] == list(get_layout("florence15").joints)
    assert (again.window, again.stride) == (None, None)


def test_recipe_registry_and_training_defaults(tmp_path):
    r = get_recipe("stgcn")
    assert r.recognizer_cls() is STGCNRecognizer
    assert isinstance(r.recognizer_cls().preprocessor(r.config(), "coco17", 2), ClipPreprocessor)
    tc = TrainConfig(recipe="stgcn", data="d", output="o")
    assert (tc.optimizer, tc.lr, tc.batch_size) == ("sgd", 0.1, 16)  # PYSKL's schedule
    assert TrainConfig(recipe="stgcn", data="d", output="o", lr=0.05).lr == 0.05  # the user's value wins
    assert TrainConfig(data="d", output="o").optimizer == "adamw"  # joints-llm keeps LoRA defaults
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        TrainConfig(recipe="nope", data="d", output="o")
    with pytest.raises(ValueError, match="preset"):
        r.config({"preset": "huge"})


def test_cli_flags_map_through_recipe_knobs():
    stgcn, jllm = get_recipe("stgcn"), get_recipe("joints-llm")
    assert knob_overrides(stgcn, {"window": 30, "stride": 0, "frames": 48, "preset": None}) == {
        "clip": {"window": 30, "stride": None, "frames": 48}}
    assert knob_overrides(jllm, {"rank": 4})["lora"] == {"r": 4, "alpha": 8}
    assert knob_overrides(jllm, {"rank": 4, "alpha": 4})["lora"] == {"r": 4, "alpha": 4}
    with pytest.raises(ValueError, match="recipe 'stgcn' has no --rank"):
        knob_overrides(stgcn, {"rank": 4})
