"""LLM-AR's two recognizers, one per stage.

Stage `vqvae` (`VQVAERecognizer`): trains the action VQ-VAE (vqvae.py) through the shared loop; not a
classifier: forward returns the loss and usage statistics; its folder is what the llm stage reads.

Stage `llm` (`LLMARRecognizer`): a clip goes through the frozen VQ-VAE to W codes; their codebook vectors
(log_0(c_u), the backbone's embedding width) are spliced as `inputs_embeds` at `[tokens]` of the instruction
"Given a sequence of action tokens [tokens], please predict the corresponding action." and the LoRA LLM is
trained with cross-entropy on the tokens of the action's name (+ EOS) (eq. 13). Classes are scored by the
log-likelihood of their names with a shared KV prefix (components/label_scoring.py).

Why inputs_embeds and not new vocabulary rows: the codebook is already in the embedding space (its width is
the backbone's and the MMD term pulls it towards the word embeddings), so splicing the vectors needs no
resized embedding matrix or LM head. The base model stays byte-for-byte the published one (only LoRA weights
are trained and saved, as the paper's "pre-trained weights untouched"), which lets a serving replica hold one
base for many recognizers, and the codes cost no vocabulary slots in the LM head's softmax.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...components.backbone import hidden_size, input_embeddings
from ...components.clips import ClipCollate, ClipPreprocessor, clip_batch
from ...components.llm_stage import LLMStage
from ...contract import RecognizerBase, load_module
from ...recognizer_folder import read_config
from ...skeleton.layouts import get_layout
from .config import LLMARConfig
from .vqvae import ActionVQVAE, clip_features, usage_metrics

VQVAE_WEIGHTS = "vqvae.safetensors"
TOKENS_WEIGHTS = "action_embeddings.safetensors"  # action_embeddings: trained


def clip_preprocessor(cfg: LLMARConfig, layout: str, train: bool, seed: int | None) -> ClipPreprocessor:
    return ClipPreprocessor(cfg.clip, layout, cfg.augment, train=train, seed=seed)


class VQVAERecognizer(RecognizerBase):
    """Stage 1 of llm-ar (`--stage vqvae`): the action VQ-VAE, trained through the shared loop."""

    recipe = "llm-ar"
    config_cls = LLMARConfig
    stage = "vqvae"
    legacy_stages = ("tokenizer",)  # folders written before the rename
    weight_files = {VQVAE_WEIGHTS: "vqvae"}
    servable = False  # not a classifier: evaluation and serving load the llm stage

    def __init__(self, config, class_names: list[str], layout: str, dims: int, *, seed: int = 0,
                 word_emb: bool = True, **_ignored):
        super().__init__(config, class_names, layout, dims)
        self.features = self.cfg.clip.max_bodies * get_layout(layout).num_joints * self.dims
        self.vqvae = ActionVQVAE(self.features, hidden_size(self.cfg.backbone), self.cfg.vqvae, seed=seed)
        if word_emb and self.cfg.vqvae.mmd:
            self.vqvae.attach_word_embeddings(input_embeddings(self.cfg.backbone, seed))
        self.restarted = 0

    @classmethod
    def preprocessor(cls, cfg, layout: str, dims: int, train: bool = False, seed: int | None = None):
        return clip_preprocessor(cfg, layout, train, seed)

    @classmethod
    def build_from_folder(cls, folder: Path, meta: dict, device: str = "cpu", shared: dict | None = None):
        return cls(meta["config"], meta["class_names"], meta["layout"], meta["dims"], word_emb=False)

    def collate_fn(self) -> ClipCollate:
        return ClipCollate()

    def forward(self, x, body_mask=None, labels=None, class_weights=None) -> dict:
        feats = clip_features(x, self.cfg.clip.max_bodies)
        out = self.vqvae(feats)
        mask = (feats != 0)
        stats = {"recon_abs_sum": ((out["recon"] - feats).abs() * mask).sum().detach(),
                 "recon_abs_n": mask.sum().detach().float(),
                 "code_counts": torch.bincount(out["codes"].reshape(-1), minlength=self.cfg.vqvae.codebook_size).float()}
        for k, v in out["terms"].items():
            stats[f"loss_{k}_sum"] = v.detach() * len(feats)
        stats["n"] = torch.tensor(float(len(feats)), device=feats.device)
        return {"loss": out["loss"], "stats": stats, "codes": out["codes"]}

    def after_step(self) -> None:
        self.restarted += self.vqvae.restart_dead_codes()

    def summarise(self, stats: dict[str, np.ndarray]) -> dict:
        """Summed stats of an epoch -> metrics: reconstruction error, codebook usage / perplexity / Zipf fit."""
        n = max(float(stats.get("n", 1)), 1.0)
        out = {"recon_error": float(stats["recon_abs_sum"]) / max(float(stats["recon_abs_n"]), 1.0),
               **usage_metrics(stats["code_counts"], self.cfg.vqvae.zipf_alpha, self.cfg.vqvae.zipf_beta)}
        out.update({k[:-4]: float(v) / n for k, v in stats.items() if k.startswith("loss_") and k.endswith("_sum")})
        return out

    def predict_windows(self, windows, batch_size: int = 32) -> dict:
        raise ValueError("this is an llm-ar VQ-VAE-stage folder, not a recognizer: evaluate or serve the llm "
                         "stage's folder (<run>/recognizer)")

    def folder_meta(self) -> dict:
        return {"weights": VQVAE_WEIGHTS, "features": self.features, "width": self.vqvae.dim,
                "parameters": sum(p.numel() for p in self.vqvae.parameters())}


def load_vqvae(folder: str | Path) -> tuple[ActionVQVAE, dict]:
    """A VQ-VAE-stage folder's model (frozen, eval mode) and its config.json."""
    folder = Path(folder)
    meta = read_config(folder)
    VQVAERecognizer.check_folder(folder, meta)
    model = ActionVQVAE(meta["features"], meta["width"], LLMARConfig.model_validate(meta["config"]).vqvae)
    load_module(model, folder / VQVAE_WEIGHTS)
    return model.requires_grad_(False).eval(), meta


