"""Which tensors can be sparse, and what the sparsity code needs to know about them.

Only the weights of ``Conv2d`` and ``Linear`` layers are prunable (as in RigL, SNIP and the other methods' code); biases and normalisation
parameters never are. The rule is the same for every architecture: in a vision transformer the prunable
weights are the patch embedding (a conv), each block's attention ``qkv``/``proj`` and MLP ``fc1``/``fc2``,
and the head, while position embeddings and the class token are not (``--dense-layers vit`` keeps the
patch embedding and head dense, see :func:`dstbench.core.distributions.dense_layer_reasons`). Describing a layer by a small frozen record (name, shape, kind) lets the
distribution code run without a model, which is how its test vectors are checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import nn

__all__ = ["PrunableLayer", "find_prunable_layers", "describe_layers", "output_layer_name"]

LayerKind = Literal["conv", "linear"]


@dataclass(frozen=True)
class PrunableLayer:
    """A prunable weight: ``name`` is the module's qualified name in the model."""

    name: str
    shape: tuple[int, ...]
    kind: LayerKind

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def find_prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All Conv2d/Linear modules with a weight, in registration (forward-definition) order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and getattr(module, "weight", None) is not None
    ]


def describe_layers(model: nn.Module) -> list[PrunableLayer]:
    """The :class:`PrunableLayer` records of ``model``'s prunable weights."""
    layers = []
    for name, module in find_prunable_layers(model):
        assert isinstance(module, (nn.Conv2d, nn.Linear))
        kind: LayerKind = "conv" if isinstance(module, nn.Conv2d) else "linear"
        layers.append(PrunableLayer(name, tuple(module.weight.shape), kind))
    return layers


def output_layer_name(model: nn.Module) -> str | None:
    """The prunable layer that produces the model's outputs, as the model names it: timm's
    ``get_classifier()`` (the last prunable layer inside it when it is a container), else the
    ``classifier`` entry of its ``pretrained_cfg``/``default_cfg``. None when the model says nothing
    (or its classifier is ``nn.Identity``): the order modules were registered in is not evidence of
    which one is the output (a ResNet registers its projection shortcuts after the blocks' convs).
    """
    names = {module: name for name, module in model.named_modules()}
    getter = getattr(model, "get_classifier", None)
    head = getter() if callable(getter) else None
    head_name = names.get(head) if isinstance(head, nn.Module) else None
    if head_name is None:
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
        named = cfg.get("classifier") if isinstance(cfg, dict) else None
        head_name = named if isinstance(named, str) and named in dict(model.named_modules()) else None
    if head_name is None:
        return None
    inside = [name for name, _ in find_prunable_layers(model) if name == head_name or name.startswith(head_name + ".")]
    return inside[-1] if inside else None
