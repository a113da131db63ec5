"""SUGAR's bridge from skeleton features to LLM tokens (paper sec. 3.3, eq. 4, Fig. 3; Table 4's ablation).

  tqp      Temporal Query Projection: s [B, L_s, C] is cut into k segments along time; L learnable queries
           attend to segment 1 through a Q-Former; its L outputs are the queries of the same Q-Former (shared
           weights) over segment 2, and so on; the last L outputs -> linear -> L tokens of the LLM's width.
  qformer  one Q-Former over the whole of s (k = 1): L tokens.
  linear   every frame of s -> linear -> L_s tokens (Table 4's "Linear": long prompts).
  xattn    L learnable queries, one cross-attention layer over s -> linear: L tokens.

The Q-Former is transformers' `Blip2QFormerModel` (BLIP-2, Li et al. 2023), built from a small config
(the paper gives no Q-Former size; see BridgeConfig). Reading eq. 4: the paper writes q in R^{k x d} and
ŝ_t in R^{L x d}; chosen: L queries (the output length) and k segments (the chain length), as Fig. 3 draws.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import nn


class BridgeConfig(BaseModel):
    kind: Literal["tqp", "qformer", "linear", "xattn"] = Field("tqp", description="Table 4's bridging module")
    segments: int = Field(4, ge=1, description="k: segments the time axis is cut into (TQP's chain length)")
    tokens: int = Field(32, ge=1, description="L: tokens handed to the LLM (paper: 128)")
    # not in the paper (BLIP-2's Q-Former is BERT-base: 768 wide, 12 layers); chosen for CPU-sized runs
    hidden: int = Field(256, ge=16, description="Q-Former width")
    layers: int = Field(2, ge=1, description="Q-Former layers (each with cross-attention)")
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


def segment_bounds(length: int, k: int) -> list[tuple[int, int]]:
    """k contiguous, non-empty [start, end) spans covering range(length) (earlier spans one frame longer when
    length is not a multiple of k). Refuses k > length."""
    if k > length:
        raise ValueError(f"{k} segments for {length} time steps: lower bridge.segments or raise clip.frames")
    edges = [round(i * length / k) for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def qformer(cfg: BridgeConfig, feature_width: int) -> nn.Module:
    """transformers' Blip2QFormerModel (imported here: a GCN-only process never pays for transformers)."""
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    config = Blip2QFormerConfig(hidden_size=cfg.hidden, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                                intermediate_size=4 * cfg.hidden, encoder_hidden_size=feature_width,
                                cross_attention_frequency=1, hidden_dropout_prob=cfg.dropout,
                                attention_probs_dropout_prob=cfg.dropout)
    return Blip2QFormerModel(config)


class Bridge(nn.Module):
    """s [B, L_s, C] (+ frame mask [B, L_s]) -> tokens [B, n, width] for the LLM's inputs_embeds."""

    def __init__(self, cfg: BridgeConfig, feature_width: int, llm_width: int):
        super().__init__()
        self.cfg = cfg
        # not in the paper: the frozen encoder's features are standardised per channel first (BatchNorm over
        # samples and frames). Without it the channels' common offsets dwarf what differs between samples (measured
        # on MSR clips: 0.01 std across samples against 0.69 overall) and the Q-Former's LayerNorms erase the rest
        self.norm_in = nn.BatchNorm1d(feature_width)
        if cfg.kind == "linear":
            self.out = nn.Linear(feature_width, llm_width)
            return
        self.queries = nn.Parameter(torch.randn(1, cfg.tokens, cfg.hidden) * 0.02)
        if cfg.kind == "xattn":
            self.kv = nn.Linear(feature_width, cfg.hidden)
            self.attn = nn.MultiheadAttention(cfg.hidden, cfg.heads, dropout=cfg.dropout, batch_first=True)
            self.norm = nn.LayerNorm(cfg.hidden)
        else:
            self.qformer = qformer(cfg, feature_width)
        self.out = nn.Linear(cfg.hidden, llm_width)

    def num_tokens(self, length: int) -> int:
        return length if self.cfg.kind == "linear" else self.cfg.tokens

    def forward(self, s: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        kind = self.cfg.kind
        s = self.norm_in(s.transpose(1, 2)).transpose(1, 2)
        if kind == "linear":
            return self.out(s)
        q = self.queries.expand(s.shape[0], -1, -1)
        if kind == "xattn":
            kv = self.kv(s)
            a, _ = self.attn(q, kv, kv, key_padding_mask=None if mask is None else ~mask.bool())
            return self.out(self.norm(q + a))
        spans = [(0, s.shape[1])] if kind == "qformer" else segment_bounds(s.shape[1], self.cfg.segments)
        for start, end in spans:  # eq. 4: each segment's outputs are the next segment's queries (shared weights)
            seg_mask = None if mask is None else mask[:, start:end].long()
            q = self.qformer(query_embeds=q, encoder_hidden_states=s[:, start:end],
                             encoder_attention_mask=seg_mask).last_hidden_state
        return self.out(q)
