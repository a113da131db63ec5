"""THE LLM stage, written once: the second stage of llm-ar, sugar and lvlm-var.

    first stage (frozen: a VQ-VAE, an aligned GCN encoder, a VST) -> token vectors [L, d] per sample
        -> spliced at [tokens] of the instruction (`inputs_embeds`) -> LoRA LLM
        -> training: cross-entropy on "{name}{terminator} {text}" + EOS (teacher forcing)
        -> recognition: each candidate's name scored by its log-likelihood (label_scoring.py), plus, where the
           first stage scores classes itself, `prior_weight` x its log-probabilities (the fusion below)
        -> explanation: the greedy continuation of the prompt

A method says only what differs (`LLMStage` hooks): how a batch becomes token vectors and, optionally, the
first stage's class scores (`tokens`), how raw windows become a batch (`window_inputs`), what its answer is
trained to say after the name (`texts`), which module is frozen (`frozen`). The rest -- freezing, grouping
samples by token count, the loss, scoring, generation, the fusion and the folder's LLM part -- lives here.

The fusion. `prior_weight` w = 0 is the paper's recognizer (the LLM alone). With w > 0 a class's score is
log p_LLM(name | prompt) + w * log p_first(class): the first stage's knowledge cannot be lost by a weak LLM
stage, and with a large w the answer is the first stage's. w is chosen on validation sequences
(`choose_prior_weight`, run by `actionllm train` after the stage) and stored in the folder's config.json.
"""

from __future__ import annotations

import numpy as np
import torch

from ..contract import no_grad_eval
from ..skeleton.layouts import get_layout
from .label_scoring import NEG, LabelScorer
from .lora import LoraRecognizer

# not in any of the papers: the weights tried on validation (0 = the LLM alone; 64 ~ the first stage alone)
PRIOR_WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0)


def by_length(vecs: list[torch.Tensor]) -> dict[int, list[int]]:
    """Indices of the samples grouped by their number of token vectors (equal lengths share one LLM batch)."""
    groups: dict[int, list[int]] = {}
    for i, v in enumerate(vecs):
        groups.setdefault(int(v.shape[0]), []).append(i)
    return groups


def candidate_log_softmax(scores: torch.Tensor, candidates: list[int]) -> torch.Tensor:
    """Class scores [B, K] -> log-probabilities over `candidates` ([B, K]; NEG elsewhere)."""
    out = torch.full_like(scores.float(), NEG)
    out[:, candidates] = torch.log_softmax(scores.float()[:, candidates], -1)
    return out


def fuse(llm_scores: np.ndarray, prior: np.ndarray | None, weight: float) -> np.ndarray:
    """Window scores [W, K]: the LLM's name log-likelihoods + weight x the first stage's log-probabilities."""
    return llm_scores if prior is None or weight == 0 else llm_scores + weight * prior


def choose_prior_weight(llm_scores: list[np.ndarray], priors: list[np.ndarray], labels: list[int],
                        weights: tuple[float, ...] = PRIOR_WEIGHTS) -> tuple[float, list[dict]]:
    """Per validation sequence its windows' LLM scores and first-stage log-probabilities [W, K] and its label ->
    the weight with the best sequence accuracy and every weight's row (accuracy, nll) so the choice can be read.
    Ties go to the smaller weight (the nearer to the paper's LLM alone), not to the lower NLL: a confident first
    stage would win every tie on NLL, and small validation sets tie often."""
    rows = []
    y = np.asarray(labels)
    for w in weights:
        seq = []
        for s, p in zip(llm_scores, priors, strict=True):
            f = fuse(s.astype(np.float64), p.astype(np.float64), w)
            logp = f - np.logaddexp.reduce(f, axis=1, keepdims=True)
            seq.append(logp.mean(0))  # inference.sequence_scores on the fused window distributions
        seq = np.stack(seq)
        seq = seq - np.logaddexp.reduce(seq, axis=1, keepdims=True)
        rows.append({"weight": w, "accuracy": float((seq.argmax(1) == y).mean()),
                     "nll": float(-seq[np.arange(len(y)), y].mean())})
    best = max(rows, key=lambda r: (r["accuracy"], -r["weight"]))
    return best["weight"], rows


