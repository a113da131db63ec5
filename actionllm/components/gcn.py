"""Graph convolution over skeletons: the graph partition built from a registered layout's bones, and the
ST-GCN blocks (`GCNEncoder`: data BN -> blocks, keeping the time and joint axes) that GCN methods build on.

ST-GCN's spatial-configuration partition (Yan, Xiong, Lin, AAAI 2018, sec. 3.6, Fig. 3d): the 1-hop
neighbourhood of a root joint w is split into three subsets by the distance r of each joint to the
skeleton's centre (the paper's "centre of gravity"):

  0  root:        v = w, and neighbours as far from the centre as the root   (r_v == r_w)
  1  centripetal: neighbours closer to the centre than the root               (r_v <  r_w)
  2  centrifugal: neighbours farther from the centre than the root            (r_v >  r_w)

Degree normalisation as the reference code (`normalize_digraph`): every entry of the 1-hop adjacency
(self-loops included) is divided by the degree of the receiving joint, so A[v, w] = 1/deg(w) and the three
partitions sum to a column-stochastic matrix: joint w averages its neighbourhood. `A[k, v, w]` is the weight
of the message from joint v to joint w (`einsum('nkctv,kvw->nctw')`).

r is the true hop distance along the bones (breadth-first). The reference implementations compute it with
`max_hop=1`, which makes every joint beyond one hop "infinitely" far and puts most neighbour pairs in the root
subset; the paper's definition is used here.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..skeleton.layouts import Layout, get_layout

# The centre joint per skeleton family, in order of preference: NTU's spine_shoulder (ST-GCN's NTU graph
# centre, joint 21), Kinect v1's shoulder_center, OpenPose's neck (ST-GCN's Kinetics graph centre), COCO's
# nose (PYSKL's coco graph centre). A layout with none of them uses its graph centre (min eccentricity).
CENTRE_PREFERENCE = ("spine_shoulder", "shoulder_center", "neck", "nose")


def adjacency(layout: Layout) -> np.ndarray:
    """Symmetric 0/1 bone adjacency [V, V], no self-loops."""
    v = layout.num_joints
    a = np.zeros((v, v), np.float64)
    for i, j in layout.bone_index:
        a[i, j] = a[j, i] = 1.0
    return a


def hop_distances(adj: np.ndarray, source: int) -> np.ndarray:
    """Breadth-first hop distance from `source` to every joint (inf where unreachable)."""
    dist = np.full(len(adj), np.inf)
    dist[source] = 0
    queue = deque([source])
    while queue:
        u = queue.popleft()
        for w in np.flatnonzero(adj[u]):
            if dist[w] == np.inf:
                dist[w] = dist[u] + 1
                queue.append(w)
    return dist


def graph_centre(layout: Layout) -> int:
    """Index of the centre joint (see CENTRE_PREFERENCE)."""
    for name in CENTRE_PREFERENCE:
        if name in layout.joints:
            return layout.index(name)
    adj = adjacency(layout)
    ecc = [hop_distances(adj, i).max() for i in range(layout.num_joints)]
    return int(np.argmin(ecc))


def normalize_digraph(a: np.ndarray) -> np.ndarray:
    """A D^-1: column w divided by its degree (columns of zeros stay zero)."""
    deg = a.sum(0)
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    return a * inv[None, :]


def spatial_partition(layout: Layout | str, centre: int | None = None) -> np.ndarray:
    """ST-GCN spatial-configuration partition: float32 [3, V, V] (root, centripetal, centrifugal)."""
    layout = get_layout(layout) if isinstance(layout, str) else layout
    adj = adjacency(layout)
    centre = graph_centre(layout) if centre is None else centre
    r = hop_distances(adj, centre)
    norm = normalize_digraph(adj + np.eye(layout.num_joints))
    parts = np.zeros((3, layout.num_joints, layout.num_joints), np.float64)
    for v, w in zip(*np.nonzero(norm), strict=True):
        if v == w or r[v] == r[w]:  # inf == inf: two joints cut off from the centre are 'as far'
            parts[0, v, w] = norm[v, w]
        elif r[v] < r[w]:
            parts[1, v, w] = norm[v, w]
        else:
            parts[2, v, w] = norm[v, w]
    return parts.astype(np.float32)


# --- ST-GCN blocks (Yan, Xiong, Lin, AAAI 2018, as PYSKL builds them) -------------------------------------------
PRESETS: dict[str, list[tuple[int, int]]] = {  # (out channels, temporal stride) per block
    "standard": [(64, 1)] * 4 + [(128, 2), (128, 1), (128, 1), (256, 2), (256, 1), (256, 1)],
    "small": [(32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)],
}


class GraphConv(nn.Module):
    """Spatial graph convolution: 1x1 conv to K partitions, aggregation by A_k (x edge importance), BN, ReLU."""

    def __init__(self, cin: int, cout: int, adjacency: torch.Tensor, edge_importance: bool):
        super().__init__()
        self.k = adjacency.shape[0]
        self.register_buffer("A", adjacency.clone())
        self.importance = nn.Parameter(torch.ones_like(adjacency)) if edge_importance else None
        self.conv = nn.Conv2d(cin, cout * self.k, 1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, t, v = x.shape
        y = self.conv(x).view(n, self.k, -1, t, v)
        a = self.A * self.importance if self.importance is not None else self.A
        return F.relu(self.bn(torch.einsum("nkctv,kvw->nctw", y, a.to(y.dtype))))


class TemporalConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, (kernel, 1), padding=((kernel - 1) // 2, 0), stride=(stride, 1))
        self.bn = nn.BatchNorm2d(cout)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn(self.conv(x)))


class STGCNBlock(nn.Module):
    def __init__(self, cin: int, cout: int, adjacency: torch.Tensor, stride: int, kernel: int, dropout: float,
                 edge_importance: bool, residual: bool = True):
        super().__init__()
        self.gcn = GraphConv(cin, cout, adjacency, edge_importance)
        self.tcn = TemporalConv(cout, cout, kernel, stride, dropout)
        if not residual:
            self.res = None
        elif cin == cout and stride == 1:
            self.res = nn.Identity()
        else:
            self.res = TemporalConv(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = 0 if self.res is None else self.res(x)
        return F.relu(self.tcn(self.gcn(x)) + res)


def data_norm(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Clips x [N, M, T, V, C] -> [N*M, C, T, V], batch-normalised per (joint, coordinate) over frames and bodies
    (PYSKL's data_bn_type 'VC': bodies share statistics, so a clip may hold any number of them)."""
    n, m, t, v, c = x.shape
    x = bn(x.permute(0, 1, 3, 4, 2).reshape(n * m, v * c, t))
    return x.view(n * m, v, c, t).permute(0, 2, 3, 1).contiguous()


