"""Shard schema round trip and the prepare driver (rejections, malformed files, splits, atomic output)."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actionllm.skeleton.formats.base import FormatError, Reader, Rejection
from actionllm.skeleton.prepare import prepare, val_split
from actionllm.skeleton.sequence import SkeletonSequence
from actionllm.skeleton.shards import SCHEMA, Manifest, read_shards, write_shards


def make_seq(i: int, m: int = 1, t: int = 6, layout: str = "coco17", c: int = 2, scores=True, label=0):
    rng = np.random.default_rng(i)
    v = 17 if layout == "coco17" else 25
    return SkeletonSequence(
        sample_id=f"s{i:03d}", layout=layout, joints=rng.normal(size=(m, t, v, c)).astype(np.float32),
        scores=rng.uniform(size=(m, t, v)).astype(np.float32) if scores else None, label=label,
        label_name=f"class{label}", dataset="unit", subject=str(i % 3 + 1), view="2", fps=25.0)


def test_round_trip_exact(tmp_path):
    seqs = [make_seq(0), make_seq(1, m=2, layout="ntu25", c=3), make_seq(2, scores=False), make_seq(3, t=1)]
    files = write_shards(seqs, tmp_path, shard_size=3)
    assert files == ["part-00000.parquet", "part-00001.parquet"]
    assert pq.read_schema(tmp_path / files[0]).equals(SCHEMA)
    back = [s for s, _ in read_shards(tmp_path)]
    assert len(back) == 4
    for a, b in zip(seqs, back, strict=True):
        assert a.equals(b), a.sample_id
    assert back[2].scores is None and back[1].num_bodies == 2 and back[1].dims == 3


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 3), t=st.integers(1, 40), c=st.sampled_from([2, 3]),
       scale=st.floats(1e-3, 1e4), with_scores=st.booleans())
def test_round_trip_property(tmp_path_factory, m, t, c, scale, with_scores):
    folder = tmp_path_factory.mktemp("rt")
    seq = make_seq(7, m=m, t=t, c=c, scores=with_scores)
    seq = seq.with_(joints=seq.joints * np.float32(scale))
    write_shards([seq], folder)
    (back, split), = list(read_shards(folder))
    assert back.equals(seq) and split == "train"


class FakeReader(Reader):
    """A reader over a folder of tiny text files: 'label frames' per file; 'garbage' is malformed."""

    name = "fake"
    layout = "coco17"

    def files(self):
        return sorted(self.input.glob("*.txt"))

    def read_file(self, path: Path):
        text = path.read_text().split()
        if text[0] == "garbage":
            raise FormatError(path, "not a number", line=1)
        if text[0] == "nan-bounds":
            yield Rejection(path.stem, str(path), "segment bounds are NaN")
            return
        label, frames, kind = int(text[0]), int(text[1]), text[2]
        joints = np.ones((frames, 17, 2), np.float32) * (0 if kind == "zero" else 1)
        if kind == "nan":
            joints[0, 0, 0] = np.nan
        yield SkeletonSequence(path.stem, "coco17", joints, label=label, label_name=(self.class_names + [""] * 9)[label],
                               subject=str(int(path.stem[1:]) % 4 + 1), meta={"source": str(path)})

    @property
    def class_names(self):
        return ["a", "b"]

    @property
    def protocols(self):
        return {"cross-subject": lambda s: "train" if int(s.subject) % 2 else "test"}


def fake_input(tmp_path, extra=()):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i:02d}.txt").write_text(f"{i % 2} 10 ok")
    for name, text in extra:
        (src / name).write_text(text)
    return src


def test_prepare_records_every_rejection(tmp_path):
    src = fake_input(tmp_path, [("z1.txt", "0 10 zero"), ("z2.txt", "1 1 ok"), ("z3.txt", "0 10 nan"),
                                ("z4.txt", "nan-bounds"), ("z5.txt", "7 10 ok")])
    m = prepare(FakeReader(src), tmp_path / "out", "cross-subject", val_fraction=0.25, shard_size=8)
    assert m.counts["accepted"] == 20 and m.counts["rejected"] == 5 and m.counts["total"] == 25
    reasons = {r.sample_id: r.reason for r in m.rejected}
    assert "all joint coordinates are zero" in reasons["z1"]
    assert "too short" in reasons["z2"]
    assert "non-finite" in reasons["z3"]
    assert reasons["z4"] == "segment bounds are NaN"
    assert "label 7 outside the 2 classes" in reasons["z5"]
    assert m.counts["train"] + m.counts["val"] + m.counts["test"] == 20 and m.counts["val"] > 0
    on_disk = Manifest.read(tmp_path / "out")
    assert on_disk == m and len(m.shards) == 3
    rows = [(s.sample_id, split) for s, split in read_shards(tmp_path / "out")]
    assert len(rows) == 20
    for sid, split in rows:  # the split column is the protocol's, val carved out of train only
        subject = int(sid[1:]) % 4 + 1
        assert split == ("test" if subject % 2 == 0 else ("val" if val_split(sid, "train", 0.25) == "val" else "train"))


def test_malformed_file_stops_with_its_name_and_leaves_nothing(tmp_path):
    src = fake_input(tmp_path, [("g1.txt", "garbage")])
    with pytest.raises(FormatError, match=r"g1.txt:1: not a number"):
        prepare(FakeReader(src), tmp_path / "out", "cross-subject")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_skip_bad_records_malformed_file(tmp_path):
    src = fake_input(tmp_path, [("g1.txt", "garbage")])
    m = prepare(FakeReader(src), tmp_path / "out", "cross-subject", skip_bad=True)
    assert m.counts["rejected"] == 1 and "malformed file" in m.rejected[0].reason and "g1.txt:1" in m.rejected[0].reason


def test_prepare_refuses_unknown_protocol_and_non_empty_output(tmp_path):
    src = fake_input(tmp_path)
    with pytest.raises(ValueError, match="no protocol 'cross-view'; it has \\['cross-subject'\\]"):
        prepare(FakeReader(src), tmp_path / "out", "cross-view")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare(FakeReader(src), tmp_path / "full", "cross-subject")


def test_manifest_is_plain_json(tmp_path):
    prepare(FakeReader(fake_input(tmp_path)), tmp_path / "out", "cross-subject")
    data = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert data["class_names"] == ["a", "b"] and data["converter_version"] and data["source_format"] == "fake"
