"""Everything one run trains with (data, model, plan, optimizer, engine), built from its config.

The build order is part of the result: the model's initial weights are drawn right after
``torch.manual_seed(cfg.seed)`` and the data is built first, so the same config gives the same run
on any machine (data order, augmentation and mask randomness are seeded by (seed, epoch/step)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dstbench.config import DataOptions, TrainConfig
from dstbench.core.distributions import SparsityPlan, plan_sparsity
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater
from dstbench.core.updater import MaskUpdater
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.runs.tickets import method_inputs
from dstbench.runs.rundir import RunDir
from dstbench.train.backbone import build_model, check_model, check_model_name
from dstbench.train.distributed import Platform

if TYPE_CHECKING:
    from dstbench.data import DataConfig

__all__ = [
    "Training",
    "build",
    "build_model",
    "build_optimizer",
    "check_arguments",
    "check_model_name",
    "data_config",
    "get_lr",
    "lr_at",
    "set_lr",
]


def check_arguments(cfg: TrainConfig, platform: Platform) -> MaskUpdater:
    """Every check of the command's own arguments, before the output folder is looked at (so a typo
    is reported as a typo, not hidden behind the state of the folder); returns the method."""
    from dstbench.data import dataset_info

    updater: MaskUpdater = create_updater(cfg.method, cfg.hp)
    if updater.needs.sparse and cfg.sparsity == 0.0:
        raise ConfigError(
            f"--sparsity 0 leaves {cfg.method} no weight to prune or move; train a dense network with --method dense"
        )
    platform.check(cfg, updater)
    check_model_name(cfg.model)
    info = dataset_info(cfg.dataset)
    check_model(cfg.model, cfg.model_kwargs, len(info.classes or range(10)), info.input_size)
    return updater


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum. Conv/FC weights are always decayed; BN and biases iff ``decay_bn_and_bias``."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim > 1 or cfg.decay_bn_and_bias else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_at(step: int, total_steps: int, warmup_steps: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine annealing to ``eta_min`` at the last step (per step)."""
    if step < warmup_steps:
        return cfg.lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return cfg.eta_min + 0.5 * (cfg.lr - cfg.eta_min) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set every group's learning rate; a tensor LR is written in place (no recompile, no re-capture)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def get_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def data_config(cfg: TrainConfig, platform: Platform | None = None) -> DataConfig:
    """The data part of a training config (its data group), with what the run decides: the seed, the
    memory format, and this rank's shard of every batch in a DDP run."""
    from dstbench.data import DataConfig

    return DataConfig.from_options(
        cfg.group(DataOptions),
        seed=cfg.seed,
        channels_last=cfg.channels_last,
        shard_rank=platform.rank if platform is not None else 0,
        shard_count=platform.world_size if platform is not None else 1,
    )


def _check_subset_sizes(cfg: TrainConfig, data: Any) -> None:
    """A subset or a batch larger than the data is an error, not a silent clamp (the run would be
    mislabelled: a batch clamped to the data size is another run than the one its config records)."""
    for option, limit, loader, split in (
        ("--max-train-samples", cfg.max_train_samples, data.train, "training"),
        ("--max-test-samples", cfg.max_test_samples, data.test, "test"),
    ):
        available = getattr(loader, "num_samples", None)
        if limit is not None and available is not None and limit > available:
            raise ConfigError(f"{option} {limit} exceeds the {available} {split} samples of {cfg.dataset}")
    available = getattr(data.train, "num_samples", None)
    if available is not None and cfg.batch_size > available:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} exceeds the {available} training samples of {cfg.dataset}; "
            f"use at most --batch-size {available}"
        )


@dataclass
class Training:
    """One run's parts, as the loop, the steppers, the checkpoint and the summary use them."""

    cfg: TrainConfig
    platform: Platform
    run: RunDir
    data: Any
    model: nn.Module
    forward_model: nn.Module  # what the eager step calls: the model, or DDP around it
    plan: SparsityPlan
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    engine: SparseEngine
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    @property
    def device(self) -> torch.device:
        return self.platform.device

    def lr(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.warmup_steps, self.cfg)


def build(cfg: TrainConfig, platform: Platform, updater: MaskUpdater, run: RunDir) -> Training:
    """Data, model, plan, optimizer and engine of a run, in the order that fixes its random draws."""
    from dstbench.data import build_data

    device = platform.device
    torch.set_num_threads(cfg.threads)  # part of the run: the thread count orders CPU reductions
    torch.manual_seed(cfg.seed)
    data = build_data(data_config(cfg, platform), device)
    _check_subset_sizes(cfg, data)
    model = build_model(cfg.model, data.num_classes, cfg.model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    sparsity = cfg.sparsity if updater.needs.sparse else 0.0
    plan = plan_sparsity(describe_layers(model), sparsity, cfg.distribution, cfg.dense_layers, min_active=cfg.min_active)
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(data.train) / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.save_rewind_step is not None and cfg.save_rewind_step > total_steps:
        raise ConfigError(f"--save-rewind-step {cfg.save_rewind_step} is past the run's last step ({total_steps})")
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    engine = SparseEngine(
        model, plan, updater, optimizer, seed=cfg.seed, steps_per_epoch=steps_per_epoch, total_epochs=cfg.epochs,
        on_masks=platform.mask_callback(updater, run), inputs=method_inputs(updater),
    )  # fmt: skip
    engine.loss_fn = criterion
    return Training(
        cfg=cfg, platform=platform, run=run, data=data, model=model, forward_model=platform.wrap(model), plan=plan,
        optimizer=optimizer, criterion=criterion, engine=engine, steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
    )  # fmt: skip
