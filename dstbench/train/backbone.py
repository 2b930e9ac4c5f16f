"""The network of a run: any timm model by name, with ``--model-kwargs``, checked against the data.

What a user gets wrong here (a name, an argument the model does not take, a ViT built for 224x224 fed
32x32 images) is reported in one line before the run folder is touched: the model is built and run
once on the ``meta`` device, which checks every shape and allocates nothing (a DeiT-S costs the same
to check as a ResNet-32). The real model is built later, after the run's seed is set, so the check
draws nothing from the run's random numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import timm
import torch
from torch import nn

from dstbench.core.errors import ConfigError
from dstbench.core.model_kwargs import to_timm

__all__ = ["check_model_name", "build_model", "check_model"]


def check_model_name(name: str) -> None:
    """Fail on an unknown model name with close matches, before any data is read or model built."""
    import dstbench.models  # noqa: F401

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8] or list(dstbench.models.CIFAR_MODELS)
        raise ConfigError(f"unknown model {name!r}; e.g. {', '.join(close)} (see `dstbench models`)")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def build_model(name: str, num_classes: int, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Any timm model by name; the CIFAR backbones are registered by importing ``dstbench.models``."""
    check_model_name(name)
    try:
        model: nn.Module = timm.create_model(name, num_classes=num_classes, **to_timm(kwargs or {}))
    except TypeError as exc:
        unexpected = re.search(r"unexpected keyword argument[s]? \[?'(\w+)'", str(exc))
        if unexpected:
            raise ConfigError(f"--model-kwargs: {name} takes no argument {unexpected.group(1)!r}") from None
        raise ConfigError(f"--model-kwargs: {name} cannot be built with {dict(kwargs or {})}: {_first_line(exc)}") from None
    except (ValueError, AssertionError, ZeroDivisionError, RuntimeError) as exc:
        raise ConfigError(f"--model-kwargs: {name} cannot be built with {dict(kwargs or {})}: {_first_line(exc)}") from None
    return model


def _fixed_size(model: nn.Module) -> tuple[int, int] | None:
    """The one input size a patch-embedding model (timm ViT, DeiT, ...) takes, or None when it takes any."""
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    if size is None or not getattr(embed, "strict_img_size", False) or getattr(model, "dynamic_img_size", False):
        return None
    return int(size[0]), int(size[1])


def check_model(name: str, kwargs: Mapping[str, Any], num_classes: int, input_size: int, in_chans: int = 3) -> None:
    """One line unless ``name`` builds with ``kwargs`` and maps a batch of the data's images to logits."""
    with torch.device("meta"):
        model = build_model(name, num_classes, kwargs)
    fixed = _fixed_size(model)
    if fixed is not None and fixed != (input_size, input_size):
        raise ConfigError(
            f"{name} expects {fixed[0]}x{fixed[1]} inputs, the data is {input_size}x{input_size}: "
            f"set --model-kwargs img_size={input_size}"
        )
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(2, in_chans, input_size, input_size, device="meta"))
    except (RuntimeError, AssertionError, ValueError, TypeError) as exc:
        raise ConfigError(f"{name} cannot take the data's {input_size}x{input_size} images: {_first_line(exc)}") from None
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, num_classes):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(f"{name} maps a batch of 2 images to {shape}, not (2, {num_classes}) logits")