class GCNEncoder(nn.Module):
    """x [N, M, T, V, C] -> features [N, M, C', T', V]: data BatchNorm over (joints x coords), then ST-GCN blocks
    (no pooling: a classifier pools over time and joints, a sequence encoder keeps the time axis)."""

    def __init__(self, layout: str, dims: int, preset: str = "small", temporal_kernel: int = 9,
                 dropout: float = 0.0, edge_importance: bool = True):
        super().__init__()
        adjacency = torch.from_numpy(spatial_partition(layout))
        v = adjacency.shape[-1]
        self.data_bn = nn.BatchNorm1d(v * dims)  # PYSKL's data_bn_type 'VC' (bodies share statistics)
        blocks, cin = [], dims
        for i, (cout, stride) in enumerate(PRESETS[preset]):
            blocks.append(STGCNBlock(cin, cout, adjacency, stride, temporal_kernel, dropout, edge_importance,
                                     residual=i > 0))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = cin
        self.strides = [stride for _, stride in PRESETS[preset]]

    def frames_out(self, frames: int) -> int:
        """T' of the output for T input frames (each temporal conv pads to keep the length, then strides)."""
        for stride in self.strides:
            frames = (frames - 1) // stride + 1
        return frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, m = x.shape[:2]
        x = data_norm(self.data_bn, x)
        for block in self.blocks:
            x = block(x)
        return x.view(n, m, *x.shape[1:])
