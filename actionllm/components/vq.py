"""Vector-quantisation machinery shared by the recipes that turn features into discrete tokens (llm-ar's action
VQ-VAE, LVLM-VAR's semantic tokens): the straight-through estimator with its codebook and commitment losses,
dead-code restart from a running usage (T2M-GPT style, in step across Ray Train workers), and codebook usage
figures (share used, perplexity, distance to a Zipf law).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def zipf_distribution(n: int, alpha: float = 1.0, beta: float = 2.7) -> torch.Tensor:
    """p_i proportional to 1 / (i + beta)^alpha for ranks i = 1..n (LLM-AR eq. 2)."""
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    p = 1.0 / (ranks + beta) ** alpha
    return (p / p.sum()).float()


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (natural log) of two distributions over the last axis."""
    p, q = p.clamp_min(0), q.clamp_min(0)
    m = 0.5 * (p + q)

    def kl(a, b):
        return torch.where(a > 0, a * (torch.log(a.clamp_min(1e-12)) - torch.log(b.clamp_min(1e-12))),
                           torch.zeros_like(a)).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def usage_metrics(counts: np.ndarray, zipf_alpha: float = 1.0, zipf_beta: float = 2.7) -> dict:
    """Codebook usage over many tokens: share of codes used, perplexity exp(H), JS to the Zipf law."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        return {"codebook_usage": 0.0, "codebook_perplexity": 0.0, "zipf_js": float("nan")}
    p = counts / total
    nz = p[p > 0]
    zipf = zipf_distribution(len(p), zipf_alpha, zipf_beta).double()
    js = js_divergence(torch.from_numpy(np.sort(p)[::-1].copy()), zipf)
    return {"codebook_usage": float((counts > 0).mean()), "codebook_perplexity": float(np.exp(-(nz * np.log(nz)).sum())),
            "zipf_js": float(js)}


def quantise_st(flat: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs [N, d] and their chosen codes' vectors [N, d] -> (straight-through output, codebook loss
    ||sg(f) - q||^2, commitment loss ||f - sg(q)||^2): the output carries the codes forward and the gradient back
    to the inputs unchanged (VQ-VAE, van den Oord et al. 2017)."""
    embed = F.mse_loss(q, flat.detach())
    commit = F.mse_loss(flat, q.detach())
    return flat + (q - flat).detach(), embed, commit


class DeadCodeRestart(nn.Module):
    """Running code usage and dead-code restart. `observe(flat, codes)` in each training forward; `restart(codebook)`
    after each optimiser step (every rank calls it once per step, so its collectives line up): the step's counts,
    summed over workers, update an exponential running usage; a code whose usage falls under `reset_below` x the
    mean is moved onto one of rank 0's recent inputs (broadcast: every replica keeps the same codebook)."""

    def __init__(self, size: int, reset_below: float, decay: float):
        super().__init__()
        self.size, self.reset_below, self.decay = int(size), float(reset_below), float(decay)
        self.register_buffer("usage_ema", torch.zeros(self.size), persistent=False)
        self._recent: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self._steps = 0

    def observe(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        self._recent = flat.detach()
        self._counts = torch.bincount(codes.reshape(-1), minlength=self.size).float()

    @torch.no_grad()
    def restart(self, codebook: nn.Parameter) -> int:
        import torch.distributed as dist

        if self._counts is None or self.reset_below <= 0:
            return 0
        distributed = dist.is_available() and dist.is_initialized()
        counts = self._counts.clone()
        if distributed:
            dist.all_reduce(counts)
        if self._steps == 0:
            self.usage_ema.copy_(counts)
        else:
            self.usage_ema.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self._steps += 1
        threshold = self.reset_below * self.usage_ema.mean()
        dead = self.usage_ema < threshold
        n = int(dead.sum())
        if n:
            recent = self._recent
            gen = torch.Generator(device="cpu").manual_seed(self._steps)
            idx = torch.randint(len(recent), (n,), generator=gen).to(recent.device)
            dim = recent.shape[-1]
            new = recent[idx] + 0.01 * recent.std() * torch.randn(n, dim, generator=gen).to(recent)
            if distributed:
                dist.broadcast(new, 0)
            codebook.data[dead] = new.to(codebook.dtype)
            # at the threshold (T2M-GPT's reset): a restarted code that wins no token next step moves again
            self.usage_ema[dead] = threshold
        self._counts = None
        return n


def collapse_repeats(codes: list[int]) -> list[int]:
    """Consecutive repeats of a code merged into one: [5, 5, 9, 9, 9, 5] -> [5, 9, 5] (LVLM-VAR's variable-length
    token sequence)."""
    out: list[int] = []
    for c in codes:
        if not out or out[-1] != c:
            out.append(int(c))
    return out
