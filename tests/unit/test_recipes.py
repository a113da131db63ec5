import pytest
from pydantic import ValidationError

from actionllm.methods import RECIPES, get_recipe, load_recognizer
from actionllm.methods.joints_llm.model import JointsLLMRecognizer, WindowPreprocessor


def test_joints_llm_defaults_are_the_papers():
    cfg = get_recipe("joints-llm").config()
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 16, 0.05)
    assert set(cfg.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (cfg.bridge.window, cfg.bridge.stride, cfg.bridge.precision) == (18, 9, 2)
    assert cfg.pooling == "attn"


def test_registry_resolves_classes_and_refuses_unknowns():
    r = get_recipe("joints-llm")
    assert r.recognizer_cls() is JointsLLMRecognizer
    assert isinstance(r.recognizer_cls().preprocessor(r.config(), "coco17", 2), WindowPreprocessor)
    assert "joints-llm" in RECIPES
    with pytest.raises(KeyError, match="unknown recipe 'no-such-recipe'"):
        get_recipe("no-such-recipe")


def test_config_validation_names_the_field():
    with pytest.raises(ValidationError, match="pooling"):
        get_recipe("joints-llm").config({"pooling": "max"})


def test_load_recognizer_refuses_non_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a recognizer folder"):
        load_recognizer(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not an ActionLLM recognizer"):
        load_recognizer(tmp_path)
