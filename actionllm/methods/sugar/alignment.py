"""SUGAR's skeleton-text alignment (paper sec. 3.2, eqs. 1-3): the pieces, without the recognizer around them.

  SequenceEncoder   clips [N, M, T, V, C] -> per-frame features s [N, T', C'] (GCN blocks, time axis kept) and
                    their projection into the text space
  TextBank          the frozen text embeddings of every class's knowledge texts (which class, motion or visual)
  mil_nce           eq. 3: -log( sum over a sample's positive texts / sum over the texts it is contrasted with )
  sample_positives  eq. 2's random motion/visual combination, drawn per sample and step
  class_scores      a class's score = log-mean-exp of the sample's similarities to the class's texts
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...components.gcn import GCNEncoder
from ...components.knowledge import ClassKnowledge
from ...components.text_encoder import TextEncoder
from .config import EncoderConfig


class SequenceEncoder(nn.Module):
    """The skeleton encoder E_s: data BatchNorm + GCN blocks with no temporal pooling, bodies averaged, then a
    linear map (no bias) of the time-pooled features into the text space."""

    def __init__(self, layout: str, dims: int, cfg: EncoderConfig, text_dim: int):
        super().__init__()
        self.gcn = GCNEncoder(layout, dims, cfg.preset, cfg.temporal_kernel, cfg.dropout)
        self.width = self.gcn.out_channels
        # no bias: the similarity stays linear in the features, so it reads back onto (frame, joint) cells (CAM)
        self.to_text = nn.Linear(self.width, text_dim, bias=False)

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """Clips [N, M, T, V, C] -> the last block's grid [N, M, C', T', V]."""
        return self.gcn(x)

    def frames_out(self, frames: int) -> int:
        """T' (the length of s) for clips of T frames."""
        return self.gcn.frames_out(frames)

    @staticmethod
    def sequence(grid: torch.Tensor, body_mask: torch.Tensor | None) -> torch.Tensor:
        """Grid [N, M, C', T', V] -> s [N, T', C']: mean over joints, then over the real (unmasked) bodies."""
        per_body = grid.mean(-1)  # [N, M, C', T']
        if body_mask is None:
            s = per_body.mean(1)
        else:
            w = body_mask.to(per_body.dtype)[:, :, None, None]
            s = (per_body * w).sum(1) / w.sum(1).clamp(min=1)
        return s.transpose(1, 2)  # [N, T', C']

    def embed(self, s: torch.Tensor) -> torch.Tensor:
        """s [N, T', C'] -> unit vectors [N, d] in the text space (the pooled skeleton feature of eq. 3)."""
        return F.normalize(self.to_text(s.mean(1)), dim=-1)


class TextBank(nn.Module):
    """Unit text embeddings [T, d] of every class's texts, `owner` [T] (class index) and `visual` [T] (a visual
    text; else motion). Buffers, saved in the recognizer's folder: a loaded recognizer needs no text encoder
    until it is asked about new classes."""

    def __init__(self, size: int, dim: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("emb", torch.zeros(size, dim))
        self.register_buffer("owner", torch.zeros(size, dtype=torch.long))
        self.register_buffer("visual", torch.zeros(size, dtype=torch.bool))

    @classmethod
    def build(cls, entries: list[ClassKnowledge], encoder: TextEncoder) -> TextBank:
        texts, owner, visual = [], [], []
        for k, entry in enumerate(entries):
            texts += [*entry.motion, *entry.visual]
            owner += [k] * len(entry.texts)
            visual += [False] * len(entry.motion) + [True] * len(entry.visual)
        bank = cls(len(texts), encoder.dim, len(entries))
        bank.emb.copy_(encoder.encode(texts))
        bank.owner.copy_(torch.tensor(owner))
        bank.visual.copy_(torch.tensor(visual))
        return bank

    def counts(self) -> torch.Tensor:
        return torch.bincount(self.owner, minlength=self.num_classes)


def sample_positives(labels: torch.Tensor, bank: TextBank, visual_p: float) -> torch.Tensor:
    """Eq. 2's t = {m, v_i}: per sample, one of its class's motion texts at random and each of its visual texts
    with probability visual_p. -> bool [N, T]."""
    own = bank.owner[None, :] == labels[:, None]  # [N, T]
    motion = own & ~bank.visual[None, :]
    pick = torch.rand(own.shape, device=own.device).masked_fill(~motion, -1.0).argmax(1)  # one motion text each
    pos = torch.zeros_like(own)
    pos[torch.arange(len(labels), device=own.device), pick] = True
    pos &= motion  # a class without motion texts (not possible for a parsed file) gets none
    visual = own & bank.visual[None, :] & (torch.rand(own.shape, device=own.device) < visual_p)
    return pos | visual


def contrast_set(labels: torch.Tensor, pos: torch.Tensor, bank: TextBank, classes: list[int]) -> torch.Tensor:
    """The texts each sample is contrasted with (eq. 3's denominator) -> bool [N, T]: every text of every other
    class among `classes`, plus the sample's own positives. chosen: the class bank, not the batch's texts -- the
    loss no longer depends on the batch size or on which classes a batch happens to hold; the sample's own class's
    texts that were not drawn this step are left out (they are not negatives)."""
    allowed = torch.zeros(bank.num_classes, dtype=torch.bool, device=labels.device)
    allowed[torch.as_tensor(classes, device=labels.device)] = True
    others = allowed[bank.owner][None, :] & (bank.owner[None, :] != labels[:, None])
    return others | pos


def mil_nce(sims: torch.Tensor, pos: torch.Tensor, den: torch.Tensor, weights: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Eq. 3: mean over samples of -log( sum_{n in pos} exp(sim_n) / sum_{n in den} exp(sim_n) ), with sims
    already divided by the temperature. pos must lie inside den; one positive each = InfoNCE (cross-entropy)."""
    if not bool((pos <= den).all()):
        raise ValueError("every positive text must also be in the contrast set")
    neg_inf = torch.finfo(sims.dtype).min
    num = torch.logsumexp(sims.masked_fill(~pos, neg_inf), dim=1)
    den_ = torch.logsumexp(sims.masked_fill(~den, neg_inf), dim=1)
    loss = den_ - num
    if weights is None:
        return loss.mean()
    return (loss * weights).sum() / weights.sum().clamp(min=1e-12)


def class_scores(sims: torch.Tensor, bank: TextBank) -> torch.Tensor:
    """Sims [N, T] (divided by tau) -> [N, K]: log-mean-exp over each class's texts (a class with more texts
    gains nothing from their number; one text: its similarity)."""
    top = sims.max(dim=1, keepdim=True).values
    onehot = F.one_hot(bank.owner, bank.num_classes).to(sims.dtype)  # [T, K]
    mean_exp = (torch.exp(sims - top) @ onehot) / bank.counts().clamp(min=1).to(sims.dtype)
    return torch.log(mean_exp.clamp(min=1e-30)) + top

