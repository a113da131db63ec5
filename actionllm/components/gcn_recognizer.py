"""The recognizer every clip-reading GCN classifier shares (stgcn, ctrgcn): clip preprocessing, the
classification loss, per-window prediction with class activation maps (CAM, Zhou et al. CVPR 2016) and their
read-back onto the window's frames and joints, and the folder (config.json + model.safetensors holding `net`).

A method subclasses `GCNClassifierRecognizer` and builds its network in `build_net`: a module taking clips
x [N, M, T, V, C] (+ body_mask [N, M]) to (logits [N, K], features [N, M, C', T', V]) whose classifier is a
linear layer `fc` over the pooled features (what CAM weighs the feature grid with).
"""

from __future__ import annotations

import abc

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..contract import RecognizerBase, no_grad_eval
from ..skeleton.layouts import get_layout
from .clips import ClipCollate, ClipPreprocessor, clip_batch
from .pooling import classification_loss


def pool_bodies(features: torch.Tensor, body_mask: torch.Tensor | None) -> torch.Tensor:
    """Features [N, M, C', T', V] -> [N, C']: global average over time and joints, then the mean over the real
    (unmasked) bodies; zero-padded bodies do not count."""
    pooled = features.mean(dim=(3, 4))  # [N, M, C']
    if body_mask is None:
        return pooled.mean(1)
    w = body_mask.to(pooled.dtype).unsqueeze(-1)
    return (pooled * w).sum(1) / w.sum(1).clamp(min=1)


class GCNClassifierRecognizer(RecognizerBase):
    """Clip preprocessing + a GCN classifier `net` (built by `build_net`), saved as config.json +
    model.safetensors. The recipe's config has `clip` (ClipConfig) and `augment` fields."""

    explanation = "class activation (CAM)"
    weight_files = {"model.safetensors": "net"}

    def __init__(self, config, class_names: list[str], layout: str, dims: int, *, seed: int = 0, **_ignored):
        super().__init__(config, class_names, layout, dims)
        torch.manual_seed(seed)
        self.net = self.build_net()

    @abc.abstractmethod
    def build_net(self) -> nn.Module:
        """The network: x [N, M, T, V, C], body_mask -> (logits [N, K], features [N, M, C', T', V]), with `fc`."""

    @classmethod
    def preprocessor(cls, cfg, layout: str, dims: int, train: bool = False, seed: int | None = None):
        return ClipPreprocessor(cfg.clip, layout, cfg.augment, train=train, seed=seed)

    def collate_fn(self) -> ClipCollate:
        return ClipCollate()

    def forward(self, x, body_mask=None, labels=None, class_weights=None) -> dict:
        logits, feats = self.net(x, body_mask)
        out = {"logits": logits, "features": feats}
        if labels is not None:
            out["loss"] = classification_loss(logits, labels, class_weights)
        return out

    def class_activation(self, feats: torch.Tensor, classes: torch.Tensor, body_mask: torch.Tensor) -> torch.Tensor:
        """CAM of `classes` [N] over the last block's grid: relu(sum_c W[k, c] f[c, t, v]), bodies averaged."""
        w = self.net.fc.weight[classes]  # [N, C']
        cam = F.relu(torch.einsum("nc,nmctv->nmtv", w.to(feats.dtype), feats))
        bm = body_mask.to(cam.dtype)[..., None, None]
        return (cam * bm).sum(1) / bm.sum(1).clamp(min=1)  # [N, T', V]

    def predict_windows(self, windows: list[np.ndarray], batch_size: int = 32) -> dict:
        device = self.net.fc.weight.device
        probs, frame_w, joint_w = [], [], []
        with no_grad_eval(self):
            for s in range(0, len(windows), batch_size):
                chunk = windows[s:s + batch_size]
                batch, sources = clip_batch(chunk, self.cfg.clip, self.layout)
                out = self(batch["x"].to(device), batch["body_mask"].to(device))
                p = torch.softmax(out["logits"].float(), -1)
                probs.append(p.cpu().numpy())
                cam = self.class_activation(out["features"].float(), p.argmax(-1), batch["body_mask"].to(device))
                for k, (win, src) in enumerate(zip(chunk, sources, strict=True)):
                    fw, jw = read_back(cam[k].cpu().numpy(), src, np.asarray(win).shape[-3])
                    frame_w.append(fw)
                    joint_w.append(jw)
        return {"probabilities": np.concatenate(probs) if probs else np.zeros((0, len(self.class_names))),
                "frame_weights": frame_w, "joint_weights": joint_w, "joint_names": list(get_layout(self.layout).joints),
                "tokens": 0}

    def folder_meta(self) -> dict:
        return {"joint_names": list(get_layout(self.layout).joints), "weights": "model.safetensors",
                "parameters": sum(p.numel() for p in self.net.parameters())}


def read_back(cam: np.ndarray, source_frames: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """CAM [T', V] -> weights over the window's n_frames source frames and over its joints (each sums to 1; an
    all-zero map, no evidence for the class anywhere, reads back as uniform weights)."""
    if not cam.sum() > 0:
        cam = np.ones_like(cam)
    per_clip_frame = np.interp(np.linspace(0, cam.shape[0] - 1, len(source_frames)), np.arange(cam.shape[0]),
                               cam.sum(1))
    frames, inverse = np.unique(source_frames, return_inverse=True)
    sums = np.bincount(inverse, weights=per_clip_frame, minlength=len(frames))
    counts = np.bincount(inverse, minlength=len(frames))
    fw = np.interp(np.arange(n_frames), frames, sums / counts) if len(frames) > 1 else np.ones(n_frames)
    jw = cam.sum(0)
    return (fw / max(fw.sum(), 1e-12)).astype(np.float32), (jw / max(jw.sum(), 1e-12)).astype(np.float32)
