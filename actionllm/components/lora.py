"""LoRA on a causal LM, and the part of a recognizer folder every LoRA recipe shares.

`LoraRecognizer` is the base of the recipes that adapt an LLM: it builds backbone + LoRA (`init_llm`), writes
the PEFT adapter (loadable by PEFT alone), the tokenizer and -- only when no reference reproduces them (the
built-in `tiny`) -- the base weights, and loads a folder back. In serving, recognizers whose base is the
same (`base_key`) share one loaded copy of it: each adds its adapter to the same PeftModel under its own name,
`use_adapter()` selects it before a forward, and `release()` takes it off (the base goes with the last one).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic
import torch
from safetensors.torch import load_file

from ..contract import RecognizerBase
from ..errors import check_safetensors
from .backbone import describe, load_backbone, load_base, save_base
from .no_pickles import refuse_pickles

if TYPE_CHECKING:  # peft and transformers: imported where an adapter is built or loaded (see backbone.py)
    from peft import PeftModel
    from transformers import PreTrainedModel

ADAPTER = "adapter_model.safetensors"


class LoraSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    r: int = pydantic.Field(8, ge=1)  # Action-JointsLLM sec. 5: "LoRA fine-tuning (Rank = 8, alpha = 16, dropout = 0.05)"
    alpha: int = pydantic.Field(16, ge=1)  # Action-JointsLLM sec. 5
    dropout: float = pydantic.Field(0.05, ge=0.0, lt=1.0)  # Action-JointsLLM sec. 5
    # Action-JointsLLM sec. 4.2.1: LoRA "inserted into ... the q_proj, k_proj, v_proj, and o_proj layers"
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


def apply_lora(model: PreTrainedModel, lora: LoraSettings) -> PeftModel:
    """Freeze the base, add LoRA adapters on `lora.target_modules`; only LoRA weights are trainable."""
    from peft import LoraConfig, get_peft_model

    conf = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), task_type="CAUSAL_LM", bias="none",
    )
    with warnings.catch_warnings():  # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, conf)


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once (module.parameters dedups)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def stores_base_weights(name_or_path: str) -> bool:
    """Only the built-in `tiny` base (a seeded random init) is copied into the folder; hub ids, folders and
    GGUF files are referenced."""
    return name_or_path == "tiny"


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


def load_lora_llm(folder: Path, meta: dict, backbone_cfg, device: str = "cpu", shared: dict | None = None):
    """-> (PeftModel with the folder's adapter, tokenizer, adapter name, shared key or None)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    refuse_pickles(folder)  # PEFT and transformers would torch.load an adapter_model.bin / pytorch_model.bin
    check_safetensors(folder / ADAPTER)  # missing or truncated: a ValueError naming it, not PEFT's traceback
    if meta.get("base_weights"):
        stored = sorted((folder / meta["base_weights"]).glob("*.safetensors"))
        if not stored:
            raise FileNotFoundError(f"{folder / meta['base_weights']}: no base weights (*.safetensors) (the "
                                    "recognizer folder is incomplete)")
        for f in stored:
            check_safetensors(f)
    key = base_key(folder, meta) if shared is not None else None
    name = f"adapter-{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]}" if key else "default"
    if key and key in shared:
        llm, tokenizer, users = shared[key]
        llm.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        users.add(name)
        return llm, tokenizer, name, key
    if meta.get("base_weights"):
        model = load_base(folder / meta["base_weights"], attn_implementation=backbone_cfg.attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    else:
        model, tokenizer = load_backbone(backbone_cfg, device=device)
    llm = PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False)
    if key:
        shared[key] = (llm, tokenizer, {name})
    return llm, tokenizer, name, key


class LoraRecognizer(RecognizerBase):
    """Base of the recognizers that adapt a causal LM with LoRA (the config has `backbone` and `lora`)."""

    adapter_name = "default"
    shared_key: str | None = None
    _shared: dict | None = None

    def init_llm(self, model=None, tokenizer=None, device: str = "cpu", seed: int = 0, lora: bool = True) -> None:
        """self.llm = the backbone with a fresh LoRA adapter (or `model` as given, e.g. a loaded PeftModel)."""
        if model is None:
            model, tokenizer = load_backbone(self.cfg.backbone, device=device, seed=seed)
        self.tokenizer = tokenizer
        self.llm = apply_lora(model, self.cfg.lora) if lora else model

    def use_adapter(self) -> None:
        """A base shared with other recognizers: make this one's adapter the active one (before a forward)."""
        if self.shared_key and self.llm.active_adapter != self.adapter_name:
            self.llm.set_adapter(self.adapter_name)

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.llm.parameters() if p.requires_grad]

    # --- the folder ------------------------------------------------------------------------------------------
    def folder_meta(self) -> dict:
        base_name = self.cfg.backbone.name_or_path
        return {"backbone": {"name_or_path": base_name, "revision": self.cfg.backbone.revision,
                             **describe(self.llm, self.tokenizer)},
                "base_weights": "base" if stores_base_weights(base_name) else None}

    def save_files(self, folder: Path) -> None:
        self.llm.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder / "tokenizer"))
        if stores_base_weights(self.cfg.backbone.name_or_path):
            save_base(self.llm.get_base_model(), folder / "base")

    def load_weights(self, folder: str | Path) -> None:
        super().load_weights(folder)
        path = Path(folder) / ADAPTER
        check_safetensors(path)
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.llm, load_file(str(path)), adapter_name=self.adapter_name)

    @classmethod
    def folder_extras(cls, folder: Path, meta: dict) -> dict:
        """Constructor arguments a method reads from its folder beside the LLM (llm-ar: its VQ-VAE)."""
        return {}

    @classmethod
    def build_from_folder(cls, folder: Path, meta: dict, device: str = "cpu", shared: dict | None = None):
        backbone_cfg = cls.config_cls.model_validate(meta["config"]).backbone
        llm, tokenizer, name, key = load_lora_llm(folder, meta, backbone_cfg, device, shared)
        rec = cls(meta["config"], meta["class_names"], meta["layout"], meta["dims"], model=llm, tokenizer=tokenizer,
                  lora=False, **cls.folder_extras(folder, meta))
        rec.adapter_name, rec.shared_key, rec._shared = name, key, shared
        return rec

    def release(self) -> None:
        """Take this recognizer's adapter off a shared base (see `load(shared=...)`); a no-op otherwise."""
        shared, key = self._shared, self.shared_key
        if shared is None or key not in shared:
            return
        llm, _, users = shared[key]
        users.discard(self.adapter_name)
        if users:
            llm.delete_adapter(self.adapter_name)
        else:
            del shared[key]
        self._shared = None
