"""LVLM-VAR (seed 003): the config's switches, the VST module (shapes, quantisation, repeat collapsing, codebook
usage), the LLM stage on a toy task, the folder round trip, and clips encoded by the real EfficientNet-Lite0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actionllm.components.llm_stage import by_length
from actionllm.components.vq import collapse_repeats
from actionllm.methods import folder_facts, get_recipe, load_recognizer
from actionllm.methods.lvlm_var.config import LVLMVARConfig
from actionllm.methods.lvlm_var.model import LVLMVARRecognizer, VSTRecognizer
from actionllm.recognizer_folder import read_config, serving_facts

NAMES = ["wave", "kick", "bend"]
TINY = {"backbone": {"name_or_path": "tiny"}, "vst": {"codebook_size": 16, "hidden": 32, "heads": 2},
        "lora": {"r": 4, "alpha": 8}, "max_new_tokens": 4}
FEAT = 24  # feature width of the toy videos


def toy_features(label: int, n: int, seed: int, steps: int = 8) -> np.ndarray:
    """Videos of class `label`: a class-specific feature pattern over time plus noise."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(100 + label).normal(size=(steps, FEAT))
    return (base[None] + 0.3 * rng.normal(size=(n, steps, FEAT))).astype(np.float32)


def test_config_switches_and_refusals():
    cfg = LVLMVARConfig.model_validate({"vst": False})
    assert cfg.vst.enabled is False and cfg.windowing() == (None, None)
    assert LVLMVARConfig().lora.r == 8 and LVLMVARConfig().lora.dropout == 0.1  # sec. 4.1.2
    with pytest.raises(ValueError, match=r"\[tokens\]"):
        LVLMVARConfig.model_validate({"prompt": "no slot"})
    with pytest.raises(ValueError, match="multiple of vst.heads"):
        LVLMVARConfig.model_validate({"vst": {"hidden": 30, "heads": 4}})
    # the explanations come from the project's knowledge file that covers the classes
    msr = LVLMVARConfig().for_data(["high arm wave", "hand clap"])
    assert msr.knowledge and msr.knowledge.endswith("msr_action3d.jsonl")
    assert msr.descriptions(["hand clap"])["hand clap"]
    assert get_recipe("lvlm-var").modality == "video" and get_recipe("stgcn").modality == "skeleton"


def test_collapse_repeats():
    assert collapse_repeats([5, 5, 9, 9, 9, 5]) == [5, 9, 5]
    assert collapse_repeats([]) == [] and collapse_repeats([3]) == [3]


def test_vst_shapes_quantisation_usage_and_collapsing():
    rec = VSTRecognizer(TINY, NAMES, "video", 3, feat_dim=FEAT)
    feats = torch.from_numpy(np.concatenate([toy_features(c, 4, c) for c in range(3)]))
    out = rec(feats, labels=torch.arange(3).repeat_interleave(4))
    assert out["logits"].shape == (12, 3) and out["loss"] > 0
    rec.eval()  # no dropout: the calls below see the same projections
    codes = rec.vst(feats)["codes"]
    assert codes.shape == (12, 8) and int(codes.max()) < 16
    # the quantised tokens are codebook vectors (unit length), the straight-through keeps their values
    tokens = rec.vst(feats)["tokens"]
    cb = torch.nn.functional.normalize(rec.vst.codebook, dim=-1)
    assert torch.allclose(tokens, cb[codes], atol=1e-5)
    seqs, vecs, received = rec.vst.semantic_tokens(feats)
    assert [len(s) for s in seqs] == [len(collapse_repeats(c)) for c in codes.tolist()]
    assert all(a != b for s in seqs for a, b in zip(s, s[1:], strict=False))  # no consecutive repeats left
    assert all(v.shape == (len(s), rec.vst.width) for s, v in zip(seqs, vecs, strict=True))
    assert received.shape == (12, 8) and torch.allclose(received.sum(-1), torch.ones(12), atol=1e-4)
    summary = rec.summarise({k: v.numpy() for k, v in out["stats"].items()})
    assert 1 <= summary["codes_used"] <= 16 and 1 <= summary["tokens_per_video"] <= 8
    assert 0 < summary["codebook_usage"] <= 1
    # the ablation: no codebook, one unit token per feature step
    off = VSTRecognizer({**TINY, "vst": {**TINY["vst"], "enabled": False}}, NAMES, "video", 3, feat_dim=FEAT)
    seqs, vecs, _ = off.vst.semantic_tokens(feats)
    assert seqs[0] == [] and vecs[0].shape == (8, off.vst.width)
    assert "code_counts" not in off(feats)["stats"]


def test_vst_stage_learns_the_toy_classes_and_restarts_dead_codes():
    rec = VSTRecognizer(TINY, NAMES, "video", 3, feat_dim=FEAT)
    feats = torch.from_numpy(np.concatenate([toy_features(c, 8, c) for c in range(3)]))
    labels = torch.arange(3).repeat_interleave(8)
    opt = torch.optim.AdamW(rec.parameters(), lr=3e-3)
    restarted = 0
    for _ in range(60):
        loss = rec(feats, labels=labels)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.after_step()
        restarted = rec.restarted
    assert restarted > 0  # a 16-code book on 3 classes leaves codes dead at first
    test = np.concatenate([toy_features(c, 3, 50 + c) for c in range(3)])
    out = rec.predict_windows(list(test))
    assert out["probabilities"].argmax(1).tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert len(out["frame_weights"][0]) == 8 and len(out["semantic_tokens"]) == 9


