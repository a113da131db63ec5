"""Ray Data streaming of shards into windows, on a real local Ray."""

from collections import Counter

import numpy as np
import pytest

from actionllm.skeleton.prepare import convert
from actionllm.skeleton.sequence import SkeletonSequence
from actionllm.skeleton.transforms import window_starts
from training.data import window_dataset, window_items

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "shards"
    rng = np.random.default_rng(0)
    lengths = [72, 40, 10, 18, 19, 100, 55, 33]
    seqs = []
    for i, t in enumerate(lengths):
        joints = rng.normal(size=(t, 17, 2)).astype(np.float32)
        joints[:, 0, 0] = np.arange(t)  # frame index in the nose x, to check window content
        seqs.append(SkeletonSequence(f"q{i}", "coco17", joints, label=i % 2, label_name="ab"[i % 2],
                                     subject=str(i % 4 + 1)))
    convert(seqs, out, dataset="t", source_format="t", source_path="t", layout="coco17", class_names=["a", "b"],
            protocol_name="p", protocol=lambda s: "test" if s.subject == "4" else "train", val_fraction=0.0,
            shard_size=3)
    return out, seqs


@pytest.mark.parametrize("stride", [9, None])
def test_window_counts_match_local_computation(ray_local, shards, stride):
    out, seqs = shards
    rows = list(window_dataset(str(out), 18, stride).iter_rows())
    expected = Counter({s.sample_id: len(window_starts(s.num_frames, 18, stride)) for s in seqs})
    assert Counter(r["source_id"] for r in rows) == expected
    for r in rows:  # each window holds its own frames
        frames = r["joints"].reshape(1, 18, 17, 2)[0, :, 0, 0]
        start = r["window_start"]
        seq_len = next(s.num_frames for s in seqs if s.sample_id == r["source_id"])
        want = np.minimum(np.arange(start, start + 18), seq_len - 1)  # short sequences pad with the last frame
        np.testing.assert_array_equal(frames, want)


def test_split_filter_and_batches(ray_local, shards):
    out, seqs = shards
    test_ids = {s.sample_id for s in seqs if s.subject == "4"}
    ds = window_dataset(str(out), 18, 9, split="test")
    seen = set()
    for batch in ds.iter_batches(batch_size=4, batch_format="numpy"):
        assert batch["joints"].shape[1] == 18 * 17 * 2
        seen.update(batch["source_id"].tolist())
        assert set(batch["split"].tolist()) == {"test"}
    assert seen == test_ids


@pytest.mark.parametrize(("split", "size", "stride", "exclude"), [("train", 18, 9, frozenset()),
                                                                 ("test", None, None, frozenset()),
                                                                 ("train", 12, None, frozenset({1}))])
def test_windows_read_in_the_driver_equal_the_streamed_ones(ray_local, shards, split, size, stride, exclude):
    """A run that holds its data in memory (data_cache) reads the windows with pyarrow: the same rows, values and
    all, as the Ray Data pipeline streams; the seed shuffles their order only."""
    out, _ = shards
    streamed = [r for r in window_dataset(str(out), size, stride, split).iter_rows() if r["label"] not in exclude]
    read = window_items(str(out), split, size, stride, exclude)
    key = lambda r: (r["source_id"], int(r["window_start"]))  # noqa: E731
    assert sorted(map(key, read)) == sorted(map(key, streamed)) and streamed
    by_key = {key(r): r for r in streamed}
    for r in read:
        s = by_key[key(r)]
        assert set(r) == set(s)
        for k in r:
            np.testing.assert_array_equal(np.asarray(r[k]), np.asarray(s[k]), err_msg=k)
    shuffled = window_items(str(out), split, size, stride, exclude, seed=3)
    assert sorted(map(key, shuffled)) == sorted(map(key, read))
    assert [key(r) for r in shuffled] != [key(r) for r in read] or len(read) < 3


def test_missing_folder_is_a_clear_error(ray_local, tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        window_dataset(str(tmp_path), 18)
