"""Recipe registry: a recipe is data -- a name, its stages, its typed config and its search space -- not a
fork of the training loop. The loop (training/loop.py) and serving look recipes up here by name.

A recipe's config is a pydantic model: the schema of the YAML a user writes for `actionllm train --config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from .backbone import BackboneConfig, LoraSettings
from .bridges.joint2text import Joint2TextConfig
from .skeleton.augment import AugmentConfig


class RecipeConfig(BaseModel):
    """What every recipe config has: how sequences are cut into windows, class weighting, augmentation."""

    class_weights: Literal["none", "balanced"] = "none"  # 'balanced': inverse class frequency in train
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    def windowing(self) -> tuple[int | None, int | None]:
        """(window N, stride) the data pipeline, evaluation and serving cut sequences with.
        N None = the whole sequence is one sample; stride None = no stride (stride = N)."""
        raise NotImplementedError

    def problems(self, facts: dict) -> list[str]:
        """Why this config cannot train on a dataset (facts: layout, dims, max_frames), [] when it can. What
        `actionllm tune` checks for every combination of a search space before any trial starts."""
        out = []
        window, stride = self.windowing()
        if window is not None and stride is not None and stride > window:
            out.append(f"stride {stride} > window {window} (frames between windows would never be seen)")
        if window is not None and facts.get("max_frames") and window > facts["max_frames"]:
            out.append(f"window {window} is longer than the longest sequence ({facts['max_frames']} frames)")
        return out


class JointsLLMConfig(RecipeConfig):
    """Action-JointsLLM (seed 000): Joint2Text -> LoRA LLM -> attn-pooling -> MLP classifier."""

    bridge: Joint2TextConfig = Field(default_factory=Joint2TextConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)  # paper sec. 5: r=8, alpha=16, dropout=0.05
    pooling: Literal["attn", "mean", "last"] = "attn"  # paper eqs. 5-9; mean/last are its ablations (Table 4)
    head_hidden: int = Field(256, ge=1, description="width of the pooling scorer and classifier MLPs")
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
        from .backbone import context_length
        from .recognizer import window_tokens

        context = context_length(self.backbone)
        tokens = window_tokens(self, facts["layout"], facts["dims"])
        if context is not None and min(tokens, self.max_length) > context:
            out.append(f"a window of {self.bridge.window} frames at precision {self.bridge.precision} is {tokens} "
                       f"tokens (budget max_length {self.max_length}), over the backbone's context of {context}")
        return out


class ClipConfig(BaseModel):
    """How a GCN baseline sees a sequence: optional windows, then a fixed-length uniform resampling."""

    window: int | None = Field(None, ge=1, description="cut sequences into windows of N frames (None: whole)")
    stride: int | None = Field(None, ge=1, description="window stride (None: no stride)")
    frames: int = Field(64, ge=4, description="frames after uniform temporal resampling (PYSKL: 100 on NTU)")
    centre: Literal["frame", "first", "none"] = Field(
        "frame", description="subtract the body centre (shoulder midpoint of body 0) of each frame "
        "(PYSKL's PreNormalize3D), of the first frame only (keeps global motion), or nothing")
    max_bodies: int = Field(2, ge=1, description="bodies kept per sequence (PYSKL: 2)")


class STGCNConfig(RecipeConfig):
    """ST-GCN (Yan, Xiong, Lin, AAAI 2018) as PYSKL trains it: the field's yardstick, no LLM."""

    clip: ClipConfig = Field(default_factory=ClipConfig)
    preset: Literal["standard", "small"] = Field(
        "small", description="standard: the paper's 10 blocks (64-128-256 channels); small: 6 blocks "
        "(32-64-128) for CPU runs")
    temporal_kernel: int = Field(9, ge=1, description="temporal convolution kernel (paper: 9)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each temporal conv (PYSKL: 0)")
    head_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    edge_importance: bool = Field(True, description="learnable edge-importance weights (paper sec. 3.6)")
    # PYSKL's ST-GCN configs train with RandomRot(theta=0.3) on 3D joints; switched on for the recipe here
    augment: AugmentConfig = Field(default_factory=lambda: AugmentConfig(rotate=0.3, scale=0.1, crop=0.9))

    def windowing(self) -> tuple[int | None, int | None]:
        return self.clip.window, self.clip.stride


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
    tokenizer: str | None = Field(None, description="the stage-1 (VQ-VAE) recognizer folder the llm stage "
                                  "reads; set by `actionllm train` when both stages run")
    max_new_tokens: int = Field(8, ge=0, description="free generation shown beside the scores (0 = off)")

    def windowing(self) -> tuple[int | None, int | None]:
        return self.clip.window, self.clip.stride

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
    # how the data pipeline runs the encoder: "actors" (a long-lived instance each: tokenizers) or "tasks"
    # (Ray's pooled worker processes, an instance cached per process: cheap numpy preprocessing; no actor
    # start-up every epoch)
    encoder_compute: Literal["actors", "tasks"] = "actors"
    # generic knobs (CLI flags, tune spaces) -> dotted paths in this recipe's config
    knobs: dict[str, str] = field(default_factory=dict)
    # TrainConfig values this recipe trains with unless the user sets them (optimiser, lr, batch, epochs)
    train_defaults: dict[str, Any] = field(default_factory=dict)
    # multi-stage recipes: "module:Class" of each stage's recognizer (the last stage's is `recognizer`) and
    # TrainConfig values per stage (a value the user sets at the top level or under `stages:` wins)
    stage_recognizers: dict[str, str] = field(default_factory=dict)
    stage_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage_input: str = "tokenizer"  # the recipe-config key through which a stage reads the previous stage's folder

    def config(self, overrides: dict | None = None) -> RecipeConfig:
        return self.config_cls.model_validate(overrides or {})

    def recognizer_cls(self, stage: str | None = None):
        """The recognizer class of `stage` (None: the recipe's final one, what evaluation and serving load)."""
        if stage is not None and stage not in self.stages:
            raise ValueError(f"recipe {self.name!r} has no stage {stage!r} (its stages: {', '.join(self.stages)})")
        return _import(self.stage_recognizers.get(stage, self.recognizer) if stage else self.recognizer)

    def encoder_cls(self):
        return _import(self.encoder)


