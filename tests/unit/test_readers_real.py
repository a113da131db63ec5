"""The five dataset readers against the real data in ../shared/data (read-only; see its README.md).

Golden counts come from each folder's STAGING_NOTES.md. A missing data folder is a failure, not a skip.
"""

from __future__ import annotations

import importlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from actionllm.skeleton.formats.base import READERS, FormatError, Rejection
from actionllm.skeleton.layouts import get_layout

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MODULES = {"msr-action3d": "msr_action3d", "utkinect": "utkinect", "florence3d": "florence3d",
           "utd-mhad": "utd_mhad", "jhmdb": "jhmdb"}


def data(folder: str) -> Path:
    path = DATA / folder
    if not path.is_dir():
        pytest.fail(f"real data folder {path} is missing (expected ../shared/data beside the checkout)")
    return path


def reader(name: str, path: Path, **opts):
    try:
        from actionllm.skeleton.formats import get_reader

        cls = get_reader(name)
    except ImportError:  # another reader module not written yet: import ours directly
        importlib.import_module(f"actionllm.skeleton.formats.{MODULES[name]}")
        cls = READERS[name]
    return cls(path, **opts)


def read_all(r):
    items = list(r)
    return [s for s in items if not isinstance(s, Rejection)], [s for s in items if isinstance(s, Rejection)]


def mean_y(seqs, joint: str) -> float:
    lay = get_layout(seqs[0].layout)
    return float(np.mean([s.joints[0, :, lay.index(joint), 1].mean() for s in seqs if s.problem() is None]))


def check_common(r, seqs, dims: int):
    lay = get_layout(r.layout)
    for s in seqs:
        assert s.layout == r.layout and s.dataset == r.name
        assert s.joints.shape[0] == 1 and s.joints.shape[2:] == (lay.num_joints, dims)
        assert 0 <= s.label < len(r.class_names) and s.label_name == r.class_names[s.label]
        assert Path(s.meta["source"]).is_file()
    assert len({s.sample_id for s in seqs}) == len(seqs)


def split_subjects(r, seqs, protocol="cross-subject"):
    fn = r.protocol(protocol)
    out = {"train": set(), "test": set()}
    for s in seqs:
        out[fn(s)].add(int(s.subject))
    return out


# --- MSR Action3D -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def msr():
    r = reader("msr-action3d", data("msr_action3d"))
    return r, *read_all(r)


def test_msr_counts_and_layout(msr):
    r, seqs, rejections = msr
    assert len(r.files()) == 567 and len(seqs) == 567 and not rejections
    bad = [s.sample_id for s in seqs if s.problem() is not None]
    assert bad == ["a13_s09_e02"]
    assert len(r.class_names) == 20 and r.class_names[0] == "high arm wave" and r.class_names[19] == "pickup and throw"
    assert {s.label for s in seqs} == set(range(20))
    assert len({s.subject for s in seqs}) == 10
    check_common(r, seqs, 3)
    s = seqs[0]
    assert s.sample_id == "a01_s01_e01" and s.subject == "1" and s.fps == 15
    assert s.scores.shape == s.joints.shape[:3] and 0 <= s.scores.min() and s.scores.max() <= 1
    assert split_subjects(r, seqs) == {"train": {1, 3, 5, 7, 9}, "test": {2, 4, 6, 8, 10}}


def test_msr_reorders_to_kinect20(msr):
    r, seqs, _ = msr
    assert mean_y(seqs, "head") > mean_y(seqs, "shoulder_center") > mean_y(seqs, "hip_center") > mean_y(
        seqs, "left_ankle")
    # file row 20 of a frame is the head, row 7 the hip centre, row 10 the left wrist
    raw = np.loadtxt(seqs[0].meta["source"]).reshape(-1, 20, 4)
    lay = get_layout("kinect20")
    for row, joint in ((19, "head"), (6, "hip_center"), (9, "left_wrist"), (18, "right_foot")):
        np.testing.assert_allclose(seqs[0].joints[0, :, lay.index(joint)], raw[:, row, :3], rtol=1e-6)
        np.testing.assert_allclose(seqs[0].scores[0, :, lay.index(joint)], raw[:, row, 3], rtol=1e-6)


def test_msr_accepts_coordinates_folder():
    r = reader("msr-action3d", data("msr_action3d") / "real_world_coordinates")
    assert len(r.files()) == 567 and r.class_names[12] == "bend"


def _msr_copy(tmp_path: Path) -> Path:
    src = data("msr_action3d") / "real_world_coordinates" / "a01_s01_e01_skeleton3D.txt"
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    return dst


