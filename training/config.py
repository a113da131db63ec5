"""The typed training config: the schema of `actionllm train --config FILE.yaml` (flags override it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, model_validator

from actionllm.recipes import get_recipe


class TrainConfig(BaseModel):
    """Fields the user leaves out take the recipe's `train_defaults` first (e.g. SGD at lr 0.1 for stgcn),
    then the defaults below (LoRA fine-tuning)."""

    recipe: str = "joints-llm"
    data: str = Field(..., description="shard folder written by `actionllm prepare` / `synth-gait`")
    output: str = Field(..., description="run folder: checkpoints, metrics.jsonl, recognizer/")
    recipe_config: dict = Field(default_factory=dict, description="the recipe's own config (see recipes.py)")
    stage: str | None = Field(None, description="multi-stage recipes (llm-ar: tokenizer, llm): train this stage "
                              "only; None = every stage in order")
    stages: dict[str, dict] = Field(default_factory=dict, description="per-stage TrainConfig values, e.g. "
                                    "{tokenizer: {epochs: 30, lr: 2e-4}, llm: {epochs: 3}}")
    workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    epochs: int = Field(3, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps (smoke runs)")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap an epoch at K optimiser steps "
                                            "(torchtune's max_steps_per_epoch; short ASHA rungs on big data)")
    batch_size: int = Field(2, ge=1, description="windows per worker per step (paper: 2)")
    grad_accum: int = Field(1, ge=1)
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="sgd: momentum + Nesterov (GCN recipes)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    lr: float = Field(2e-4, gt=0)  # not specified in the paper (its lr is lost in the text): LLaMA-Factory's LoRA default
    head_lr: float | None = Field(None, gt=0, description="learning rate of the head (default: lr x 10)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0
    num_to_keep: int = Field(2, ge=1, description="checkpoints kept")
    max_failures: int = Field(1, ge=0, description="worker-group restarts from the latest checkpoint")
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(1, ge=1, description="validate every K epochs (and always after the last)")
    shuffle_buffer: int = Field(64, ge=0)
    fail_at_epoch: int | None = Field(None, description="testing: crash a worker once after this epoch's checkpoint")

    @model_validator(mode="before")
    @classmethod
    def _recipe_defaults(cls, data):
        if isinstance(data, dict):
            try:
                defaults = get_recipe(data.get("recipe", "joints-llm")).train_defaults
            except KeyError as err:
                raise ValueError(str(err).strip('"')) from None
            data = {**defaults, **data}
        return data

    @model_validator(mode="after")
    def _stages(self):
        stages = get_recipe(self.recipe).stages
        if self.stage is not None and self.stage not in stages:
            raise ValueError(f"recipe {self.recipe!r} has no stage {self.stage!r} (its stages: {', '.join(stages)})")
        unknown = [s for s in self.stages if s not in stages]
        if unknown:
            raise ValueError(f"stages: {unknown} are not stages of recipe {self.recipe!r} ({', '.join(stages)})")
        fields = set(type(self).model_fields) - {"recipe", "stage", "stages", "data"}
        for name, values in self.stages.items():
            bad = [k for k in values if k not in fields]
            if bad:
                raise ValueError(f"stages.{name}: unknown TrainConfig fields {bad}")
        return self

    def for_stage(self, stage: str, output: str) -> TrainConfig:
        """This config for one stage of a multi-stage recipe: the recipe's stage defaults for values the user
        did not set, then the user's `stages.<stage>` values, writing to `output`."""
        defaults = get_recipe(self.recipe).stage_defaults.get(stage, {})
        update = {k: v for k, v in defaults.items() if k not in self.model_fields_set}
        update.update(self.stages.get(stage, {}))
        data = {**self.model_dump(), **update, "stage": stage, "output": output}
        return type(self).model_validate(data)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> TrainConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        given = {k: v for k, v in overrides.items() if v is not None}
        data.update(given)
        if isinstance(data.get("stages"), dict):  # a flag wins over the file's per-stage values too
            for values in data["stages"].values():
                if isinstance(values, dict):
                    values.update({k: v for k, v in given.items() if k not in ("recipe", "data", "output", "stage")})
        return cls.model_validate(data)
