"""LVLM-VAR's Video-to-Semantic-Tokens module (seed 003, sec. 3.1, eqs. 1-2).

  frame features F [B, T', D] (frozen encoder) --linear + positions--> temporal self-attention (F~)
  --P (linear to the LLM's width, unit length)--> Q (nearest of K unit codes, cosine) --> codes [B, T']
  --collapse consecutive repeats--> semantic tokens (variable length; the paper's ~15 per video)

The codes live on the unit sphere (cosine nearest neighbour, as in ViT-VQGAN's l2-normalised codebook): the
vectors the LLM receives are the codes times the mean norm of the backbone's word embeddings, so they sit at the
scale of the words around them whatever the encoder. With `vst.enabled: false` (Table 2's ablation) the unit
projections go to the LLM as they are: no codebook, one token per feature step.

Training (stage `vst`; the paper never gives the loss -- chosen, see README): cross-entropy of a linear head on
the mean of the quantised vectors + the VQ codebook and beta x commitment terms (components/vq.py), dead codes
restarted onto recent projections. The attention each feature step receives is the frames' explanation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...components.vq import DeadCodeRestart, collapse_repeats, quantise_st

MAX_STEPS = 512  # feature steps a video may have (learned positions)


class AttentionBlock(nn.Module):
    """Pre-norm self-attention + MLP that keeps its attention weights (the explanation)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.ln1(x)
        a, w = self.attn(h, h, h, need_weights=True, average_attn_weights=True)  # w [B, T, T]
        x = x + self.drop(a)
        return x + self.drop(self.mlp(self.ln2(x))), w


class VST(nn.Module):
    """Frame features [B, T', D] -> codes, unit token vectors, class logits, per-step attention."""

    def __init__(self, feat_dim: int, width: int, num_classes: int, cfg, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.cfg, self.feat_dim, self.width = cfg, int(feat_dim), int(width)
        self.inp = nn.Sequential(nn.LayerNorm(feat_dim), nn.Linear(feat_dim, cfg.hidden))
        self.pos = nn.Parameter(torch.randn(MAX_STEPS, cfg.hidden) * 0.02)
        self.blocks = nn.ModuleList(AttentionBlock(cfg.hidden, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, width)  # P (eq. 2)
        self.codebook = nn.Parameter(F.normalize(torch.randn(cfg.codebook_size, width), dim=-1))  # Q (eq. 2)
        self.head = nn.Linear(width, num_classes)
        self.restarts = DeadCodeRestart(cfg.codebook_size, cfg.reset_below, cfg.usage_decay)

    def attend(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F -> the unit projections P(F~) [B, T', width] and the attention each step receives [B, T']."""
        t = feats.shape[1]
        if t > MAX_STEPS:
            raise ValueError(f"{t} feature steps per video; the VST reads at most {MAX_STEPS}")
        x = self.inp(feats.float()) + self.pos[:t]
        received = None
        for block in self.blocks:
            x, w = block(x)
            received = w.mean(1)  # the last layer's attention, averaged over queries
        return F.normalize(self.proj(self.norm(x)), dim=-1), received

    def codes_of(self, z: torch.Tensor) -> torch.Tensor:
        """Unit vectors [..., width] -> the nearest codes by cosine [...]."""
        cb = F.normalize(self.codebook, dim=-1)
        return (z.reshape(-1, self.width) @ cb.T).argmax(-1).view(z.shape[:-1])

    def code_vectors(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1)

    def forward(self, feats: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        z, received = self.attend(feats)
        out = {"attention": received}
        if not self.cfg.enabled:
            out["tokens"] = z
            pooled = z.mean(1)
            loss = z.new_zeros(())
        else:
            codes = self.codes_of(z)
            flat = z.reshape(-1, self.width)
            if self.training:
                self.restarts.observe(flat.detach(), codes)
            q_st, embed, commit = quantise_st(flat, self.code_vectors()[codes.reshape(-1)])
            q_st = q_st.view_as(z)
            out.update({"codes": codes, "tokens": q_st, "embed": embed, "commit": commit})
            pooled = q_st.mean(1)
            loss = embed + self.cfg.commitment * commit
        logits = self.head(pooled * math.sqrt(self.width))
        out["logits"] = logits
        if labels is not None:
            out["ce"] = F.cross_entropy(logits, labels)
            out["loss"] = out["ce"] + loss
        return out

    @torch.no_grad()
    def semantic_tokens(self, feats: torch.Tensor) -> tuple[list[list[int]], list[torch.Tensor], torch.Tensor]:
        """Per video: the code sequence (repeats collapsed when vst.collapse), its unit vectors [L_i, width], and
        the attention each feature step received [B, T']. With the VST off: no codes, every step's projection."""
        z, received = self.attend(feats)
        if not self.cfg.enabled:
            return [[] for _ in range(len(z))], list(z), received
        codes = self.codes_of(z).tolist()
        seqs = [collapse_repeats(c) if self.cfg.collapse else c for c in codes]
        cb = self.code_vectors()
        return seqs, [cb[torch.tensor(s, device=cb.device)] for s in seqs], received

