"""CTR-GCN (Chen, Zhang, Yuan, Li, Deng, Hu, "Channel-wise Topology Refinement Graph Convolution for
Skeleton-Based Action Recognition", ICCV 2021), as its authors' code and PYSKL build it.

A block: CTR-GC graph convolution (one per partition subset, summed) -> BN -> + residual -> ReLU -> multi-scale
temporal convolution -> + block residual -> ReLU. The network: data BatchNorm -> 10 blocks (64x4, 128x3, 256x3;
temporal stride 2 entering 128 and 256 channels; 'small': 6 blocks 32-64-128 for CPU runs) -> global average
pool over time and joints -> mean over bodies -> linear classifier. Conventions as components/gcn.py: features
[N, C, T, V]; a topology R[v, w] is the weight of the message from joint v to joint w.

CTR-GC (paper sec. 3.2-3.3), for one subset with shared topology A (learnable, initialised with the layout's
partition):
  T(X)   = W X                                   feature transformation, 1x1 conv C_in -> C_out
  M      = tanh(phi(x)_w - psi(x)_v)             channel-specific correlations from time-pooled features,
                                                 phi, psi: 1x1 convs C_in -> C_in / 8
  Q      = xi(M)                                 1x1 conv to C_out: one V x V correlation per output channel
  R      = A + alpha * Q                         refined topology per channel, alpha learnable (starts at 0)
  Z[c]   = R[c]^T T(X)[c]                        channel-wise aggregation
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...components.gcn import PRESETS, TemporalConv, data_norm, spatial_partition
from ...components.gcn_recognizer import GCNClassifierRecognizer, pool_bodies
from .config import CTRGCNConfig


def init_conv(module: nn.Module) -> None:
    """He (fan-out) initialisation of every conv, BN scale 1 shift 0 (the authors' conv_init/bn_init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CTRGC(nn.Module):
    """One subset's channel-wise topology refinement graph convolution: x [N, C_in, T, V] -> [N, C_out, T, V]."""

    def __init__(self, cin: int, cout: int, rel_reduction: int = 8):
        super().__init__()
        rel = max(8, cin // rel_reduction)  # the input layer (C_in = 2 or 3) still gets 8 correlation channels
        self.phi = nn.Conv2d(cin, rel, 1)
        self.psi = nn.Conv2d(cin, rel, 1)
        self.xi = nn.Conv2d(rel, cout, 1)
        self.transform = nn.Conv2d(cin, cout, 1)

    def correlation(self, x: torch.Tensor) -> torch.Tensor:
        """Q = xi(tanh(phi(x)_w - psi(x)_v)) [N, C_out, V, V]: features pooled over time, pairwise differences."""
        q, k = self.phi(x).mean(2), self.psi(x).mean(2)  # [N, R, V]
        return self.xi(torch.tanh(q.unsqueeze(-2) - k.unsqueeze(-1)))  # [N, R, V(v), V(w)] -> [N, C_out, V, V]

    def topology(self, x: torch.Tensor, shared: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """R = A + alpha * Q: [N, C_out, V, V], one refined topology per sample and output channel."""
        return shared.to(x.dtype) + alpha * self.correlation(x)

    def forward(self, x: torch.Tensor, shared: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ncvw,nctv->nctw", self.topology(x, shared, alpha), self.transform(x))


class CTRGraphConv(nn.Module):
    """The spatial unit: sum over subsets k of CTR-GC_k(x; A_k) -> BN -> + down(x) -> ReLU."""

    def __init__(self, cin: int, cout: int, adjacency: torch.Tensor, rel_reduction: int = 8):
        super().__init__()
        self.A = nn.Parameter(adjacency.clone())  # shared topology, learnable (the paper's A, per block)
        self.alpha = nn.Parameter(torch.zeros(1))  # refinement starts off: the block starts as a plain GCN
        self.subsets = nn.ModuleList(CTRGC(cin, cout, rel_reduction) for _ in range(adjacency.shape[0]))
        self.bn = nn.BatchNorm2d(cout)
        self.down = nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout))
        init_conv(self)
        nn.init.constant_(self.bn.weight, 1e-6)  # the unit starts as its residual (the authors' bn_init(bn, 1e-6))

    def topology(self, x: torch.Tensor) -> torch.Tensor:
        """The refined topologies of every subset: [N, K, C_out, V, V]."""
        return torch.stack([g.topology(x, a, self.alpha) for g, a in zip(self.subsets, self.A, strict=True)], 1)

    def _fused(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The subsets' `name` convs as one conv (weights stacked along the output channels)."""
        convs = [getattr(g, name) for g in self.subsets]
        return torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """sum_k CTR-GC_k(x; A_k), computed for all subsets at once: one conv per role (the subsets' weights
        stacked), one grouped conv for xi and one contraction over (subset, joint) -- the same numbers as summing
        `CTRGC.forward` over the subsets, 1.1-1.6x faster (forward + backward, batch 16, 2-core CPU; most for the
        narrow early blocks, where the per-subset calls are many small kernels)."""
        n, _, t, v = x.shape
        k = len(self.subsets)
        rel = self.subsets[0].phi.out_channels
        cout = self.subsets[0].transform.out_channels
        phi, psi = self._fused("phi"), self._fused("psi")
        # phi and psi are 1x1 convs, so pooling over time first gives the same numbers on T times fewer positions
        pooled = F.conv2d(x.mean(2, keepdim=True), torch.cat([phi[0], psi[0]]), torch.cat([phi[1], psi[1]])).squeeze(2)
        q, kk = pooled.view(n, 2, k, rel, v).unbind(1)  # [N, K, R, V] each
        diff = torch.tanh(q.unsqueeze(-2) - kk.unsqueeze(-1)).view(n, k, rel, v * v)  # [N, K, R, V*V]
        # xi (a 1x1 conv per subset) as one batched matrix product, equal to the grouped conv it replaces (whose
        # oneDNN backward was the largest single op in a CPU profile); a whole small-preset step: 1.05-1.08x.
        # R = A + alpha (W diff + b) = (alpha W) diff + (A + alpha b): alpha and A go into the small terms, so the
        # large [N, K, C_out, V, V] tensor takes one product and one add (the graph unit 1.09x, forward + backward)
        xi_w, xi_b = self._fused("xi")
        shared = self.A.to(x.dtype).view(k, 1, v * v) + (self.alpha * xi_b).view(k, cout, 1)  # [K, C_out, V*V]
        topology = (torch.matmul((self.alpha * xi_w).view(k, cout, rel), diff) + shared).view(n, k, cout, v, v)
        feats = F.conv2d(x, *self._fused("transform")).view(n, k, cout, t, v)
        y = torch.einsum("nkcvw,nkctv->nctw", topology, feats)
        return F.relu(self.bn(y) + self.down(x))


class MultiScaleTemporalConv(nn.Module):
    """Branches concatenated along channels: per dilation d [1x1 -> BN -> ReLU -> (k x 1) conv dilated d -> BN],
    [1x1 -> BN -> ReLU -> 3x1 max-pool -> BN], [1x1 (strided) -> BN]. Widths split C_out as evenly as possible.

    Stored and computed with the branches side by side, the same numbers in fewer, larger operations: the 1x1
    convs that open the branches as one conv (`squeeze`; with stride 1 the strided 1x1 branch `shortcut` joins
    it), their BNs as one BN over the stacked channels, and the BNs that close the branches as one BN (`bn`) over
    the concatenation (a BN is per channel, so stacking changes nothing). Folders saved with the earlier
    one-module-per-branch layout (`branches.i.j`) load through `_load_from_state_dict`."""

    def __init__(self, cin: int, cout: int, kernel: int = 5, stride: int = 1, dilations: tuple[int, ...] = (1, 2)):
        super().__init__()
        n = len(dilations) + 2
        self.widths = [cout // n + (1 if i < cout % n else 0) for i in range(n)]
        self.stride = stride
        opened = self.widths[:-1]  # the dilated branches and the max-pool branch open with 1x1 -> BN -> ReLU
        self.squeeze = nn.Conv2d(cin, sum(opened), 1)
        self.squeeze_bn = nn.BatchNorm2d(sum(opened))
        self.dilated = nn.ModuleList(nn.Conv2d(w, w, (kernel, 1), (stride, 1), ((kernel - 1) * d // 2, 0), (d, 1))
                                     for w, d in zip(opened, dilations, strict=False))
        self.pool = nn.MaxPool2d((3, 1), (stride, 1), (1, 0))
        self.shortcut = nn.Conv2d(cin, self.widths[-1], 1, (stride, 1))
        self.bn = nn.BatchNorm2d(cout)
        init_conv(self)
        with torch.no_grad():  # He (fan-out) per branch, as separate convs had it: the stacked conv's fan-out is larger
            for part in self.squeeze.weight.split(opened):
                nn.init.kaiming_normal_(part, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        opened = self.widths[:-1]
        if self.stride == 1:
            both = F.conv2d(x, torch.cat([self.squeeze.weight, self.shortcut.weight]),
                            torch.cat([self.squeeze.bias, self.shortcut.bias]))
            s, short = both.split([sum(opened), self.widths[-1]], 1)
        else:
            s, short = self.squeeze(x), self.shortcut(x)
        parts = F.relu(self.squeeze_bn(s)).split(opened, 1)
        outs = [conv(p) for conv, p in zip(self.dilated, parts, strict=False)]
        return self.bn(torch.cat([*outs, self.pool(parts[-1]), short], 1))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A state dict of the one-module-per-branch layout (`branches.i.0` the opening 1x1 conv, `.1` its BN,
        `.3` the dilated conv, `.4` the closing BN; the last branch `.0` conv, `.1` BN), stacked into this one."""
        old = f"{prefix}branches."
        if any(k.startswith(old) for k in state_dict):
            nd, last = len(self.dilated), len(self.widths) - 1
            take = {k: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(old)]}

            def stack(names: list[str], field: str) -> torch.Tensor:
                if field == "num_batches_tracked":
                    return take[f"{old}{names[0]}.{field}"]
                return torch.cat([take[f"{old}{n}.{field}"] for n in names])

            bn_fields = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
            opening = [f"{i}.0" for i in range(last)]
            for f in ("weight", "bias"):
                state_dict[f"{prefix}squeeze.{f}"] = stack(opening, f)
                state_dict[f"{prefix}shortcut.{f}"] = take[f"{old}{last}.0.{f}"]
                for i in range(nd):
                    state_dict[f"{prefix}dilated.{i}.{f}"] = take[f"{old}{i}.3.{f}"]
            for f in bn_fields:
                state_dict[f"{prefix}squeeze_bn.{f}"] = stack([f"{i}.1" for i in range(last)], f)
                state_dict[f"{prefix}bn.{f}"] = stack([f"{i}.4" for i in range(last)] + [f"{last}.1"], f)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CTRGCNBlock(nn.Module):
    def __init__(self, cin: int, cout: int, adjacency: torch.Tensor, stride: int, kernel: int,
                 dilations: tuple[int, ...], rel_reduction: int, residual: bool = True):
        super().__init__()
        self.gcn = CTRGraphConv(cin, cout, adjacency, rel_reduction)
        self.tcn = MultiScaleTemporalConv(cout, cout, kernel, stride, dilations)
        if not residual:
            self.res = None
        elif cin == cout and stride == 1:
            self.res = nn.Identity()
        else:
            self.res = TemporalConv(cin, cout, 1, stride)
            init_conv(self.res)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.tcn(self.gcn(x)) + (0 if self.res is None else self.res(x)))


class CTRGCN(nn.Module):
    """x [N, M, T, V, C] (+ body_mask [N, M]) -> logits [N, K], features [N, M, C', T', V]."""

    def __init__(self, num_classes: int, layout: str, dims: int, preset: str = "small", temporal_kernel: int = 5,
                 dilations: tuple[int, ...] = (1, 2), rel_reduction: int = 8, head_dropout: float = 0.0):
        super().__init__()
        adjacency = torch.from_numpy(spatial_partition(layout))
        self.data_bn = nn.BatchNorm1d(adjacency.shape[-1] * dims)
        blocks, cin = [], dims
        for i, (cout, stride) in enumerate(PRESETS[preset]):
            blocks.append(CTRGCNBlock(cin, cout, adjacency, stride, temporal_kernel, tuple(dilations), rel_reduction,
                                      residual=i > 0))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.drop = nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)
        nn.init.normal_(self.fc.weight, 0, (2.0 / num_classes) ** 0.5)  # the authors' classifier initialisation
        nn.init.zeros_(self.fc.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        n, m = x.shape[:2]
        x = data_norm(self.data_bn, x)
        for block in self.blocks:
            x = block(x)
        return x.view(n, m, *x.shape[1:])

    def forward(self, x: torch.Tensor, body_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.fc(self.drop(pool_bodies(f, body_mask))), f


class CTRGCNRecognizer(GCNClassifierRecognizer):
    """The `ctrgcn` recipe's recognizer: clip preprocessing + CTRGCN, saved as config.json + model.safetensors."""

    recipe = "ctrgcn"
    config_cls = CTRGCNConfig

    def build_net(self) -> CTRGCN:
        c = self.cfg
        return CTRGCN(len(self.class_names), self.layout, self.dims, c.preset, c.temporal_kernel, tuple(c.dilations),
                      c.rel_reduction, c.head_dropout)
