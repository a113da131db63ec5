"""The search space of `actionllm tune`: read, normalise and check it before any trial starts (no Ray here).

Space keys (the recipe's registry space, overridden key by key by `--space FILE.yaml`):
  - a TrainConfig field: lr, weight_decay, batch_size, head_lr, ...
  - a knob of the recipe (`actionllm recipes`): window, stride, rank, precision, max_length, frames, ...
  - `stride_fraction`: stride = round(fraction x window), null = no stride
  - a dotted path into the recipe config: lora.dropout, clip.centre, ...
Each value is {choice: [...]}, {grid: [...]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]}, {randint: [lo, hi]}
or a constant; a plain list ([12, 18], as sweep files write it) is a choice (a list-valued constant is written
{choice: [[...]]}). LoRA alpha = 2 x rank unless the space sets alpha.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import yaml

from actionllm.registry import deep_merge, get_recipe, knob_overrides, set_path
from actionllm.skeleton.shards import Manifest

from .config import TrainConfig

KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
DERIVED = ("stride_fraction",)
MAX_COMBINATIONS = 4096


def load_space_file(path: str | Path | None) -> tuple[dict, dict, bool]:
    """A space YAML -> (space, train overrides, inherit). Either {space: {...}, train: {...}, inherit: bool}
    or a flat space. inherit (default true): start from the recipe's registry space; false: this space only."""
    if path is None:
        return {}, {}, True
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the search space: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping (space: ..., train: ...)")
    if "space" in data or "train" in data:
        unknown = set(data) - {"space", "train", "inherit"}
        if unknown:
            raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)} (expected space, train, inherit)")
        if not isinstance(data.get("inherit", True), bool):
            raise ValueError(f"{path}: inherit must be true or false")
        return dict(data.get("space") or {}), dict(data.get("train") or {}), data.get("inherit", True)
    return data, {}, True


FORMS = ("{choice: [a, b]}, [a, b] (= choice), {grid: [a, b]}, {uniform: [low, high]}, "
         "{loguniform: [low, high]}, {randint: [low, high]}, or a constant")


def normalise_space(space: dict) -> dict:
    """The space with plain lists read as choices; every malformed entry refused at once, naming the
    accepted forms (rather than one config error per combination later)."""
    out, problems = {}, []
    for key, spec in space.items():
        if isinstance(spec, (list, tuple)):
            spec = {"choice": list(spec)}
        try:
            check_spec(key, spec)
        except ValueError as err:
            problems.append(str(err))
        out[key] = spec
    if problems:
        raise ValueError("the search space is malformed:\n  " + "\n  ".join(problems) + f"\n  accepted forms: {FORMS}")
    return out


def check_spec(key: str, spec) -> None:
    if not isinstance(spec, dict):
        return  # a constant
    if len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ValueError(f"space key {key!r}: {spec!r} must be one of {{{': ..., '.join(KINDS)}: ...}}, a list "
                         "(a choice) or a constant")
    kind, arg = next(iter(spec.items()))
    if kind in ("choice", "grid"):
        if not isinstance(arg, list) or not arg:
            raise ValueError(f"space key {key!r}: {kind} needs a non-empty list")
    else:
        if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(x, (int, float)) for x in arg)):
            raise ValueError(f"space key {key!r}: {kind} needs [low, high]")
        lo, hi = arg
        if not lo < hi:
            raise ValueError(f"space key {key!r}: {kind} needs low < high, got {arg}")
        if kind == "loguniform" and lo <= 0:
            raise ValueError(f"space key {key!r}: loguniform needs low > 0, got {lo}")


def candidates(spec) -> list:
    """The values a check has to try: every choice, the ends of a range, the constant itself."""
    if not isinstance(spec, dict):
        return [spec]
    return list(next(iter(spec.values())))


def apply_params(base: dict, recipe_name: str, params: dict) -> dict:
    """TrainConfig dict + one trial's parameters -> the trial's TrainConfig dict."""
    recipe = get_recipe(recipe_name)
    out = copy.deepcopy(base)
    fields = set(TrainConfig.model_fields)
    knobs = {k: v for k, v in params.items() if k in recipe.knobs and k not in fields}
    paths: dict = {}
    for key, value in params.items():
        if key in fields:
            out[key] = value
        elif key not in DERIVED and key not in knobs:
            set_path(paths, key, value)  # a dotted path into the recipe config
    rc = deep_merge(deep_merge(out.get("recipe_config") or {}, paths), knob_overrides(recipe, knobs))
    if "stride_fraction" in params:
        if "window" not in recipe.knobs or "stride" not in recipe.knobs:
            raise ValueError(f"stride_fraction needs a recipe with window and stride knobs ({recipe_name} has none)")
        window = recipe.config(rc).windowing()[0]
        f = params["stride_fraction"]
        set_path(rc, recipe.knobs["stride"], None if f is None or window is None else max(1, round(f * window)))
    out["recipe_config"] = rc
    return out


def validate_space(recipe_name: str, base: dict, space: dict, facts: dict) -> list[str]:
    """Every combination of the space's candidate values must make a valid TrainConfig whose recipe config
    has no problems on this dataset; returns the reasons (empty = fine)."""
    recipe = get_recipe(recipe_name)
    fields, knobs = set(TrainConfig.model_fields), set(recipe.knobs)
    reasons = []
    space = normalise_space(space)
    for key in space:
        if key not in fields and key not in knobs and key not in DERIVED and "." not in key:
            reasons.append(f"space key {key!r} is not a TrainConfig field, a knob of recipe {recipe_name!r} "
                           f"({', '.join(sorted(knobs))}), stride_fraction, or a dotted config path")
    if reasons:
        return reasons
    keys = list(space)
    grid = list(itertools.product(*(candidates(space[k]) for k in keys)))
    if len(grid) > MAX_COMBINATIONS:
        raise ValueError(f"the space has {len(grid)} combinations of candidate values; at most {MAX_COMBINATIONS} "
                         "are checked (use ranges instead of long choice lists)")
    seen = set()
    from pydantic import ValidationError

    for combo in grid:
        params = dict(zip(keys, combo, strict=True))
        label = ", ".join(f"{k}={v}" for k, v in params.items())
        try:
            tc = TrainConfig.model_validate(apply_params(base, recipe_name, params))
            cfg = recipe.config(tc.recipe_config)
        except (ValidationError, ValueError) as err:
            first = str(err).strip().splitlines()
            msg = " ".join(first[:3]) if first else repr(err)
            reasons.append(f"{label}: invalid config: {msg}")
            continue
        for problem in cfg.problems(facts):
            if (label, problem) not in seen:
                seen.add((label, problem))
                reasons.append(f"{label}: {problem}")
    return reasons


def to_tune(space: dict) -> dict:
    from ray import tune

    out = {}
    for key, spec in space.items():
        if not isinstance(spec, dict):
            out[key] = spec
            continue
        kind, arg = next(iter(spec.items()))
        out[key] = {"choice": lambda a: tune.choice(a), "grid": lambda a: tune.grid_search(a),
                    "uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
                    "randint": lambda a: tune.randint(a[0], a[1] + 1)}[kind](arg)
    return out


def dataset_facts(data: str) -> dict:
    m = Manifest.read(data)
    return {"layout": m.layout, "dims": m.dims, "max_frames": int(m.frames.get("max", 0)) or None}
