"""The optimizers a run may train with (``--opt``), built by timm's ``create_optimizer_v2``.

The list is vetted, not all of timm: each optimizer offered here is one whose every state tensor the
engine keeps at zero off the mask under every built-in method (``tests/test_optimizers.py`` proves it
for each name below), and whose running average of the gradient, if it keeps one, is named so that a
method that reads momentum (``Needs.reads_momentum``: SNFS) knows whether it can run.

``sgd`` is dstbench's default and today's recipe: ``torch.optim.SGD`` with ``--momentum`` and
``--nesterov`` (timm's own name ``sgd`` means Nesterov SGD, its ``momentum`` classical momentum; here
``--nesterov`` says which). Weight decay follows ``--decay-bn-and-bias``: on (the default, MEST/GraSP's
convention) every parameter is decayed; off, timm's no-decay rule exempts 1-d parameters (norms),
biases and the names the model lists in ``no_weight_decay()`` (ViT position embeddings, class token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dstbench.core.errors import ConfigError

if TYPE_CHECKING:
    from dstbench.config import OptimOptions
    from dstbench.core.updater import MaskUpdater

__all__ = ["OPTIMIZERS", "OptimizerSpec", "build_optimizer", "check_optimizer", "momentum_state"]


@dataclass(frozen=True)
class OptimizerSpec:
    """One ``--opt`` choice: timm's name for it and the state key of its running gradient average."""

    timm_name: str
    momentum_key: str | None
    """State key of the optimizer's first moment (None: it keeps none)."""
    momentum_from_flag: bool = False
    """The first moment exists only with ``--momentum > 0`` (SGD, RMSprop)."""


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec("momentum", "momentum_buffer", momentum_from_flag=True),
    "adam": OptimizerSpec("adam", "exp_avg"),
    "adamw": OptimizerSpec("adamw", "exp_avg"),
    "nadamw": OptimizerSpec("nadamw", "exp_avg"),
    "lamb": OptimizerSpec("lamb", "exp_avg"),
    "lion": OptimizerSpec("lion", "exp_avg"),
    "rmsprop": OptimizerSpec("rmsprop", "momentum_buffer", momentum_from_flag=True),
}
"""Every ``--opt`` choice; the config's ``opt`` Literal lists the same names (checked by a test)."""


def momentum_state(opt: str, momentum: float) -> str | None:
    """The state key of the first moment ``--opt opt --momentum momentum`` keeps (None: none)."""
    spec = OPTIMIZERS[opt]
    return None if spec.momentum_from_flag and momentum == 0 else spec.momentum_key


def check_optimizer(cfg: OptimOptions, updater: MaskUpdater, method: str) -> None:
    """One line for an option the optimizer has no use for, or a method that reads a momentum the
    optimizer does not keep."""
    import timm.optim

    info = timm.optim.get_optimizer_info(OPTIMIZERS[cfg.opt].timm_name)
    if cfg.opt_eps is not None and not info.has_eps:
        raise ConfigError(f"--opt-eps does not apply to --opt {cfg.opt} (it has no epsilon)")
    if cfg.opt_betas is not None and not info.has_betas:
        raise ConfigError(f"--opt-betas does not apply to --opt {cfg.opt} (it has no betas)")
    if cfg.opt_betas is not None and (len(cfg.opt_betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.opt_betas)):
        raise ConfigError(f"--opt-betas expects two values in [0, 1), e.g. 0.9,0.999; got {cfg.opt_betas}")
    if updater.needs.reads_momentum and momentum_state(cfg.opt, cfg.momentum) is None:
        raise ConfigError(
            f"{method} reads the optimizer's momentum; --opt {cfg.opt} --momentum 0 keeps none: use --momentum > 0 "
            "or an optimizer with a first moment (--opt adamw)"
        )


def _param_groups(model: nn.Module, weight_decay: float, decay_all: bool) -> list[dict[str, Any]]:
    """One decayed group of everything (``decay_all``), or timm's split, decayed group first."""
    from timm.optim import param_groups_weight_decay

    params = [p for p in model.parameters() if p.requires_grad]
    if decay_all:
        return [{"params": params, "weight_decay": weight_decay}]
    names = getattr(model, "no_weight_decay", None)
    skip: set[str] = set(names()) if callable(names) else set()
    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip)
    return sorted(groups, key=lambda group: group["weight_decay"] == 0.0)


def build_optimizer(model: nn.Module, cfg: OptimOptions) -> torch.optim.Optimizer:
    """``cfg.opt`` over ``model`` through ``timm.optim.create_optimizer_v2``, with the run's weight decay."""
    from timm.optim import create_optimizer_v2

    spec = OPTIMIZERS[cfg.opt]
    extra: dict[str, Any] = {}
    if cfg.opt_eps is not None:
        extra["eps"] = cfg.opt_eps
    if cfg.opt_betas is not None:
        extra["betas"] = tuple(cfg.opt_betas)
    if cfg.opt == "sgd":
        extra["nesterov"] = cfg.nesterov and cfg.momentum > 0
    groups = _param_groups(model, cfg.weight_decay, cfg.decay_bn_and_bias)
    optimizer: torch.optim.Optimizer = create_optimizer_v2(
        groups, opt=spec.timm_name, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, **extra
    )
    return optimizer
