"""CIFAR ResNets, registered with timm: ``cifar_resnet32`` and ``cifar_resnet32_grasp``.

Two networks share the name "ResNet-32" in the sparse-training literature and differ by a factor of four
in size, so results quoted for one are not comparable with the other. Both are provided, under distinct
names, and each is built exactly as its source builds it:

``cifar_resnet32``
    The CIFAR ResNet of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016,
    arXiv:1512.03385), section 4.2: a 3x3 stem with 16 filters, three stages of ``n = 5`` basic blocks
    with 16/32/64 filters (the first block of stages 2 and 3 halves the feature map with stride 2),
    global average pooling and one fully-connected layer. The shortcuts are the paper's option A: they
    carry no parameters; where the shape changes the input is subsampled with stride 2 and the new
    channels are zeros. 0.46M parameters, the figure in the paper's Table 6.

``cifar_resnet32_grasp``
    The "ResNet-32" of Wang et al., "Picking Winning Tickets Before Training by Preserving Gradient Flow"
    (GraSP, ICLR 2020; github.com/alecwangcq/GraSP, ``models/base/resnet.py``). MEST (Yuan et al.,
    NeurIPS 2021; github.com/boone891214/MEST, ``models/resnet32_cifar10_grasp.py``) and BiDST reuse it
    unchanged, which is why DST papers comparing against them must use it too. It doubles every width
    (32/64/128) and uses projection shortcuts, a 1x1 convolution followed by BatchNorm (option B), in the
    two blocks where the shape changes. About 1.86M parameters. The reference code names the shortcut
    ``downsample.0`` + ``bn3``, the stem BatchNorm ``bn`` and the classifier ``linear``; here they are
    ``shortcut.0`` + ``shortcut.1``, ``bn1`` and ``fc`` (timm's names), so reference checkpoints need
    their keys renamed but every tensor has the same shape and meaning.

Both models keep the forward order equal to the module registration order (stem, ``layer1``..``layer3``,
``fc``; inside a block ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``shortcut``): code that walks
``named_modules()`` to find prunable layers therefore sees them in the order data flows through them.

timm-compatible: ``timm.create_model(name, num_classes=...)`` works once ``dstbench.models`` is imported,
the models expose ``num_classes``, ``num_features``, ``get_classifier()``, ``reset_classifier()``,
``forward_features()`` and ``forward_head()``. There are no pretrained weights; ``pretrained=True`` is an
error rather than a silent random initialisation.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from dstbench.data.catalog import CIFAR10_MEAN, CIFAR10_STD

from .generic_kwargs import consume_generic_kwargs
from .width import pop_multiplier, scale_width

__all__ = ["CifarResNet", "BasicBlock", "ZeroPadShortcut", "cifar_resnet32", "cifar_resnet32_grasp"]

# The pretrained-cfg quotes the normalisation the loaders apply (``dstbench.data.catalog``, the one place
# it lives). GraSP/MEST normalise with the mean per-image std (0.2023, 0.1994, 0.2010) instead of the
# dataset-wide one used here: a fixed per-channel input scale of about 0.82, which the BatchNorm after the
# first convolution absorbs.

ShortcutType = Literal["A", "B"]
InitScheme = Literal["he", "grasp"]


class ZeroPadShortcut(nn.Module):
    """He et al.'s option-A shortcut: identity, subsampled by ``stride``, with zero channels appended.

    Parameter-free by design: the paper uses it so that the residual network has exactly as many weights
    as its plain counterpart. The zero channels are split evenly before and after the input channels, as
    in the PyTorch reproduction most sparse-training code uses (github.com/akamaster/pytorch_resnet_cifar10);
    fb.resnet.torch appends them instead. The paper does not say where they go, and it does not matter:
    the placements give the same networks up to a permutation of channels, and the i.i.d. initialisation
    makes them equal in distribution.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"option-A shortcut cannot drop channels ({in_planes} -> {out_planes})")
        self.stride = stride
        self.pad_before = (out_planes - in_planes) // 2
        self.pad_after = out_planes - in_planes - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut, ReLU after the sum (He et al. 2016, Fig. 2 left).

    ``shortcut`` is ``nn.Identity`` when the shape is unchanged; otherwise option A (parameter-free) or
    option B (1x1 conv + BN projection). It is registered after ``bn2`` so registration order matches
    the order of the reference implementations' state dicts.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: ShortcutType) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        out = self.act2(out)
        return out


