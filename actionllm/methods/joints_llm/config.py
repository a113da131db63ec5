"""The joints-llm recipe's config (Action-JointsLLM, seed 000): the schema of `recipe_config` in a run file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...components.backbone import BackboneConfig, context_length
from ...components.lora import LoraSettings
from ...registry import RecipeConfig
from .joint2text import Joint2TextConfig, window_tokens


class JointsLLMConfig(RecipeConfig):
    """Action-JointsLLM (seed 000): Joint2Text -> LoRA LLM -> attn-pooling -> MLP classifier."""

    bridge: Joint2TextConfig = Field(default_factory=Joint2TextConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)  # paper sec. 5: r=8, alpha=16, dropout=0.05
    pooling: Literal["attn", "mean", "last"] = "attn"  # paper eqs. 5-9; mean/last are its ablations (Table 4)
    head_hidden: int = Field(256, ge=1, description="width of the classifier MLP")
    # not specified in the paper: the MLP widths and dropout of the head
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    max_length: int = Field(4096, ge=16, description="token budget per window (prompt kept when cut)")

    def windowing(self) -> tuple[int | None, int | None]:
        return self.bridge.window, self.bridge.stride

    def problems(self, facts: dict) -> list[str]:
        """+ the token length: one window's Joint2Text (up to max_length) must fit the backbone's context."""
        out = super().problems(facts)
        if out or "layout" not in facts:
            return out
        context = context_length(self.backbone)
        tokens = window_tokens(self.bridge, self.backbone, facts["layout"], facts["dims"])
        if context is not None and min(tokens, self.max_length) > context:
            written = "in the compact format" if self.bridge.format == "compact" else f"at precision {self.bridge.precision}"
            out.append(f"a window of {self.bridge.window} frames {written} is {tokens} "
                       f"tokens (budget max_length {self.max_length}), over the backbone's context of {context}")
        return out
