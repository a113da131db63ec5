"""ST-GCN (Yan, Xiong, Lin, AAAI 2018), the yardstick every seed paper compares against, as PYSKL builds it.

Network: data BatchNorm over (joints x coords) -> blocks of [graph conv over the 3-partition adjacency
(actionllm.baselines.graph) with learnable edge importance -> BN -> ReLU -> temporal conv (k=9) -> BN] + residual
-> ReLU -> global average pool over time and joints -> mean over bodies -> linear classifier.
'standard' is the paper's 10 blocks (64x4, 128x3, 256x3; temporal stride 2 entering 128 and 256 channels);
'small' is 6 blocks (32x2, 64x2, 128x2) for CPU runs.

Input preprocessing (ClipEncoder, run by Ray Data actors in training, called directly at inference): keep
up to `max_bodies` bodies; (training) random temporal crop; centre on the body centre (shoulder midpoint of
body 0, per frame as PYSKL's PreNormalize3D, or of the first frame); (training) random rotation / scale /
shear; uniform temporal sampling to a fixed number of frames (PYSKL's UniformSampleFrames).

Explanations are class activation maps (CAM, Zhou et al. CVPR 2016) of the predicted class over the last
block's (time, joint) grid, read back as weights over the window's frames and over the joints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from actionllm.heads import classification_loss
from actionllm.recipes import get_recipe
from actionllm.recognizer import RecognizerBase, read_config
from actionllm.skeleton.augment import augment_sequence, crop_bounds, uniform_sample_indices
from actionllm.skeleton.layouts import get_layout
from actionllm.skeleton.transforms import body_centre

from .graph import graph_centre, spatial_partition

PRESETS: dict[str, list[tuple[int, int]]] = {  # (out channels, temporal stride) per block
    "standard": [(64, 1)] * 4 + [(128, 2), (128, 1), (128, 1), (256, 2), (256, 1), (256, 1)],
    "small": [(32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)],
}
WEIGHTS = "model.safetensors"


# --- preprocessing -----------------------------------------------------------------------------------------
def centre_indices(layout: str) -> tuple[int, int] | int:
    """(left, right) shoulder indices for the shoulder midpoint, or the graph centre joint if a layout lacks them."""
    lay = get_layout(layout)
    if "left_shoulder" in lay.joints and "right_shoulder" in lay.joints:
        return lay.index("left_shoulder"), lay.index("right_shoulder")
    return graph_centre(lay)


def centre_joints(joints: np.ndarray, layout: str, mode: str) -> np.ndarray:
    """Subtract body 0's centre (per frame or of the first frame) from every valid joint of every body."""
    if mode == "none":
        return joints
    idx = centre_indices(layout)
    centre = body_centre(joints[0], *idx) if isinstance(idx, tuple) else joints[0, :, idx]  # [T, C]
    if mode == "first":
        centre = np.broadcast_to(centre[:1], centre.shape)
    valid = np.any(joints != 0, axis=-1, keepdims=True)
    return np.where(valid, joints - centre[None, :, None, :], 0.0).astype(np.float32)


