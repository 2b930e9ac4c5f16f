"""CIFAR VGG-19 as GraSP, MEST and BiDST build it, registered with timm as ``cifar_vgg19``.

This is not torchvision's ``vgg19_bn``: there is no 4096-4096 MLP head. The network of Wang et al.,
"Picking Winning Tickets Before Training by Preserving Gradient Flow" (GraSP, ICLR 2020;
github.com/alecwangcq/GraSP, ``models/base/vgg.py``), reused verbatim by MEST (Yuan et al., NeurIPS 2021;
github.com/boone891214/MEST, ``models/vgg_grasp.py``) and BiDST, is the 16 VGG-19 convolutions of
Simonyan & Zisserman (ICLR 2015, arXiv:1409.1556), each 3x3 with padding 1, *without bias* and followed
by BatchNorm and ReLU, with 2x2 max pooling between the five groups, then a 2x2 average pooling (the map is
2x2 after four poolings of a 32x32 image, so this is global pooling) and a single ``Linear(512,
num_classes)``. About 20.0M weights, almost all of them in the 512-channel convolutions: the layer-wise
sparsity distribution matters more here than on the ResNets.

Module names follow the reference because sparsity profiles refer to layers by name: the conv layers
are ``features.0``, ``features.3``, ``features.7``, ... ``features.49`` (conv, BN, ReLU triplets plus one
index per max pooling) and the head is ``classifier``. Reference checkpoints load with ``strict=True``.

Initialisation is GraSP's ``weights_init``: conv He-normal with ``fan_out``, BN weight 1 and bias 0,
classifier weight N(0, 0.01) and bias 0.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from dstbench.data.catalog import CIFAR10_MEAN, CIFAR10_STD

from .generic_kwargs import consume_generic_kwargs
from .width import pop_multiplier, scale_width

__all__ = ["CifarVGG", "VGG19_CFG", "cifar_vgg19"]

# GraSP/MEST CIFAR-10 normalisation (per-image std, not dataset-wide std); see cifar_resnet.py.

LayerCfg = Sequence[Union[int, str]]

# Channel counts of the conv layers, "M" = 2x2 max pooling with stride 2 (VGG configuration E).
VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512,
)


class CifarVGG(nn.Module):
    """VGG with BatchNorm, bias-free convs and a single linear classifier, for 32x32 inputs.

    Args:
        cfg: conv widths with ``"M"`` for max pooling; the default is VGG-19.
        num_classes: classifier outputs; 0 replaces the classifier with ``nn.Identity`` (timm convention).
        in_chans: input channels.
        device, dtype: where and how to allocate the parameters.
        **kwargs: timm's generic options (``drop_rate``, ...), accepted and ignored.
    """

    def __init__(
        self,
        cfg: LayerCfg = VGG19_CFG,
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
        widths = [v for v in cfg if not isinstance(v, str)]
        if not widths:
            raise ValueError("cfg must contain at least one conv layer")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = widths[-1]

        layers: list[nn.Module] = []
        channels = in_chans
        for v in cfg:
            if isinstance(v, str):
                if v != "M":
                    raise ValueError(f"unknown cfg entry {v!r}; use an int width or 'M'")
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [
                    nn.Conv2d(channels, v, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(v),
                    nn.ReLU(inplace=True),
                ]
                channels = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(2)
        self.classifier: nn.Module = self._make_classifier(num_classes)

        self.apply(self._init_weights)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        return nn.Linear(self.num_features, num_classes)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)

    def get_classifier(self) -> nn.Module:
        """The classification head (``classifier``), as timm models expose it."""
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` (0: no head).

        ``global_pool`` exists for timm signature compatibility; only average pooling is supported.
        """
        if global_pool not in (None, "avg"):
            raise ValueError(f"only global_pool='avg' is supported, got {global_pool!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        ref = next(self.features.parameters())
        self.num_classes = num_classes
        self.classifier = self._make_classifier(num_classes).to(device=ref.device, dtype=ref.dtype)
        self.classifier.apply(self._init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The conv trunk: a ``num_features`` x 2 x 2 map for a 32x32 input."""
        out: torch.Tensor = self.features(x)
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """GraSP's 2x2 average pooling and flattening, then the classifier unless ``pre_logits``."""
        x = torch.flatten(self.pool(x), 1)
        if not pre_logits:
            x = self.classifier(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """timm pretrained-cfg for a CIFAR-10 model without weights: 32x32 input, CIFAR-10 normalisation."""
    return {
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (2, 2),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "first_conv": "features.0",
        "classifier": "classifier",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "cifar_vgg19": _cfg(
            paper_ids="arXiv:2002.07376",
            paper_name="Picking Winning Tickets Before Training by Preserving Gradient Flow",
            origin_url="https://github.com/alecwangcq/GraSP",
        ),
    }
)


def _create_cifar_vgg(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    if pretrained:
        raise ValueError(f"{variant}: no pretrained weights exist; create it with pretrained=False")
    if kwargs.pop("features_only", False):
        raise ValueError(f"{variant}: features_only is not supported; use forward_features() instead")
    multiplier = pop_multiplier(variant, kwargs)
    kwargs["cfg"] = [v if isinstance(v, str) else scale_width(v, multiplier) for v in kwargs["cfg"]]
    return build_model_with_cfg(CifarVGG, variant, pretrained=False, **kwargs)


@register_model
def cifar_vgg19(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """GraSP/MEST/BiDST CIFAR VGG-19: 16 bias-free 3x3 conv-BN-ReLU layers, 2x2 avg pool, one linear layer."""
    model_args: dict[str, Any] = dict(cfg=VGG19_CFG)
    return _create_cifar_vgg("cifar_vgg19", pretrained, **dict(model_args, **kwargs))
