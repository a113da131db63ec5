"""Readers for NW-UCLA, NTU, PYSKL, COCO-keypoints and OpenPose, on tiny files written from the format specs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from actionllm.skeleton.formats import FormatError, Rejection, get_reader
from actionllm.skeleton.layouts import get_layout

COCO17 = get_layout("coco17").joints


def read_all(name: str, path, **opts):
    reader = get_reader(name)(path, **opts)
    return reader, [item for f in reader.files() for item in reader.read_file(f)]


# --- NW-UCLA ----------------------------------------------------------------------------------------------
def test_nw_ucla(tmp_path):
    sk = np.arange(2 * 20 * 3, dtype=float).reshape(2, 20, 3)
    sub = tmp_path / "all_sqe"
    sub.mkdir()
    # JSON label deliberately disagrees: the file name wins (a08 -> index 6, "donning").
    (sub / "a08_s03_e01_v02.json").write_text(json.dumps({"file_name": "a08_s03_e01_v02",
                                                          "skeletons": sk.tolist(), "label": 8}))
    (sub / "a01_s02_e00_v03.json").write_text(json.dumps({"file_name": "x", "skeletons": sk[:1].tolist()}))
    reader, seqs = read_all("nw-ucla", tmp_path)
    assert [s.sample_id for s in seqs] == ["a01_s02_e00_v03", "a08_s03_e01_v02"]
    a, b = seqs
    assert (b.label, b.label_name, b.subject, b.view, b.fps) == (6, "donning", "3", "2", 30.0)
    assert a.label == 0 and a.num_frames == 1  # 1-frame sequence is yielded, not rejected
    assert b.joints.shape == (1, 2, 20, 3) and b.scores is None
    np.testing.assert_array_equal(b.joints[0, 1, 5], sk[1, 5])
    assert len(reader.class_names) == 10 and reader.class_names[9] == "carry"
    assert reader.protocol("cross-view")(b) == "train" and reader.protocol("cross-view")(a) == "test"
    assert reader.protocol("cross-subject")(b) == "train" and reader.protocol("cross-subject")(a) == "test"


def test_nw_ucla_bad(tmp_path):
    (tmp_path / "a01_s01_e01_v01.json").write_text('{"skeletons": [[[1, 2, 3]]]}')  # 1 joint
    (tmp_path / "a07_s01_e01_v01.json").write_text('{"skeletons": []}')  # no action 7 in NW-UCLA
    reader = get_reader("nw-ucla")(tmp_path)
    for f in reader.files():
        with pytest.raises(FormatError, match=f.name):
            list(reader.read_file(f))


# --- NTU --------------------------------------------------------------------------------------------------
def joint_line(x, y, z, state=2):
    return f"{x} {y} {z} 0.1 0.2 300.5 200.5 0.9 0.1 0.2 0.3 {state}"


def ntu_body(body_id, base, states=None, joints=25):
    lines = [f"{body_id} 0 1 1 1 1 0 0.02 0.05 2", str(joints)]
    for j in range(joints):
        lines.append(joint_line(base + j, base + j + 0.5, base + 2, (states or {}).get(j, 2)))
    return lines


def ntu_text(joints=25):
    """3 frames; body 111 in all (base 10*t), body 222 (base 100+t) in frames 2 and 3 only."""
    lines = ["3"]
    for t in range(3):
        bodies = [ntu_body(111, 10 * t, {0: 1, 1: 0} if t == 0 else None, joints)]
        if t > 0:
            bodies.append(ntu_body(222, 100 + t))
        lines.append(str(len(bodies)))
        for b in bodies:
            lines += b
    return "\n".join(lines) + "\n"


def test_ntu_two_bodies(tmp_path):
    (tmp_path / "S002C001P003R002A050.skeleton").write_text(ntu_text())
    reader, (seq,) = read_all("ntu", tmp_path)
    assert seq.sample_id == "S002C001P003R002A050"
    assert seq.joints.shape == (2, 3, 25, 3) and seq.scores.shape == (2, 3, 25)
    np.testing.assert_allclose(seq.joints[0, 2, 4], [24, 24.5, 22])  # body 111, frame 3, joint 5
    np.testing.assert_allclose(seq.joints[1, 1, 0], [101, 101.5, 103])  # body 222, frame 2, joint 1
    assert not seq.joints[1, 0].any() and not seq.scores[1, 0].any()  # body 222 absent in frame 1
    assert seq.scores[0, 0, 0] == 0.5 and seq.scores[0, 0, 1] == 0 and seq.scores[0, 0, 2] == 1.0
    assert seq.scores[1, 1:].min() == 1.0
    assert (seq.label, seq.label_name) == (49, "punching/slapping other person")
    assert (seq.subject, seq.view, seq.fps) == ("3", "1", 30.0)
    assert seq.meta["setup"] == 2 and seq.meta["replication"] == 2
    assert len(reader.class_names) == 60
    assert reader.protocol("cross-subject")(seq) == "test"  # P003 is not a training subject
    assert reader.protocol("cross-view")(seq) == "test"  # camera 1
    assert reader.protocol("cross-setup")(seq) == "train"  # S002 even


def test_ntu_max_bodies_ranking_and_120(tmp_path):
    (tmp_path / "S001C002P001R001A061.skeleton").write_text(ntu_text())
    reader, (seq,) = read_all("ntu", tmp_path, max_bodies=1)
    assert seq.num_bodies == 1 and seq.joints[0, 1, 0, 0] == 10  # body 111 kept: it appears in 3 frames
    assert len(reader.class_names) == 120 and reader.class_names[60] == "put on headphone"
    assert reader.protocol("cross-subject")(seq) == "train" and reader.protocol("cross-view")(seq) == "train"


def test_ntu_ignore_list(tmp_path):
    (tmp_path / "S001C001P001R001A001.skeleton").write_text("garbage")
    ignore = tmp_path / "missing.txt"
    ignore.write_text("# missing skeletons\nS001C001P001R001A001\n")
    _, items = read_all("ntu", tmp_path, ignore_list=str(ignore))
    assert items == [Rejection("S001C001P001R001A001", str(tmp_path / "S001C001P001R001A001.skeleton"),
                               "listed in the ignore file")]


@pytest.mark.parametrize("mutate, line, message", [
    (lambda t: "\n".join(t.splitlines()[:40]), 41, "end of file"),  # truncated in frame 2
    (lambda t: t.replace(joint_line(0, 0.5, 2, 1), joint_line(0, 0.5, "zz", 1)), 5, "not a number"),
    (lambda t: t.replace("111 0 1 1 1 1 0 0.02 0.05 2", "111 0 1"), 3, "expected 10"),
])
def test_ntu_malformed(tmp_path, mutate, line, message):
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text(mutate(ntu_text()))
    reader = get_reader("ntu")(tmp_path)
    with pytest.raises(FormatError, match=message) as err:
        list(reader.read_file(path))
    assert err.value.path == str(path) and err.value.line == line
    assert f"{path}:{line}" in str(err.value)


def test_ntu_wrong_joint_count(tmp_path):
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text(ntu_text(joints=24))
    with pytest.raises(FormatError, match="24 joints") as err:
        list(get_reader("ntu")(tmp_path).read_file(path))
    assert err.value.line == 4 and path.name in str(err.value)


# --- PYSKL ------------------------------------------------------------------------------------------------
def pyskl_ann(frame_dir, label, m, t, v=17, c=2, scores=True):
    kp = np.arange(m * t * v * c, dtype=np.float32).reshape(m, t, v, c)
    ann = {"frame_dir": frame_dir, "label": label, "keypoint": kp, "total_frames": t, "img_shape": (1080, 1920)}
    if scores:
        ann["keypoint_score"] = np.full((m, t, v), 0.75, dtype=np.float32)
    return ann


def write_pickle(path: Path, anns, split):
    with open(path, "wb") as f:
        pickle.dump({"split": split, "annotations": anns}, f)


def test_pyskl(tmp_path):
    anns = [pyskl_ann("S001C002P001R001A003", 2, 1, 4), pyskl_ann("S001C001P002R002A050", 49, 2, 3),
            pyskl_ann("clip_x", 0, 1, 2, scores=False)]
    split = {"xsub_train": ["S001C002P001R001A003", "clip_x"], "xsub_val": ["S001C001P002R002A050"],
             "xview_train": ["S001C002P001R001A003"], "xview_val": ["S001C001P002R002A050", "clip_x"]}
    write_pickle(tmp_path / "ntu.pkl", anns, split)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"c{i}" for i in range(60)) + "\n")
    reader, seqs = read_all("pyskl", tmp_path, class_names=str(names))
    assert reader.trusted_pickle and reader.layout == "coco17"
    assert sorted(reader.protocols) == ["xsub", "xview"]
    a, b, c = seqs
    assert b.joints.shape == (2, 3, 17, 2) and b.scores.shape == (2, 3, 17)
    np.testing.assert_array_equal(b.joints, anns[1]["keypoint"])
    assert b.scores[1, 2, 16] == 0.75 and c.scores is None
    assert (b.label, b.label_name, b.subject, b.view) == (49, "c49", "2", "1")
    assert (c.sample_id, c.subject, c.view, c.label_name) == ("clip_x", "", "", "c0")
    xsub, xview = reader.protocol("xsub"), reader.protocol("xview")
    assert [xsub(s) for s in seqs] == ["train", "test", "train"]
    assert [xview(s) for s in seqs] == ["train", "test", "test"]


def test_pyskl_3d_official_split_and_no_names(tmp_path):
    path = tmp_path / "x.pkl"
    write_pickle(path, [pyskl_ann("a", 1, 1, 2, v=25, c=3, scores=False)], {"train": ["a"], "test": []})
    reader, (seq,) = read_all("pyskl", path, layout="ntu25")
    # a PYSKL pickle names no classes: named by index up to the largest label, with a note
    assert seq.dims == 3 and seq.layout == "ntu25" and (seq.label, seq.label_name) == (1, "class_1")
    assert reader.class_names == ["class_0", "class_1"] and reader.protocol("official")(seq) == "train"
    assert len(reader.notes) == 1 and "class_names=FILE" in reader.notes[0]


def test_pyskl_prepare_defaults_to_the_pickles_protocol_and_names_classes(tmp_path, capsys):
    from actionllm.skeleton.prepare import prepare
    from actionllm.skeleton.shards import Manifest

    path = tmp_path / "x.pkl"
    anns = [pyskl_ann(f"s{i}", i % 3, 1, 4) for i in range(9)]
    write_pickle(path, anns, {"train": [f"s{i}" for i in range(6)], "test": ["s6", "s7", "s8"]})
    # no protocol named: the pickle's own ('official'), not 'cross-subject' which it does not offer
    m = prepare(get_reader("pyskl")(path), tmp_path / "out", val_fraction=0)
    assert m.protocol == "official" and (m.counts["train"], m.counts["test"]) == (6, 3)
    assert m.class_names == ["class_0", "class_1", "class_2"] and set(m.per_class) == set(m.class_names)
    assert len(m.notes) == 1 and "named by label index" in m.notes[0]
    assert Manifest.read(tmp_path / "out").notes == m.notes  # recorded in manifest.json
    assert "note: pyskl: the pickle names no classes" in capsys.readouterr().err
    # -O class_names=FILE: a JSON list, or one name per line; no note then
    for i, text in enumerate(['["walk", "run", "jump"]\n', "walk\nrun\n\njump\n"]):
        names = tmp_path / f"names{i}"
        names.write_text(text)
        m = prepare(get_reader("pyskl")(path, class_names=str(names)), tmp_path / f"named{i}", val_fraction=0)
        assert m.class_names == ["walk", "run", "jump"] and m.notes == [] and set(m.per_class) == set(m.class_names)
    names.write_text('["walk", 3]')
    with pytest.raises(ValueError, match="JSON list of strings"):
        get_reader("pyskl")(path, class_names=str(names))
    with pytest.raises(FileNotFoundError, match="class_names file"):
        get_reader("pyskl")(path, class_names=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="has no protocol 'cross-subject'; it has \\['official'\\]"):
        prepare(get_reader("pyskl")(path), tmp_path / "out2", "cross-subject")


def test_default_protocol_of_every_format(tmp_path):
    from actionllm.skeleton.formats import READERS, load_all

    load_all()
    offered = {"msr-action3d": "cross-subject", "utkinect": "cross-subject", "florence3d": "cross-subject",
               "utd-mhad": "cross-subject", "nw-ucla": "cross-subject", "ntu": "cross-subject",
               "jhmdb": "official", "coco-keypoints": "holdout", "openpose": "holdout"}
    for name, expected in offered.items():
        reader = READERS[name].__new__(READERS[name])  # protocols of these formats need no input
        reader.__dict__.update(input=tmp_path, options={}, notes=[], split=1)
        assert reader.default_protocol() == expected, name
    path = tmp_path / "x.pkl"
    write_pickle(path, [pyskl_ann("a", 0, 1, 2)], {"xsub_train": ["a"], "xsub_val": [], "xview_train": [],
                                                   "xview_val": ["a"]})
    assert get_reader("pyskl")(path).default_protocol() == "xsub"
    write_pickle(path, [pyskl_ann("a", 0, 1, 2)], {})
    assert get_reader("pyskl")(path).default_protocol() == "holdout"


def test_pyskl_bad(tmp_path):
    path = tmp_path / "x.pkl"
    write_pickle(path, [pyskl_ann("ok", 0, 1, 2), pyskl_ann("bad_dir", 0, 1, 2, v=25)], {})
    with pytest.raises(FormatError, match="bad_dir.*25 joints"):
        read_all("pyskl", path)
    ann = pyskl_ann("short", 0, 1, 2)
    ann["total_frames"] = 5
    write_pickle(path, [ann], {})
    with pytest.raises(FormatError, match="short.*total_frames"):
        read_all("pyskl", path)


# --- COCO keypoints ---------------------------------------------------------------------------------------
def coco_kp(base, vis=2):
    return [v for j in range(17) for v in (base + j, base + j + 0.5, vis)]


def test_coco_keypoints(tmp_path):
    doc = {
        "action": "wave", "subject": "p7", "fps": 25,
        "images": [{"id": 5, "file_name": "f10.jpg"}, {"id": 6, "file_name": "f9.jpg"},
                   {"id": 7, "file_name": "f11.jpg"}],
        "annotations": [
            {"image_id": 6, "keypoints": coco_kp(0), "track_id": 1},
            {"image_id": 6, "keypoints": coco_kp(500), "track_id": 2},
            {"image_id": 5, "keypoints": coco_kp(100, vis=1)[:-3] + [9, 9, 0], "track_id": 1},
            {"image_id": 7, "keypoints": coco_kp(900), "track_id": 3},  # other person only: empty frame
        ],
        "categories": [{"name": "person", "keypoints": list(COCO17)}],
    }
    (tmp_path / "v1.json").write_text(json.dumps(doc))
    (tmp_path / "v2.json").write_text(json.dumps({**{k: v for k, v in doc.items() if k != "fps"}, "action": "clap"}))
    reader, (a, b) = read_all("coco-keypoints", tmp_path)
    assert reader.class_names == ["clap", "wave"]
    assert (a.label, a.label_name, a.subject, a.fps, b.label, b.fps) == (1, "wave", "p7", 25.0, 0, 30.0)
    assert a.joints.shape == (1, 3, 17, 2)
    np.testing.assert_allclose(a.joints[0, 0, 3], [3, 3.5])  # f9 first, track 1
    np.testing.assert_allclose(a.joints[0, 1, 0], [100, 100.5])  # f10
    assert a.scores[0, 0].min() == 1 and a.scores[0, 1, 16] == 0 and not a.joints[0, 1, 16].any()
    assert not a.joints[0, 2].any() and not a.scores[0, 2].any()


def test_coco_most_visible_label_file_and_mmpose(tmp_path):
    doc = {"images": [{"id": 1, "frame_id": 0}, {"id": 2, "frame_id": 2}],
           "annotations": [{"image_id": 1, "keypoints": coco_kp(0, vis=0)},
                           {"image_id": 1, "keypoints": coco_kp(50)},
                           {"image_id": 2, "keypoints": coco_kp(7), "score": [0.25] * 17}],
           "categories": [{"keypoints": list(reversed(COCO17))}]}  # reordered by name
    (tmp_path / "a.json").write_text(json.dumps(doc))
    frames = [{"frame_id": 1, "instances": [
        {"keypoints": [[1, 2]] * 17, "keypoint_scores": [0.2] * 17},
        {"keypoints": [[3, 4]] * 17, "keypoint_scores": [0.9] * 17}]}]
    (tmp_path / "b.json").write_text(json.dumps({"meta_info": {}, "instance_info": frames}))
    labels = tmp_path / "labels.csv"
    labels.write_text("a,run\nb,jump\n")
    reader, (a, b) = read_all("coco-keypoints", tmp_path, labels=str(labels))
    assert reader.class_names == ["jump", "run"] and (a.label, b.label) == (1, 0)
    assert a.num_frames == 3 and a.joints[0, 0, 0, 0] == 66 and not a.joints[0, 1].any()  # frame 1 missing
    assert a.joints[0, 2, 16, 0] == 7
    assert a.scores[0, 2, 0] == 0.25
    np.testing.assert_allclose(b.joints[0, 0, 0], [3, 4])
    assert b.scores[0, 0, 0] == pytest.approx(0.9)


def test_coco_garbled(tmp_path):
    (tmp_path / "bad.json").write_text('{"images": [\n{"id": 1,,}\n]}')
    with pytest.raises(FormatError, match="bad.json") as err:
        read_all("coco-keypoints", tmp_path, labels=None)
    assert err.value.line == 2
    (tmp_path / "bad.json").write_text(json.dumps({"images": [{"id": 1}], "annotations": [
        {"image_id": 1, "keypoints": [1, 2, 2]}]}))
    with pytest.raises(FormatError, match="expected 17"):
        read_all("coco-keypoints", tmp_path)


# --- OpenPose ---------------------------------------------------------------------------------------------
def op_frame(folder: Path, number: int, people, stem="vid"):
    folder.mkdir(parents=True, exist_ok=True)
    body = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": p} for p in people]}
    (folder / f"{stem}_{number:012d}_keypoints.json").write_text(json.dumps(body))


def op_person(k, base, conf):
    return [v for j in range(k) for v in (base + j, base + j + 0.5, conf)]


def test_openpose(tmp_path):
    root = tmp_path / "videos"
    for number in (0, 1, 3):  # frame 2 missing on disk
        people = [op_person(25, 10 * number, 0.4), op_person(25, 1000, 0.9)] if number != 1 else []
        op_frame(root / "walk" / "clip_a", number, people)
    op_frame(root / "sit" / "clip_b", 7, [op_person(25, 0, 0.5)])
    reader, (b, a) = read_all("openpose", root, label_from="parent", max_bodies=2)  # sit/ sorts first
    assert reader.layout == "body25" and reader.class_names == ["sit", "walk"]
    assert (a.sample_id, a.label, a.label_name, b.label) == ("clip_a", 1, "walk", 0)
    assert a.joints.shape == (2, 4, 25, 2) and b.joints.shape == (1, 1, 25, 2)
    np.testing.assert_allclose(a.joints[0, 0, 2], [1002, 1002.5])  # most confident first
    np.testing.assert_allclose(a.joints[1, 3, 2], [32, 32.5])
    assert a.scores[1, 3, 0] == pytest.approx(0.4)
    assert not a.joints[:, 1:3].any() and not a.scores[:, 1:3].any()  # no people, and missing frame


def test_openpose_single_folder_labels_and_coco18(tmp_path):
    for n in range(2):
        op_frame(tmp_path / "v", n, [op_person(18, 0, 0.3), op_person(18, 50, 0.8)])
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"v": "dance"}))
    reader, (seq,) = read_all("openpose", tmp_path / "v", labels=str(labels))
    assert reader.layout == seq.layout == "openpose18" and seq.joints.shape == (1, 2, 18, 2)
    assert seq.joints[0, 1, 0, 0] == 50 and (seq.label, seq.label_name) == (0, "dance")


def test_openpose_mixed_counts(tmp_path):
    op_frame(tmp_path / "v", 0, [op_person(25, 0, 0.5)])
    op_frame(tmp_path / "v", 1, [op_person(18, 0, 0.5)])
    with pytest.raises(FormatError, match="mixed") as err:
        read_all("openpose", tmp_path)
    assert "vid_000000000001_keypoints.json" in str(err.value)


# --- through prepare --------------------------------------------------------------------------------------
def test_prepare_openpose_and_coco_holdout(tmp_path):
    from actionllm.skeleton.prepare import prepare

    for v in range(6):
        for n in range(3):
            op_frame(tmp_path / "op" / f"v{v}", n, [op_person(25, n + v, 0.5)])
    m = prepare(get_reader("openpose")(tmp_path / "op"), tmp_path / "out_op", "holdout", val_fraction=0)
    assert m.layout == "body25" and m.dims == 2 and m.counts["accepted"] == 6
    assert m.counts["train"] + m.counts["test"] == 6

    doc = {"images": [{"id": i, "frame_id": i} for i in range(3)],
           "annotations": [{"image_id": i, "keypoints": coco_kp(i)} for i in range(3)]}
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "s.json").write_text(json.dumps({**doc, "label": "kick"}))
    m = prepare(get_reader("coco-keypoints")(tmp_path / "coco"), tmp_path / "out_coco", "holdout", val_fraction=0)
    assert m.class_names == ["kick"] and m.counts["accepted"] == 1


def test_pyskl_protocol_refuses_unlisted_sample(tmp_path):
    path = tmp_path / "x.pkl"
    write_pickle(path, [pyskl_ann("a", 0, 1, 2), pyskl_ann("b", 0, 1, 2)], {"train": ["a"], "val": []})
    reader, (a, b) = read_all("pyskl", path)
    assert reader.protocol("official")(a) == "train"
    with pytest.raises(ValueError, match="neither"):
        reader.protocol("official")(b)