def llm_stage(vst_rec: VSTRecognizer, **cfg) -> LVLMVARRecognizer:
    return LVLMVARRecognizer({**TINY, **cfg}, NAMES, "video", 3, vst=vst_rec.vst,
                             descriptions={"wave": "An arm swings overhead.", "kick": "", "bend": ""})


def test_llm_stage_ranks_the_true_class_first_on_a_toy_task_and_round_trips(tmp_path):
    torch.manual_seed(0)
    vst = VSTRecognizer({**TINY, "vst": {**TINY["vst"], "enabled": False}}, NAMES, "video", 3, feat_dim=FEAT)
    rec = llm_stage(vst, vst={**TINY["vst"], "enabled": False})
    # the target is "{class}. {explanation}" + EOS where the class has one
    wave = rec.tokenizer.decode(rec.targets[0][:-1])
    assert wave.strip() == "wave. An arm swings overhead." and rec.targets[0][-1] == rec.scorer.eos
    feats = torch.from_numpy(np.concatenate([toy_features(c, 4, c) for c in range(3)]))
    labels = torch.arange(3).repeat_interleave(4)
    opt = torch.optim.AdamW(rec.lora_parameters(), lr=1e-2)
    rec.train()
    for _ in range(25):
        out = rec(feats, labels=labels)
        assert out["logits"] is None  # generative in training
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    test = list(np.concatenate([toy_features(c, 2, 70 + c) for c in range(3)]))
    pred = rec.predict_windows(test)
    assert pred["probabilities"].argmax(1).tolist() == [0, 0, 1, 1, 2, 2]
    assert pred["generated"][2].startswith("kick")
    rec.eval()
    with torch.no_grad():
        val = rec(feats, labels=labels)
    assert val["logits"].argmax(1).tolist() == labels.tolist() and val["loss"] > 0
    rec.save(tmp_path / "rec")
    # what the service's ingress reads without torch, and what the class says for a folder without it
    meta = read_config(tmp_path / "rec")
    facts = {"input": "video", "open_vocabulary": False, "frames": rec.cfg.video.frames,
             "image_size": rec.cfg.encoder.image_size}
    assert serving_facts(meta) == facts and folder_facts({k: v for k, v in meta.items() if k != "serving"}) == facts
    again = load_recognizer(tmp_path / "rec")
    after = again.predict_windows(test)
    assert np.allclose(pred["probabilities"], after["probabilities"], atol=1e-5)
    assert after["generated"] == pred["generated"]


def test_videos_of_different_token_counts_go_through_in_groups():
    vecs = [torch.zeros(n, 4) for n in (3, 5, 3, 1)]
    assert by_length(vecs) == {3: [0, 2], 5: [1], 1: [3]}
    torch.manual_seed(0)
    vst = VSTRecognizer(TINY, NAMES, "video", 3, feat_dim=FEAT)
    rec = llm_stage(vst)
    feats = np.concatenate([toy_features(c, 3, c) for c in range(3)])
    together = rec.predict_windows(list(feats), batch_size=9)
    lengths = {len(s) for s in together["semantic_tokens"]}
    alone = [rec.predict_windows([f])["probabilities"][0] for f in feats]
    assert np.allclose(together["probabilities"], np.stack(alone), atol=1e-4)  # grouping changes no answer
    assert len(lengths) >= 2 and np.allclose(together["probabilities"].sum(1), 1.0, atol=1e-5)  # several groups


def test_clips_are_encoded_by_efficientnet_lite0():
    cfg = {**TINY, "encoder": {"name_or_path": "efficientnet-lite0", "image_size": 32}}
    rec = VSTRecognizer(cfg, NAMES, "video", 3)
    assert rec.vst.feat_dim == 1280
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 255, size=(6, 40, 40, 3), dtype=np.uint8) for _ in range(2)]
    out = rec.predict_windows(clips)
    assert out["probabilities"].shape == (2, 3) and len(out["frame_weights"][0]) == 6
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        rec.predict_windows([np.zeros((4, 5, 6), np.float32)])


def test_no_adapter_answers_with_the_pretrained_llm(tmp_path):
    """`evaluate --no-adapter` (Table 2's zero-shot row): the LoRA adapter switched off gives the base model's
    answers; a recognizer without an adapter is refused by name."""
    from actionllm.evaluation import load_members

    torch.manual_seed(0)
    rec = llm_stage(VSTRecognizer(TINY, NAMES, "video", 3, feat_dim=FEAT))
    feats = list(np.concatenate([toy_features(c, 2, c) for c in range(3)]))
    base = rec.predict_windows(feats)["probabilities"]  # LoRA B starts at zero: the base model
    with torch.no_grad():
        for n, p in rec.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape) * 0.5)
    rec.save(tmp_path / "rec")
    on = load_members([str(tmp_path / "rec")])[0].predict_windows(feats)["probabilities"]
    off = load_members([str(tmp_path / "rec")], adapter=False)[0].predict_windows(feats)["probabilities"]
    assert not np.allclose(on, base, atol=1e-3) and np.allclose(off, base, atol=1e-5)
    vst = VSTRecognizer(TINY, NAMES, "video", 3, feat_dim=FEAT)
    vst.save(tmp_path / "vst")
    with pytest.raises(ValueError, match="no LoRA adapter"):
        load_members([str(tmp_path / "vst")], adapter=False)
