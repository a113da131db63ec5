"""`evaluate` batches windows across sequences (one predict_windows call per chunk of sequences, split back per
sequence: inference.predict_many) and answers as the per-sequence path (chunk=1) does: the same top-1 and
confusion, probabilities equal within float tolerance -- for llm-ar (whole sequences, generation), joints-llm
(windows of unequal token lengths, padded), an ensemble of two GCNs that cut differently (several windows per
sequence, one) with rotated views and the report's explanations, and sugar's open-vocabulary candidates."""

import json
from pathlib import Path

import numpy as np
import pytest

from actionllm import evaluation
from actionllm.evaluation import evaluate
from actionllm.inference import cut, predict_many, split_output
from actionllm.methods import load_recognizer
from actionllm.methods.ctrgcn.model import CTRGCNRecognizer
from actionllm.methods.stgcn.model import STGCNRecognizer
from actionllm.skeleton.formats import get_reader
from actionllm.skeleton.shards import read_shards, write_shards


@pytest.fixture(scope="module")
def msr_shards(data_root, tmp_path_factory):
    """5 real MSR Action3D sequences of several classes as a test split."""
    reader = get_reader("msr-action3d")(data_root / "msr_action3d")
    seqs = [s for f in reader.files()[::120] for s in reader.read_file(f)]
    folder = tmp_path_factory.mktemp("msr-shards")
    write_shards(seqs, folder, split="test")
    return folder, reader.class_names


METRICS = evaluation.metrics


def run(monkeypatch, checkpoint, data, **kw) -> tuple[dict, list[np.ndarray]]:
    """evaluate's result and the sequence scores it computed metrics from (plain first, then each angle's)."""
    seen, real = [], METRICS

    def spy(scores, labels, names):
        seen.append(np.array(scores))
        return real(scores, labels, names)

    monkeypatch.setattr(evaluation, "metrics", spy)
    return evaluate(checkpoint, str(data), **kw), seen


