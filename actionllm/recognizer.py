"""Recognizers: what the training loop, evaluation and serving know of a recipe's model (`RecognizerBase`), and
the joints-llm one (`Recognizer`) = bridge + backbone (with LoRA) + head, saved as one self-describing folder.

Every recipe's folder has a `config.json` naming its recipe (the registry gives the class that loads it).
The joints-llm folder layout (what training writes and serving loads; no pickles):
  config.json                    recipe, its config, label names, layout, dims, joint names, backbone facts
  adapter_model.safetensors      PEFT LoRA adapter (+ adapter_config.json): loadable by PEFT alone
  head.safetensors               pooling + classifier weights
  tokenizer/                     the tokenizer files (so a recognizer loads without the hub)
  base/                          base weights, only when they are not reproducible from a reference
                                 (the built-in `tiny` backbone); hub ids and GGUF files are referenced
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .backbone import (
    apply_lora,
    describe,
    last_hidden_state,
    load_backbone,
    load_base,
    load_tokenizer,
    save_base,
)
from .bridges.joint2text import Joint2Text
from .heads import ClassifierHead, classification_loss, token_weights_to_frames_joints
from .recipes import get_recipe
from .skeleton.augment import augment_sequence

FORMAT = "actionllm-recognizer"


def _needs_base_weights(name_or_path: str) -> bool:
    return name_or_path == "tiny"


def read_config(folder: str | Path) -> dict:
    """The `config.json` of a recognizer folder, checked to be one."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a recognizer folder (config.json missing)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not an ActionLLM recognizer config ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "recipe" not in meta:
        raise ValueError(f"{path}: not an ActionLLM recognizer (format={meta.get('format') if isinstance(meta, dict) else None!r})")
    return meta


class RecognizerBase(nn.Module):
    """The contract between a recipe's model and the shared machinery (training/loop.py, evaluate, serving).

    A subclass is built as `cls(config, class_names, layout, dims, recipe=..., seed=...)` and provides:
      forward(**batch, class_weights=None) -> {"logits", "loss" (when batch has "labels"), ...}
      collate_fn()          a picklable callable: a numpy batch of its encoder's rows -> tensors for forward
      param_groups(lr, head_lr)   optimiser parameter groups
      load_weights(folder)  put the trainable weights of a saved folder into this (freshly built) model
      predict_windows(windows)    {"probabilities", "frame_weights", "joint_weights", "joint_names", "tokens"}
                            (+ optional per-window "generated" text)
      save(folder) / load(folder, device, shared=None)   (shared: a dict of bases a caller lets recognizers share)
    and may override count_tokens(batch) (throughput in tokens; 0 = not a token model) and summarise(stats)
    (forward may return "stats": tensors the loop sums over an epoch and all workers; "logits" may be None
    in training, e.g. a generative or tokenizer stage, and then no training accuracy is reported).
    """

    recipe: str
    explanation = "attention"  # what predict_windows' frame/joint weights are (plot labels)
    cfg: object
    class_names: list[str]
    layout: str
    dims: int

    @property
    def window(self) -> int | None:
        return self.cfg.windowing()[0]

    @property
    def stride(self) -> int | None:
        return self.cfg.windowing()[1]

    stage: str | None = None  # multi-stage recipes: which stage's model this is (written to config.json)

    @property
    def candidates(self) -> list[int]:
        """Classes this recognizer chooses among (all; an unseen-class llm-ar recognizer: its held-out ones)."""
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

    def base_meta(self) -> dict:
        """config.json fields every recipe writes."""
        window, stride = self.cfg.windowing()
        return {"format": FORMAT, "format_version": 1, "actionllm_version": __version__, "recipe": self.recipe,
                "config": self.cfg.model_dump(mode="json"), "class_names": self.class_names,
                "layout": self.layout, "dims": self.dims, "window": window, "stride": stride}


