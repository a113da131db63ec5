"""The joints-llm recognizer (Action-JointsLLM): Joint2Text -> LoRA LLM -> attn-pooling + MLP classifier.

Folder (what training writes and serving loads; no pickles): config.json (+ joint names, backbone facts),
adapter_model.safetensors + adapter_config.json (PEFT), head.safetensors, tokenizer/, and base/ only for the
built-in `tiny` backbone (hub ids and GGUF files are referenced).
"""

from __future__ import annotations

import numpy as np
import torch

from ...components.backbone import last_hidden_state, load_tokenizer
from ...components.clips import object_column
from ...components.lora import LoraRecognizer
from ...components.pooling import ClassifierHead, classification_loss, token_weights_to_frames_joints
from ...contract import no_grad_eval
from ...skeleton.augment import augment_sequence
from .config import JointsLLMConfig
from .joint2text import Joint2Text


class WindowPreprocessor:
    """Windows -> token ids and per-token frame/joint indices (Joint2Text + tokenisation).

    A plain callable class: Ray Data maps it over batches of window rows (columns joints (flat [M,N,V,C]),
    num_bodies, num_frames, dims); evaluation and prediction call `encode_window` directly."""

    def __init__(self, cfg: JointsLLMConfig, layout: str, dims: int, tokenizer=None, train: bool = False,
                 seed: int | None = None):
        self.cfg = cfg if isinstance(cfg, JointsLLMConfig) else JointsLLMConfig.model_validate(cfg)
        self.bridge = Joint2Text(self.cfg.bridge, layout, dims)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.cfg.backbone)
        # training-time augmentation (off by default for joints-llm: the paper uses none)
        self.augment = self.cfg.augment if train and self.cfg.augment.active else None
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
            out[k] = object_column(v) if k in ("input_ids", "frame_index", "joint_index") else np.asarray(v)
        return out


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


class JointsLLMRecognizer(LoraRecognizer):
    """Joint2Text -> LoRA LLM -> ClassifierHead (attn pooling, eqs. 5-9, + MLP)."""

    recipe = "joints-llm"
    config_cls = JointsLLMConfig
    weight_files = {"head.safetensors": "head"}

    def __init__(self, config, class_names: list[str], layout: str, dims: int, *, model=None, tokenizer=None,
                 seed: int = 0, device: str = "cpu", lora: bool = True):
        super().__init__(config, class_names, layout, dims)
        self.init_llm(model, tokenizer, device=device, seed=seed, lora=lora)
        torch.manual_seed(seed)
        self.head = ClassifierHead(self.llm.config.hidden_size, len(class_names), self.cfg.pooling,
                                   self.cfg.head_hidden, self.cfg.head_dropout)
        self.encoder = WindowPreprocessor(self.cfg, layout, dims, tokenizer=self.tokenizer)

    @classmethod
    def preprocessor(cls, cfg, layout: str, dims: int, train: bool = False, seed: int | None = None):
        return WindowPreprocessor(cfg, layout, dims, train=train, seed=seed)

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
        return [{"params": self.lora_parameters(), "lr": lr}, {"params": head, "lr": head_lr or lr * 10}]

    def forward(self, input_ids, attention_mask, labels=None, class_weights=None) -> dict:
        self.use_adapter()
        h = last_hidden_state(self.llm, input_ids, attention_mask)
        logits, weights = self.head(h, attention_mask.bool())
        out = {"logits": logits, "weights": weights}
        if labels is not None:
            out["loss"] = classification_loss(logits, labels, class_weights)
        return out

    # --- inference ---------------------------------------------------------------------------------------
    def predict_windows(self, windows: list[np.ndarray], batch_size: int = 8) -> dict:
        """Class probabilities per window, plus the frame/joint explanation of each (paper sec. 5.3)."""
        device = next(self.head.parameters()).device
        probs, frame_w, joint_w, tokens = [], [], [], 0
        n_joints = len(self.encoder.bridge.joint_names)
        with no_grad_eval(self):
            for s in range(0, len(windows), batch_size):
                encs = [self.encoder.encode_window(w) for w in windows[s:s + batch_size]]
                batch = collate({"input_ids": [e["input_ids"] for e in encs]}, self.pad_id)
                out = self(batch["input_ids"].to(device), batch["attention_mask"].to(device))
                tokens += int(batch["attention_mask"].sum())
                probs.append(torch.softmax(out["logits"].float(), -1).cpu().numpy())
                for e, w, win in zip(encs, out["weights"].float().cpu().numpy(), windows[s:s + batch_size],
                                     strict=True):
                    fw, jw = token_weights_to_frames_joints(w[: len(e["input_ids"])], np.asarray(e["frame_index"]),
                                                            np.asarray(e["joint_index"]), np.asarray(win).shape[-3],
                                                            n_joints)
                    frame_w.append(np.asarray(fw, np.float32))
                    joint_w.append(np.asarray(jw, np.float32))
        return {"probabilities": np.concatenate(probs) if probs else np.zeros((0, len(self.class_names))),
                "frame_weights": frame_w, "joint_weights": joint_w, "joint_names": self.encoder.bridge.joint_names,
                "tokens": tokens}

    def folder_meta(self) -> dict:
        return {"joint_names": self.encoder.bridge.joint_names, **super().folder_meta()}
