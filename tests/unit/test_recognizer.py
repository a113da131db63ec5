"""Recognizer folder: build with the tiny backbone, save, load with PEFT alone and as a whole, identical predictions."""

import json

import numpy as np
import pytest
import torch

from actionllm.methods.joints_llm.model import JointsLLMRecognizer, WindowPreprocessor, collate
from actionllm.skeleton.formats import get_reader
from actionllm.skeleton.transforms import sliding_windows

CFG = {"bridge": {"window": 12, "stride": 6, "precision": 1}, "backbone": {"name_or_path": "tiny"},
       "max_length": 4096}


@pytest.fixture(scope="module")
def msr_windows(data_root):
    reader = get_reader("msr-action3d")(data_root / "msr_action3d")
    seqs = [s for s in reader.read_file(reader.files()[0])]
    return [w.joints for w in sliding_windows(seqs[0], 12, 6)][:3]


@pytest.fixture(scope="module")
def trained(msr_windows):
    torch.manual_seed(0)
    rec = JointsLLMRecognizer(CFG, [f"c{i}" for i in range(20)], "kinect20", 3, seed=0)
    enc = [rec.encoder.encode_window(w) for w in msr_windows]
    batch = collate({"input_ids": [e["input_ids"] for e in enc], "label": np.array([3, 3, 3])}, rec.pad_id)
    opt = torch.optim.AdamW([p for p in rec.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        out = rec(**batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(out["loss"].detach()))
    return rec, losses


def test_training_steps_lower_the_loss(trained):
    _, losses = trained
    assert losses[-1] < losses[0]


def test_only_lora_and_head_train(trained):
    rec, _ = trained
    names = [n for n, p in rec.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or n.startswith("head.") for n in names)


def test_save_load_identical_predictions(trained, msr_windows, tmp_path):
    rec, _ = trained
    rec.eval()
    before = rec.predict_windows(msr_windows)
    folder = rec.save(tmp_path / "rec")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "adapter_model.safetensors", "adapter_config.json", "head.safetensors", "tokenizer",
            "base"} <= names
    assert not any(p.suffix in (".pkl", ".pt", ".bin") for p in folder.rglob("*"))
    meta = json.loads((folder / "config.json").read_text())
    assert meta["recipe"] == "joints-llm" and meta["class_names"][3] == "c3" and meta["window"] == 12
    assert len(meta["joint_names"]) == 13
    again = JointsLLMRecognizer.load(folder)
    after = again.predict_windows(msr_windows)
    np.testing.assert_allclose(after["probabilities"], before["probabilities"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after["frame_weights"][0], before["frame_weights"][0], rtol=1e-5, atol=1e-7)
    assert before["probabilities"].shape == (3, 20)
    assert before["frame_weights"][0].shape == (12,) and before["joint_weights"][0].shape == (13,)


def test_adapter_loads_with_peft_alone(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rec, _ = trained
    folder = rec.save(tmp_path / "rec")
    base = AutoModelForCausalLM.from_pretrained(str(folder / "base"))
    model = PeftModel.from_pretrained(base, str(folder))
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and any(float(p.abs().sum()) > 0 for p in lora.values())  # trained B is non-zero


def test_window_encoder_batch(msr_windows):
    enc = WindowPreprocessor(CFG, "kinect20", 3)
    batch = {"joints": np.stack([w.reshape(-1) for w in msr_windows]), "num_bodies": np.array([1, 1, 1]),
             "num_frames": np.array([12, 12, 12]), "dims": np.array([3, 3, 3]), "label": np.array([0, 1, 2])}
    out = enc(batch)
    assert len(out["input_ids"]) == 3 and (out["num_tokens"] > 1000).all()
    assert all(len(a) == len(b) for a, b in zip(out["input_ids"], out["frame_index"], strict=True))
    assert out["label"].tolist() == [0, 1, 2] and not out["truncated"].any()


def test_recognizers_share_one_base(tiny_recognizers, msr_windows):
    """Loaded with one `shared` dict, recognizers on the same base hold one copy of it; each answers as when
    loaded alone, and releasing them takes their adapters off (the base goes with the last one)."""
    from actionllm.methods import load_recognizer

    alone = {n: load_recognizer(p).predict_windows(msr_windows)["probabilities"] for n, p in tiny_recognizers.items()}
    shared: dict = {}
    recs = {n: load_recognizer(p, shared=shared) for n, p in tiny_recognizers.items()}
    assert len(shared) == 1  # one base for three recognizers
    llm = recs["alpha"].llm
    assert all(r.llm is llm for r in recs.values()) and len(llm.peft_config) == 3
    for _ in range(2):  # interleaved calls switch adapters: every answer equals the recognizer alone
        for n, r in recs.items():
            np.testing.assert_allclose(r.predict_windows(msr_windows)["probabilities"], alone[n], atol=1e-5)
    assert not np.allclose(alone["alpha"], alone["beta"], atol=1e-4)  # distinct recognizers, distinct answers
    recs["alpha"].release()
    assert len(llm.peft_config) == 2 and len(shared) == 1
    np.testing.assert_allclose(recs["beta"].predict_windows(msr_windows)["probabilities"], alone["beta"], atol=1e-5)
    recs["beta"].release()
    recs["gamma"].release()
    assert shared == {}
