"""Why Top-KAST starts slower than RigL or static sparse training in short runs (docs/methods.md).

Top-KAST's forward set is the top-k of |theta_0| (Jayakumar et al. 2020, Sec. 2), so at 90 % ERK the
active weights of a conv are the tails of its initial distribution: their squared norm is several times
that of a random mask of the same size. Every conv of a ResNet feeds a BatchNorm, so the forward pass
does not see that scale, but SGD does: for a scale-invariant weight the effective step is
``lr / ||w||^2``. This script trains ``top-kast`` as it is and ``top-kast-rescaled``, the same method
with each layer's weights scaled once at initialisation so that ``||A * theta||^2`` equals
``D * ||theta||^2`` (what a random mask of density ``D`` keeps in expectation). The rescaling leaves the
initial function unchanged (BatchNorm after every conv) and changes only the effective step size, so
if the rescaled run's first epoch matches static sparse training, the norm explains the slow start.

    python benchmarks/topkast_init_norm.py DATA_DIR OUT_DIR [METHOD ...]   # DATA_DIR: CIFAR-10 .tar.gz
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from dstbench.config import resolve_config
from dstbench.core.context import MaskUpdate, UpdateContext
from dstbench.core.registry import register_method
from dstbench.methods.topkast import TopKAST
from dstbench.train.loop import train


@register_method("top-kast-rescaled")
@dataclass
class RescaledTopKAST(TopKAST):
    """Top-KAST whose initial weights are rescaled per layer to a random mask's expected norm."""

    def init_masks(self, ctx: UpdateContext) -> MaskUpdate:
        result = super().init_masks(ctx)
        with torch.no_grad():
            for layer in ctx.sparse_layers:
                theta = layer.weight
                kept = float((theta * result.masks[layer.name]).pow(2).sum())
                scale = math.sqrt(layer.k / layer.numel * float(theta.pow(2).sum()) / kept) if kept else 1.0
                theta.mul_(scale)
                self._stored[layer.name].mul_(scale)
        return result


def main(data_dir: str, out: Path, methods: list[str]) -> None:
    common = {
        "model": "cifar_resnet32", "dataset": "cifar10", "data_dir": data_dir, "sparsity": 0.9,
        "distribution": "erk", "epochs": 1, "max_train_samples": 5000, "max_test_samples": 1000,
        "batch_size": 64, "seed": 0,
    }  # fmt: skip
    results = {}
    for method in methods or ["static", "top-kast", "top-kast-rescaled", "rigl"]:
        cfg = resolve_config(None, None, {**common, "method": method, "out": str(out / method)}, None)
        summary = train(cfg, progress=False)
        results[method] = {"train_loss": summary["train_loss"], "test_acc": summary["test_acc"]}
        print(method, json.dumps(results[method]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
