"""The sugar recipe's config (SUGAR, seed 001, AAAI 2026): the skeleton encoder, the text side and the
alignment stage (sec. 3.2). Values the paper leaves open carry `# chosen:` beside them (and in README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from ...components.backbone import BackboneConfig
from ...components.clips import ClipConfig
from ...components.knowledge import NAMES, covering_knowledge, knowledge_entries, say_names_only
from ...components.lora import LoraSettings
from ...components.text_encoder import TextEncoderConfig
from ...registry import RecipeConfig
from ...skeleton.augment import AugmentConfig
from .bridge import BridgeConfig


class EncoderConfig(BaseModel):
    """The skeleton encoder: the shared GCN blocks (components/gcn.py) with the time axis kept (sec. 3.2)."""

    # the paper uses CTR-GCN's blocks (its multi-scale temporal module without the pooling); chosen here: the
    # shared ST-GCN blocks, which CPU runs afford and which the ctrgcn method's blocks can replace once they move
    # to components (a method never imports another method)
    preset: Literal["standard", "small"] = Field("small", description="GCN size (components/gcn.py PRESETS)")
    temporal_kernel: int = Field(9, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class SugarConfig(RecipeConfig):
    """SUGAR (seed 001): a skeleton encoder aligned with class knowledge text by MIL-NCE (stage `align`), then
    frozen; its per-frame features -> Temporal Query Projection -> action tokens in an instruction to a LoRA LLM
    that names the action and describes it (stage `llm`)."""

    clip: ClipConfig = Field(default_factory=lambda: ClipConfig(frames=32))
    augment: AugmentConfig = Field(default_factory=lambda: AugmentConfig(rotate=0.3, scale=0.1, crop=0.9))
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    text_encoder: TextEncoderConfig = Field(default_factory=TextEncoderConfig)
    knowledge: str | None = Field(
        None, description="knowledge JSONL (components/knowledge.py), or 'names': texts templated around each "
        "class's name; None: the project's own file whose classes cover the data's (components/knowledge/*.jsonl), "
        "else 'names'")
    # eq. 3's tau; the paper gives no value. chosen: 0.1 (fixed, not learned), the MIL-NCE/CLIP range
    temperature: float = Field(0.1, gt=0.0, le=1.0, description="MIL-NCE temperature tau (eq. 3)")
    # eq. 2: t = {m, v_i}, "randomly combined". chosen: per sample, one of the class's motion texts and each of
    # its visual texts with probability visual_p, drawn again every step
    visual_p: float = Field(0.5, ge=0.0, le=1.0, description="chance a visual text joins a sample's positives")
    held_out: list[str] = Field(default_factory=list, description="classes kept out of training (zero-shot "
                                "protocol P1): evaluation and serving choose among them only")
    # --- stage `llm` (sec. 3.3) -----------------------------------------------------------------------------
    bridge: BridgeConfig = Field(default_factory=BridgeConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings(r=64, alpha=16))  # sec. 4 (implementation)
    # Fig. 2's instruction is not printed in the text; chosen: the wording of the paper's top-5 instruction
    # (sec. 4.4) with "the most compatible action ... and describe it", as issue 16 states it
    prompt: str = Field("Given a sequence of action tokens [tokens], please choose the most compatible action "
                        "from [list], and describe it.", description="the instruction; [tokens] = the TQP "
                        "output, [list] = the candidate classes")
    describe: bool = Field(True, description="train on '{label}. {description}' (eq. 5); False: the name only")
    # not in the paper (eq. 5 is a plain mean over the target's tokens): the name is ~4 of ~25 target tokens, and the
    # description follows from the name once it is written, so a plain mean is mostly the descriptions
    name_weight: float = Field(1.0, ge=1.0, description="weight of the name's tokens (and its '.') in eq. 5's "
                               "cross-entropy against the description's; 1 = the paper's plain mean")
    # not in the paper (the paper's recognizer is the LLM alone, weight 0): the first stage's class
    # log-probabilities added to the names' log-likelihoods (components/llm_stage.py); `actionllm train` chooses
    # it on the val split after the llm stage (--set prior=off keeps 0)
    prior_weight: float = Field(0.0, ge=0.0, description="weight of the first stage's class scores beside the "
                                "LLM's (0 = the LLM alone, the paper); chosen on validation by `actionllm train`")
    prior: Literal["fit", "off"] = Field("fit", description="fit: choose prior_weight on the val split after the "
                                         "llm stage; off: keep prior_weight as set")
    max_new_tokens: int = Field(32, ge=0, description="generated explanation length (0 = none)")
    align_folder: str | None = Field(None, description="the align stage's recognizer folder the llm stage reads; "
                                     "set by `actionllm train` when both stages run")

    def windowing(self) -> tuple[int | None, int | None]:
        return self.clip.window, self.clip.stride

    def knowledge_source(self, class_names: list[str]) -> str:
        """Where these classes' texts come from: `knowledge` (a file, or `names`), else the first of the project's
        files that covers them all, else `names` (said once, in one line)."""
        if self.knowledge == NAMES:
            return NAMES
        if self.knowledge:
            return str(Path(self.knowledge).expanduser().resolve())  # absolute: Ray's workers run in other folders
        path = covering_knowledge(class_names)
        if path is None:
            say_names_only(tuple(class_names))
            return NAMES
        return str(path)

    def for_data(self, class_names: list[str]) -> SugarConfig:
        source = self.knowledge_source(class_names)
        knowledge_entries(source, class_names)  # refuses a file that lacks a class
        return self.model_copy(update={"knowledge": source})

    def problems(self, facts: dict) -> list[str]:
        out = super().problems(facts)
        names = facts.get("class_names")
        if names is not None:
            unknown = [c for c in self.held_out if c not in names]
            if unknown:
                out.append(f"held_out names unknown classes {unknown}")
            try:
                self.for_data(names)
            except (ValueError, FileNotFoundError) as err:
                out.append(str(err))
        return out

    @model_validator(mode="after")
    def _checks(self):
        if len(set(self.held_out)) != len(self.held_out):
            raise ValueError(f"held_out repeats a class: {self.held_out}")
        if self.prompt.count("[tokens]") != 1:
            raise ValueError(f"prompt must contain [tokens] exactly once: {self.prompt!r}")
        return self
