"""Recipe registry: a recipe is data -- a name, its stages, its typed config and its search space -- not a
fork of the training loop. The loop (training/loop.py) and serving look recipes up here by name.

A recipe's config is a pydantic model: the schema of the YAML a user writes for `actionllm train --config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from .backbone import BackboneConfig, LoraSettings
from .bridges.joint2text import Joint2TextConfig


class JointsLLMConfig(BaseModel):
    """Action-JointsLLM (seed 000): Joint2Text -> LoRA LLM -> attn-pooling -> MLP classifier."""

    bridge: Joint2TextConfig = Field(default_factory=Joint2TextConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)  # paper sec. 5: r=8, alpha=16, dropout=0.05
    pooling: Literal["attn", "mean", "last"] = "attn"  # paper eqs. 5-9; mean/last are its ablations (Table 4)
    head_hidden: int = Field(256, ge=1, description="width of the pooling scorer and classifier MLPs")
    # not specified in the paper: the MLP widths and dropout of the head
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    class_weights: Literal["none", "balanced"] = "none"  # 'balanced': inverse class frequency in train
    max_length: int = Field(4096, ge=16, description="token budget per window (prompt kept when cut)")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    config_cls: type[BaseModel]
    stages: tuple[str, ...] = ("train",)
    # what Ray Tune searches by default (training/tune.py turns these into tune spaces)
    search_space: dict[str, Any] = field(default_factory=dict)
    paper: str = ""
    # "module:Class" of the nn.Module the loop trains (and whose folder serving loads), and of the callable
    # that turns window rows into model inputs in the data pipeline (imported lazily: torch-heavy)
    recognizer: str = "actionllm.recognizer:Recognizer"
    encoder: str = "actionllm.recognizer:WindowEncoder"

    def config(self, overrides: dict | None = None) -> BaseModel:
        return self.config_cls.model_validate(overrides or {})

    def recognizer_cls(self):
        return _import(self.recognizer)

    def encoder_cls(self):
        return _import(self.encoder)


def _import(path: str):
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is already registered")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; registered: {sorted(RECIPES)}") from None


register_recipe(Recipe(
    name="joints-llm",
    description="Action-JointsLLM: Joint2Text prompt -> LoRA LLM -> attn-pooling + MLP classifier",
    config_cls=JointsLLMConfig,
    stages=("train",),
    search_space={  # paper Table 3: N in {18, 24}, stride 'none' or N/2; precision = the token-length knob
        "bridge.window": {"choice": [18, 24]},
        "bridge.stride_fraction": {"choice": [None, 0.5]},
        "lora.r": {"choice": [4, 8, 16]},
        "bridge.precision": {"choice": [1, 2]},
        "lr": {"loguniform": [1e-5, 1e-3]},
    },
    paper="../shared/seeds/000_2636df4139b5194f.txt",
))
