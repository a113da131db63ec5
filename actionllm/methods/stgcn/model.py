"""ST-GCN (Yan, Xiong, Lin, AAAI 2018), the yardstick every seed paper compares against, as PYSKL builds it.

Network: the shared GCN encoder (components/gcn.py: data BatchNorm -> blocks of [graph conv over the
3-partition adjacency with learnable edge importance -> BN -> ReLU -> temporal conv (k=9) -> BN] + residual
-> ReLU) -> global average pool over time and joints -> mean over bodies -> linear classifier.
'standard' is the paper's 10 blocks (64x4, 128x3, 256x3; temporal stride 2 entering 128 and 256 channels);
'small' is 6 blocks (32x2, 64x2, 128x2) for CPU runs. Input: clips (components/clips.py).

Explanations are class activation maps (CAM, Zhou et al. CVPR 2016) of the predicted class over the last
block's (time, joint) grid, read back as weights over the window's frames and over the joints
(components/gcn_recognizer.py, shared with ctrgcn).
"""

from __future__ import annotations

import torch
from torch import nn

from ...components.gcn import GCNEncoder
from ...components.gcn_recognizer import GCNClassifierRecognizer, pool_bodies
from .config import STGCNConfig


class STGCN(GCNEncoder):
    """x [N, M, T, V, C] (+ body_mask [N, M]) -> logits [N, K], features [N, M, C', T', V]."""

    def __init__(self, num_classes: int, layout: str, dims: int, preset: str = "small", temporal_kernel: int = 9,
                 dropout: float = 0.0, head_dropout: float = 0.0, edge_importance: bool = True):
        super().__init__(layout, dims, preset, temporal_kernel, dropout, edge_importance)
        self.drop = nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.out_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)

    def forward(self, x: torch.Tensor, body_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.fc(self.drop(pool_bodies(f, body_mask))), f


class STGCNRecognizer(GCNClassifierRecognizer):
    """The `stgcn` recipe's recognizer: clip preprocessing + STGCN, saved as config.json + model.safetensors."""

    recipe = "stgcn"
    config_cls = STGCNConfig

    def build_net(self) -> STGCN:
        return STGCN(len(self.class_names), self.layout, self.dims, self.cfg.preset, self.cfg.temporal_kernel,
                     self.cfg.dropout, self.cfg.head_dropout, self.cfg.edge_importance)