def set_path(cfg: dict, path: str, value) -> None:
    """cfg['a']['b'] = value for path 'a.b' (sections created as needed): how knobs address a recipe config."""
    *parents, leaf = path.split(".")
    for p in parents:
        cfg = cfg.setdefault(p, {})
        if not isinstance(cfg, dict):
            raise ValueError(f"{path!r}: {p!r} is not a section of the recipe config")
    cfg[leaf] = value


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
    search_space={  # paper Table 3: N in {18, 24}, stride 'none' or N/2; precision + budget = token length
        "window": {"choice": [18, 24]},
        "stride_fraction": {"choice": [None, 0.5]},
        "rank": {"choice": [4, 8, 16]},
        "precision": {"choice": [1, 2]},
        "lr": {"loguniform": [1e-5, 1e-3]},
    },
    paper="../shared/seeds/000_2636df4139b5194f.txt",
    # tasks: Ray's pooled worker processes keep one encoder (tokenizer) per configuration across epochs and
    # trials, where an actor pool would start (import torch, load the tokenizer) again every epoch
    encoder_compute="tasks",
    knobs={"window": "bridge.window", "stride": "bridge.stride", "precision": "bridge.precision",
           "prompt": "bridge.prompt", "rank": "lora.r", "alpha": "lora.alpha", "backbone": "backbone.name_or_path",
           "gguf_file": "backbone.gguf_file", "pooling": "pooling", "max_length": "max_length"},
))

register_recipe(Recipe(
    name="stgcn",
    description="ST-GCN baseline (Yan et al. 2018): spatial-configuration graph convs + temporal convs, no LLM",
    config_cls=STGCNConfig,
    stages=("train",),
    search_space={
        "clip.frames": {"choice": [32, 48, 64]},
        "lr": {"loguniform": [0.01, 0.2]},
        "weight_decay": {"loguniform": [1e-4, 1e-3]},
    },
    paper="Yan, Xiong, Lin. Spatial Temporal Graph Convolutional Networks for Skeleton-Based Action "
          "Recognition. AAAI 2018. Training recipe: PYSKL (Duan et al., ACM MM 2022)",
    recognizer="actionllm.baselines.stgcn:STGCNRecognizer",
    encoder="actionllm.baselines.stgcn:ClipEncoder",
    encoder_compute="tasks",
    knobs={"window": "clip.window", "stride": "clip.stride", "frames": "clip.frames", "preset": "preset"},
    # PYSKL's ST-GCN schedule: SGD momentum 0.9 nesterov, lr 0.1, weight decay 5e-4, cosine, batch 16/GPU
    train_defaults={"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "batch_size": 16, "epochs": 40,
                    "warmup_ratio": 0.0, "max_grad_norm": 10.0, "eval_every": 5},
))

register_recipe(Recipe(
    name="llm-ar",
    description="LLM-AR: action VQ-VAE (hyperbolic codebook, Zipf/context/MMD losses) -> action sentence -> "
                "LoRA LLM names the action (classes scored by name log-likelihood)",
    config_cls=LLMARConfig,
    stages=("tokenizer", "llm"),
    search_space={"clip.frames": {"choice": [16, 32]}, "rank": {"choice": [16, 64]},
                  "lr": {"loguniform": [1e-4, 3e-3]}},
    paper="../shared/seeds/002_ea06583b87a6e65c.txt",
    recognizer="actionllm.llm_ar:LLMARRecognizer",
    stage_recognizers={"tokenizer": "actionllm.bridges.action_vqvae:VQVAERecognizer",
                       "llm": "actionllm.llm_ar:LLMARRecognizer"},
    encoder="actionllm.baselines.stgcn:ClipEncoder",
    encoder_compute="tasks",
    knobs={"window": "clip.window", "stride": "clip.stride", "frames": "clip.frames", "rank": "lora.r",
           "alpha": "lora.alpha", "backbone": "backbone.name_or_path", "gguf_file": "backbone.gguf_file",
           "prompt": "prompt", "codebook_size": "vqvae.codebook_size", "hyperbolic": "vqvae.hyperbolic"},
    # sec. 4.2: VQ-VAE AdamW lr 2e-4; LoRA AdamW lr 3e-3 (micro-batches of 4)
    stage_defaults={"tokenizer": {"lr": 2e-4, "batch_size": 32, "epochs": 30, "eval_every": 5},
                    "llm": {"lr": 3e-3, "batch_size": 4, "epochs": 3}},
))
