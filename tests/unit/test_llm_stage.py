"""The shared LLM stage's fusion (components/llm_stage.py, actionllm/fusion.py): the first stage's class
log-probabilities beside the LLM's name log-likelihoods, the weight chosen on validation and read from the folder."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from actionllm import fusion
from actionllm.components.llm_stage import choose_prior_weight, fuse
from actionllm.methods import load_recognizer
from actionllm.recognizer_folder import read_config

LVLM = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-9d0f541" / "lvlm-var"


def log_softmax(x: np.ndarray) -> np.ndarray:
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def test_the_weight_follows_the_part_that_knows_the_class():
    """Six sequences of two windows, three classes. The LLM is right on 2 of 6, the prior on 5 of 6: a large
    weight wins; with the roles swapped a small one; equal accuracies go to the smallest weight (the LLM alone)."""
    rng = np.random.default_rng(0)
    labels = [0, 1, 2, 0, 1, 2]

    def scores(right: list[bool]) -> list[np.ndarray]:
        out = []
        for y, ok in zip(labels, right, strict=True):
            s = rng.normal(0, 0.1, (2, 3))
            s[:, y if ok else (y + 1) % 3] += 3.0
            out.append(log_softmax(s))
        return out

    weak, strong = [True, True] + [False] * 4, [True] * 5 + [False]
    w, rows = choose_prior_weight(scores(weak), scores(strong), labels)
    assert w > 1 and max(r["accuracy"] for r in rows) == pytest.approx(5 / 6)
    assert next(r for r in rows if r["weight"] == 0)["accuracy"] == pytest.approx(2 / 6)
    w, _ = choose_prior_weight(scores(strong), scores(weak), labels)
    assert w < 1
    w, rows = choose_prior_weight(scores([True] * 6), scores([True] * 6), labels)  # both right: a tie
    assert w == 0.0 and len({r["accuracy"] for r in rows}) == 1


def test_the_fusion_weight_is_read_from_the_folder_and_chosen_into_it(tmp_path, monkeypatch):
    folder = tmp_path / "rec"
    shutil.copytree(LVLM, folder)
    windows = list(np.load(LVLM.parent / "lvlm-var.windows.npy"))
    rec = load_recognizer(folder)
    assert rec.has_prior and rec.prior_weight == 0.0
    alone = rec.predict_windows(windows, generate=False)
    llm, prior = alone["llm_scores"], alone["prior_logprobs"]
    assert np.allclose(alone["probabilities"], np.exp(log_softmax(llm)), atol=1e-5)  # weight 0: the LLM alone

    meta = read_config(folder)
    meta["config"]["prior_weight"] = 2.0
    (folder / "config.json").write_text(json.dumps(meta))
    fused = load_recognizer(folder).predict_windows(windows, generate=False)
    assert np.allclose(fused["probabilities"], np.exp(log_softmax(fuse(llm, prior, 2.0))), atol=1e-5)

    # actionllm train's step: the weight chosen on a split (here: the windows as three labelled sequences)
    labels = [int(np.argmax(p)) for p in prior]  # labels the prior gets right: a positive weight must win
    monkeypatch.setattr(fusion, "split_windows", lambda rec, data, split: ([[w] for w in windows], labels))
    choice = fusion.fit_prior_weight(folder, "unused", "val")
    assert choice["weight"] > 0 and choice["sequences"] == 3
    again = load_recognizer(folder)
    assert again.prior_weight == choice["weight"] and read_config(folder)["prior"]["split"] == "val"


def test_the_text_continues_from_the_scored_prefix():
    """(issue 35) Scoring keeps a copy of the prompt's KV cache: generation continues from it (one prefix pass per batch,
    not two) and writes the same text, with the same scores, as a second pass over the prefix did."""
    import torch

    from actionllm.components.backbone import unwrap

    rec = load_recognizer(LVLM.parent / "sugar")  # its LLM writes text ("The ..."); lvlm-var's stops at once
    rec.cfg = rec.cfg.model_copy(update={"max_new_tokens": 4})
    windows = list(np.load(LVLM.parent / "sugar.windows.npy"))
    decoder = unwrap(rec.llm).get_decoder()
    lengths: list[int] = []
    hook = decoder.register_forward_pre_hook(lambda m, a, kw: lengths.append(kw["inputs_embeds"].shape[1]),
                                             with_kwargs=True)
    try:
        out = rec.predict_windows(windows)
    finally:
        hook.remove()
    prompts = {len(v) for v in rec.tokens(**rec.window_inputs(windows, "cpu"))[0]}  # batched by token count
    answer = max(len(a) for a in rec.scorer.answers)
    prefix_passes = [n for n in lengths if n > answer]
    assert len(prefix_passes) == len(set(prefix_passes)) == len(prompts), lengths  # once per batch: scoring's
    assert lengths.count(1) > 0  # the generated tokens, one pass each
    with torch.no_grad():
        rec.use_adapter()
        vec = torch.stack(list(rec.tokens(**rec.window_inputs(windows, "cpu"))[0]))
        cands = rec.scorer.eval_candidates
        again = rec.scorer.generate(rec.llm, vec, cands, rec.cfg.max_new_tokens)  # its own prefix pass
        kept: dict = {}
        scores, _ = rec.scorer.score(rec.llm, vec, cands, keep=kept)
        reused = rec.scorer.generate(rec.llm, vec, cands, rec.cfg.max_new_tokens, start=kept)
        plain, _ = rec.scorer.score(rec.llm, vec, cands)
    assert out["generated"] == again == reused and any(again)
    torch.testing.assert_close(scores, plain)