@pytest.mark.parametrize("garble, line, words", [
    (lambda lines: lines.__setitem__(4, "0.1 0.2 0.3"), 5, "expected 4 numbers, found 3"),
    (lambda lines: lines.__setitem__(9, "0.1 abc 0.3 1.0"), 10, "not a number: 'abc'"),
    (lambda lines: lines.pop(), None, "not a positive multiple of 20"),
])
def test_msr_bad_file(tmp_path, garble, line, words):
    path = _msr_copy(tmp_path)
    lines = path.read_text().splitlines()
    garble(lines)
    path.write_text("\n".join(lines) + "\n")
    r = reader("msr-action3d", tmp_path)
    with pytest.raises(FormatError, match=words) as err:
        list(r.read_file(path))
    assert str(path) in str(err.value)
    if line is not None:
        assert err.value.line == line and f"{path}:{line}" in str(err.value)


# --- UTKinect-Action3D --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def utk():
    r = reader("utkinect", data("utkinect_action3d"))
    return r, *read_all(r)


def test_utkinect_segments(utk):
    r, seqs, rejections = utk
    assert len(r.files()) == 20 and len(seqs) == 199
    assert [(x.sample_id, "NaN" in x.reason) for x in rejections] == [("s10_e02_carry", True)]
    assert all(s.problem() is None for s in seqs)
    assert r.class_names == ["walk", "sitDown", "standUp", "pickUp", "carry", "throw", "push", "pull",
                             "waveHands", "clapHands"]
    assert {s.label for s in seqs} == set(range(10)) and len({s.subject for s in seqs}) == 10
    check_common(r, seqs, 3)
    assert seqs[0].sample_id == "s01_e01_walk" and seqs[0].scores is None
    frames = seqs[0].meta["frames"]
    assert frames.min() >= 252 and frames.max() <= 390 and len(frames) == seqs[0].num_frames
    assert min(s.num_frames for s in seqs) == 5 and max(s.num_frames for s in seqs) == 174
    assert mean_y(seqs, "head") > mean_y(seqs, "hip_center") > mean_y(seqs, "left_ankle")
    assert split_subjects(r, seqs) == {"train": {1, 3, 5, 7, 9}, "test": {2, 4, 6, 8, 10}}


def test_utkinect_modified_labels(utk):
    _, seqs, _ = utk
    r = reader("utkinect", data("utkinect_action3d") / "joints", labels="actionLabel_modified.txt")
    mod, rejections = read_all(r)
    assert len(mod) == 199 and len(rejections) == 1
    changed = {a.sample_id for a, b in zip(seqs, mod, strict=True) if a.num_frames != b.num_frames}
    assert "s01_e02_walk" in changed and len(changed) <= 7


def _utk_copy(tmp_path: Path) -> Path:
    src = data("utkinect_action3d") / "joints"
    shutil.copy(src / "actionLabel.txt", tmp_path / "actionLabel.txt")
    shutil.copy(src / "joints_s01_e01.txt", tmp_path / "joints_s01_e01.txt")
    return tmp_path / "joints_s01_e01.txt"


def test_utkinect_bad_joints_line(tmp_path):
    path = _utk_copy(tmp_path)
    lines = path.read_text().splitlines()
    lines[6] = " ".join(lines[6].split()[:40])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match="expected 61 numbers, found 40") as err:
        list(reader("utkinect", tmp_path).read_file(path))
    assert err.value.line == 7 and f"{path}:7" in str(err.value)


def test_utkinect_bad_label_line(tmp_path):
    path = _utk_copy(tmp_path)
    labels = tmp_path / "actionLabel.txt"
    lines = labels.read_text().splitlines()
    lines[2] = "sitDown 572"
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError) as err:
        list(reader("utkinect", tmp_path).read_file(path))
    assert err.value.line == 3 and str(labels) in str(err.value)


# --- Florence 3D ------------------------------------------------------------------------------------------------
def test_florence3d():
    r = reader("florence3d", data("florence3d"))
    seqs, rejections = read_all(r)
    assert len(seqs) == 215 and not rejections and all(s.problem() is None for s in seqs)
    assert r.class_names[0] == "wave" and r.class_names[-1] == "bow" and len(r.class_names) == 9
    assert {s.label for s in seqs} == set(range(9)) and len({s.subject for s in seqs}) == 10
    check_common(r, seqs, 3)
    assert seqs[0].sample_id == "seq001_s01_a01"
    assert mean_y(seqs, "head") > mean_y(seqs, "neck") > mean_y(seqs, "spine") > mean_y(seqs, "left_ankle")
    lay = get_layout("florence15")
    for s in seqs:  # y vertical in every frame, the ~2.8 m depth in z
        head, ankles = s.joints[0, :, lay.index("head"), 1], s.joints[0, :, lay.indices(["left_ankle", "right_ankle"]), 1]
        assert (head > ankles.max(axis=0)).all()
        assert 1.5 < s.joints[0, :, :, 2].mean() < 5
    assert split_subjects(r, seqs) == {"train": {1, 3, 5, 7, 9}, "test": {2, 4, 6, 8, 10}}