def prepare_clip(joints: np.ndarray, cfg, layout: str, rng: np.random.Generator | None = None,
                 augment: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One window/sequence [M, N, V, C] -> the network's clip [M', frames, V, C] and the source frame index of
    each clip frame. `rng` None = deterministic (evaluation, serving); `augment` applies cfg.augment."""
    joints = np.asarray(joints, np.float32)
    if joints.ndim == 3:
        joints = joints[None]
    joints = joints[: cfg.clip.max_bodies]
    offset = np.arange(joints.shape[1])
    if augment and rng is not None and cfg.augment.crop < 1.0:
        start, keep = crop_bounds(joints.shape[1], cfg.augment.crop, rng)
        joints, offset = joints[:, start:start + keep], offset[start:start + keep]
    joints = centre_joints(joints, layout, cfg.clip.centre)
    if augment and rng is not None:
        joints = augment_sequence(joints, cfg.augment.model_copy(update={"crop": 1.0}), rng)
    idx = uniform_sample_indices(joints.shape[1], cfg.clip.frames, rng if augment else None)
    return np.ascontiguousarray(joints[:, idx]), offset[idx]


class ClipEncoder:
    """Ray Data `map_batches` callable: window rows -> fixed-length clips (augmented when `train`)."""

    def __init__(self, config: dict, layout: str, dims: int, recipe: str = "stgcn", train: bool = False,
                 seed: int | None = None, tokenizer=None):
        self.cfg = get_recipe(recipe).config_cls.model_validate(config)
        self.layout, self.dims, self.train = layout, int(dims), train
        self.rng = np.random.default_rng(seed)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        clips = []
        for i in range(len(batch["joints"])):
            m, n, c = int(batch["num_bodies"][i]), int(batch["num_frames"][i]), int(batch["dims"][i])
            joints = np.asarray(batch["joints"][i], np.float32).reshape(m, n, -1, c)
            clip, _ = prepare_clip(joints, self.cfg, self.layout, self.rng if self.train else None,
                                   augment=self.train and self.cfg.augment.active)
            clips.append(clip)
        out = {k: batch[k] for k in ("label", "source_id", "window_start") if k in batch}
        x = np.empty(len(clips), dtype=object)
        x[:] = clips
        out["x"] = x
        out["bodies"] = np.asarray([c.shape[0] for c in clips], np.int64)
        return out


class ClipCollate:
    """Clips of varying body counts -> x [B, M, T, V, C] (zero-padded bodies) + body_mask [B, M] (+ labels)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        clips = [np.asarray(c, np.float32) for c in batch["x"]]
        m = max(c.shape[0] for c in clips)
        x = np.zeros((len(clips), m, *clips[0].shape[1:]), np.float32)
        mask = np.zeros((len(clips), m), np.float32)
        for i, c in enumerate(clips):
            x[i, : c.shape[0]] = c
            mask[i, : c.shape[0]] = 1.0
        out = {"x": torch.from_numpy(x), "body_mask": torch.from_numpy(mask)}
        if "label" in batch:
            out["labels"] = torch.from_numpy(np.array(batch["label"], np.int64))
        return out


# --- network -----------------------------------------------------------------------------------------------
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


