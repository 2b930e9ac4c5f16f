"""The training recipe around the optimizer: the loss, mixup/cutmix and an EMA of the weights.

Each part is timm's own (``timm.data.Mixup``, ``SoftTargetCrossEntropy``, ``timm.utils.ModelEmaV3``) and
off by default; what this module adds is what sparse training and bit-identical resumption need:

* mixup/cutmix draw from numpy's global RNG (timm's implementation), so each micro-batch's draw is
  seeded from (seed, epoch, micro-batch) and the global state is put back: a resumed run mixes the
  same batches the same way, and nothing else sees the draw;
* the EMA is masked like the model after every update (its weights are zero wherever the model's
  mask is off: an average of weights that were pruned would otherwise leak them back into the
  evaluated network), and its state is part of the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from timm.data import Mixup
    from timm.utils import ModelEmaV3

    from dstbench.config import TrainConfig

__all__ = ["MixedTargetLoss", "Recipe", "mask_like_model"]


def _masked_weights(module: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, mask) of every module the engine masks (it holds a ``weight_mask`` buffer)."""
    for sub in module.modules():
        mask = getattr(sub, "weight_mask", None)
        weight = getattr(sub, "weight", None)
        if isinstance(mask, torch.Tensor) and isinstance(weight, torch.Tensor):
            yield weight, mask


@torch.no_grad()
def mask_like_model(ema_module: nn.Module, model: nn.Module) -> None:
    """Zero the EMA's weights off the model's current masks (copied into the EMA's own buffers)."""
    for (ema_weight, ema_mask), (_, mask) in zip(_masked_weights(ema_module), _masked_weights(model), strict=True):
        ema_mask.copy_(mask)
        ema_weight.mul_(ema_mask)


class MixedTargetLoss(nn.Module):
    """timm's ``SoftTargetCrossEntropy`` for mixed (soft) targets, which carry the smoothing; class
    indices (the unmixed batch a method scores before training, SNIP's and GraSP's) get the smoothed
    cross-entropy they would have had without mixing."""

    def __init__(self, label_smoothing: float) -> None:
        super().__init__()
        from timm.loss import SoftTargetCrossEntropy

        self.soft = SoftTargetCrossEntropy()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 1:
            return nn.functional.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        loss: torch.Tensor = self.soft(logits, target)
        return loss


@dataclass
class Recipe:
    """The loss, the batch mixing and the EMA of one run (each None when off)."""

    seed: int = 0
    label_smoothing: float = 0.0
    mixup: Mixup | None = None
    ema_decay: float = 0.0
    ema: ModelEmaV3 | None = None

    @classmethod
    def build(cls, cfg: TrainConfig, num_classes: int) -> Recipe:
        """The recipe ``cfg`` asks for; the EMA is made later by :meth:`attach` (it copies the model
        once the engine has added its mask buffers)."""
        mixup = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            from timm.data import Mixup

            mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                          num_classes=num_classes)  # fmt: skip
        return cls(seed=cfg.seed, label_smoothing=cfg.label_smoothing, mixup=mixup, ema_decay=cfg.ema)

    def criterion(self) -> nn.Module:
        """Cross-entropy, or with mixup/cutmix :class:`MixedTargetLoss`."""
        if self.mixup is not None:
            return MixedTargetLoss(self.label_smoothing)
        return nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)

    def mix(self, x: torch.Tensor, y: torch.Tensor, epoch: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The micro-batch mixed by timm's Mixup (soft targets), seeded by (seed, epoch, micro); as is when off."""
        if self.mixup is None:
            return x, y
        from timm.data.mixup import mixup_target

        from dstbench.data.augment import epoch_seed

        saved = np.random.get_state()
        np.random.seed(epoch_seed(self.seed, epoch * 1_000_003 + micro) % 2**32)
        try:
            if len(x) % 2 == 0:
                return self.mixup(x, y)  # type: ignore[no-any-return]
            # timm asserts an even batch; its batch mode pairs sample i with n-1-i, which for an odd
            # (last, partial) batch leaves the middle sample mixed with itself: the same pieces, no assert.
            lam = self.mixup._mix_batch(x)
            mixup = self.mixup
            return x, mixup_target(y, mixup.num_classes, lam, mixup.label_smoothing)
        finally:
            np.random.set_state(saved)

    def attach(self, model: nn.Module) -> None:
        """Make the EMA (``--ema``): a copy of the model, engine buffers included."""
        if self.ema_decay > 0:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(model, decay=self.ema_decay)

    def start(self, model: nn.Module) -> None:
        """A new run: the EMA starts from the initial masked weights."""
        if self.ema is not None:
            self.ema.set(model)

    def after_step(self, model: nn.Module) -> None:
        """After each optimizer step (and topology update): EMA update, then its mask."""
        if self.ema is not None:
            self.ema.update(model)
            mask_like_model(self.ema.module, model)

    def state_dict(self) -> dict[str, Any]:
        """What the checkpoint adds (``{"ema": ...}``; nothing when off)."""
        return {} if self.ema is None else {"ema": self.ema.module.state_dict()}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """The EMA from a checkpoint (a KeyError, reported as a mismatch, if it was saved without one)."""
        if self.ema is not None:
            self.ema.module.load_state_dict(checkpoint["ema"])
