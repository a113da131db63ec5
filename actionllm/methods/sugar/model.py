"""SUGAR's recognizers, one per stage.

Stage `align` (`SugarAlignRecognizer`, paper sec. 3.2): the skeleton encoder trained with MIL-NCE against the
class knowledge texts -- already a recognizer: a window's class is the one whose texts its embedding is most
similar to (log-mean-exp of cosine / tau over the class's texts).

Stage `llm` (`SugarLLMRecognizer`, sec. 3.3): the align stage's encoder, frozen, gives per-frame features s; the
bridge (Temporal Query Projection, bridge.py) turns them into L action tokens spliced as `inputs_embeds` at
[tokens] of the instruction; the LoRA LLM is trained with cross-entropy on "{label}. {description}" + EOS (eq. 5).
Recognition scores each candidate's name (+ ".") by its log-likelihood after the prompt (components/
label_scoring.py); the greedy continuation is returned as the explanation.

Classes are text, so the candidates can change without training: `held_out` classes (zero-shot protocol P1) are
never trained on and are chosen among at evaluation; `with_candidates` answers among classes named at request
time (open vocabulary), embedding their texts with the frozen text encoder.

The folder: config.json (+ the knowledge entries of its classes and the text encoder's name), encoder.safetensors
(GCN + projection), text_bank.safetensors (the class texts' embeddings: loading needs no text encoder).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...components.backbone import hidden_size
from ...components.clips import ClipCollate, ClipPreprocessor, clip_batch
from ...components.gcn_recognizer import read_back
from ...components.knowledge import ClassKnowledge, knowledge_entries, parse_entry
from ...components.label_scoring import NEG, LabelScorer
from ...components.llm_stage import LLMStage
from ...components.text_encoder import TextEncoder
from ...contract import RecognizerBase, no_grad_eval
from ...recognizer_folder import check_candidates
from ...skeleton.layouts import get_layout
from .alignment import SequenceEncoder, TextBank, class_scores, contrast_set, mil_nce, sample_positives
from .bridge import Bridge
from .config import SugarConfig

CACHED_SETS = 32  # candidate sets a recognizer keeps embedded (requests repeat them)


class CandidateCache(OrderedDict):
    """The last CACHED_SETS candidate sets -> what a recognizer built for them (least recently used dropped)."""

    def get_or_build(self, candidates: list[dict], build):
        key = json.dumps(candidates, sort_keys=True)
        if key in self:
            self.move_to_end(key)
        else:
            self[key] = build(candidates)
            if len(self) > CACHED_SETS:
                self.popitem(last=False)
        return self[key]


def class_activation(encoder: SequenceEncoder, grid: torch.Tensor, classes: torch.Tensor, body_mask: torch.Tensor,
                     bank: TextBank) -> torch.Tensor:
    """relu of each (frame, joint) cell's projected feature . the class's mean text embedding -> [N, T', V]
    (the pooled similarity is the mean of these cells: the projection is linear and has no bias)."""
    onehot = F.one_hot(bank.owner, bank.num_classes).to(bank.emb.dtype)
    mean_text = (onehot.T @ bank.emb) / bank.counts().clamp(min=1)[:, None].to(bank.emb.dtype)  # [K, d]
    w = mean_text[classes] @ encoder.to_text.weight  # [N, C']
    cam = F.relu(torch.einsum("nc,nmctv->nmtv", w.to(grid.dtype), grid))
    bm = body_mask.to(cam.dtype)[..., None, None]
    return (cam * bm).sum(1) / bm.sum(1).clamp(min=1)


class SugarAlignRecognizer(RecognizerBase):
    """Stage 1 of sugar: skeleton encoder + the class text bank; scores = similarity to each class's texts."""

    recipe = "sugar"
    config_cls = SugarConfig
    stage = "align"
    open_vocabulary = True
    explanation = "text similarity read back onto frames and joints (CAM)"
    weight_files = {"encoder.safetensors": "encoder", "text_bank.safetensors": "bank"}

    def __init__(self, config, class_names: list[str], layout: str, dims: int, *, seed: int = 0,
                 knowledge: list[ClassKnowledge] | None = None, text_dim: int | None = None, **_ignored):
        super().__init__(config, class_names, layout, dims)
        self._text_encoder: TextEncoder | None = None
        self._candidate_banks = CandidateCache()
        if knowledge is None:  # training: read the knowledge file and embed the class texts now
            cfg = self.cfg.for_data(self.class_names)
            self.cfg = cfg
            knowledge = knowledge_entries(cfg.knowledge, self.class_names)
            self.bank = TextBank.build(knowledge, self.text_encoder())
        else:  # a folder: shapes now, embeddings from text_bank.safetensors
            self.bank = TextBank(sum(len(k.texts) for k in knowledge), int(text_dim), len(class_names))
        self.knowledge = list(knowledge)
        torch.manual_seed(seed)
        self.encoder = SequenceEncoder(layout, dims, self.cfg.encoder, self.bank.emb.shape[1])
        held = set(self.cfg.held_out)
        self.train_candidates = [i for i, c in enumerate(self.class_names) if c not in held]
        self.eval_candidates = [i for i, c in enumerate(self.class_names) if c in held] or list(range(len(class_names)))

    def text_encoder(self) -> TextEncoder:
        """The frozen text encoder, loaded on first use (training, or classes named at request time)."""
        if self._text_encoder is None:
            self._text_encoder = TextEncoder(self.cfg.text_encoder)
        return self._text_encoder

    @classmethod
    def build_from_folder(cls, folder: Path, meta: dict, device: str = "cpu", shared: dict | None = None):
        knowledge = [parse_entry(e, f"{folder}/config.json knowledge[{i}]") for i, e in enumerate(meta["knowledge"])]
        return cls(meta["config"], meta["class_names"], meta["layout"], meta["dims"], knowledge=knowledge,
                   text_dim=meta["text_dim"])

    @classmethod
    def preprocessor(cls, cfg, layout: str, dims: int, train: bool = False, seed: int | None = None):
        return ClipPreprocessor(cfg.clip, layout, cfg.augment, train=train, seed=seed)

    def collate_fn(self) -> ClipCollate:
        return ClipCollate()

    @property
    def candidates(self) -> list[int]:
        return list(self.eval_candidates)

    # --- the loop's contract -----------------------------------------------------------------------------------
    def similarities(self, x: torch.Tensor, body_mask: torch.Tensor | None, bank: TextBank | None = None):
        """Clips -> (sims [N, T] = cos / tau against the bank's texts, the encoder's grid [N, M, C', T', V])."""
        bank = bank or self.bank
        grid = self.encoder.grid(x)
        z = self.encoder.embed(self.encoder.sequence(grid, body_mask))
        return z @ bank.emb.T.to(z.dtype) / self.cfg.temperature, grid

    def forward(self, x, body_mask=None, labels=None, class_weights=None) -> dict:
        sims, grid = self.similarities(x, body_mask)
        # training and validation choose among the trained classes; evaluation and serving the eval candidates
        cands = self.train_candidates if labels is not None else self.eval_candidates
        scores = class_scores(sims, self.bank)
        mask = torch.full_like(scores, NEG)
        mask[:, cands] = 0.0
        out = {"logits": torch.where(mask == 0, scores, mask), "features": grid}
        if labels is not None:
            if self.training:  # eq. 2-3: a fresh random motion/visual combination per sample and step
                pos = sample_positives(labels, self.bank, self.cfg.visual_p)
            else:  # validation: every text of the true class is a positive (deterministic)
                pos = self.bank.owner[None, :] == labels[:, None]
            den = contrast_set(labels, pos, self.bank, self.train_candidates)
            weights = class_weights[labels] if class_weights is not None else None
            out["loss"] = mil_nce(sims, pos, den, weights)
        return out

    # --- inference ---------------------------------------------------------------------------------------------
    def predict_windows(self, windows: list[np.ndarray], batch_size: int = 32, candidates: list[dict] | None = None
                        ) -> dict:
        """Probabilities over the eval candidates, or over `candidates` named at request time (open vocabulary:
        [{"name", "texts"?}]; a known class without texts keeps its knowledge, a new one without texts is read as
        "a person performing the action: <name>"), and CAM read-backs of the answer's text similarity."""
        if candidates is None:
            names, bank, cands = self.class_names, self.bank, self.eval_candidates
        else:
            names, bank = self._candidate_banks.get_or_build(check_candidates(candidates), self.candidate_bank)
            cands = list(range(len(names)))
        device = self.bank.emb.device
        probs, frame_w, joint_w = [], [], []
        with no_grad_eval(self):
            for s in range(0, len(windows), batch_size):
                chunk = windows[s:s + batch_size]
                batch, sources = clip_batch(chunk, self.cfg.clip, self.layout)
                body_mask = batch["body_mask"].to(device)
                sims, grid = self.similarities(batch["x"].to(device), body_mask, bank)
                scores = class_scores(sims, bank)
                keep = torch.full_like(scores, NEG)
                keep[:, cands] = scores[:, cands]
                p = torch.softmax(keep.float(), -1)
                probs.append(p.cpu().numpy())
                cam = class_activation(self.encoder, grid.float(), p.argmax(-1), body_mask, bank)
                for k, (win, src) in enumerate(zip(chunk, sources, strict=True)):
                    fw, jw = read_back(cam[k].cpu().numpy(), src, np.asarray(win).shape[-3])
                    frame_w.append(fw)
                    joint_w.append(jw)
        return {"probabilities": np.concatenate(probs) if probs else np.zeros((0, len(names))),
                "frame_weights": frame_w, "joint_weights": joint_w, "joint_names": list(get_layout(self.layout).joints),
                "tokens": 0}

    def embed_windows(self, windows: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Windows -> their unit embeddings in the text space [W, d] (the t-SNE figure, Fig. 5)."""
        out = []
        with no_grad_eval(self):
            for s in range(0, len(windows), batch_size):
                batch, _ = clip_batch(windows[s:s + batch_size], self.cfg.clip, self.layout)
                grid = self.encoder.grid(batch["x"].to(self.bank.emb.device))
                out.append(self.encoder.embed(self.encoder.sequence(grid, batch["body_mask"].to(grid.device))).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.bank.emb.shape[1]), np.float32)

    def candidate_bank(self, candidates: list[dict]) -> tuple[list[str], TextBank]:
        """Checked request-time classes -> (names, their text bank), embedded with the frozen text encoder."""
        known = {k.label: k for k in self.knowledge}
        entries = []
        for c in candidates:
            if c["texts"]:
                entries.append(ClassKnowledge(c["name"], tuple(c["texts"])))
            elif c["name"] in known:
                entries.append(known[c["name"]])
            else:
                entries.append(ClassKnowledge(c["name"], (f"a person performing the action: {c['name']}",)))
        bank = TextBank.build(entries, self.text_encoder()).to(self.bank.emb.device)
        return [c["name"] for c in candidates], bank

    # --- folder ------------------------------------------------------------------------------------------------
    def folder_meta(self) -> dict:
        return {"joint_names": list(get_layout(self.layout).joints), "weights": "encoder.safetensors",
                "knowledge": [k.to_json() for k in self.knowledge], "text_encoder": self.cfg.text_encoder.name_or_path,
                "text_dim": int(self.bank.emb.shape[1]), "texts": int(self.bank.emb.shape[0]),
                "parameters": sum(p.numel() for p in self.encoder.parameters())}


def load_align(folder: str | Path, layout: str, dims: int) -> SugarAlignRecognizer:
    """The align stage's recognizer of `folder`, checked to read this data's layout and dims."""
    align = SugarAlignRecognizer.load(folder)
    if align.layout != layout or align.dims != int(dims):
        raise ValueError(f"{folder}: the align stage read {align.layout}/{align.dims}D, the data is {layout}/{dims}D")
    return align


class SugarLLMRecognizer(LLMStage):
    """Stage 2 of sugar (`--stage llm`): frozen skeleton encoder -> bridge (TQP) -> action tokens in the
    instruction -> LoRA LLM; classes scored by their names' log-likelihood (+ `prior_weight` x the align stage's
    text-similarity log-probabilities: components/llm_stage.py), the continuation is the explanation. Its folder
    holds the encoder, the bridge and the class text bank beside the LoRA adapter."""

    recipe = "sugar"
    config_cls = SugarConfig
    stage = "llm"
    open_vocabulary = True  # new names go into [list] and are scored like trained ones (their texts are not read)
    # the align stage's text similarity read back (a folder without its text bank: uniform weights)
    explanation = "align-stage class activation (CAM), beside the generated sentence"
    frozen = "encoder"
    terminator = "."
    weight_files = {"encoder.safetensors": "encoder", "bridge.safetensors": "bridge"}  # + text_bank (the prior)

    def __init__(self, config, class_names: list[str], layout: str, dims: int, *, model=None, tokenizer=None,
                 encoder: SequenceEncoder | None = None, descriptions: dict[str, str] | None = None, seed: int = 0,
                 device: str = "cpu", lora: bool = True, bank: TextBank | None = None, **_ignored):
        super().__init__(config, class_names, layout, dims)
        if encoder is None:
            if not self.cfg.align_folder:
                raise ValueError("the llm stage needs the align stage's folder: set recipe_config.align_folder "
                                 "(or train both stages: no --stage)")
            align = load_align(self.cfg.align_folder, layout, dims)
            encoder, bank = align.encoder, align.bank
            descriptions = {k.label: k.description for k in align.knowledge}
            if align.class_names != self.class_names:
                bank = None  # the align stage scored other classes: no prior
        self.encoder = encoder
        # the align stage's text bank: its class scores are the prior (folders written before it have none)
        self.has_prior = bank is not None
        if bank is not None:
            self.bank = bank.requires_grad_(False)
            self.weight_files = {**self.weight_files, "text_bank.safetensors": "bank"}
        self.descriptions = {c: (descriptions or {}).get(c, "") for c in self.class_names}
        torch.manual_seed(seed)
        self.bridge = Bridge(self.cfg.bridge, self.encoder.width, hidden_size(self.cfg.backbone))
        self.init_stage(model, tokenizer, device=device, seed=seed, lora=lora, prompt=self.cfg.prompt,
                        width=self.bridge.out.out_features, held_out=self.cfg.held_out,
                        texts=self.descriptions if self.cfg.describe else {}, name_weight=self.cfg.name_weight,
                        what="the bridge")
        self._candidate_scorers = CandidateCache()

    @classmethod
    def preprocessor(cls, cfg, layout: str, dims: int, train: bool = False, seed: int | None = None):
        return ClipPreprocessor(cfg.clip, layout, cfg.augment, train=train, seed=seed)

    def collate_fn(self) -> ClipCollate:
        return ClipCollate()

    @classmethod
    def folder_extras(cls, folder: Path, meta: dict) -> dict:
        cfg = SugarConfig.model_validate(meta["config"])
        text_dim = meta["align"]["text_dim"]
        bank = meta.get("text_bank")
        return {"encoder": SequenceEncoder(meta["layout"], meta["dims"], cfg.encoder, text_dim),
                "descriptions": meta.get("descriptions", {}),
                "bank": TextBank(bank["texts"], text_dim, len(meta["class_names"])) if bank else None}

    def bridge_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.bridge.parameters())

    def tokens(self, x: torch.Tensor, body_mask: torch.Tensor | None = None, sources: list | None = None,
               lengths: list[int] | None = None):
        """Clips -> the bridge's tokens [B, L, d] in the LLM's dtype (the encoder runs without gradients), and
        the align stage's class scores (eq. 3's similarities, log-mean-exp per class) when the bank is here; at
        inference (`sources`, `lengths`: the clips' frames in their windows) also the align stage's CAM of its
        best class read back onto each window's frames and joints."""
        with torch.no_grad():
            grid = self.encoder.grid(x.float())
            s = self.encoder.sequence(grid, body_mask)
            prior, shown = None, {}
            if self.has_prior:
                z = self.encoder.embed(s)
                prior = class_scores(z @ self.bank.emb.T.to(z.dtype) / self.cfg.temperature, self.bank)
                if sources is not None:
                    shown = self.read_back(grid, prior, body_mask, sources, lengths)
        return self.bridge(s).to(self.llm.get_input_embeddings().weight.dtype), prior, shown

    def read_back(self, grid, prior, body_mask, sources, lengths) -> dict:
        """The align stage's class activation of its best candidate -> per window frame and joint weights."""
        cands = self.scorer.eval_candidates
        best = torch.tensor(cands, device=prior.device)[prior[:, cands].argmax(-1)]
        cam = class_activation(self.encoder, grid.float(), best, body_mask, self.bank).cpu().numpy()
        frames, joints = [], []
        for k, (src, n) in enumerate(zip(sources, lengths, strict=True)):
            fw, jw = read_back(cam[k], src, n)
            frames.append(fw)
            joints.append(jw)
        return {"frame_weights": frames, "joint_weights": joints}

    def window_inputs(self, windows: list, device) -> dict:
        batch, sources = clip_batch(windows, self.cfg.clip, self.layout)
        return {"x": batch["x"].to(device), "body_mask": batch["body_mask"].to(device), "sources": sources,
                "lengths": [np.asarray(w).shape[-3] for w in windows]}

    # --- inference -------------------------------------------------------------------------------------------
    def candidate_scorer(self, candidates: list[dict]) -> LabelScorer:
        return LabelScorer(self.tokenizer, [c["name"] for c in candidates], self.cfg.prompt, terminator=".")

    def scorer_for(self, candidates: list[dict] | None) -> LabelScorer:
        """The trained classes' scorer, or one for `candidates` named at request time (open vocabulary)."""
        if candidates is None:
            return self.scorer
        return self._candidate_scorers.get_or_build(check_candidates(candidates), self.candidate_scorer)

    # --- folder ------------------------------------------------------------------------------------------------
    def folder_meta(self) -> dict:
        return {"joint_names": list(get_layout(self.layout).joints), **super().folder_meta(),
                "descriptions": self.descriptions,
                "align": {"source": self.cfg.align_folder, "text_dim": int(self.encoder.to_text.out_features)},
                "text_bank": {"texts": int(self.bank.emb.shape[0])} if self.has_prior else None,
                "bridge": {"kind": self.cfg.bridge.kind,
                           "parameters": sum(p.numel() for p in self.bridge.parameters())}}
