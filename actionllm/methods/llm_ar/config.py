"""The llm-ar recipe's config (LLM-AR, seed 002): the VQ-VAE stage's and the LLM stage's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from ...components.backbone import BackboneConfig
from ...components.clips import ClipConfig
from ...components.lora import LoraSettings
from ...registry import RecipeConfig


class VQVAEConfig(BaseModel):
    """LLM-AR's action VQ-VAE (seed 002 sec. 3.1, 3.2, 4.2): E (1D convs over time, W = frames/4 latents) ->
    codebook of U tokens of the backbone's embedding width (hyperbolic: Poincare ball) -> D."""

    codebook_size: int = Field(512, ge=2, description="U tokens (paper: 512; even: the context loss pairs halves)")
    hidden: int = Field(256, ge=8, description="channels of the conv encoder/decoder (not specified in the paper)")
    res_blocks: int = Field(1, ge=0, description="residual blocks per resolution (not specified in the paper)")
    hyperbolic: bool = Field(True, description="Poincare-ball codebook (eqs. 8-10); False = Euclidean (Table 6)")
    curvature: float = Field(1.0, gt=0, description="c of the Poincare ball (paper: 1)")
    w1: float = Field(0.02, ge=0, description="weight of the commitment loss (eq. 12; paper: 0.02)")
    w2: float = Field(0.2, ge=0, description="weight of L_human (eq. 12; paper: 0.2)")
    zipf: bool = Field(True, description="Zipf loss (eq. 4; Table 4 ablation)")
    zipf_alpha: float = Field(1.0, gt=0)
    zipf_beta: float = Field(2.7, ge=0)
    context: bool = Field(True, description="context loss over paired codebook halves (eq. 5)")
    mmd: bool = Field(True, description="MMD between the codebook and the backbone's word embeddings (eq. 7)")
    mmd_samples: int = Field(1024, ge=16, description="word embeddings drawn per step for the MMD")
    gumbel_tau: float = Field(1.0, gt=0, description="Gumbel-softmax temperature of the token usage (eq. 3)")
    # not in the paper (its VQ-VAE follows T2M-GPT [75], which restarts dead codes): a code whose running usage
    # falls under reset_below x the mean usage is moved onto a recent encoder output (0 = never)
    reset_below: float = Field(0.05, ge=0, lt=1, description="dead-code restart threshold (x mean usage)")
    usage_decay: float = Field(0.99, gt=0, lt=1, description="decay of the running code usage")

    @model_validator(mode="after")
    def _even(self):
        if self.codebook_size % 2:
            raise ValueError(f"codebook_size must be even (the context loss pairs its halves), got {self.codebook_size}")
        return self


class LLMARConfig(RecipeConfig):
    """LLM-AR (seed 002): action VQ-VAE with a hyperbolic codebook -> "action sentence" embeddings in an
    instruction -> LoRA LLM that names the action (cross-entropy on the name's tokens); classes are scored
    by the log-likelihood of their names."""

    clip: ClipConfig = Field(default_factory=lambda: ClipConfig(frames=32, max_bodies=1))
    vqvae: VQVAEConfig = Field(default_factory=VQVAEConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings(r=64, alpha=16))  # paper sec. 4.2
    prompt: str = Field("Given a sequence of action tokens [tokens], please predict the corresponding action.",
                        description="the instruction (sec. 3.2, verbatim); [tokens] = the action sentence")
    list_prompt: str = Field(
        "Given a sequence of action tokens [tokens], please predict the corresponding action from [list].",
        description="the unseen-class instruction (sec. 4.4, Table 8); [list] = the candidate classes")
    list_candidates: bool = Field(False, description="use list_prompt: the prompt names the candidate classes")
    held_out: list[str] = Field(default_factory=list, description="classes kept out of training (the unseen-"
                                "class protocol): their windows are dropped from train/val, and evaluation "
                                "and serving choose among them only")
    vqvae_folder: str | None = Field(None, description="the VQ-VAE stage's recognizer folder the llm stage "
                                     "reads; set by `actionllm train` when both stages run")
    max_new_tokens: int = Field(8, ge=0, description="free generation shown beside the scores (0 = off)")
    # the paper feeds the codebook's vectors as they are (frozen VQ-VAE, LoRA on the LLM). Not in the paper:
    # `trained` makes the action tokens' input embeddings a table of their own, initialised from the codebook and
    # trained with the adapter (lr: head_lr, default 10 x lr) -- as new vocabulary is added to an LLM
    action_embeddings: Literal["codebook", "trained"] = Field(
        "codebook", description="codebook: the VQ-VAE's code vectors, frozen (the paper); trained: an embedding "
        "table initialised from them and trained in the llm stage")

    @model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, data):
        """Folders and run files written before the rename called the VQ-VAE stage's folder `tokenizer`."""
        if isinstance(data, dict) and "tokenizer" in data:
            data = dict(data)
            legacy = data.pop("tokenizer")
            data.setdefault("vqvae_folder", legacy)
        return data

    def windowing(self) -> tuple[int | None, int | None]:
        return self.clip.window, self.clip.stride

    def instruction(self) -> str:
        return self.list_prompt if self.list_candidates else self.prompt

    def problems(self, facts: dict) -> list[str]:
        out = super().problems(facts)
        if self.clip.frames % 4:
            out.append(f"clip.frames {self.clip.frames} is not a multiple of 4 (W = frames/4 action tokens)")
        names = facts.get("class_names")
        if names is not None:
            unknown = [c for c in self.held_out if c not in names]
            if unknown:
                out.append(f"held_out names unknown classes {unknown}")
        return out

    @model_validator(mode="after")
    def _frames(self):
        if self.clip.frames % 4:
            raise ValueError(f"clip.frames must be a multiple of 4 (W = frames/4 action tokens), got {self.clip.frames}")
        for key, text in (("prompt", self.prompt), ("list_prompt", self.list_prompt)):
            if text.count("[tokens]") != 1:
                raise ValueError(f"{key} must contain [tokens] exactly once: {text!r}")
        if "[list]" not in self.list_prompt:
            raise ValueError(f"list_prompt must contain [list]: {self.list_prompt!r}")
        return self