class WindowEncoder:
    """Windows -> token ids, per-token frame/joint indices (the bridge step of the data pipeline).

    A plain callable class: Ray Data runs it with `map_batches` (one tokenizer per actor); evaluation and
    prediction call it directly. Input batch columns: joints (flat [M,N,V,C]), num_bodies, num_frames, dims.
    """

    def __init__(self, config: dict, layout: str, dims: int, tokenizer=None, recipe: str = "joints-llm",
                 train: bool = False, seed: int | None = None):
        recipe_cfg = get_recipe(recipe).config_cls.model_validate(config)
        self.cfg = recipe_cfg
        self.bridge = Joint2Text(recipe_cfg.bridge, layout, dims)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(recipe_cfg.backbone)
        # training-time augmentation (off by default for joints-llm: the paper uses none)
        self.augment = recipe_cfg.augment if train and recipe_cfg.augment.active else None
        self.rng = np.random.default_rng(seed)

    def encode_window(self, joints: np.ndarray) -> dict:
        """joints [N,V,C] or [M,N,V,C] in the source layout -> the bridge's encoding."""
        return self.bridge.encode(joints, self.tokenizer, self.cfg.max_length)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cols: dict[str, list] = {k: [] for k in ("input_ids", "frame_index", "joint_index", "num_tokens", "truncated")}
        for i in range(len(batch["joints"])):
            m, n, c = int(batch["num_bodies"][i]), int(batch["num_frames"][i]), int(batch["dims"][i])
            joints = np.asarray(batch["joints"][i], np.float32).reshape(m, n, -1, c)
            if self.augment is not None:
                joints = augment_sequence(joints, self.augment, self.rng)
            enc = self.encode_window(joints)
            cols["input_ids"].append(np.asarray(enc["input_ids"], np.int64))
            cols["frame_index"].append(np.asarray(enc["frame_index"], np.int16))
            cols["joint_index"].append(np.asarray(enc["joint_index"], np.int16))
            cols["num_tokens"].append(len(enc["input_ids"]))
            cols["truncated"].append(bool(enc["truncated"]))
        out = {k: batch[k] for k in ("label", "source_id", "window_start") if k in batch}
        for k, v in cols.items():
            if k in ("input_ids", "frame_index", "joint_index"):
                arr = np.empty(len(v), dtype=object)
                arr[:] = v
                out[k] = arr
            else:
                out[k] = np.asarray(v)
        return out


def window_tokens(cfg, layout: str, dims: int) -> int:
    """Tokens of one full window (cfg.bridge.window frames, every joint present) before the max_length cut:
    the token length a search space has to fit into the backbone's context."""
    bridge = cfg.bridge.model_dump(mode="json", exclude={"stride"})  # the stride does not change a window
    key = json.dumps([bridge, cfg.backbone.model_dump(mode="json"), layout, dims])
    return _window_tokens(key, cfg.__class__.__name__)


@functools.lru_cache(maxsize=256)
def _window_tokens(key: str, _cls: str) -> int:
    from .recipes import JointsLLMConfig
    from .skeleton.layouts import get_layout

    bridge, backbone, layout, dims = json.loads(key)
    cfg = JointsLLMConfig.model_validate({"bridge": bridge, "backbone": backbone})
    enc = WindowEncoder(cfg.model_dump(), layout, dims)
    n = cfg.bridge.window
    rng = np.random.default_rng(0)  # digits like real data (a window of zeros would tokenise shorter)
    joints = rng.uniform(-1.5, 1.5, (1, n, get_layout(layout).num_joints, dims)).astype(np.float32)
    return len(enc.bridge.encode(joints, enc.tokenizer, 10**9)["input_ids"])


def collate(batch: dict[str, np.ndarray], pad_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding: right-pad token ids to the longest window in the batch; mask marks real tokens."""
    seqs = [np.asarray(x, np.int64) for x in batch["input_ids"]]
    longest = max(len(s) for s in seqs)
    ids = np.full((len(seqs), longest), pad_id, np.int64)
    mask = np.zeros((len(seqs), longest), np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}  # fresh, writable arrays
    if "label" in batch:
        out["labels"] = torch.from_numpy(np.array(batch["label"], np.int64))  # a copy: Ray hands read-only arrays
    return out


class PadCollate:
    """collate() with the tokenizer's pad id bound (picklable, for Ray Data's collate_fn)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return collate(batch, self.pad_id)


