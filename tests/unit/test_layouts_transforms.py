import numpy as np
import pytest

from actionllm.skeleton.layouts import LAYOUTS, coco17_mapping, get_layout
from actionllm.skeleton.sequence import SkeletonSequence
from actionllm.skeleton.transforms import (
    add_body_centre,
    drop_face,
    normalise_frames,
    resample_fps,
    select_joints,
    sliding_windows,
    to_coco17,
    window_starts,
)

REQUIRED = ["coco17", "kinect20", "florence15", "jhmdb15", "ntu25", "halpe26", "openpose18"]
LIMBS = [f"{s}_{j}" for s in ("left", "right") for j in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")]


@pytest.mark.parametrize("name", REQUIRED)
def test_layout_is_consistent(name):
    lay = get_layout(name)
    # a skeleton is one connected tree: V joints, V-1 bones, every joint reachable
    assert len(lay.bones) == lay.num_joints - 1
    adj = {j: set() for j in lay.joints}
    for a, b in lay.bones:
        adj[a].add(b)
        adj[b].add(a)
    seen, todo = set(), [lay.joints[0]]
    while todo:
        j = todo.pop()
        if j not in seen:
            seen.add(j)
            todo.extend(adj[j] - seen)
    assert seen == set(lay.joints)
    assert set(LIMBS) <= set(lay.joints)  # 12 limb joints common to all
    perm = lay.flip_permutation()
    assert sorted(perm) == list(range(lay.num_joints)) and (perm[perm] == np.arange(lay.num_joints)).all()


def test_layout_facts():
    assert get_layout("coco17").face == {"nose", "left_eye", "right_eye", "left_ear", "right_ear"}
    assert get_layout("kinect20").joints[:4] == ("hip_center", "spine", "shoulder_center", "head")
    assert get_layout("openpose18").index("neck") == 1
    assert get_layout("jhmdb15").face == {"face"}
    assert len(get_layout("coco17").left_right) == 8
    with pytest.raises(KeyError, match="unknown layout 'coco18'"):
        get_layout("coco18")


@pytest.mark.parametrize("name", [n for n in REQUIRED if n != "coco17"])
def test_mapping_to_coco17_copies_measured_joints_and_marks_missing(name):
    lay = get_layout(name)
    rng = np.random.default_rng(0)
    seq = SkeletonSequence("x", name, rng.normal(size=(5, lay.num_joints, 3)).astype(np.float32))
    coco = to_coco17(seq)
    mapping = coco17_mapping(name)
    c = get_layout("coco17")
    for k, joint in enumerate(c.joints):
        src = mapping[joint]
        if src is None:
            assert (coco.joints[0, :, k] == 0).all() and (coco.scores[0, :, k] == 0).all()
        else:
            np.testing.assert_array_equal(coco.joints[0, :, k], seq.joints[0, :, lay.index(src)])
            assert (coco.scores[0, :, k] == 1).all()
    assert all(mapping[j] == j for j in LIMBS)


def test_kinect_to_coco17_missing_face():
    m = coco17_mapping("kinect20")
    assert m["nose"] == "head" and m["left_eye"] is None and m["right_ear"] is None


def test_body_centre_and_13_joints_for_coco():
    rng = np.random.default_rng(1)
    seq = SkeletonSequence("x", "coco17", rng.normal(size=(4, 17, 2)), scores=rng.uniform(size=(4, 17)))
    out = add_body_centre(drop_face(seq))
    assert out.num_joints == 13
    lay = out.layout_spec
    ls, rs, c = lay.index("left_shoulder"), lay.index("right_shoulder"), lay.index("body_centre")
    np.testing.assert_allclose(out.joints[0, :, c], (out.joints[0, :, ls] + out.joints[0, :, rs]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(out.scores[0, :, c], np.minimum(out.scores[0, :, ls], out.scores[0, :, rs]))


def test_select_joints_order():
    seq = SkeletonSequence("x", "coco17", np.arange(17 * 2, dtype=np.float32).reshape(1, 17, 2))
    out = select_joints(seq, ["right_wrist", "nose"])
    np.testing.assert_array_equal(out.joints[0, 0], [[20, 21], [0, 1]])


def test_normalise_frames_zero_mean_unit_variance():
    x = np.random.default_rng(2).normal(5, 3, size=(10, 13, 2)).astype(np.float32)
    y = normalise_frames(x)
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=1), 1, atol=1e-3)
    # a frame with all joints at one point stays finite (epsilon)
    assert np.isfinite(normalise_frames(np.ones((1, 13, 2), np.float32))).all()


@pytest.mark.parametrize("t,n,stride,expected", [(72, 18, 9, 7), (72, 18, None, 4), (72, 18, 18, 4),
                                                 (10, 18, 9, 1), (18, 18, 9, 1), (19, 18, 1, 2)])
def test_window_counts(t, n, stride, expected):
    assert len(window_starts(t, n, stride)) == expected
    seq = SkeletonSequence("x", "coco17", np.zeros((t, 17, 2)) + 1)
    wins = sliding_windows(seq, n, stride)
    assert len(wins) == expected and all(w.num_frames == n for w in wins)


def test_window_content_and_padding():
    joints = np.arange(72, dtype=np.float32)[:, None, None] * np.ones((72, 17, 2), np.float32)
    seq = SkeletonSequence("x", "coco17", joints)
    wins = sliding_windows(seq, 18, 9)
    assert [w.meta["window_start"] for w in wins] == [0, 9, 18, 27, 36, 45, 54]
    assert wins[1].joints[0, 0, 0, 0] == 9 and wins[1].joints[0, -1, 0, 0] == 26
    short = sliding_windows(SkeletonSequence("y", "coco17", joints[:5]), 8)
    assert short[0].joints[0, -1, 0, 0] == 4  # padded with the last frame


def test_resample_fps():
    t = np.arange(30, dtype=np.float32)  # 1 s at 30 fps, x = frame index
    seq = SkeletonSequence("x", "coco17", t[:, None, None] * np.ones((30, 17, 2), np.float32), fps=30)
    down = resample_fps(seq, 15)
    assert down.num_frames == 15 and down.fps == 15
    np.testing.assert_allclose(down.joints[0, :, 0, 0], np.arange(15) * 2)
    up = resample_fps(seq, 60)
    assert up.num_frames == 59
    np.testing.assert_allclose(up.joints[0, :, 0, 0], np.arange(59) / 2, atol=1e-5)


def test_sequence_validation_messages():
    with pytest.raises(ValueError, match="layout 'coco17' has 17 joints, data has 15"):
        SkeletonSequence("bad", "coco17", np.zeros((3, 15, 2)))
    with pytest.raises(ValueError, match="2 or 3 coordinates"):
        SkeletonSequence("bad", "coco17", np.zeros((3, 17, 4)))
    assert "all joint coordinates are zero" in SkeletonSequence("z", "coco17", np.zeros((3, 17, 2))).problem()
    assert "too short" in SkeletonSequence("z", "coco17", np.ones((1, 17, 2))).problem()
    nan = np.ones((3, 17, 2))
    nan[1, 2, 0] = np.nan
    assert "non-finite" in SkeletonSequence("z", "coco17", nan).problem()


def test_all_layouts_registered():
    assert set(REQUIRED) <= set(LAYOUTS)
