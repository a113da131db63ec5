"""The recognizer contract: what the training loop, evaluation and serving know of a method's model.

A recognizer is built as `cls(config, class_names, layout, dims, **extras)` and is saved as one
self-describing folder (no pickles):

  config.json          format, recipe, stage, the recipe's config, label names, layout, dims, window N / stride,
                       what serving needs before loading it (`serving`), + the method's own fields (`folder_meta`)
  <name>.safetensors   one file per entry of `weight_files` (e.g. head.safetensors, model.safetensors)
  ...                  whatever `save_files` adds (a LoRA recognizer: the PEFT adapter, tokenizer, base weights)

`save` and `load` are written once, here; a method says what it saves (`weight_files`, `folder_meta`,
`save_files`) and how it is rebuilt from a folder (`build_from_folder`). Nothing here imports ray.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .recognizer_folder import FORMAT, read_config


def save_module(module: nn.Module, path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))


def load_module(module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (the recognizer folder is incomplete)")
    try:
        module.load_state_dict(load_file(str(path)))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None


class RecognizerBase(nn.Module, abc.ABC):
    """The contract between a method's model and the shared machinery (training/loop.py, evaluation, serving).

    A subclass sets the class attributes `recipe` (its registered name), `config_cls` (its pydantic config) and
    `stage` (multi-stage recipes) and implements:
      preprocessor(cfg, layout, dims, train, seed)  (classmethod) the data pipeline's callable: window rows
                            (joints, num_bodies, num_frames, dims, label) -> the model's inputs as numpy columns
      collate_fn()          a picklable callable: a numpy batch of the preprocessor's rows -> tensors for forward
      forward(**batch, class_weights=None) -> {"logits", "loss" (when the batch has "labels"), ...}
      predict_windows(windows)    {"probabilities", "frame_weights", "joint_weights", "joint_names", "tokens"}
                            (+ optional per-window "generated" text; an `open_vocabulary` recognizer also takes
                            candidates=[{"name", "texts"?}]: probabilities over those, in their order; a
                            `writes_text` one also takes generate=False: no free text, "generated" all "")
    and may override param_groups, count_tokens (throughput in tokens; 0 = not a token model), summarise
    (forward may return "stats": tensors the loop sums over an epoch and all workers; "logits" may be None in
    training, e.g. a generative or VQ-VAE stage), after_step, release (serving evicts), candidates.
    """

    recipe: ClassVar[str]
    config_cls: ClassVar[type[BaseModel]]
    stage: ClassVar[str | None] = None
    legacy_stages: ClassVar[tuple[str, ...]] = ()  # stage names older folders carry for this stage
    explanation: ClassVar[str] = "attention"  # what predict_windows' frame/joint weights are (plot labels)
    weight_files: ClassVar[dict[str, str]] = {}  # safetensors file -> attribute holding the module saved there
    servable: ClassVar[bool] = True  # False: an earlier stage that is not a classifier (llm-ar's VQ-VAE)
    # True: predict_windows(..., candidates=[{"name", "texts"?}, ...]) answers among classes named at request time
    open_vocabulary: ClassVar[bool] = False
    # True: predict_windows writes free text ("generated") and takes generate=False to skip it, with the same
    # probabilities (evaluate asks for that: its report keeps scores and weights, not text)
    writes_text: ClassVar[bool] = False

    def __init__(self, config: dict | BaseModel, class_names: list[str], layout: str, dims: int):
        super().__init__()
        self.cfg = config if isinstance(config, self.config_cls) else self.config_cls.model_validate(config)
        self.class_names, self.layout, self.dims = list(class_names), layout, int(dims)

    # --- what a method implements ------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def preprocessor(cls, cfg, layout: str, dims: int, train: bool = False, seed: int | None = None):
        """The callable the data pipeline maps over batches of window rows (see the class docstring)."""

    @abc.abstractmethod
    def collate_fn(self):
        """A picklable callable: numpy batch of preprocessed rows -> tensors for forward."""

    @abc.abstractmethod
    def forward(self, *args, **kwargs) -> dict:
        """-> {"logits", "loss" when labels are given, ...}"""

    @abc.abstractmethod
    def predict_windows(self, windows: list[np.ndarray], batch_size: int = 8) -> dict:
        """Windows [M, N, V, C] -> probabilities [W, K] and per-window frame/joint weights."""

    # --- defaults a method may override ------------------------------------------------------------------
    @property
    def window(self) -> int | None:
        return self.cfg.windowing()[0]

    @property
    def stride(self) -> int | None:
        return self.cfg.windowing()[1]

    @property
    def candidates(self) -> list[int]:
        """Classes this recognizer chooses among (all; an unseen-class recognizer: its held-out ones)."""
        return list(range(len(self.class_names)))

    def count_tokens(self, batch: dict) -> int:
        return 0

    def after_step(self) -> None:
        """Called on every worker after each optimiser step (collectives are safe here); default nothing."""

    def summarise(self, stats: dict) -> dict:
        """Metrics from the epoch's summed `stats` (what forward may return beside the loss); default none."""
        return {}

    def release(self) -> None:
        """Free what this recognizer shares with others loaded beside it (serving evicts with it); default none."""

    def param_groups(self, lr: float, head_lr: float | None = None) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    # --- the folder, written once --------------------------------------------------------------------------
    def folder_meta(self) -> dict[str, Any]:
        """The method's own config.json fields (beside the common ones of `base_meta`)."""
        return {}

    def save_files(self, folder: Path) -> None:
        """Files beyond config.json and `weight_files` (a LoRA recognizer: adapter, tokenizer, base weights)."""

    def base_meta(self) -> dict:
        """config.json fields every recipe writes."""
        window, stride = self.cfg.windowing()
        meta = {"format": FORMAT, "format_version": 1, "actionllm_version": __version__, "recipe": self.recipe,
                "config": self.cfg.model_dump(mode="json"), "class_names": self.class_names,
                "layout": self.layout, "dims": self.dims, "window": window, "stride": stride}
        if self.stage is not None:
            meta["stage"] = self.stage
        meta["serving"] = self.serving_facts(self.cfg)
        return meta

    @classmethod
    def serving_facts(cls, cfg) -> dict:
        """What a server needs to know of a recognizer with config `cfg` before loading it (config.json's `serving`
        block, read by `recognizer_folder.serving_facts`): its input and whether it takes candidates. A video
        recognizer adds its clip's frames and image size."""
        return {"input": "skeleton", "open_vocabulary": bool(cls.open_vocabulary)}

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {**self.base_meta(), **self.folder_meta()}
        (folder / "config.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        for name, attr in self.weight_files.items():
            save_module(getattr(self, attr), folder / name)
        self.save_files(folder)
        return folder

    def load_weights(self, folder: str | Path) -> None:
        """The trained weights of a saved folder into this model (loading a folder, resuming a run)."""
        for name, attr in self.weight_files.items():
            load_module(getattr(self, attr), Path(folder) / name)

    @classmethod
    def check_folder(cls, folder: Path, meta: dict) -> None:
        """Refuse a folder this class cannot load (another stage of the recipe), naming what to load instead."""
        stage = meta.get("stage")
        if stage != cls.stage and stage not in cls.legacy_stages:
            raise ValueError(f"{folder}: a {meta['recipe']} {stage!r}-stage folder, not a {cls.stage!r}-stage one: "
                             "evaluate or serve the final stage's folder (<run>/recognizer)")

    @classmethod
    def build_from_folder(cls, folder: Path, meta: dict, device: str = "cpu", shared: dict | None = None):
        """A fresh model of the folder's shape (load then puts its weights in)."""
        return cls(meta["config"], meta["class_names"], meta["layout"], meta["dims"])

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", shared: dict | None = None):
        """Load a folder. `shared`: a dict a caller keeps (a serving replica) so that recognizers on the same
        base model share one loaded copy of it (LoRA recipes; others ignore it)."""
        folder = Path(folder)
        meta = read_config(folder)
        cls.check_folder(folder, meta)
        rec = cls.build_from_folder(folder, meta, device=device, shared=shared)
        rec.load_weights(folder)
        return rec.to(device).eval()


def missing_methods(cls: type) -> list[str]:
    """The abstract methods a recognizer class leaves unimplemented ([] when it can be built)."""
    return sorted(getattr(cls, "__abstractmethods__", ()))


def no_grad_eval(rec: nn.Module):
    """Context for inference that restores the module's training mode afterwards."""
    return _EvalMode(rec)


class _EvalMode:
    def __init__(self, rec: nn.Module):
        self.rec, self.was = rec, rec.training
        self.grad = torch.no_grad()

    def __enter__(self):
        self.grad.__enter__()
        self.rec.eval()
        return self.rec

    def __exit__(self, *exc):
        self.rec.train(self.was)
        return self.grad.__exit__(*exc)
