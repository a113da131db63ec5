"""Recipe registry: a recipe is data -- a name, its stages, its typed config, its recognizer class(es) and its
search space -- not a fork of the training loop. It names no method: each method registers itself in its
`recipe.py` when `actionllm.methods` is imported (what the command line, training and serving do).

Also here, once for every caller: how settings reach a config -- a recipe's knobs (CLI flags, tune keys ->
dotted paths, with the one LoRA alpha rule), `--set dotted.path=value`, and the deep merge of nested dicts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from .contract import RecognizerBase, missing_methods
from .ensemble import RECIPE as ENSEMBLE
from .ensemble import EnsembleRecognizer, load_ensemble
from .recognizer_folder import read_config, serving_facts
from .skeleton.augment import AugmentConfig


class RecipeConfig(BaseModel):
    """What every recipe config has: how sequences are cut into windows, class weighting, augmentation."""

    class_weights: Literal["none", "balanced"] = "none"  # 'balanced': inverse class frequency in train
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    def windowing(self) -> tuple[int | None, int | None]:
        """(window N, stride) the data pipeline, evaluation and serving cut sequences with.
        N None = the whole sequence is one sample; stride None = no stride (stride = N)."""
        raise NotImplementedError(f"{type(self).__name__} must say how it cuts sequences (windowing)")

    def for_data(self, class_names: list[str]) -> RecipeConfig:
        """This config made ready for a dataset's classes, on the driver before any worker starts: a recipe
        resolves what depends on the classes (SUGAR: which knowledge file), or raises ValueError naming what does
        not fit. Default: itself, unchanged."""
        return self

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


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    config_cls: type[RecipeConfig]
    recognizer: type[RecognizerBase]  # the final stage's model: what evaluation and serving load
    stages: tuple[str, ...] = ("train",)
    # multi-stage recipes: the recognizer class of each earlier stage, and TrainConfig values per stage (a value
    # the user sets at the top level or under `stages:` wins)
    stage_recognizers: dict[str, type[RecognizerBase]] = field(default_factory=dict)
    stage_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage_input: str = ""  # the recipe-config key through which a stage reads the previous stage's folder
    modality: str = "skeleton"  # what its data is: "skeleton" shards, or "video" shards (lvlm-var)
    # what Ray Tune searches by default (training/search_space.py turns these into tune spaces)
    search_space: dict[str, Any] = field(default_factory=dict)
    # generic knobs (CLI flags, tune keys) -> dotted paths in this recipe's config
    knobs: dict[str, str] = field(default_factory=dict)
    # TrainConfig values this recipe trains with unless the user sets them (optimiser, lr, batch, epochs)
    train_defaults: dict[str, Any] = field(default_factory=dict)

    def config(self, overrides: dict | None = None) -> RecipeConfig:
        return self.config_cls.model_validate(overrides or {})

    def recognizer_cls(self, stage: str | None = None) -> type[RecognizerBase]:
        """The recognizer class of `stage` (None: the recipe's final one, what evaluation and serving load)."""
        if stage is not None and stage not in self.stages:
            raise ValueError(f"recipe {self.name!r} has no stage {stage!r} (its stages: {', '.join(self.stages)})")
        return self.stage_recognizers.get(stage, self.recognizer) if stage else self.recognizer


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a recipe; refuses one whose recognizer classes do not fulfil the contract, naming what is missing."""
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is already registered")
    stages = {**{s: recipe.stage_recognizers.get(s) for s in recipe.stages[:-1]}, recipe.stages[-1]: recipe.recognizer}
    for stage, cls in stages.items():
        if not (isinstance(cls, type) and issubclass(cls, RecognizerBase)):
            raise TypeError(f"recipe {recipe.name!r}: stage {stage!r} needs a RecognizerBase subclass, got {cls!r}")
        missing = missing_methods(cls)
        if missing:
            raise TypeError(f"recipe {recipe.name!r}: {cls.__name__} does not implement {', '.join(missing)} "
                            "(see actionllm/contract.py)")
        if getattr(cls, "recipe", None) != recipe.name or getattr(cls, "config_cls", None) is not recipe.config_cls:
            raise TypeError(f"recipe {recipe.name!r}: {cls.__name__} must set recipe = {recipe.name!r} and "
                            f"config_cls = {recipe.config_cls.__name__}")
    if len(recipe.stages) > 1 and not recipe.stage_input:
        raise TypeError(f"recipe {recipe.name!r}: a multi-stage recipe names its stage_input config key")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        hint = "" if RECIPES else " (no recipe is registered: import actionllm.methods first)"
        raise KeyError(f"unknown recipe {name!r}; registered: {sorted(RECIPES)}{hint}") from None


def load_recognizer(folder: str | Path, device: str = "cpu", shared: dict | None = None) -> RecognizerBase:
    """Load any recipe's recognizer folder: config.json names the recipe (and stage), the registry its class. An
    earlier stage's folder loads as that stage's recognizer when it is one (SUGAR's align stage classifies by text
    similarity); otherwise as the final stage's class, which refuses it naming the folder to load instead. An
    ensemble folder (`actionllm ensemble`) loads its members this way and joins them."""
    meta = read_config(folder)
    if meta["recipe"] == ENSEMBLE:
        return load_ensemble(Path(folder), meta, load_recognizer, device=device, shared=shared)
    return folder_class(meta).load(folder, device=device, shared=shared)


def folder_class(meta: dict) -> type[RecognizerBase]:
    """The recognizer class that loads a folder with this config.json (see load_recognizer)."""
    if meta["recipe"] == ENSEMBLE:
        return EnsembleRecognizer
    recipe = get_recipe(meta["recipe"])
    stage = meta.get("stage")
    if stage in recipe.stages and recipe.recognizer_cls(stage).servable:
        return recipe.recognizer_cls(stage)
    return recipe.recognizer_cls()


def folder_facts(meta: dict) -> dict:
    """What serving needs to know of a folder before loading it (see recognizer_folder.serving_facts): from its
    config.json, or, for a folder written before config.json carried them, from the class that loads it."""
    facts = serving_facts(meta)
    if facts is not None:
        return facts
    cls = folder_class(meta)
    return cls.serving_facts(cls.config_cls.model_validate(meta["config"]))


# --- how settings reach a config -------------------------------------------------------------------------------
def set_path(cfg: dict, path: str, value) -> None:
    """cfg['a']['b'] = value for path 'a.b' (sections created as needed)."""
    *parents, leaf = path.split(".")
    for p in parents:
        cfg = cfg.setdefault(p, {})
        if not isinstance(cfg, dict):
            raise ValueError(f"{path!r}: {p!r} is not a section of the config")
    cfg[leaf] = value


def deep_merge(base: dict, extra: dict) -> dict:
    """A copy of `base` with `extra` merged in, nested dicts key by key (extra wins)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(dict(out.get(k) or {}), v) if isinstance(v, dict) else v
    return out


def knob_overrides(recipe: Recipe, values: dict[str, Any]) -> dict:
    """Knob values (CLI flags, tune parameters; None = not given) -> a nested recipe-config dict.

    The one alpha rule: LoRA alpha = 2 x rank unless alpha is given too. stride 0 = no stride. A knob the
    recipe does not have is an error naming the knobs it does have."""
    cfg: dict = {}
    for name, value in values.items():
        if value is None:
            continue
        if name not in recipe.knobs:
            takes = ", ".join(f"--{k.replace('_', '-')}" for k in recipe.knobs) or "none"
            raise ValueError(f"recipe {recipe.name!r} has no --{name.replace('_', '-')} (its knobs: {takes})")
        set_path(cfg, recipe.knobs[name], None if name == "stride" and value == 0 else value)
        if name == "rank" and "alpha" in recipe.knobs and values.get("alpha") is None:
            set_path(cfg, recipe.knobs["alpha"], 2 * value)
    return cfg


def parse_assignment(text: str) -> tuple[str, Any]:
    """'a.b=VALUE' -> ('a.b', VALUE parsed as YAML: 12 -> int, null -> None, [1, 2] -> list, text -> str)."""
    if "=" not in text:
        raise ValueError(f"--set {text!r} must look like dotted.path=value")
    path, raw = (s.strip() for s in text.split("=", 1))
    if not path:
        raise ValueError(f"--set {text!r}: empty path")
    try:
        return path, yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return path, raw


def check_path(model: type[BaseModel], path: str, where: str) -> None:
    """Refuse a dotted path that names no field of `model` (nested pydantic models followed), naming the part
    that is wrong and the nearest field names."""
    parts = path.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            near = difflib.get_close_matches(part, list(fields), n=3)
            hint = f"; did you mean {' or '.join(near)}?" if near else f"; fields: {', '.join(sorted(fields))}"
            raise ValueError(f"--set {path}: {where} has no field {'.'.join(parts[: i + 1])!r}{hint}")
        ann = fields[part].annotation
        if i + 1 < len(parts):
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                model = ann
            elif ann is dict or getattr(ann, "__origin__", None) is dict:
                return  # a free-form mapping (e.g. stages): anything below is checked where it is used
            else:
                raise ValueError(f"--set {path}: {'.'.join(parts[: i + 1])!r} is a value, not a section")
