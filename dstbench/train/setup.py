"""Everything one run trains with (data, model, plan, optimizer, engine), built from its config.

The build order is part of the result: the model's initial weights are drawn right after
``torch.manual_seed(cfg.seed)`` and the data is built first, so the same config gives the same run
on any machine (data order, augmentation and mask randomness are seeded by (seed, epoch/step)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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
from dstbench.train.narrow import check_narrowable, narrow_for
from dstbench.runs.rundir import RunDir
from dstbench.speed.training import TrainingKernels, attach, check_training
from dstbench.train.backbone import build_model, check_model, check_model_name
from dstbench.train.distributed import Platform
from dstbench.train.optimizers import build_optimizer, check_optimizer
from dstbench.train.recipes import Recipe

if TYPE_CHECKING:
    from dstbench.data import DataConfig

__all__ = [
    "Training",
    "build",
    "build_model",
    "build_optimizer",
    "check_arguments",
    "check_schedule",
    "check_subset_sizes",
    "check_model_name",
    "data_config",
    "get_lr",
    "lr_at",
    "model_options",
    "plan_of",
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
    check_training(cfg.backend, platform.device, compile=bool(cfg.compile), amp=cfg.amp and platform.device.type == "cuda")
    check_optimizer(cfg, updater, cfg.method)
    check_model_name(cfg.model)
    if updater.narrows_model:
        check_narrowable(cfg.model, cfg.method)
    info = dataset_info(cfg.dataset)
    check_model(cfg.model, cfg.model_kwargs, len(info.classes or range(10)), info.input_size)
    return updater


def model_options(cfg: TrainConfig, updater: MaskUpdater, num_classes: int) -> dict[str, Any]:
    """Constructor options of the run's model: the width a ``narrows_model`` method trains at (the
    method is told the counts), none otherwise."""
    if not updater.narrows_model:
        return {}
    narrowing = narrow_for(cfg.model, num_classes, cfg.sparsity, cfg.distribution, cfg.dense_layers, cfg.min_active)
    updater.narrowed(narrowing.record())
    return {"channel_multiplier": narrowing.channel_multiplier}


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


def check_subset_sizes(cfg: TrainConfig, train_available: int | None, test_available: int | None) -> None:
    """A subset or a batch larger than the data is an error, not a silent clamp (the run would be
    mislabelled: a batch clamped to the data size is another run than the one its config records).
    ``*_available``: the split's size (None: not known)."""
    for option, limit, available, split in (
        ("--max-train-samples", cfg.max_train_samples, train_available, "training"),
        ("--max-test-samples", cfg.max_test_samples, test_available, "test"),
    ):
        if limit is not None and available is not None and limit > available:
            raise ConfigError(f"{option} {limit} exceeds the {available} {split} samples of {cfg.dataset}")
    if train_available is not None and cfg.max_train_samples is not None:
        train_available = min(train_available, cfg.max_train_samples)
    if train_available is not None and cfg.batch_size > train_available:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} exceeds the {train_available} training samples of {cfg.dataset}; "
            f"use at most --batch-size {train_available}"
        )


def plan_of(cfg: TrainConfig, model: nn.Module, updater: MaskUpdater) -> SparsityPlan:
    """The run's sparsity plan (a dense method's is empty, whatever ``--sparsity`` says)."""
    sparsity = cfg.sparsity if updater.needs.sparse else 0.0
    return plan_sparsity(
        describe_layers(model), sparsity, cfg.distribution, cfg.dense_layers, min_active=cfg.min_active, structure=cfg.structure
    )


def check_schedule(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The run's total steps, after the config's checks that depend on them."""
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.save_rewind_step is not None and cfg.save_rewind_step > total_steps:
        raise ConfigError(f"--save-rewind-step {cfg.save_rewind_step} is past the run's last step ({total_steps})")
    return total_steps


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
    kernels: TrainingKernels | None = None  # the execution backend's layers (None: masked, the dense kernel)
    recipe: Recipe = field(default_factory=Recipe)

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
    # The loaders' sizes after subsetting: the full split is only larger, so a too-large limit shows.
    check_subset_sizes(cfg, getattr(data.train, "num_samples", None), getattr(data.test, "num_samples", None))
    options = {**cfg.model_kwargs, **model_options(cfg, updater, data.num_classes)}
    model = build_model(cfg.model, data.num_classes, options).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    plan = plan_of(cfg, model, updater)
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(data.train) / cfg.grad_accum)
    total_steps = check_schedule(cfg, steps_per_epoch)
    recipe = Recipe.build(cfg, data.num_classes)
    criterion = recipe.criterion()
    engine = SparseEngine(
        model, plan, updater, optimizer, seed=cfg.seed, steps_per_epoch=steps_per_epoch, total_epochs=cfg.epochs,
        on_masks=platform.mask_callback(updater, run), inputs=method_inputs(updater),
    )  # fmt: skip
    engine.loss_fn = criterion
    recipe.attach(model)  # after the engine: the EMA copies the model with its mask buffers (dense kernels)
    kernels = attach(model, cfg.backend, device)  # the layers the engine holds, computing with the backend
    return Training(
        cfg=cfg, platform=platform, run=run, data=data, model=model, forward_model=platform.wrap(model), plan=plan,
        optimizer=optimizer, criterion=criterion, engine=engine, steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, warmup_steps=round(cfg.warmup_epochs * steps_per_epoch), kernels=kernels,
        recipe=recipe,
    )  # fmt: skip