def assert_same(monkeypatch, checkpoint, data, chunk: int, reports=(None, None), **kw) -> dict:
    """The batched evaluation (`chunk` sequences per call) against the per-sequence one (chunk=1); `reports`:
    their report folders (the explanations must come back to their sequences)."""
    alone, alone_scores = run(monkeypatch, checkpoint, data, chunk=1, report=reports[0], **kw)
    batched, batched_scores = run(monkeypatch, checkpoint, data, chunk=chunk, report=reports[1], **kw)
    for key in ("top1", "top5", "confusion", "sequences", "windows", "window_top1", "rotated"):
        assert batched.get(key) == alone.get(key), key
    assert len(batched_scores) == len(alone_scores) == 1 + len(kw.get("rotate") or [])
    for b, a in zip(batched_scores, alone_scores, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(b.argmax(1), a.argmax(1))
    if reports[0]:
        ea, eb = (json.loads((Path(r) / "explanations.json").read_text())["sequences"] for r in reports)
        assert [e["sample_id"] for e in ea] == [e["sample_id"] for e in eb]
        for x, y in zip(ea, eb, strict=True):
            np.testing.assert_allclose(x["frame_weights"], y["frame_weights"], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(x["joint_weights"], y["joint_weights"], rtol=1e-4, atol=1e-6)
    return alone


def test_llm_ar_batched_equals_per_sequence(tiny_llm_ar, msr_shards, monkeypatch):
    data, _ = msr_shards
    # chunks of 3 sequences end inside a forward batch of 2
    alone = assert_same(monkeypatch, str(tiny_llm_ar), data, chunk=3, batch_size=2)
    assert alone["windows"] == alone["sequences"] == 5  # whole sequences: one window each
    # the window outputs split back: probabilities, generated text, action tokens, token counts
    rec = load_recognizer(tiny_llm_ar)
    wins = [cut(s, rec.window, rec.stride)[0] for s, _ in read_shards(data, split="test")][:3]
    for a, w in zip(predict_many(rec, wins, batch_size=4), wins, strict=True):
        b = rec.predict_windows(w, batch_size=4)
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=1e-4, atol=1e-6)
        assert a["generated"] == b["generated"] and a["action_tokens"] == b["action_tokens"]
        assert a["tokens"] == b["tokens"] and a["joint_names"] == b["joint_names"]


def test_evaluate_writes_no_text_and_the_scores_do_not_depend_on_it(tiny_llm_ar, msr_shards, monkeypatch):
    """llm-ar and sugar write free text beside their scores (`writes_text`); evaluate's report keeps no text, so it
    asks for none (generate=False): the probabilities are those of a call that writes the text, "generated" is
    empty, and no greedy step runs during evaluate."""
    data, _ = msr_shards
    rec = load_recognizer(tiny_llm_ar)
    assert rec.writes_text and rec.cfg.max_new_tokens > 0
    wins = [cut(s, rec.window, rec.stride)[0] for s, _ in read_shards(data, split="test")][0]
    full, bare = rec.predict_windows(wins, batch_size=2), rec.predict_windows(wins, batch_size=2, generate=False)
    np.testing.assert_allclose(bare["probabilities"], full["probabilities"], rtol=1e-5, atol=1e-6)
    assert any(full["generated"]) and bare["generated"] == [""] * len(wins)
    asked = []
    real_generate = type(rec.scorer).generate

    def counting(self, llm, vec, candidates, max_new_tokens, **kw):
        asked.append(max_new_tokens)
        return real_generate(self, llm, vec, candidates, max_new_tokens, **kw)

    monkeypatch.setattr(type(rec.scorer), "generate", counting)
    evaluate(str(tiny_llm_ar), str(data), batch_size=2)
    assert asked and set(asked) == {0}  # every forward batch, no token generated


def test_joints_llm_padded_windows_batched_equal_per_sequence(tiny_recognizers, msr_shards, monkeypatch):
    data, _ = msr_shards
    alone = assert_same(monkeypatch, str(tiny_recognizers["alpha"]), data, chunk=2, batch_size=8, limit=2)
    assert alone["windows"] > alone["sequences"]


def test_gcn_ensemble_windows_rotations_and_explanations_batched_equal_per_sequence(msr_shards, tmp_path,
                                                                                     monkeypatch):
    data, names = msr_shards
    a = STGCNRecognizer({"clip": {"frames": 8, "window": 24, "stride": 12}}, names, "kinect20", 3, seed=1)
    b = CTRGCNRecognizer({"clip": {"frames": 8, "modality": "bone"}}, names, "kinect20", 3, seed=2)
    pair = [str(a.save(tmp_path / "a")), str(b.save(tmp_path / "b"))]  # members that cut differently
    alone = assert_same(monkeypatch, pair, data, chunk=3, batch_size=8, rotate=[90],
                        reports=(str(tmp_path / "alone"), str(tmp_path / "batched")))
    assert alone["windows"] > alone["sequences"]  # the first member's windows


def test_open_vocabulary_candidates_batched_equal_per_sequence(tiny_sugar, msr_shards, monkeypatch):
    data, _ = msr_shards
    present = sorted({s.label_name for s, _ in read_shards(data, split="test")})
    candidates = [{"name": n} for n in present] + [{"name": "juggling", "texts": ["throwing balls in the air"]}]
    alone = assert_same(monkeypatch, str(tiny_sugar), data, chunk=6, candidates=candidates)
    assert alone["class_names"] == present + ["juggling"]


def test_split_output_slices_windows_shares_names_and_apportions_tokens():
    out = {"probabilities": np.arange(12.0).reshape(6, 2), "frame_weights": [np.ones(3)] * 6,
           "generated": list("abcdef"), "joint_names": ["x", "y"], "tokens": 60}
    parts = split_output(out, [1, 0, 3, 2])
    assert [len(p["probabilities"]) for p in parts] == [1, 0, 3, 2]
    assert parts[2]["generated"] == ["b", "c", "d"] and parts[3]["probabilities"].tolist() == [[8, 9], [10, 11]]
    assert all(p["joint_names"] == ["x", "y"] for p in parts)
    assert [p["tokens"] for p in parts] == [10, 0, 30, 20] and isinstance(parts[0]["tokens"], int)
    with pytest.raises(ValueError, match="'frame_weights' with 5 entries for 6 windows"):
        split_output({**out, "frame_weights": [np.ones(3)] * 5}, [3, 3])
    with pytest.raises(ValueError, match="chunk"):
        evaluate("unused", "unused", chunk=0)
