"""LVLM-VAR's two recognizers, one per stage. Both read a video as its frame features: training rows carry the
frozen encoder's features (cached once per shard folder and encoder, training/video.py); at inference a "window"
is either a decoded clip (uint8 [T, H, W, 3], encoded here with the recipe's visual encoder) or its features
([T', D]).

Stage `vst` (`VSTRecognizer`): the VST module (vst.py) trained with its class head; a recognizer in its own right
(the head on the mean semantic token), so it is evaluated and served like the final stage.

Stage `llm` (`LVLMVARRecognizer`): the frozen VST turns a video into semantic tokens (a variable number per video);
their vectors are spliced as `inputs_embeds` at `[tokens]` of "[tokens] Please identify the action in this video.
What is happening?" and the LoRA LLM is trained with cross-entropy on "{class}. {explanation}" + EOS (eq. 3: C and
E). Classes are scored by the log-likelihood of their names (components/label_scoring.py); the greedy
continuation is the explanation returned beside the label. Videos whose token counts differ go through the LLM in
groups of equal length (exact: no padding inside the prompt).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...components.backbone import hidden_size
from ...components.clips import object_column
from ...components.llm_stage import LLMStage
from ...components.visual_encoder import feature_width, load_visual_encoder
from ...components.vq import collapse_repeats, usage_metrics
from ...contract import RecognizerBase, no_grad_eval
from ...recognizer_folder import read_config
from .config import LVLMVARConfig
from .vst import VST

VST_WEIGHTS = "vst.safetensors"


class FeaturePreprocessor:
    """Feature rows (features flat, steps, feat_dim, label) -> per-video arrays [T', D]."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feats = [np.asarray(f, np.float32).reshape(int(s), int(d))
                 for f, s, d in zip(batch["features"], batch["steps"], batch["feat_dim"], strict=True)]
        out = {k: batch[k] for k in ("label", "sample_id") if k in batch}
        out["feats"] = object_column(feats)
        return out