class LLMStage(LoraRecognizer):
    """Base of a recipe's LLM stage. A subclass sets `frozen` (the attribute of its frozen first stage) and
    `terminator`, builds its first stage (and bridge) in __init__, then calls `init_stage`; it implements
    `tokens` and `window_inputs` (and `texts`' source: descriptions, explanations)."""

    writes_text = True  # the greedy continuation is returned as `generated`
    frozen: str = ""  # attribute holding the frozen first stage (kept in eval mode, no gradients)
    terminator: str | None = "."  # what ends a scored name (None: EOS, the name is the whole answer)
    has_prior = False  # the first stage scores classes (its log-probabilities can join the LLM's)

    def init_stage(self, model=None, tokenizer=None, *, device: str = "cpu", seed: int = 0, lora: bool = True,
                   prompt: str, width: int, held_out: list[str] | tuple = (), texts: dict[str, str] | None = None,
                   name_weight: float = 1.0, what: str = "the first stage") -> None:
        """The LLM with LoRA, the scorer of the class names and the training targets."""
        getattr(self, self.frozen).requires_grad_(False).eval()
        self.init_llm(model, tokenizer, device=device, seed=seed, lora=lora)
        if self.llm.config.hidden_size != width:
            raise ValueError(f"{what} writes {width}-wide tokens but the backbone's embeddings are "
                             f"{self.llm.config.hidden_size}-wide: train {what} with this backbone")
        self.scorer = LabelScorer(self.tokenizer, self.class_names, prompt, held_out, terminator=self.terminator)
        self.texts = {c: t for c, t in (texts or {}).items() if t}
        self.name_weight = float(name_weight)
        self.targets = [self.target_ids(c) for c in self.class_names]
        self._last_tokens = 0

    def target_ids(self, name: str) -> list[int]:
        """The training answer: the scored name (+ terminator), then " {text}" and EOS where the class has a text
        (SUGAR eq. 5's "{label}. {description}", LVLM-VAR eq. 3's "{class}. {explanation}"; LLM-AR eq. 13: the
        name + EOS)."""
        if self.terminator is None:
            return list(self.scorer.answers[self.class_names.index(name)])
        text = self.texts.get(name, "")
        tail = self.tokenizer(" " + text, add_special_tokens=False)["input_ids"] if text else []
        return self.scorer.name_ids(name) + self.tokenizer(self.terminator, add_special_tokens=False)["input_ids"] + \
            tail + [self.scorer.eos]

    @property
    def prior_weight(self) -> float:
        return float(getattr(self.cfg, "prior_weight", 0.0)) if self.has_prior else 0.0

    @property
    def candidates(self) -> list[int]:
        return list(self.scorer.eval_candidates)

    def train(self, mode: bool = True):
        super().train(mode)
        getattr(self, self.frozen).eval()  # the frozen first stage is never in training mode
        return self

    def param_groups(self, lr: float, head_lr: float | None = None) -> list[dict]:
        bridge = [p for p in self.bridge_parameters() if p.requires_grad]
        return [{"params": self.lora_parameters(), "lr": lr},
                *([{"params": bridge, "lr": head_lr or lr * 10}] if bridge else [])]

    # --- what a method provides ------------------------------------------------------------------------------
    def bridge_parameters(self) -> list[torch.nn.Parameter]:
        """Trained parameters between the frozen first stage and the LLM (none: the first stage's own vectors)."""
        return []

    def tokens(self, **inputs) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor | None, dict]:
        """A batch's inputs -> (token vectors [B, L, d] or per sample [L_i, d], in the LLM's dtype; the first
        stage's class scores [B, K] or None; per-sample display entries {key: list of B})."""
        raise NotImplementedError

    def window_inputs(self, windows: list, device) -> dict:
        """Raw windows (as predict_windows gets them) -> the keyword inputs of `tokens`."""
        raise NotImplementedError

    def display(self, windows: list) -> dict:
        """Per-window explanation entries where `tokens` gives none: uniform weights over a skeleton window's
        frames [.., T, V, C] and joints (the explanation is the generated text)."""
        joints = list(get_layout(self.layout).joints)
        return {"frame_weights": [np.full(np.asarray(w).shape[-3], 1.0 / np.asarray(w).shape[-3], np.float32)
                                  for w in windows],
                "joint_weights": [np.full(len(joints), 1.0 / len(joints), np.float32) for _ in windows],
                "joint_names": joints}

    def scorer_for(self, candidates: list[dict] | None) -> LabelScorer:
        if candidates is not None:
            raise ValueError(f"a {self.recipe} recognizer answers among its trained classes only")
        return self.scorer

    # --- the loop's contract ---------------------------------------------------------------------------------
    def forward(self, *args, labels=None, class_weights=None, **inputs) -> dict:
        """The loop's forward: the batch's inputs (what `tokens` takes) -> training loss, or class scores (+ the
        validation loss when labels are given)."""
        self.use_adapter()
        vecs, prior, _ = self.tokens(*args, **inputs)
        vecs = list(vecs)
        cands = self.scorer.train_candidates
        self._last_tokens = sum(self.scorer.prompt_tokens(len(v), cands) for v in vecs)
        groups = by_length(vecs)
        if self.training:
            if labels is None:
                raise ValueError("training needs labels")
            if len(groups) == 1:
                return {"loss": self.scorer.nll(self.llm, torch.stack(vecs), labels, class_weights,
                                                targets=self.targets, name_weight=self.name_weight), "logits": None}
            total, weight = 0.0, 0.0
            for idx in groups.values():  # token-weighted mean over groups of equal length
                lab = labels[idx]
                w = class_weights.to(lab.device)[lab] if class_weights is not None else torch.ones(len(idx))
                den = float(sum(float(wi) * len(self.targets[int(c)]) for wi, c in zip(w, lab, strict=True)))
                nll = self.scorer.nll(self.llm, torch.stack([vecs[i] for i in idx]), lab, class_weights,
                                      targets=self.targets, name_weight=self.name_weight)
                total, weight = total + nll * den, weight + den
            return {"loss": total / max(weight, 1e-12), "logits": None}
        logits, loss = None, None
        for idx in groups.values():
            out = self.scorer.loop_outputs(self.llm, torch.stack([vecs[i] for i in idx]),
                                           None if labels is None else labels[idx], class_weights, False)
            if logits is None:
                logits = out["logits"].new_zeros((len(vecs), out["logits"].shape[1]))
            logits[idx] = out["logits"]
            if "loss" in out:
                part = out["loss"] * len(idx) / len(vecs)
                loss = part if loss is None else loss + part
        if prior is not None and self.prior_weight:
            c = cands if labels is not None else self.scorer.eval_candidates
            logits = logits + self.prior_weight * candidate_log_softmax(prior, c).to(logits.dtype)
        return {"logits": logits, **({"loss": loss} if labels is not None else {})}

    def count_tokens(self, batch: dict) -> int:
        """Tokens of the last forward's prompts plus the batch's answers (throughput figures)."""
        answers = sum(len(self.targets[int(c)]) for c in batch["labels"]) if "labels" in batch else 0
        return self._last_tokens + answers

    # --- inference -------------------------------------------------------------------------------------------
    def predict_windows(self, windows: list, batch_size: int = 8, candidates: list[dict] | None = None,
                        generate: bool = True) -> dict:
        """Probabilities over the eval candidates (or over `candidates` named at request time, where the recipe is
        open-vocabulary; the first stage's prior then sits out), the greedy continuation of each window's prompt
        (`generated`; "" each when `generate` is False), and, with a prior, the two parts of the score
        (`llm_scores`, `prior_logprobs`) that `choose_prior_weight` reads."""
        device = self.llm.get_input_embeddings().weight.device
        scorer = self.scorer_for(candidates)
        cands = scorer.eval_candidates
        n = len(windows)
        vecs, priors, shown = [], [], {}
        with no_grad_eval(self):
            self.use_adapter()
            for s in range(0, n, batch_size):  # the first stage over every window ...
                v, prior, extra = self.tokens(**self.window_inputs(windows[s:s + batch_size], device))
                vecs += list(v)
                if prior is not None and candidates is None:
                    priors.append(candidate_log_softmax(prior, cands).cpu().numpy())
                for k, vals in extra.items():
                    shown.setdefault(k, []).extend(vals)
            llm_scores = np.full((n, len(scorer.class_names)), NEG, np.float64)
            generated, tokens = [""] * n, 0
            for idx in by_length(vecs).values():  # ... then the LLM over windows of equal token counts, batched
                for g in range(0, len(idx), batch_size):
                    rows = idx[g:g + batch_size]
                    vec = torch.stack([vecs[i] for i in rows])
                    write = self.cfg.max_new_tokens if generate else 0
                    kept: dict | None = {} if write else None  # the text continues from the scored prefix
                    scores, _ = scorer.score(self.llm, vec, cands, keep=kept)
                    llm_scores[rows] = scores.float().cpu().numpy()
                    texts = scorer.generate(self.llm, vec, cands, write, start=kept)
                    for i, text in zip(rows, texts, strict=True):
                        generated[i] = text
                    tokens += len(rows) * scorer.prompt_tokens(vec.shape[1], cands)
        prior = np.concatenate(priors) if priors else None
        fused = torch.from_numpy(fuse(llm_scores, prior, self.prior_weight if prior is not None else 0.0))
        out = {**self.display(windows), **shown,
               "probabilities": torch.softmax(fused, -1).numpy() if n else np.zeros((0, len(scorer.class_names))),
               "tokens": tokens, "generated": generated}
        if prior is not None:
            out.update(llm_scores=llm_scores, prior_logprobs=prior)
        return out

    # --- folder ------------------------------------------------------------------------------------------------
    def folder_meta(self) -> dict:
        return {**super().folder_meta(), "prior": {"weight": self.prior_weight} if self.has_prior else None}
