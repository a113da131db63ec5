"""The typed training config: the schema of `actionllm train --config FILE.yaml` (flags override it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, model_validator

import actionllm.methods  # noqa: F401  (registers every method's recipe)
from actionllm.registry import check_path, deep_merge, get_recipe, parse_assignment, set_path


class TrainConfig(BaseModel):
    """Fields the user leaves out take the recipe's `train_defaults` first (e.g. SGD at lr 0.1 for stgcn),
    then the defaults below (LoRA fine-tuning)."""

    recipe: str = "joints-llm"
    data: str = Field(..., description="shard folder written by `actionllm prepare` / `synth-gait`")
    output: str = Field(..., description="run folder: checkpoints, metrics.jsonl, recognizer/")
    recipe_config: dict = Field(default_factory=dict, description="the recipe's own config (its method's "
                                "config.py, e.g. actionllm/methods/joints_llm/config.py)")
    stage: str | None = Field(None, description="multi-stage recipes (llm-ar: vqvae, llm): train this stage "
                              "only; None = every stage in order")
    stages: dict[str, dict] = Field(default_factory=dict, description="per-stage TrainConfig values, e.g. "
                                    "{vqvae: {epochs: 30, lr: 2e-4}, llm: {epochs: 3}}")
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
    autocast: Literal["auto", "bf16", "off"] = Field(
        "auto", description="mixed precision of the training forward (the weights stay float32): auto = bf16 on "
        "CUDA, float32 on CPU; bf16 = bf16 on CPU too (a SmolLM2-135M LoRA step 1.76x faster on a CPU that "
        "multiplies bf16 natively, AVX512-BF16 or AMX: bench/cpu_autocast.py; slower on one that does not); "
        "off = float32 everywhere")
    seed: int = 0
    num_to_keep: int = Field(2, ge=1, description="checkpoints kept")
    max_failures: int = Field(1, ge=0, description="worker-group restarts from the latest checkpoint")
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(1, ge=1, description="validate every K epochs (and always after the last)")
    shuffle_buffer: int = Field(64, ge=0)
    data_cache: Literal["auto", "always", "never"] = Field(
        "auto", description="keep the data in Ray's object store for the whole run instead of re-running the Ray "
        "Data pipeline (read, windows, preprocessing) every epoch: the driver reads the train and val windows "
        "once and the Train workers preprocess them (the train split with fresh augmentation every epoch). auto: "
        "when they fit in a quarter of the object store; never: stream every epoch (data larger than memory)")
    fail_at_epoch: int | None = Field(None, description="testing: crash a worker once after this epoch's checkpoint")

    @model_validator(mode="before")
    @classmethod
    def _known_recipe(cls, data):
        if isinstance(data, dict):
            try:
                get_recipe(data.get("recipe", "joints-llm"))
            except KeyError as err:
                raise ValueError(str(err).strip('"')) from None
        return data

    @model_validator(mode="after")
    def _recipe_defaults(self):
        """The recipe's train_defaults fill the fields the user left out, without counting as set by the user
        (so that a stage's defaults still beat them in `for_stage`)."""
        for key, value in get_recipe(self.recipe).train_defaults.items():
            if key not in self.model_fields_set:
                self.__dict__[key] = value
        return self

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
        data = {k: getattr(self, k) for k in self.model_fields_set}  # what the user set
        data.update({k: v for k, v in defaults.items() if k not in self.model_fields_set})
        data.update(self.stages.get(stage, {}))
        data.update({"recipe": self.recipe, "data": self.data, "stage": stage, "output": output,
                     "recipe_config": self.recipe_config})
        return type(self).model_validate(data)

    def with_settings(self, assignments: list[str]) -> TrainConfig:
        """`--set dotted.path=value` (repeatable): a TrainConfig field (lr=1e-3, stages.llm.epochs=2) or a field
        of the recipe's config (bridge.window=12, or recipe_config.bridge.window=12). An unknown path is refused,
        naming it."""
        top, recipe_cfg = self.model_dump(exclude_unset=True), dict(self.recipe_config)
        config_cls = get_recipe(self.recipe).config_cls
        for text in assignments:
            path, value = parse_assignment(text)
            if path.startswith("recipe_config."):
                path = path.removeprefix("recipe_config.")
            elif path.split(".")[0] in type(self).model_fields:
                if path.split(".")[0] in ("recipe", "recipe_config"):
                    raise ValueError(f"--set {path}: set the recipe with --recipe, its config with dotted paths")
                check_path(type(self), path, "the training config")
                set_path(top, path, value)
                continue
            check_path(config_cls, path, f"recipe {self.recipe!r}'s config ({config_cls.__name__})")
            set_path(recipe_cfg, path, value)
        return type(self).model_validate({**top, "recipe": self.recipe, "recipe_config": recipe_cfg})

    def with_recipe_config(self, overrides: dict) -> TrainConfig:
        """This config with `overrides` merged into recipe_config (nested dicts key by key)."""
        return self.model_copy(update={"recipe_config": deep_merge(self.recipe_config, overrides)})

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: cannot read ({err})") from None
        except yaml.YAMLError as err:  # one line: where, and what (PyYAML's own text spans several)
            mark = getattr(err, "problem_mark", None)
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            what = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"{path}{where}: not valid YAML ({what})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        given = {k: v for k, v in overrides.items() if v is not None}
        data.update(given)
        if isinstance(data.get("stages"), dict):  # a flag wins over the file's per-stage values too
            for values in data["stages"].values():
                if isinstance(values, dict):
                    values.update({k: v for k, v in given.items() if k not in ("recipe", "data", "output", "stage")})
        return cls.model_validate(data)