class CifarResNet(nn.Module):
    """A three-stage CIFAR ResNet of basic blocks; the stem keeps the 32x32 resolution.

    Args:
        layers: blocks per stage (``(5, 5, 5)`` gives depth ``6 * 5 + 2 = 32``).
        widths: output channels of the stem/stage 1, stage 2 and stage 3.
        shortcut: ``"A"`` (parameter-free, He et al.) or ``"B"`` (1x1 conv + BN projection, GraSP).
        init: ``"he"``: conv weights He-normal with ``fan_out`` (the recipe of fb.resnet.torch, the
            Torch reproduction the authors point to, and of torchvision), BN 1/0, the classifier keeps
            PyTorch's default weight init and gets a zero bias. ``"grasp"``: GraSP's ``weights_init``:
            the same conv and BN init, classifier weight ~ N(0, 0.01) with zero bias.
        num_classes: classifier outputs; 0 replaces the classifier with ``nn.Identity`` (timm convention).
        in_chans: input channels.
        device, dtype: where and how to allocate the parameters.
        **kwargs: timm's generic options (``drop_rate``, ``drop_path_rate``, ...), accepted and ignored.
    """

    def __init__(
        self,
        layers: tuple[int, int, int] = (5, 5, 5),
        widths: tuple[int, int, int] = (16, 32, 64),
        shortcut: ShortcutType = "A",
        init: InitScheme = "he",
        num_classes: int = 10,
        in_chans: int = 3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        consume_generic_kwargs(type(self).__name__, kwargs)
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if init not in ("he", "grasp"):
            raise ValueError(f"init must be 'he' or 'grasp', got {init!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = widths[-1]
        self.init_scheme: InitScheme = init

        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        in_planes = widths[0]
        stages: list[nn.Sequential] = []
        for stage_idx, (num_blocks, planes) in enumerate(zip(layers, widths)):
            blocks: list[nn.Module] = []
            for block_idx in range(num_blocks):
                stride = 2 if stage_idx > 0 and block_idx == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc: nn.Module = self._make_classifier(num_classes)

        self.apply(self._init_weights)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        return nn.Linear(self.num_features, num_classes)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if self.init_scheme == "grasp":
                nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)

    def get_classifier(self) -> nn.Module:
        """The classification head (``fc``), as timm models expose it."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` (0: no head).

        ``global_pool`` exists for timm signature compatibility; only average pooling is supported.
        """
        if global_pool not in (None, "avg"):
            raise ValueError(f"only global_pool='avg' is supported, got {global_pool!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        ref = self.conv1.weight
        self.num_classes = num_classes
        self.fc = self._make_classifier(num_classes).to(device=ref.device, dtype=ref.dtype)
        self.fc.apply(self._init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the three stages: the unpooled last feature map (``num_features`` channels)."""
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling, then the classifier unless ``pre_logits``."""
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        if not pre_logits:
            x = self.fc(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """timm pretrained-cfg for a CIFAR-10 model without weights: 32x32 input, CIFAR-10 normalisation."""
    return {
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (8, 8),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "cifar_resnet32": _cfg(
            paper_ids="arXiv:1512.03385",
            paper_name="Deep Residual Learning for Image Recognition",
            origin_url="https://github.com/facebook/fb.resnet.torch",
        ),
        "cifar_resnet32_grasp": _cfg(
            paper_ids="arXiv:2002.07376",
            paper_name="Picking Winning Tickets Before Training by Preserving Gradient Flow",
            origin_url="https://github.com/alecwangcq/GraSP",
        ),
    }
)


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    if pretrained:
        raise ValueError(f"{variant}: no pretrained weights exist; create it with pretrained=False")
    if kwargs.pop("features_only", False):
        raise ValueError(f"{variant}: features_only is not supported; use forward_features() instead")
    multiplier = pop_multiplier(variant, kwargs)
    kwargs["widths"] = tuple(scale_width(w, multiplier) for w in kwargs["widths"])
    return build_model_with_cfg(CifarResNet, variant, pretrained=False, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """He et al. (2016) CIFAR ResNet-32: widths 16/32/64, 5 blocks per stage, option-A shortcuts."""
    model_args: dict[str, Any] = dict(layers=(5, 5, 5), widths=(16, 32, 64), shortcut="A", init="he")
    return _create_cifar_resnet("cifar_resnet32", pretrained, **dict(model_args, **kwargs))


@register_model
def cifar_resnet32_grasp(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """GraSP/MEST/BiDST ResNet-32: widths 32/64/128, 5 blocks per stage, 1x1-conv projection shortcuts."""
    model_args: dict[str, Any] = dict(layers=(5, 5, 5), widths=(32, 64, 128), shortcut="B", init="grasp")
    return _create_cifar_resnet("cifar_resnet32_grasp", pretrained, **dict(model_args, **kwargs))