class STGCN(nn.Module):
    """x [N, M, T, V, C] (+ body_mask [N, M]) -> logits [N, K], features [N, M, C', T', V]."""

    def __init__(self, num_classes: int, layout: str, dims: int, preset: str = "small", temporal_kernel: int = 9,
                 dropout: float = 0.0, head_dropout: float = 0.0, edge_importance: bool = True):
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
        self.drop = nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        n, m, t, v, c = x.shape
        x = x.permute(0, 1, 3, 4, 2).reshape(n * m, v * c, t)
        x = self.data_bn(x).view(n * m, v, c, t).permute(0, 2, 3, 1).contiguous()  # [N*M, C, T, V]
        for block in self.blocks:
            x = block(x)
        return x.view(n, m, *x.shape[1:])

    def forward(self, x: torch.Tensor, body_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        pooled = f.mean(dim=(3, 4))  # [N, M, C']
        if body_mask is None:
            body_mask = torch.ones(pooled.shape[:2], device=x.device, dtype=pooled.dtype)
        w = body_mask.to(pooled.dtype).unsqueeze(-1)
        pooled = (pooled * w).sum(1) / w.sum(1).clamp(min=1)
        return self.fc(self.drop(pooled)), f


# --- recognizer --------------------------------------------------------------------------------------------
class STGCNRecognizer(RecognizerBase):
    """The `stgcn` recipe's recognizer: ClipEncoder preprocessing + STGCN, saved as config.json + weights."""

    explanation = "class activation (CAM)"

    def __init__(self, config: dict, class_names: list[str], layout: str, dims: int, *, recipe: str = "stgcn",
                 seed: int = 0, device: str = "cpu", **_ignored):
        super().__init__()
        self.recipe = recipe
        self.cfg = get_recipe(recipe).config_cls.model_validate(config)
        self.class_names, self.layout, self.dims = list(class_names), layout, int(dims)
        torch.manual_seed(seed)
        self.net = STGCN(len(class_names), layout, self.dims, self.cfg.preset, self.cfg.temporal_kernel,
                         self.cfg.dropout, self.cfg.head_dropout, self.cfg.edge_importance)
        self.encoder = ClipEncoder(self.cfg.model_dump(), layout, dims, recipe=recipe)

    def forward(self, x, body_mask=None, labels=None, class_weights=None) -> dict:
        logits, feats = self.net(x, body_mask)
        out = {"logits": logits, "features": feats}
        if labels is not None:
            out["loss"] = classification_loss(logits, labels, class_weights)
        return out

    def collate_fn(self) -> ClipCollate:
        return ClipCollate()

    def load_weights(self, folder: str | Path) -> None:
        self.net.load_state_dict(load_file(str(Path(folder) / WEIGHTS)))

    def class_activation(self, feats: torch.Tensor, classes: torch.Tensor, body_mask: torch.Tensor) -> torch.Tensor:
        """CAM of `classes` [N] over the last block's grid: relu(sum_c W[k, c] f[c, t, v]), bodies averaged."""
        w = self.net.fc.weight[classes]  # [N, C']
        cam = F.relu(torch.einsum("nc,nmctv->nmtv", w.to(feats.dtype), feats))
        bm = body_mask.to(cam.dtype)[..., None, None]
        return (cam * bm).sum(1) / bm.sum(1).clamp(min=1)  # [N, T', V]

    @torch.no_grad()
    def predict_windows(self, windows: list[np.ndarray], batch_size: int = 32) -> dict:
        was_training = self.training
        self.eval()
        device = self.net.fc.weight.device
        probs, frame_w, joint_w = [], [], []
        collate = ClipCollate()
        for s in range(0, len(windows), batch_size):
            chunk = windows[s:s + batch_size]
            clips = [prepare_clip(w, self.cfg, self.layout) for w in chunk]
            x = np.empty(len(clips), dtype=object)
            x[:] = [c for c, _ in clips]
            batch = collate({"x": x})
            out = self(batch["x"].to(device), batch["body_mask"].to(device))
            p = torch.softmax(out["logits"].float(), -1)
            probs.append(p.cpu().numpy())
            cam = self.class_activation(out["features"].float(), p.argmax(-1), batch["body_mask"].to(device))
            for k, (win, (_, src)) in enumerate(zip(chunk, clips, strict=True)):
                fw, jw = self._read_back(cam[k].cpu().numpy(), src, np.asarray(win).shape[-3])
                frame_w.append(fw)
                joint_w.append(jw)
        self.train(was_training)
        return {"probabilities": np.concatenate(probs) if probs else np.zeros((0, len(self.class_names))),
                "frame_weights": frame_w, "joint_weights": joint_w, "joint_names": list(get_layout(self.layout).joints),
                "tokens": 0}

    def _read_back(self, cam: np.ndarray, source_frames: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """CAM [T', V] -> weights over the window's n_frames source frames and over its joints (each sums to 1)."""
        per_clip_frame = np.interp(np.linspace(0, cam.shape[0] - 1, len(source_frames)), np.arange(cam.shape[0]),
                                   cam.sum(1))
        frames, inverse = np.unique(source_frames, return_inverse=True)
        sums = np.bincount(inverse, weights=per_clip_frame, minlength=len(frames))
        counts = np.bincount(inverse, minlength=len(frames))
        fw = np.interp(np.arange(n_frames), frames, sums / counts) if len(frames) > 1 else np.ones(n_frames)
        jw = cam.sum(0)
        return (fw / max(fw.sum(), 1e-12)).astype(np.float32), (jw / max(jw.sum(), 1e-12)).astype(np.float32)

    def save(self, folder: str | Path) -> Path:
        import json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {**self.base_meta(), "joint_names": list(get_layout(self.layout).joints), "weights": WEIGHTS,
                "parameters": sum(p.numel() for p in self.net.parameters())}
        (folder / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}, str(folder / WEIGHTS))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", shared: dict | None = None) -> STGCNRecognizer:
        """`shared` is accepted for the common signature: an ST-GCN has no base model to share."""
        meta = read_config(folder)
        rec = cls(meta["config"], meta["class_names"], meta["layout"], meta["dims"], recipe=meta["recipe"])
        rec.load_weights(folder)
        return rec.to(device).eval()
