"""Skeleton graphs for graph-convolution baselines, built from a registered layout's bones.

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

from actionllm.skeleton.layouts import Layout, get_layout

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
