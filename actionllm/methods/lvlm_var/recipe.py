"""Registers `lvlm-var` (LVLM-VAR, seed 003_28be24e915d18e91.txt): two stages, `vst` (sec. 3.1: frozen visual
encoder -> temporal self-attention -> projection and quantisation into semantic tokens, trained with a class head)
then `llm` (sec. 3.2: the tokens before the instruction -> LoRA LLM that names the action and explains it)."""

from ...registry import Recipe, register_recipe
from .config import LVLMVARConfig
from .model import LVLMVARRecognizer, VSTRecognizer

RECIPE = register_recipe(Recipe(
    name="lvlm-var",
    description="LVLM-VAR: video -> frozen visual encoder -> VST (temporal self-attention, codebook of semantic "
                "tokens, repeats collapsed) -> LoRA LLM names the action (classes scored by name log-likelihood) "
                "and explains it",
    config_cls=LVLMVARConfig,
    recognizer=LVLMVARRecognizer,
    stages=("vst", "llm"),
    stage_recognizers={"vst": VSTRecognizer},
    stage_input="vst_folder",
    modality="video",
    # sec. 4.1: VST AdamW lr 2e-4, cosine, batch 256, 250k iterations; LoRA AdamW lr 3e-3, micro-batch 4, 75k
    # iterations. chosen for CPU runs: the same optimisers and rates, batch 32 / 4, tens of epochs / a few
    stage_defaults={"vst": {"optimizer": "adamw", "lr": 2e-4, "weight_decay": 0.01, "batch_size": 32, "epochs": 30,
                            "eval_every": 5},
                    "llm": {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.0, "batch_size": 4, "epochs": 3}},
    search_space={"vst.codebook_size": {"choice": [256, 512, 1024]}, "rank": {"choice": [4, 8, 16]},
                  "frames": {"choice": [8, 16]}},
    knobs={"frames": "video.frames", "codebook_size": "vst.codebook_size", "rank": "lora.r", "alpha": "lora.alpha",
           "backbone": "backbone.name_or_path", "gguf_file": "backbone.gguf_file", "prompt": "prompt",
           "knowledge": "knowledge", "encoder": "encoder.name_or_path"},
))