class LLMARRecognizer(LLMStage):
    """Stage 2 of llm-ar (`--stage llm`): frozen action VQ-VAE -> instruction with the action sentence ->
    LoRA LLM -> class scores from the names' log-likelihoods (components/llm_stage.py). Its folder holds the
    VQ-VAE as well. The VQ-VAE scores no classes: no prior."""

    recipe = "llm-ar"
    config_cls = LLMARConfig
    stage = "llm"
    explanation = "none (uniform: LLM-AR has no per-frame read-back)"
    weight_files = {VQVAE_WEIGHTS: "vqvae"}
    frozen = "vqvae"
    terminator = None  # eq. 13: the answer is the name + EOS

    def __init__(self, config, class_names: list[str], layout: str, dims: int, *, model=None, tokenizer=None,
                 vqvae: ActionVQVAE | None = None, seed: int = 0, device: str = "cpu", lora: bool = True, **_ignored):
        super().__init__(config, class_names, layout, dims)
        if vqvae is None:
            if not self.cfg.vqvae_folder:
                raise ValueError("the llm stage needs the VQ-VAE stage's folder: set recipe_config.vqvae_folder "
                                 "(or train both stages: no --stage)")
            vqvae, meta = load_vqvae(self.cfg.vqvae_folder)
            if meta["layout"] != layout or int(meta["dims"]) != self.dims:
                raise ValueError(f"{self.cfg.vqvae_folder}: the VQ-VAE reads {meta['layout']}/{meta['dims']}D, "
                                 f"the data is {layout}/{dims}D")
        features = self.cfg.clip.max_bodies * get_layout(layout).num_joints * self.dims
        if vqvae.features != features:
            raise ValueError(f"the VQ-VAE reads {vqvae.features} features per frame but clip.max_bodies "
                             f"{self.cfg.clip.max_bodies} x {get_layout(layout).num_joints} joints x {dims}D is {features}")
        self.vqvae = vqvae
        self.init_stage(model, tokenizer, device=device, seed=seed, lora=lora, prompt=self.cfg.instruction(),
                        width=self.vqvae.dim, held_out=self.cfg.held_out, what="the VQ-VAE's codebook")
        self.action_table = None
        if self.cfg.action_embeddings == "trained":  # the action tokens' own input embeddings, trained
            codes = self.vqvae.code_vectors().detach().float().clone()
            self.action_table = torch.nn.Embedding.from_pretrained(codes, freeze=False).to(self.vqvae.codebook.device)
            self.weight_files = {**self.weight_files, TOKENS_WEIGHTS: "action_table"}

    @classmethod
    def preprocessor(cls, cfg, layout: str, dims: int, train: bool = False, seed: int | None = None):
        return clip_preprocessor(cfg, layout, train, seed)

    @classmethod
    def folder_extras(cls, folder: Path, meta: dict) -> dict:
        vq = meta["vqvae"]
        return {"vqvae": ActionVQVAE(vq["features"], vq["width"], LLMARConfig.model_validate(meta["config"]).vqvae)}

    def collate_fn(self) -> ClipCollate:
        return ClipCollate()

    def action_sentence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips [B, M, T, V, C] -> (codes [B, W], their vectors [B, W, d] in the LLM's dtype)."""
        with torch.no_grad():
            codes = self.vqvae.quantise(clip_features(x.float(), self.cfg.clip.max_bodies))
            vec = self.vqvae.code_vectors()[codes] if self.action_table is None else None
        if vec is None:
            vec = self.action_table(codes)
        return codes, vec.to(self.llm.get_input_embeddings().weight.dtype)

    def bridge_parameters(self) -> list[torch.nn.Parameter]:
        return [] if self.action_table is None else list(self.action_table.parameters())

    def tokens(self, x: torch.Tensor, body_mask: torch.Tensor | None = None):
        codes, vec = self.action_sentence(x)
        return vec, None, {"action_tokens": codes.cpu().tolist()}

    def window_inputs(self, windows: list, device) -> dict:
        batch, _ = clip_batch(windows, self.cfg.clip, self.layout)
        return {"x": batch["x"].to(device)}

    # --- folder ------------------------------------------------------------------------------------------------
    def folder_meta(self) -> dict:
        return {"joint_names": list(get_layout(self.layout).joints), **super().folder_meta(),
                "vqvae": {"weights": VQVAE_WEIGHTS, "features": self.vqvae.features, "width": self.vqvae.dim,
                          "source": self.cfg.vqvae_folder}}