class FeatureCollate:
    """Per-video features (same T' in a run) -> feats [B, T', D] (+ labels)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        out = {"feats": torch.from_numpy(np.stack([np.asarray(f, np.float32) for f in batch["feats"]]))}
        if "label" in batch:
            out["labels"] = torch.from_numpy(np.array(batch["label"], np.int64))
        return out


class VideoInput:
    """What both stages share: feature rows in training, the frozen visual encoder (loaded on first use, never
    saved in the folder: the config names it) and clips or features -> a feature batch at inference."""

    @classmethod
    def preprocessor(cls, cfg, layout: str, dims: int, train: bool = False, seed: int | None = None):
        return FeaturePreprocessor()

    def collate_fn(self) -> FeatureCollate:
        return FeatureCollate()

    @property
    def encoder(self):
        enc = self.__dict__.get("_visual_encoder")
        if enc is None:  # kept out of the module tree: not in state_dict, not moved by .to()
            enc = load_visual_encoder(self.cfg.encoder)
            object.__setattr__(self, "_visual_encoder", enc)
        return enc

    def features_of(self, windows: list, device) -> tuple[torch.Tensor, int]:
        """Clips (uint8 [T, H, W, 3]) or features ([T', D]) -> feats [B, T', D] and frames per feature step."""
        arrays = [np.asarray(w) for w in windows]
        if all(a.ndim == 2 for a in arrays):
            return torch.from_numpy(np.stack(arrays).astype(np.float32)).to(device), 1
        if not all(a.ndim == 4 and a.shape[-1] == 3 for a in arrays):
            raise ValueError("an lvlm-var recognizer reads video clips [T, H, W, 3] (uint8 RGB) or their features "
                             f"[T', D]; got arrays of shapes {sorted({a.shape for a in arrays})}")
        feats = self.encoder.encode(np.stack(arrays))
        return feats.to(device).float(), int(getattr(self.encoder, "frames_per_step", 1))

    @classmethod
    def serving_facts(cls, cfg) -> dict:
        return {**super().serving_facts(cfg), "input": "video", "frames": cfg.video.frames,
                "image_size": cfg.encoder.image_size}

    @staticmethod
    def frame_weights(received: torch.Tensor, per_step: int) -> list[np.ndarray]:
        """Attention each feature step received -> weights over the clip's frames (summing to 1)."""
        w = np.repeat(received.float().cpu().numpy(), per_step, axis=1)
        return list(w / np.clip(w.sum(1, keepdims=True), 1e-12, None))


def encoder_width(cfg: LVLMVARConfig) -> int:
    """The visual encoder's feature width, from its config (no weights loaded in training workers)."""
    return feature_width(cfg.encoder)


class VSTRecognizer(VideoInput, RecognizerBase):
    """Stage 1 of lvlm-var (`--stage vst`): the VST module and its class head, trained through the shared loop."""

    recipe = "lvlm-var"
    config_cls = LVLMVARConfig
    stage = "vst"
    explanation = "temporal self-attention received per frame"
    weight_files = {VST_WEIGHTS: "vst"}

    def __init__(self, config, class_names: list[str], layout: str, dims: int, *, seed: int = 0,
                 feat_dim: int | None = None, **_ignored):
        super().__init__(config, class_names, layout, dims)
        feat_dim = feat_dim or encoder_width(self.cfg)
        self.vst = VST(feat_dim, hidden_size(self.cfg.backbone), len(class_names), self.cfg.vst, seed=seed)
        self.restarted = 0

    @classmethod
    def build_from_folder(cls, folder: Path, meta: dict, device: str = "cpu", shared: dict | None = None):
        return cls(meta["config"], meta["class_names"], meta["layout"], meta["dims"], feat_dim=meta["vst"]["feat_dim"])

    def forward(self, feats, labels=None, class_weights=None) -> dict:
        out = self.vst(feats, labels)
        result = {"logits": out["logits"]}
        if labels is not None:
            ce = F.cross_entropy(out["logits"], labels, weight=class_weights)
            result["loss"] = out["loss"] - out["ce"] + ce
        stats = {"n": torch.tensor(float(len(feats)))}
        if "codes" in out:
            codes = out["codes"]
            stats["code_counts"] = torch.bincount(codes.reshape(-1), minlength=self.cfg.vst.codebook_size).float()
            stats["tokens_sum"] = torch.tensor(float(sum(len(collapse_repeats(c)) for c in codes.tolist())))
        result["stats"] = stats
        return result

    def after_step(self) -> None:
        if self.cfg.vst.enabled:
            self.restarted += self.vst.restarts.restart(self.vst.codebook)

    def summarise(self, stats: dict) -> dict:
        if "code_counts" not in stats:
            return {}
        n = max(float(stats["n"]), 1.0)
        return {"tokens_per_video": float(stats["tokens_sum"]) / n, "codes_used": int((stats["code_counts"] > 0).sum()),
                **usage_metrics(stats["code_counts"])}

    def predict_windows(self, windows: list, batch_size: int = 32) -> dict:
        device = self.vst.codebook.device
        probs, weights, tokens = [], [], []
        with no_grad_eval(self):
            for s in range(0, len(windows), batch_size):
                feats, per_step = self.features_of(windows[s:s + batch_size], device)
                out = self.vst(feats)
                probs.append(torch.softmax(out["logits"].float(), -1).cpu().numpy())
                weights += self.frame_weights(out["attention"], per_step)
                seqs, _, _ = self.vst.semantic_tokens(feats)
                tokens += seqs
        return {"probabilities": np.concatenate(probs) if probs else np.zeros((0, len(self.class_names))),
                "frame_weights": weights, "joint_weights": [np.zeros(0, np.float32) for _ in windows],
                "joint_names": [], "tokens": sum(len(t) for t in tokens), "semantic_tokens": tokens}

    def folder_meta(self) -> dict:
        return {"vst": {"feat_dim": self.vst.feat_dim, "width": self.vst.width, "enabled": self.cfg.vst.enabled,
                        "parameters": sum(p.numel() for p in self.vst.parameters())},
                "encoder": self.cfg.encoder.name_or_path, "frames": self.cfg.video.frames}


def load_vst(folder: str | Path) -> tuple[VST, dict]:
    """A vst-stage folder's module (frozen, eval) and its config.json."""
    folder = Path(folder)
    meta = read_config(folder)
    VSTRecognizer.check_folder(folder, meta)
    rec = VSTRecognizer.load(folder)
    return rec.vst.requires_grad_(False).eval(), meta


class LVLMVARRecognizer(VideoInput, LLMStage):
    """Stage 2 of lvlm-var (`--stage llm`): frozen VST -> semantic tokens before the instruction -> LoRA LLM that
    names the action (scored; + `prior_weight` x the VST head's log-probabilities: components/llm_stage.py) and
    explains it (generated). Its folder holds the VST beside the LoRA adapter."""

    recipe = "lvlm-var"
    config_cls = LVLMVARConfig
    stage = "llm"
    explanation = "temporal self-attention of the VST received per frame (the text explanation is `generated`)"
    weight_files = {VST_WEIGHTS: "vst"}
    frozen = "vst"
    terminator = "."
    has_prior = True  # the VST's class head

    def __init__(self, config, class_names: list[str], layout: str, dims: int, *, model=None, tokenizer=None,
                 vst: VST | None = None, descriptions: dict[str, str] | None = None, seed: int = 0,
                 device: str = "cpu", lora: bool = True, **_ignored):
        super().__init__(config, class_names, layout, dims)
        if vst is None:
            if not self.cfg.vst_folder:
                raise ValueError("the llm stage needs the vst stage's folder: set recipe_config.vst_folder "
                                 "(or train both stages: no --stage)")
            vst, meta = load_vst(self.cfg.vst_folder)
            if meta["class_names"] != self.class_names:
                raise ValueError(f"{self.cfg.vst_folder}: the VST was trained on other classes")
        self.vst = vst
        self.descriptions = descriptions if descriptions is not None else self.cfg.descriptions(self.class_names)
        self.init_stage(model, tokenizer, device=device, seed=seed, lora=lora, prompt=self.cfg.prompt,
                        width=self.vst.width, texts=self.descriptions if self.cfg.explain else {},
                        what="the VST (the vst stage)")
        # the unit semantic tokens are scaled to the word embeddings' mean norm (vst.py)
        self.token_scale = float(self.llm.get_input_embeddings().weight.detach().float().norm(dim=-1).mean())

    @classmethod
    def folder_extras(cls, folder: Path, meta: dict) -> dict:
        cfg = LVLMVARConfig.model_validate(meta["config"])
        v = meta["vst"]
        return {"vst": VST(v["feat_dim"], v["width"], len(meta["class_names"]), cfg.vst),
                "descriptions": meta.get("descriptions", {})}

    def token_vectors(self, feats: torch.Tensor) -> tuple[list[list[int]], list[torch.Tensor], torch.Tensor]:
        """Features -> per video its codes, its token vectors [L_i, d] in the LLM's dtype, the attention."""
        seqs, vecs, received = self.vst.semantic_tokens(feats)
        dtype = self.llm.get_input_embeddings().weight.dtype
        return seqs, [(v * self.token_scale).to(dtype) for v in vecs], received

    def tokens(self, feats: torch.Tensor, per_step: int = 1):
        """Features -> per video its semantic tokens (a variable number), the VST head's class scores (the
        prior) and, for display, the codes and the attention over the clip's frames."""
        with torch.no_grad():
            seqs, vecs, received = self.token_vectors(feats)
            prior = self.vst(feats)["logits"] if self.prior_weight or not self.training else None
        return vecs, prior, {"semantic_tokens": seqs, "frame_weights": self.frame_weights(received, per_step)}

    def window_inputs(self, windows: list, device) -> dict:
        feats, per_step = self.features_of(windows, device)
        return {"feats": feats, "per_step": per_step}

    def display(self, windows: list) -> dict:
        return {"joint_weights": [np.zeros(0, np.float32) for _ in windows], "joint_names": []}

    # --- folder ------------------------------------------------------------------------------------------------
    def folder_meta(self) -> dict:
        return {**super().folder_meta(), "descriptions": self.descriptions, "encoder": self.cfg.encoder.name_or_path,
                "frames": self.cfg.video.frames,
                "vst": {"feat_dim": self.vst.feat_dim, "width": self.vst.width, "enabled": self.cfg.vst.enabled,
                        "source": self.cfg.vst_folder}}
