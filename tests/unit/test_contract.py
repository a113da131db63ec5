"""The recognizer contract and the registry: abstract methods refused at registration, `--set` reaching any
config field, stage defaults beating recipe train defaults, base sharing for every LoRA recipe."""

import copy

import numpy as np
import pytest
import torch

from actionllm.contract import RecognizerBase
from actionllm.methods import get_recipe
from actionllm.methods.stgcn.config import STGCNConfig
from actionllm.registry import RECIPES, Recipe, register_recipe
from training.config import TrainConfig


class Incomplete(RecognizerBase):
    recipe = "incomplete"
    config_cls = STGCNConfig

    def forward(self, x):
        return {}

    def collate_fn(self):
        return None


def test_a_recognizer_missing_a_method_is_refused_at_registration():
    with pytest.raises(TypeError, match="Incomplete does not implement predict_windows, preprocessor"):
        register_recipe(Recipe(name="incomplete", description="", config_cls=STGCNConfig, recognizer=Incomplete))
    assert "incomplete" not in RECIPES
    with pytest.raises(TypeError, match="abstract"):
        Incomplete({}, ["a"], "coco17", 2)


def test_a_recognizer_naming_another_recipe_is_refused():
    stgcn = get_recipe("stgcn")
    with pytest.raises(TypeError, match="must set recipe = 'other'"):
        register_recipe(Recipe(name="other", description="", config_cls=STGCNConfig, recognizer=stgcn.recognizer))


def test_set_reaches_nested_fields_and_refuses_unknown_ones_by_name():
    tc = TrainConfig(data="d", output="o")
    tc = tc.with_settings(["bridge.window=12", "lora.dropout=0.1", "lr=3e-4", "recipe_config.pooling=mean",
                           "stages.train.epochs=2", "bridge.stride=null"])
    cfg = get_recipe("joints-llm").config(tc.recipe_config)
    assert (cfg.bridge.window, cfg.bridge.stride, cfg.lora.dropout, cfg.pooling) == (12, None, 0.1, "mean")
    assert tc.lr == 3e-4 and tc.stages == {"train": {"epochs": 2}}
    with pytest.raises(ValueError, match=r"no field 'bridge.windw'.*did you mean window"):
        tc.with_settings(["bridge.windw=12"])
    with pytest.raises(ValueError, match="no field 'colour'"):
        tc.with_settings(["colour=red"])
    with pytest.raises(ValueError, match="'lr' is a value, not a section"):
        tc.with_settings(["lr.x=1"])
    with pytest.raises(ValueError, match="must look like dotted.path=value"):
        tc.with_settings(["bridge.window"])


def test_stage_defaults_beat_the_recipes_train_defaults(monkeypatch):
    """train_defaults fill unset fields without counting as set, so a stage's defaults still apply."""
    llm_ar = get_recipe("llm-ar")
    patched = Recipe(**{**llm_ar.__dict__, "train_defaults": {"lr": 0.5, "batch_size": 7, "epochs": 9}})
    monkeypatch.setitem(RECIPES, "llm-ar", patched)
    tc = TrainConfig(recipe="llm-ar", data="d", output="o")
    assert (tc.lr, tc.batch_size) == (0.5, 7) and "lr" not in tc.model_fields_set
    vq = tc.for_stage("vqvae", "o/vqvae")
    assert (vq.lr, vq.batch_size, vq.epochs) == (2e-4, 32, 30)  # the stage's defaults, not train_defaults
    user = TrainConfig(recipe="llm-ar", data="d", output="o", lr=0.01).for_stage("vqvae", "o/vqvae")
    assert user.lr == 0.01  # the user's value beats both


def test_llm_ar_recognizers_share_one_base_in_a_replica(tiny_llm_ar, tmp_path):
    """Two llm-ar folders on the same base, loaded with one `shared` dict (as a serving replica does): one base,
    two adapters, each answering as when loaded alone."""
    from actionllm.methods import load_recognizer

    first = load_recognizer(tiny_llm_ar)
    second = copy.deepcopy(first)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in second.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    other = second.save(tmp_path / "other")
    wins = [np.random.default_rng(i).normal(size=(1, 24, 20, 3)).astype(np.float32) for i in range(2)]
    alone = [load_recognizer(p).predict_windows(wins)["probabilities"] for p in (tiny_llm_ar, other)]
    assert not np.allclose(alone[0], alone[1], atol=1e-4)
    shared: dict = {}
    recs = [load_recognizer(p, shared=shared) for p in (tiny_llm_ar, other)]
    assert len(shared) == 1 and recs[0].llm is recs[1].llm and len(recs[0].llm.peft_config) == 2
    for _ in range(2):
        for rec, expected in zip(recs, alone, strict=True):
            np.testing.assert_allclose(rec.predict_windows(wins)["probabilities"], expected, atol=1e-5)
    recs[0].release()
    recs[1].release()
    assert shared == {}
