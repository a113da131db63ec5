"""Skeleton preprocessing as the field does it (view alignment, bone / motion modalities) and the rotated-view
evaluation, on real MSR Action3D sequences (Kinect v1, 3D, y up)."""

import json

import numpy as np
import pytest
import torch

from actionllm.components.clips import (
    ClipConfig,
    align_view,
    bone_parents,
    centre_joints,
    modality_features,
    prepare_clip,
)
from actionllm.evaluation import evaluate
from actionllm.methods.stgcn.model import STGCNRecognizer
from actionllm.skeleton.augment import uniform_sample_indices
from actionllm.skeleton.formats import get_reader
from actionllm.skeleton.layouts import get_layout
from actionllm.skeleton.shards import write_shards
from actionllm.skeleton.transforms import body_axes, rotate_view, up_direction

LAY = get_layout("kinect20")


@pytest.fixture(scope="module")
def msr(data_root):
    reader = get_reader("msr-action3d")(data_root / "msr_action3d")
    seqs = [s for f in reader.files()[::60][:8] for s in reader.read_file(f)]
    assert len(seqs) >= 6 and all(s.layout == "kinect20" and s.joints.shape[-1] == 3 for s in seqs)
    return reader.class_names, seqs


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def bone_lengths(joints):
    b = LAY.bone_index
    return np.linalg.norm(joints[..., b[:, 0], :] - joints[..., b[:, 1], :], axis=-1)


def test_view_alignment_puts_the_spine_on_z_and_the_shoulders_on_x(msr):
    for seq in msr[1]:
        out = align_view(seq.joints, "kinect20")
        spine, shoulders, _, ok = body_axes(out, "kinect20")
        f = int(np.argmax(ok))
        np.testing.assert_allclose(unit(spine[f]), [0, 0, 1], atol=1e-5)
        # the shoulder line (left -> right, as PYSKL's r - l) lies in the x-z plane, pointing +x, and its part
        # perpendicular to the spine is exactly +x
        assert abs(unit(shoulders[f])[1]) < 1e-5 and shoulders[f][0] > 0
        np.testing.assert_allclose(unit(shoulders[f] * [1, 1, 0]), [1, 0, 0], atol=1e-5)
        np.testing.assert_allclose(bone_lengths(out), bone_lengths(seq.joints), rtol=1e-4, atol=1e-6)  # rigid
    joints = msr[1][0].joints.copy()
    joints[0, :, LAY.index("left_foot")] = 0.0  # a missing joint stays missing
    assert np.all(align_view(joints, "kinect20")[0, :, LAY.index("left_foot")] == 0)


def test_2d_alignment_scales_by_the_spine_length(msr):
    joints = msr[1][0].joints[..., :2] * 400.0  # pixels, say
    out = align_view(joints, "kinect20")
    spine, _, _, ok = body_axes(out, "kinect20")
    assert np.median(np.linalg.norm(spine[ok], axis=-1)) == pytest.approx(1.0, rel=1e-5)


def test_prepare_clip_runs_the_steps_in_pyskls_order(msr):
    joints = msr[1][1].joints
    clip = ClipConfig(frames=16, align="view", modality="bone_motion")
    got, src = prepare_clip(joints, clip, "kinect20")
    want = modality_features(centre_joints(align_view(joints, "kinect20"), "kinect20", "frame"), "kinect20",
                             "bone_motion")[:, uniform_sample_indices(joints.shape[1], 16)]
    np.testing.assert_allclose(got, want, atol=1e-6)
    plain, _ = prepare_clip(joints, ClipConfig(frames=16), "kinect20")  # the defaults are today's pipeline
    np.testing.assert_array_equal(plain, centre_joints(joints, "kinect20", "frame")[:, src])


def test_bone_parents_point_towards_the_graph_centre():
    name = {j: LAY.joints[p] for j, p in zip(LAY.joints, bone_parents("kinect20"), strict=True)}
    assert name["shoulder_center"] == "shoulder_center"  # the centre: a zero bone, as PYSKL's (20, 20)
    assert (name["hip_center"], name["spine"], name["head"]) == ("spine", "shoulder_center", "shoulder_center")
    assert (name["left_hand"], name["right_foot"], name["left_hip"]) == ("left_wrist", "right_ankle", "hip_center")
    # ntu25: PYSKL's JointToBone pairs for NTU (0-based), except the hand tips/thumbs, which follow our bones
    pyskl = {0: 1, 1: 20, 2: 20, 3: 2, 4: 20, 5: 4, 6: 5, 7: 6, 8: 20, 9: 8, 10: 9, 11: 10, 12: 0, 13: 12, 14: 13,
             15: 14, 16: 0, 17: 16, 18: 17, 19: 18, 20: 20}
    parents = bone_parents("ntu25")
    assert {v: int(parents[v]) for v in pyskl} == pyskl


