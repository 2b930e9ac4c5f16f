"""``tiny_cnn``: a four-conv CIFAR-sized network for the ``quick`` preset and the test suite.

Small enough that a full sparse-training run takes seconds on a laptop CPU, but with the same layer
kinds as the real backbones (3x3 convs, BatchNorm, a classifier), so masks, distributions and FLOP
accounting are exercised on the real code paths.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import nn

from .generic_kwargs import consume_generic_kwargs
from .width import pop_multiplier, scale_width

__all__ = ["TinyCNN", "tiny_cnn"]


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 16) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.default_cfg = {"input_size": (in_chans, 32, 32), "num_classes": num_classes}
        self.pretrained_cfg = self.default_cfg

        def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
            )

        self.features = nn.Sequential(
            block(in_chans, width, 1),
            block(width, 2 * width, 2),
            block(2 * width, 4 * width, 2),
            block(4 * width, 4 * width, 1),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.fc.in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# What ``timm.create_model`` passes to every entry point; ``build_model_with_cfg`` would take it.
_TIMM_PLUMBING = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


@register_model
def tiny_cnn(pretrained: bool = False, **kwargs: Any) -> TinyCNN:
    """The quick preset's network; like the CIFAR backbones it refuses an argument it cannot honour."""
    if pretrained:
        raise ValueError("tiny_cnn has no pretrained weights")
    for name in _TIMM_PLUMBING:
        kwargs.pop(name, None)
    width = scale_width(kwargs.pop("width", 16), pop_multiplier("tiny_cnn", kwargs))
    num_classes, in_chans = kwargs.pop("num_classes", 10), kwargs.pop("in_chans", 3)
    consume_generic_kwargs("tiny_cnn", kwargs)
    return TinyCNN(num_classes=num_classes, in_chans=in_chans, width=width)
