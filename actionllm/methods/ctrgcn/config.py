"""The ctrgcn recipe's config: CTR-GCN (Chen, Zhang, Yuan, Li, Deng, Hu, ICCV 2021), trained as PYSKL trains it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ...components.clips import ClipConfig
from ...registry import RecipeConfig
from ...skeleton.augment import AugmentConfig


class CTRGCNConfig(RecipeConfig):
    """CTR-GCN: per-channel refined topologies + multi-scale temporal convolutions; no LLM."""

    # view alignment on by default, chosen by measurement (README "Preprocessing steps and their defaults"): on MSR
    # Action3D it made top-1 the same at every viewing angle (73.1 -> 15.3 at 90 degrees without it; 76.7 at 0-90
    # with it). A folder saved with a clip section keeps its own `align` (ClipConfig's default stays "none").
    clip: ClipConfig = Field(default_factory=lambda: ClipConfig(align="view"))
    preset: Literal["standard", "small"] = Field(
        "small", description="standard: the paper's 10 blocks (64-128-256 channels); small: 6 blocks "
        "(32-64-128) for CPU runs")
    temporal_kernel: int = Field(5, ge=1, description="kernel of the dilated temporal branches (paper code: 5)")
    dilations: list[int] = Field([1, 2], min_length=1, description="one temporal branch per dilation (paper: 1, 2)")
    rel_reduction: int = Field(8, ge=1, description="phi/psi reduce C_in to C_in / r correlation channels "
                               "(paper: r = 8; at least 8 channels, the paper code's choice for the input layer)")
    head_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # PYSKL's CTR-GCN configs train with the same pipeline as its ST-GCN ones (RandomRot on 3D joints)
    augment: AugmentConfig = Field(default_factory=lambda: AugmentConfig(rotate=0.3, scale=0.1, crop=0.9))

    @field_validator("temporal_kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd (branches keep the clip's length), got {v}")
        return v

    @field_validator("dilations")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(d < 1 for d in v):
            raise ValueError(f"dilations must be >= 1, got {v}")
        return v

    def windowing(self) -> tuple[int | None, int | None]:
        return self.clip.window, self.clip.stride
