"""Heads on an LLM's last_hidden_state: attn-pooling (Action-JointsLLM sec. 4.2.3, eqs. 5-9), the mean/last
pooling of its ablation (sec. 5.3, Table 5), an MLP classifier (sec. 4.2.2), and the read-back of token
weights as frame/joint importance (sec. 5.3, Figs. 5-6).

Shapes: h [B, S, D] hidden states, valid [B, S] bool (False = padding / invalid token), weights [B, S].
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def attn_scores(h: torch.Tensor, mlp: nn.Module) -> torch.Tensor:
    """Eq. 5: l_i = MLP(h_i), one learnable scalar score per token. [B, S, D] -> [B, S]."""
    return mlp(h).squeeze(-1)


def mask_scores(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Eqs. 6-7: l'_i = l_i for a valid token, -inf for an invalid one; L' = [l'_1, ..., l'_s]."""
    return scores.masked_fill(~valid.bool(), float("-inf"))


def attn_weights(scores: torch.Tensor) -> torch.Tensor:
    """Eq. 8: a = Softmax(L') over the tokens. Masked tokens get exactly 0; a row with every token masked
    gets all zeros (softmax of all -inf would be NaN)."""
    any_valid = torch.isfinite(scores).any(dim=-1, keepdim=True)
    safe = torch.where(any_valid, scores, torch.zeros_like(scores))
    return torch.where(any_valid, torch.softmax(safe, dim=-1), torch.zeros_like(scores))


def attn_pool(h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 9: z = sum_i a_i h_i. [B, S, D], [B, S] -> [B, D]."""
    return torch.bmm(weights.unsqueeze(1).to(h.dtype), h).squeeze(1)


class AttnPooling(nn.Module):
    """Attn-pooling (sec. 4.2.3): a small MLP scores each token, masked softmax, weighted sum."""

    def __init__(self, hidden: int, mlp_hidden: int | None = None):
        super().__init__()
        # not specified in the paper: the MLP's width and activation ("projection and activation
        # functions"); Linear(D, 256) -> Tanh -> Linear(256, 1) (a Bahdanau-style scorer).
        mlp_hidden = mlp_hidden or 256
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp_hidden), nn.Tanh(), nn.Linear(mlp_hidden, 1))

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = attn_weights(mask_scores(attn_scores(h, self.mlp), valid))
        return attn_pool(h, weights), weights


class MeanPooling(nn.Module):
    """Mean over valid tokens (sec. 2.2, Fig. 2b; the ablation of Table 5). Weights 1/#valid."""

    def __init__(self, hidden: int | None = None, mlp_hidden: int | None = None):
        super().__init__()

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = valid.to(h.dtype)
        weights = v / v.sum(dim=-1, keepdim=True).clamp_min(1.0)
        return attn_pool(h, weights), weights


class LastPooling(nn.Module):
    """The last valid token of each row (left or right padding alike): the causal LM's '<CLS>' (Fig. 2a)."""

    def __init__(self, hidden: int | None = None, mlp_hidden: int | None = None):
        super().__init__()

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = valid.bool()
        pos = torch.arange(valid.shape[-1], device=valid.device).expand_as(valid)
        last = torch.where(valid, pos, torch.full_like(pos, -1)).amax(dim=-1)  # -1: no valid token
        weights = F.one_hot(last.clamp_min(0), valid.shape[-1]).to(h.dtype)
        weights = weights * (last >= 0).unsqueeze(-1).to(h.dtype)
        return attn_pool(h, weights), weights


POOLINGS: dict[str, type[nn.Module]] = {"attn": AttnPooling, "mean": MeanPooling, "last": LastPooling}


class ClassifierHead(nn.Module):
    """Pooling then an MLP classifier (sec. 4.2.2: "several linear layers and activation functions").

    Always computes in float32 (h is cast, autocast is switched off here) so a bf16 backbone does not make
    the softmax over thousands of tokens or the logits lossy. Keep this module's parameters in float32.
    """

    def __init__(self, hidden: int, num_classes: int, pooling: str = "attn", mlp_hidden: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {sorted(POOLINGS)}")
        self.pooling_name = pooling
        self.pool = POOLINGS[pooling](hidden)
        # not specified in the paper: depth, width, activation and dropout of the classifier.
        self.classifier = nn.Sequential(nn.Linear(hidden, mlp_hidden), nn.GELU(), nn.Dropout(dropout),
                                        nn.Linear(mlp_hidden, num_classes))

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        no_autocast = (torch.autocast(device_type=h.device.type, enabled=False)
                       if h.device.type in ("cpu", "cuda") else contextlib.nullcontext())
        with no_autocast:
            pooled, weights = self.pool(h.float(), valid)
            return self.classifier(pooled), weights


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None,
                        label_smoothing: float = 0.0, ignore_index: int = -1) -> torch.Tensor:
    """Cross-entropy; with class weights w it is sum_b w_{y_b} * nll_b / sum_b w_{y_b} (PyTorch's 'mean').
    Labels equal to `ignore_index` (-1 = unlabelled in the shards) do not count."""
    weight = None if class_weights is None else class_weights.to(device=logits.device, dtype=torch.float32)
    return F.cross_entropy(logits.float(), labels.long(), weight=weight, label_smoothing=label_smoothing,
                           ignore_index=ignore_index)


def token_weights_to_frames_joints(weights, frame_index, joint_index, num_frames: int, num_joints: int):
    """Sec. 5.3 (Figs. 5-6): the attn-weight mass per frame and per joint, summing the weights of the tokens
    that belong to each (index -1, e.g. the prompt, counts for neither). Inputs [S] (numpy or torch);
    returns (frame_weights [num_frames], joint_weights [num_joints]) of the same kind as `weights`."""
    if isinstance(weights, torch.Tensor):
        fi = torch.as_tensor(frame_index, device=weights.device).long()
        ji = torch.as_tensor(joint_index, device=weights.device).long()
        w = weights.detach().float()
        fw = torch.zeros(num_frames, device=w.device).index_add_(0, fi[fi >= 0], w[fi >= 0])
        jw = torch.zeros(num_joints, device=w.device).index_add_(0, ji[ji >= 0], w[ji >= 0])
        return fw, jw
    w = np.asarray(weights, np.float64)
    fi, ji = np.asarray(frame_index), np.asarray(joint_index)
    fw, jw = np.zeros(num_frames), np.zeros(num_joints)
    np.add.at(fw, fi[fi >= 0], w[fi >= 0])
    np.add.at(jw, ji[ji >= 0], w[ji >= 0])
    return fw, jw