class Recognizer(RecognizerBase):
    """The joints-llm recognizer (Action-JointsLLM): Joint2Text -> LoRA LLM -> ClassifierHead."""

    def __init__(self, config: dict, class_names: list[str], layout: str, dims: int, *, recipe: str = "joints-llm",
                 model=None, tokenizer=None, seed: int = 0, device: str = "cpu", lora: bool = True):
        super().__init__()
        self.recipe = recipe
        self.cfg = get_recipe(recipe).config_cls.model_validate(config)
        self.class_names, self.layout, self.dims = list(class_names), layout, int(dims)
        if model is None:
            model, tokenizer = load_backbone(self.cfg.backbone, device=device, seed=seed)
        self.tokenizer = tokenizer
        self.llm = apply_lora(model, self.cfg.lora) if lora else model
        hidden = model.config.hidden_size
        torch.manual_seed(seed)
        self.head = ClassifierHead(hidden, len(class_names), self.cfg.pooling, self.cfg.head_hidden,
                                   self.cfg.head_dropout)
        self.encoder = WindowEncoder(self.cfg.model_dump(), layout, dims, tokenizer=tokenizer, recipe=recipe)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    # --- what the training loop uses ----------------------------------------------------------------------
    def collate_fn(self) -> PadCollate:
        return PadCollate(self.pad_id)

    def count_tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def param_groups(self, lr: float, head_lr: float | None = None) -> list[dict]:
        """LoRA weights at lr, the (freshly initialised) head at head_lr (default lr x 10)."""
        head = [p for p in self.head.parameters() if p.requires_grad]
        lora = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("head.")]
        return [{"params": lora, "lr": lr}, {"params": head, "lr": head_lr or lr * 10}]

    def load_weights(self, folder: str | Path) -> None:
        """A checkpoint's adapter and head weights into this freshly built recognizer."""
        from peft import set_peft_model_state_dict

        folder = Path(folder)
        set_peft_model_state_dict(self.llm, load_file(str(folder / "adapter_model.safetensors")))
        self.head.load_state_dict(load_file(str(folder / "head.safetensors")))

    def forward(self, input_ids, attention_mask, labels=None, class_weights=None) -> dict:
        if getattr(self, "shared_key", None) and self.llm.active_adapter != self.adapter_name:
            self.llm.set_adapter(self.adapter_name)  # a base shared with other recognizers: use this one's adapter
        h = last_hidden_state(self.llm, input_ids, attention_mask)
        logits, weights = self.head(h, attention_mask.bool())
        out = {"logits": logits, "weights": weights}
        if labels is not None:
            out["loss"] = classification_loss(logits, labels, class_weights)
        return out

    # --- inference ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_windows(self, windows: list[np.ndarray], batch_size: int = 8) -> dict:
        """Class probabilities per window, plus the frame/joint explanation of each (paper sec. 5.3)."""
        was_training = self.training
        self.eval()
        device = next(self.head.parameters()).device
        probs, frame_w, joint_w, tokens = [], [], [], 0
        n_joints = len(self.encoder.bridge.joint_names)
        for s in range(0, len(windows), batch_size):
            encs = [self.encoder.encode_window(w) for w in windows[s:s + batch_size]]
            batch = collate({"input_ids": [e["input_ids"] for e in encs]}, self.pad_id)
            out = self(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            tokens += int(batch["attention_mask"].sum())
            probs.append(torch.softmax(out["logits"].float(), -1).cpu().numpy())
            for e, w, win in zip(encs, out["weights"].float().cpu().numpy(), windows[s:s + batch_size], strict=True):
                n_frames = np.asarray(win).shape[-3]
                fw, jw = token_weights_to_frames_joints(w[: len(e["input_ids"])], np.asarray(e["frame_index"]),
                                                        np.asarray(e["joint_index"]), n_frames, n_joints)
                frame_w.append(np.asarray(fw, np.float32))
                joint_w.append(np.asarray(jw, np.float32))
        self.train(was_training)
        return {"probabilities": np.concatenate(probs) if probs else np.zeros((0, len(self.class_names))),
                "frame_weights": frame_w, "joint_weights": joint_w, "joint_names": self.encoder.bridge.joint_names,
                "tokens": tokens}

    # --- folder ------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        base_name = self.cfg.backbone.name_or_path
        meta = {
            **self.base_meta(), "joint_names": self.encoder.bridge.joint_names,
            "backbone": {"name_or_path": base_name, "revision": self.cfg.backbone.revision,
                         **describe(self.llm, self.tokenizer)},
            "base_weights": "base" if _needs_base_weights(base_name) else None,
        }
        (folder / "config.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        self.llm.save_pretrained(str(folder))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(folder / "head.safetensors"))
        self.tokenizer.save_pretrained(str(folder / "tokenizer"))
        if meta["base_weights"]:
            save_base(self.llm.get_base_model(), folder / "base")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", shared: dict | None = None) -> Recognizer:
        """Load a recognizer folder. With `shared` (a dict kept by the caller, e.g. one serving replica), folders
        whose base model is the same (`base_key`) share one copy of it: each adds its LoRA adapter to the base
        under its own adapter name, and `release()` takes it off again (the base goes when its last adapter does)."""
        from peft import PeftModel
        from transformers import AutoTokenizer

        folder = Path(folder)
        meta = read_config(folder)
        recipe_cfg = get_recipe(meta["recipe"]).config_cls.model_validate(meta["config"])
        key = base_key(folder, meta) if shared is not None else None
        name = f"adapter-{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]}" if key else "default"
        if key and key in shared:
            llm, tokenizer, users = shared[key]
            llm.load_adapter(str(folder), adapter_name=name, is_trainable=False)
            users.add(name)
        else:
            if meta.get("base_weights"):
                model = load_base(folder / meta["base_weights"],
                                  attn_implementation=recipe_cfg.backbone.attn_implementation)
                tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
            else:
                model, tokenizer = load_backbone(recipe_cfg.backbone, device=device)
            llm = PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False)
            if key:
                shared[key] = (llm, tokenizer, {name})
        rec = cls(meta["config"], meta["class_names"], meta["layout"], meta["dims"], recipe=meta["recipe"],
                  model=llm, tokenizer=tokenizer, lora=False)
        rec.adapter_name, rec.shared_key, rec._shared = name, key, shared
        rec.head.load_state_dict(load_file(str(folder / "head.safetensors")))
        return rec.to(device).eval()

    def release(self) -> None:
        """Take this recognizer's adapter off a shared base (see `load(shared=...)`); a no-op otherwise."""
        shared, key = getattr(self, "_shared", None), getattr(self, "shared_key", None)
        if shared is None or key not in shared:
            return
        llm, _, users = shared[key]
        users.discard(self.adapter_name)
        if users:
            llm.delete_adapter(self.adapter_name)
        else:
            del shared[key]
        self._shared = None


def base_key(folder: str | Path, meta: dict) -> str:
    """What identifies a recognizer's base model: its stored weights' digest, or its reference (hub id / folder /
    GGUF file, revision, dtype, kernel): recognizers with equal keys can share one loaded base."""
    folder = Path(folder)
    if meta.get("base_weights"):
        digest = hashlib.sha256()
        for f in sorted((folder / meta["base_weights"]).glob("*.safetensors")):
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        return "weights:" + digest.hexdigest()
    bb = meta.get("config", {}).get("backbone", {})
    return "ref:" + json.dumps({k: bb.get(k) for k in ("name_or_path", "gguf_file", "revision", "dtype",
                                                        "attn_implementation")}, sort_keys=True)


def load_recognizer(folder: str | Path, device: str = "cpu", shared: dict | None = None) -> RecognizerBase:
    """Load any recipe's recognizer folder: config.json names the recipe, the registry names its class.
    `shared`: see Recognizer.load (recognizers on one base share it)."""
    return get_recipe(read_config(folder)["recipe"]).recognizer_cls().load(folder, device=device, shared=shared)