def test_bones_and_motion_on_real_sequences(msr):
    joints = msr[1][2].joints
    parents = bone_parents("kinect20")
    bone = modality_features(joints, "kinect20", "bone")
    for a, b in LAY.bone_index:  # every bone of the layout, child minus parent
        child, parent = (a, b) if parents[a] == b else (b, a)
        assert parents[child] == parent
        np.testing.assert_allclose(bone[..., child, :], joints[..., child, :] - joints[..., parent, :], atol=1e-6)
    assert np.all(bone[..., LAY.index("shoulder_center"), :] == 0)
    motion = modality_features(joints, "kinect20", "joint_motion")
    np.testing.assert_allclose(motion[:, :-1], np.diff(joints, axis=1), atol=1e-6)
    assert np.all(motion[:, -1] == 0)  # the last frame is zero, as PYSKL's ToMotion
    bm = modality_features(joints, "kinect20", "bone_motion")
    np.testing.assert_allclose(bm[:, :-1], np.diff(bone, axis=1), atol=1e-6)
    holed = joints.copy()
    holed[0, 3, LAY.index("left_elbow")] = 0.0  # a missing joint: its bones and motions are zero, not huge
    hb = modality_features(holed, "kinect20", "bone")
    assert np.all(hb[0, 3, LAY.index("left_elbow")] == 0) and np.all(hb[0, 3, LAY.index("left_wrist")] == 0)
    assert np.all(modality_features(holed, "kinect20", "joint_motion")[0, 2:4, LAY.index("left_elbow")] == 0)


def test_view_rotation_is_rigid_and_turns_about_the_vertical(msr):
    seq = msr[1][3]
    up = up_direction(seq.joints, "kinect20")
    assert up[1] > 0.9  # MSR Action3D: Kinect's y is up
    np.testing.assert_array_equal(rotate_view(seq.joints, "kinect20", 0.0), seq.joints)  # exactly the identity
    turned = rotate_view(seq.joints, "kinect20", 90.0)
    assert not np.allclose(turned, seq.joints, atol=1e-2)
    np.testing.assert_allclose(bone_lengths(turned), bone_lengths(seq.joints), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(turned @ up, seq.joints @ up, atol=1e-5)  # heights are kept
    _, sh0, _, _ = body_axes(seq.joints, "kinect20")
    _, sh1, _, _ = body_axes(turned, "kinect20")
    flat0, flat1 = sh0[0] - (sh0[0] @ up) * up, sh1[0] - (sh1[0] @ up) * up
    assert np.degrees(np.arccos(unit(flat0) @ unit(flat1))) == pytest.approx(90.0, abs=1e-3)
    assert np.cross(flat0, flat1) @ up > 0  # counter-clockwise seen from above
    np.testing.assert_allclose(rotate_view(seq.joints, "kinect20", 360.0), seq.joints, atol=1e-5)
    with pytest.raises(ValueError, match="3D"):
        rotate_view(seq.joints[..., :2], "kinect20", 30.0)


def test_an_aligned_clip_does_not_see_the_view(msr):
    # align: view undoes any rigid turn, so a recognizer trained with it scores every --rotate angle alike
    joints = msr[1][4].joints
    clip = ClipConfig(frames=16, align="view")
    plain, _ = prepare_clip(joints, clip, "kinect20")
    turned, _ = prepare_clip(rotate_view(joints, "kinect20", 60.0), clip, "kinect20")
    np.testing.assert_allclose(turned, plain, atol=1e-4)
    unaligned, _ = prepare_clip(rotate_view(joints, "kinect20", 60.0), ClipConfig(frames=16), "kinect20")
    assert not np.allclose(unaligned, prepare_clip(joints, ClipConfig(frames=16), "kinect20")[0], atol=1e-2)


def test_rotated_evaluation_at_zero_equals_the_plain_one(msr, tmp_path):
    classes, seqs = msr
    write_shards(seqs, tmp_path / "shards", split="test")
    rec = STGCNRecognizer({"clip": {"frames": 16}}, classes, "kinect20", 3, seed=0)
    with torch.no_grad():  # BatchNorm statistics off their defaults, so that the input's view matters
        rec.train()
        rec(torch.randn(8, 1, 16, 20, 3) * 0.3, torch.ones(8, 1))
    folder = rec.save(tmp_path / "rec")
    # the headline metrics of the same call are the plain evaluation (the unrotated path is untouched)
    res = evaluate(str(folder), str(tmp_path / "shards"), limit=3, rotate=[0, 90], report=str(tmp_path / "report"))
    for k in ("top1", "top5", "macro_f1", "sequences"):
        assert res["rotated"]["0"][k] == res[k]
    assert set(res["rotated"]) == {"0", "90"} and res["rotate_up"] == "spine"
    assert json.loads((tmp_path / "report" / "report.json").read_text())["rotated"] == res["rotated"]
    # the scores themselves: 0 degrees feeds the recognizer the very same windows; 90 does not
    seq = seqs[0]
    same = rec.predict_windows([rotate_view(seq.joints, "kinect20", 0.0)])["probabilities"]
    np.testing.assert_array_equal(same, rec.predict_windows([seq.joints])["probabilities"])
    turned = rec.predict_windows([rotate_view(seq.joints, "kinect20", 90.0)])["probabilities"]
    assert not np.allclose(turned, same, atol=1e-6)


def test_rotated_evaluation_refuses_2d(tmp_path):
    folder = STGCNRecognizer({"clip": {"frames": 16}}, ["a", "b"], "coco17", 2).save(tmp_path / "rec2d")
    with pytest.raises(ValueError, match="3D skeletons.*2D joints"):
        evaluate(str(folder), str(tmp_path), rotate=[30])
    folder3 = STGCNRecognizer({"clip": {"frames": 16}}, ["a"], "kinect20", 3).save(tmp_path / "r3")
    with pytest.raises(ValueError, match="--up 'sideways'"):
        evaluate(str(folder3), str(tmp_path), rotate=[30], up="sideways")
