"""LLM-AR's linguistic projection (seed 002, sec. 3.1): an action VQ-VAE whose codebook lives in the Poincare
ball, trained with the human-inductive-bias losses, turning a skeleton clip into an "action sentence" of
W = frames/4 discrete tokens, each a vector of the backbone's embedding width.

  x [B, T, F] --E (1D convs over time, /4)--> f [B, W, d] --exp_0--> Poincare ball --dist_B argmin--> codes
  codes -> c_u --log_0--> f^d [B, W, d] --D (1D convs, x4)--> x_hat [B, T, F]

The codebook is parametrised by tangent vectors v_u at the origin: c_u = exp_0(v_u) is always inside the ball
(no Riemannian optimiser needed) and log_0(c_u) = v_u, so the Euclidean vectors the decoder (eq. 10) and the
LLM receive are the v_u themselves. With `hyperbolic: false` quantisation is the Euclidean nearest neighbour
(the paper's Table 6 ablation).

Losses (eqs. 3-7, 11-12): L = smooth-L1(x_hat, x) + ||sg(f) - f^d||^2 + w1 ||f - sg(f^d)||^2 + w2 L_human,
L_human = L_Zipf + L_context + MMD(codebook, word embeddings), each switchable. Choices the paper leaves to
its (unavailable) supplementary, made here: the conv architecture; Corr(t_b) counts the tokens of pairs used
together, 2 * sum_u min(t_b[u], t_b[u + U/2]), so that L_context lies in [0, 1]; pairs are (u, u + U/2) of a
randomly initialised codebook (the same as a random split); the MMD uses a sum of three RBF kernels whose
bandwidths scale with the word embeddings' median squared distance, against `mmd_samples` embeddings drawn
each step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...components.vq import DeadCodeRestart, js_divergence, quantise_st, usage_metrics, zipf_distribution

__all__ = ["ActionVQVAE", "clip_features", "usage_metrics", "zipf_distribution", "js_divergence"]

EPS = 1e-5


# --- the Poincare ball (eqs. 8-10), curvature c ------------------------------------------------------------
def expmap0(v: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """Eq. 8: tanh(sqrt(c)|v|) v / (sqrt(c)|v|), kept strictly inside the ball of radius 1/sqrt(c)."""
    sc = math.sqrt(c)
    norm = v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    r = torch.tanh(sc * norm).clamp(max=1 - EPS)
    return r * v / (sc * norm)


def logmap0(y: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """Eq. 10: artanh(sqrt(c)|y|) y / (sqrt(c)|y|), the inverse of expmap0."""
    sc = math.sqrt(c)
    norm = y.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.atanh((sc * norm).clamp(max=1 - EPS)) * y / (sc * norm)


def poincare_distance(x: torch.Tensor, y: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """Eq. 9 (for c = 1; general c: arccosh(1 + 2c|x-y|^2 / ((1-c|x|^2)(1-c|y|^2))) / sqrt(c)), pairwise:
    x [N, d], y [U, d] -> [N, U]."""
    x2 = (x * x).sum(-1, keepdim=True)  # [N, 1]
    y2 = (y * y).sum(-1)[None]  # [1, U]
    diff2 = (x2 + y2 - 2 * x @ y.T).clamp_min(0)
    denom = ((1 - c * x2) * (1 - c * y2)).clamp_min(EPS)
    return torch.acosh((1 + 2 * c * diff2 / denom).clamp_min(1 + 1e-7)) / math.sqrt(c)


# --- human inductive biases (eqs. 3-7) -----------------------------------------------------------------------
def zipf_loss(usage: torch.Tensor, zipf: torch.Tensor) -> torch.Tensor:
    """Eq. 4: JS(sort(sum_b t_b) / (B W) || Zipf). usage [B, U] token counts per sequence."""
    freq = torch.sort(usage.sum(0), descending=True).values
    return js_divergence(freq / freq.sum().clamp_min(1e-12), zipf.to(freq))


def context_loss(usage: torch.Tensor) -> torch.Tensor:
    """Eq. 5: 1 - sum_b Corr(t_b) / (B W), Corr(t_b) = 2 sum_u min(t_b[u], t_b[u + U/2]): the share of tokens
    used together with their pair (0 when every token's pair is used as often, 1 when no pair is)."""
    half = usage.shape[-1] // 2
    corr = 2 * torch.minimum(usage[:, :half], usage[:, half:]).sum()
    return 1 - corr / usage.sum().clamp_min(1e-12)


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: torch.Tensor) -> torch.Tensor:
    """Squared MMD with a sum of RBF kernels exp(-|a-b|^2 / (2 s^2)) over `bandwidths` (s^2 values)."""
    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * s)) for s in bandwidths).mean()

    return k(x, x) + k(y, y) - 2 * k(x, y)