def test_florence3d_bad_mat(tmp_path):
    garbage = tmp_path / "skeletal_data.mat"
    garbage.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(256)) * 4)
    r = reader("florence3d", tmp_path)
    with pytest.raises(FormatError) as err:
        list(r.read_file(garbage))
    assert str(garbage) in str(err.value)
    scipy.io.savemat(garbage, {"other": np.zeros(3)})
    with pytest.raises(FormatError, match="no variable 'skeletal_data'"):
        list(r.read_file(garbage))


# --- UTD-MHAD ------------------------------------------------------------------------------------------------------
def test_utd_mhad():
    r = reader("utd-mhad", data("utd_mhad_skeleton"))
    seqs, rejections = read_all(r)
    assert len(r.files()) == 861 and len(seqs) == 861 and not rejections
    assert all(s.problem() is None for s in seqs)
    assert len(r.class_names) == 27 and r.class_names[22] == "walking"
    assert {s.label for s in seqs} == set(range(27)) and len({s.subject for s in seqs}) == 8
    check_common(r, seqs, 3)
    assert seqs[0].sample_id == "a01_s1_t1" and seqs[0].fps == 30
    assert mean_y(seqs, "head") > mean_y(seqs, "shoulder_center") > mean_y(seqs, "hip_center") > mean_y(
        seqs, "left_ankle") > mean_y(seqs, "left_foot")
    # file row 1 is the head, row 4 the hip centre, row 16 the left foot
    raw = scipy.io.loadmat(seqs[0].meta["source"])["d_skel"]
    lay = get_layout("kinect20")
    for row, joint in ((0, "head"), (3, "hip_center"), (15, "left_foot"), (8, "right_shoulder")):
        np.testing.assert_allclose(seqs[0].joints[0, :, lay.index(joint)], raw[row].T, rtol=1e-6)
    assert split_subjects(r, seqs) == {"train": {1, 3, 5, 7}, "test": {2, 4, 6, 8}}


def test_utd_mhad_bad_mat(tmp_path):
    (tmp_path / "Skeleton").mkdir()
    garbage = tmp_path / "Skeleton" / "a01_s1_t1_skeleton.mat"
    garbage.write_bytes(b"\x00garbage, not a mat file\xff" * 50)
    r = reader("utd-mhad", tmp_path)
    with pytest.raises(FormatError) as err:
        list(r.read_file(garbage))
    assert str(garbage) in str(err.value)
    scipy.io.savemat(garbage, {"d_skel": np.zeros((15, 3, 10))})
    with pytest.raises(FormatError, match=r"expected \(20, 3, T\)"):
        list(r.read_file(garbage))


# --- JHMDB -------------------------------------------------------------------------------------------------------
def test_jhmdb_split1():
    r = reader("jhmdb", data("jhmdb_ddnet"), split=1)
    seqs, rejections = read_all(r)
    assert not rejections and all(s.problem() is None for s in seqs)
    split = r.protocol("official")
    assert sum(split(s) == "train" for s in seqs) == 433 and sum(split(s) == "test" for s in seqs) == 176
    assert [r.protocol("split1")(s) for s in seqs] == [split(s) for s in seqs]
    assert r.class_names == sorted(r.class_names) and len(r.class_names) == 14
    assert {s.label for s in seqs} == set(range(14))
    check_common(r, seqs, 2)
    assert all(s.subject == "" and s.scores is None for s in seqs)
    assert seqs[0].sample_id.startswith("split1_train_0000_")
    # image y points down: face above neck above belly above the ankles
    assert mean_y(seqs, "face") < mean_y(seqs, "neck") < mean_y(seqs, "belly") < mean_y(seqs, "left_ankle")
    with pytest.raises(ValueError):
        reader("jhmdb", data("jhmdb_ddnet"), split=4)


@pytest.mark.parametrize("payload, words", [
    ({"poses": [], "labels": []}, "keys 'pose' and 'label'"),
    ({"pose": [np.zeros((5, 15, 2))], "label": []}, "1 poses but 0 labels"),
    ({"pose": [np.zeros((5, 14, 2))], "label": ["clap"]}, r"expected \(T, 15, 2\)"),
    ({"pose": [np.zeros((5, 15, 2))], "label": ["brush_hair"]}, "unknown label"),
])
def test_jhmdb_bad_pickle(tmp_path, payload, words):
    for part in ("train", "test"):
        (tmp_path / f"GT_{part}_1.pkl").write_bytes(pickle.dumps(payload))
    r = reader("jhmdb", tmp_path)
    path = r.files()[0]
    with pytest.raises(FormatError, match=words) as err:
        list(r.read_file(path))
    assert str(path) in str(err.value)
