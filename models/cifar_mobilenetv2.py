"""MobileNet-v2 for 32x32 inputs, registered with timm as ``cifar_mobilenetv2``.

The architecture of Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (CVPR 2018,
arXiv:1801.04381), in the CIFAR adaptation of github.com/kuangliu/pytorch-cifar (``models/mobilenetv2.py``):
the CIFAR MobileNet-v2 of the MEST (Yuan et al., NeurIPS 2021) setting that this project reproduces. The
adaptation differs from the ImageNet network in ways that change both accuracy and weight count, so it
is reproduced as is rather than "fixed":

* the stem conv and the first stride-2 stage (24 channels) use stride 1, so a 32x32 image is downsampled
  only 8x, to a 4x4 map, which global (4x4) average pooling reduces before ``Linear(1280, num_classes)``;
* every block, including the expansion-1 block, has the 1x1 expansion conv (the paper omits it for t=1);
* a stride-1 block whose input and output widths differ gets a residual through a 1x1 conv + BN
  projection (``shortcut``) where the paper has no residual at all; stride-2 blocks have no residual;
* activations are ReLU, not ReLU6;
* weights keep PyTorch's default initialisation (the reference sets none).

Module names equal the reference's (``conv1``/``bn1``, ``layers.<i>.{conv1,bn1,conv2,bn2,conv3,bn3}``,
``layers.<i>.shortcut.{0,1}``, ``conv2``/``bn2``, ``linear``), so reference checkpoints load unchanged.
The 1x1 projection shortcuts are four convs (blocks 0, 1, 10 and 16) in a submodule named ``shortcut``, so
code that treats shortcut layers specially can find them by name.

Stage table (expansion t, output channels c, blocks n, stride of the first block s), from the reference::

    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from dstbench.data.catalog import CIFAR10_MEAN, CIFAR10_STD

from .generic_kwargs import consume_generic_kwargs
from .width import pop_multiplier, scale_width

__all__ = ["CifarMobileNetV2", "InvertedResidual", "MOBILENETV2_CIFAR_CFG", "cifar_mobilenetv2"]

# GraSP/MEST/kuangliu CIFAR-10 normalisation (per-image std, not dataset-wide std); see cifar_resnet.py.

# (expansion, out_channels, num_blocks, first_stride)
StageCfg = tuple[int, int, int, int]
MOBILENETV2_CIFAR_CFG: tuple[StageCfg, ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 in the paper; 1 for 32x32 inputs
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1), with the reference's residual rule.

    ``shortcut`` is ``None`` for stride-2 blocks (no residual), ``nn.Identity`` for stride-1 blocks with
    equal widths and a 1x1 conv + BN ``nn.Sequential`` for stride-1 blocks whose width changes.
    """

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        planes = expansion * in_planes
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module | None
        if stride != 1:
            self.shortcut = None
        elif in_planes == out_planes:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


class CifarMobileNetV2(nn.Module):
    """kuangliu/pytorch-cifar MobileNet-v2: stride-1 stem, 17 inverted-residual blocks, 1x1 conv to 1280.

    Args:
        cfg: stage table of ``(expansion, out_channels, num_blocks, first_stride)``.
        stem_width: stem conv output channels.
        num_features: channels of the last 1x1 conv (the classifier input).
        num_classes: classifier outputs; 0 replaces the classifier with ``nn.Identity`` (timm convention).
        in_chans: input channels.
        device, dtype: where and how to allocate the parameters.
        **kwargs: timm's generic options (``drop_rate``, ...), accepted and ignored.
    """

    def __init__(
        self,
        cfg: Sequence[StageCfg] = MOBILENETV2_CIFAR_CFG,
        stem_width: int = 32,
        num_features: int = 1280,
        num_classes: int = 10,
        in_chans: int = 3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        consume_generic_kwargs(type(self).__name__, kwargs)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = num_features

        self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        blocks: list[nn.Module] = []
        in_planes = stem_width
        for expansion, out_planes, num_blocks, first_stride in cfg:
            for i in range(num_blocks):
                blocks.append(InvertedResidual(in_planes, out_planes, expansion, first_stride if i == 0 else 1))
                in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(in_planes, num_features, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(num_features)
        self.linear: nn.Module = self._make_classifier(num_classes)

        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        return nn.Linear(self.num_features, num_classes)

    def get_classifier(self) -> nn.Module:
        """The classification head (``linear``), as timm models expose it."""
        return self.linear

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a freshly (PyTorch-default) initialised one for ``num_classes`` (0: none).

        ``global_pool`` exists for timm signature compatibility; only average pooling is supported.
        """
        if global_pool not in (None, "avg"):
            raise ValueError(f"only global_pool='avg' is supported, got {global_pool!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        ref = self.conv1.weight
        self.num_classes = num_classes
        self.linear = self._make_classifier(num_classes).to(device=ref.device, dtype=ref.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, blocks and the final 1x1 conv: a ``num_features`` x 4 x 4 map for a 32x32 input."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return F.relu(self.bn2(self.conv2(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling (the reference's 4x4 pooling at 32x32), then the classifier."""
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        if not pre_logits:
            x = self.linear(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """timm pretrained-cfg for a CIFAR-10 model without weights: 32x32 input, CIFAR-10 normalisation."""
    return {
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "first_conv": "conv1",
        "classifier": "linear",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "cifar_mobilenetv2": _cfg(
            paper_ids="arXiv:1801.04381",
            paper_name="MobileNetV2: Inverted Residuals and Linear Bottlenecks",
            origin_url="https://github.com/kuangliu/pytorch-cifar",
        ),
    }
)


def _create_cifar_mobilenetv2(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarMobileNetV2:
    if pretrained:
        raise ValueError(f"{variant}: no pretrained weights exist; create it with pretrained=False")
    if kwargs.pop("features_only", False):
        raise ValueError(f"{variant}: features_only is not supported; use forward_features() instead")
    multiplier = pop_multiplier(variant, kwargs)
    if multiplier != 1.0:
        stages = kwargs.get("cfg", MOBILENETV2_CIFAR_CFG)
        kwargs["cfg"] = tuple((e, scale_width(c, multiplier), n, s) for e, c, n, s in stages)
        kwargs["stem_width"] = scale_width(kwargs.get("stem_width", 32), multiplier)
        kwargs["num_features"] = scale_width(kwargs.get("num_features", 1280), multiplier)
    return build_model_with_cfg(CifarMobileNetV2, variant, pretrained=False, **kwargs)


@register_model
def cifar_mobilenetv2(pretrained: bool = False, **kwargs: Any) -> CifarMobileNetV2:
    """kuangliu/pytorch-cifar (MEST) MobileNet-v2 for 32x32 inputs; see the module docstring."""
    return _create_cifar_mobilenetv2("cifar_mobilenetv2", pretrained, **kwargs)
