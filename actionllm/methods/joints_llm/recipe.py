"""Registers `joints-llm` (Action-JointsLLM, seed 000_2636df4139b5194f.txt)."""

from ...registry import Recipe, register_recipe
from .config import JointsLLMConfig
from .model import JointsLLMRecognizer

RECIPE = register_recipe(Recipe(
    name="joints-llm",
    description="Action-JointsLLM: Joint2Text prompt -> LoRA LLM -> attn-pooling + MLP classifier",
    config_cls=JointsLLMConfig,
    recognizer=JointsLLMRecognizer,
    search_space={  # paper Table 3: N in {18, 24}, stride 'none' or N/2; precision + budget = token length
        "window": {"choice": [18, 24]},
        "stride_fraction": {"choice": [None, 0.5]},
        "rank": {"choice": [4, 8, 16]},
        "precision": {"choice": [1, 2]},
        "lr": {"loguniform": [1e-5, 1e-3]},
    },
    knobs={"window": "bridge.window", "stride": "bridge.stride", "precision": "bridge.precision",
           "prompt": "bridge.prompt", "rank": "lora.r", "alpha": "lora.alpha", "backbone": "backbone.name_or_path",
           "gguf_file": "backbone.gguf_file", "pooling": "pooling", "max_length": "max_length"},
))