# --- the model ------------------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    def __init__(self, ch: int, dilation: int = 1):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Conv1d(ch, ch, 3, padding=dilation, dilation=dilation), nn.ReLU(),
                                 nn.Conv1d(ch, ch, 1))

    def forward(self, x):
        return x + self.net(x)


class ActionVQVAE(nn.Module):
    """E, codebook, D. x [B, T, F] with T a multiple of 4; W = T / 4 tokens of width `dim`."""

    def __init__(self, features: int, dim: int, cfg, seed: int = 0):
        super().__init__()
        self.cfg, self.features, self.dim = cfg, int(features), int(dim)
        h = cfg.hidden
        torch.manual_seed(seed)
        enc = [nn.Conv1d(features, h, 3, padding=1), nn.ReLU()]
        for _ in range(2):  # two stride-2 convolutions over time: W = T / 4 (sec. 4.2)
            enc += [nn.Conv1d(h, h, 4, stride=2, padding=1), *[ResBlock(h, 3 ** i) for i in range(cfg.res_blocks)]]
        self.encoder = nn.Sequential(*enc, nn.ReLU(), nn.Conv1d(h, dim, 3, padding=1))
        dec = [nn.Conv1d(dim, h, 3, padding=1), nn.ReLU()]
        for _ in range(2):
            dec += [*[ResBlock(h, 3 ** i) for i in range(cfg.res_blocks)], nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv1d(h, h, 3, padding=1)]
        self.decoder = nn.Sequential(*dec, nn.ReLU(), nn.Conv1d(h, features, 3, padding=1))
        # tangent vectors at the origin; c_u = exp_0(v_u). Small init keeps the codes off the ball's boundary.
        self.codebook = nn.Parameter(torch.randn(cfg.codebook_size, dim) / math.sqrt(dim))
        self.register_buffer("zipf", zipf_distribution(cfg.codebook_size, cfg.zipf_alpha, cfg.zipf_beta),
                             persistent=False)
        self.word_embeddings: torch.Tensor | None = None  # set by attach_word_embeddings (MMD); never saved
        self.mmd_bandwidths: torch.Tensor | None = None
        self.restarts = DeadCodeRestart(cfg.codebook_size, cfg.reset_below, cfg.usage_decay)

    # --- pieces ---------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, F] -> latent features f [B, W, d]."""
        if x.shape[1] % 4:
            raise ValueError(f"clip length {x.shape[1]} is not a multiple of 4")
        return self.encoder(x.transpose(1, 2)).transpose(1, 2)

    def distances(self, f: torch.Tensor) -> torch.Tensor:
        """f [N, d] -> distances to every code [N, U] (geodesic in the ball, or squared Euclidean)."""
        if self.cfg.hyperbolic:
            c = self.cfg.curvature
            return poincare_distance(expmap0(f, c), expmap0(self.codebook, c), c)
        return torch.cdist(f, self.codebook).pow(2)

    def code_vectors(self) -> torch.Tensor:
        """The Euclidean vectors of the codes (log_0(c_u) = v_u): what the decoder and the LLM receive."""
        if self.cfg.hyperbolic:
            c = self.cfg.curvature
            return logmap0(expmap0(self.codebook, c), c)
        return self.codebook

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, F] -> codes [B, W] (long): the action sentence."""
        f = self.encode(x)
        return self.distances(f.reshape(-1, self.dim)).argmin(-1).view(f.shape[:2])

    def attach_word_embeddings(self, emb: torch.Tensor) -> None:
        """The backbone's input embeddings (frozen) for the MMD term, and the kernel bandwidths from them."""
        emb = emb.detach().float()
        self.word_embeddings = emb
        sample = emb[torch.randperm(len(emb), generator=torch.Generator().manual_seed(0))[:2048]]
        med = torch.cdist(sample, sample).pow(2).median().clamp_min(1e-6)
        self.mmd_bandwidths = med * torch.tensor([0.25, 1.0, 4.0])

    # --- training forward -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict:
        """x [B, T, F] -> losses (total and terms), codes [B, W], the reconstruction."""
        cfg = self.cfg
        b = x.shape[0]
        f = self.encode(x)  # [B, W, d]
        w = f.shape[1]
        flat = f.reshape(-1, self.dim)
        dist = self.distances(flat)  # [B W, U]
        codes = dist.argmin(-1)
        if self.training:
            self.restarts.observe(flat, codes)
        # f^d (eq. 10); eq. 11: ||sg(f) - f^d||^2 and ||f - sg(f^d)||^2; straight-through to the encoder
        q_st, embed, commit = quantise_st(flat, self.code_vectors()[codes])
        recon = self.decoder(q_st.view(b, w, self.dim).transpose(1, 2)).transpose(1, 2)
        rec = F.smooth_l1_loss(recon, x)
        terms = {"recon": rec, "embed": embed, "commit": commit}
        human = torch.zeros((), device=x.device)
        if cfg.zipf or cfg.context:
            onehot = F.gumbel_softmax(-dist, tau=cfg.gumbel_tau, hard=True)  # eq. 3, straight-through
            usage = onehot.view(b, w, -1).sum(1)  # t_b [B, U]
            if cfg.zipf:
                terms["zipf"] = zipf_loss(usage, self.zipf)
                human = human + terms["zipf"]
            if cfg.context:
                terms["context"] = context_loss(usage)
                human = human + terms["context"]
        if cfg.mmd and self.word_embeddings is not None:
            emb = self.word_embeddings
            idx = torch.randint(len(emb), (min(cfg.mmd_samples, len(emb)),))
            terms["mmd"] = mmd(self.code_vectors(), emb[idx].to(x.device), self.mmd_bandwidths.to(x.device))
            human = human + terms["mmd"]
        total = rec + embed + cfg.w1 * commit + cfg.w2 * human
        return {"loss": total, "terms": terms, "codes": codes.view(b, w), "recon": recon}


    def restart_dead_codes(self) -> int:
        """After an optimiser step: dead codes moved onto recent encoder outputs (components/vq.py)."""
        return self.restarts.restart(self.codebook)


# --- clips -> VQ-VAE input ---------------------------------------------------------------------------------------
def clip_features(x: torch.Tensor, max_bodies: int) -> torch.Tensor:
    """ClipCollate's x [B, M, T, V, C] -> [B, T, max_bodies * V * C], each clip divided by its RMS over valid
    coordinates (scale-free: datasets come in metres, pixels or unit boxes)."""
    b, m, t, v, c = x.shape
    if m < max_bodies:
        x = torch.cat([x, x.new_zeros(b, max_bodies - m, t, v, c)], 1)
    x = x[:, :max_bodies]
    valid = (x != 0).any(-1, keepdim=True)
    rms = ((x.pow(2) * valid).sum(dim=(1, 2, 3, 4)) / (valid.sum(dim=(1, 2, 3, 4)) * c).clamp_min(1)).sqrt()
    x = x / rms.clamp_min(1e-6).view(b, 1, 1, 1, 1)
    return x.permute(0, 2, 1, 3, 4).reshape(b, t, -1)
