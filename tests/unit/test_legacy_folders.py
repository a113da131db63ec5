"""Recognizer folders written by main before the method-folders layout (46c0f35) still load and answer as they
did: the same probabilities (and generated text) on the same windows. See tests/fixtures/legacy-46c0f35/."""

import json
from pathlib import Path

import numpy as np
import pytest

from actionllm.methods import folder_facts, load_recognizer
from actionllm.recognizer_folder import read_config, serving_facts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-46c0f35"
LLM_STAGE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-9d0f541"  # before components/llm_stage.py


@pytest.mark.parametrize("name", ["joints-llm", "stgcn", "llm-ar"])
def test_folder_written_by_old_main_loads_and_answers_the_same(name):
    rec = load_recognizer(FIXTURES / name)
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    windows = list(np.load(FIXTURES / f"{name}.windows.npy"))
    out = rec.predict_windows(windows)
    np.testing.assert_allclose(out["probabilities"], expected["probabilities"], rtol=1e-4, atol=1e-5)
    if "generated" in expected:
        assert out["generated"] == expected["generated"]
    assert rec.recipe == name
    meta = read_config(FIXTURES / name)  # no `serving` block: what the service needs comes from the class
    assert serving_facts(meta) is None
    assert folder_facts(meta) == {"input": "skeleton", "open_vocabulary": False}
    if name == "llm-ar":  # the old config key `tokenizer` reads as `vqvae_folder`
        assert rec.cfg.vqvae_folder == "/nonexistent/stage1/recognizer" and rec.stage == "llm"


@pytest.mark.parametrize("name", ["sugar", "lvlm-var"])
def test_llm_stage_folder_written_before_the_shared_stage_answers_the_same(name):
    """sugar and lvlm-var llm-stage folders of 9d0f541, read by the shared LLM stage: the same probabilities and
    generated text; neither carries a prior weight, so the answer is the LLM's alone, as it was."""
    rec = load_recognizer(LLM_STAGE / name)
    expected = json.loads((LLM_STAGE / f"{name}.expected.json").read_text())
    windows = list(np.load(LLM_STAGE / f"{name}.windows.npy"))
    out = rec.predict_windows(windows)
    np.testing.assert_allclose(out["probabilities"], expected["probabilities"], rtol=1e-4, atol=1e-5)
    assert out["generated"] == expected["generated"]
    assert rec.recipe == name and rec.stage == "llm" and rec.prior_weight == 0.0
