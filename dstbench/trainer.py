"""The training loop: read it top to bottom (nanoGPT style); the engine does the sparse bookkeeping.

One run = one :class:`~dstbench.config.TrainConfig` into one run directory. Checkpoints are written
atomically after every epoch; ``resume=True`` restores model, optimizer, engine and method state and
continues to exactly the numbers an uninterrupted run reaches on CPU (data order, augmentation and
mask randomness are all seeded by (seed, epoch/step), never by global RNG state).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import timm
import torch
from torch import nn
from tqdm import tqdm

from . import __version__
from .analysis.flops import run_flops
from .config import RESUME_IGNORED_FIELDS, TrainConfig
from .distributions import plan_sparsity
from .engine import SparseEngine
from .errors import CheckpointError, ConfigError
from .layers import describe_layers
from .loggers import create_logger
from .registry import create_updater
from .rundir import RunDir
from .updater import MaskUpdater

if TYPE_CHECKING:
    from dstbench.data import DataConfig

__all__ = ["train", "data_config", "build_model", "build_optimizer", "lr_at", "resolve_device"]
log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return torch.device(name)


def build_model(name: str, num_classes: int) -> nn.Module:
    """Any timm model by name; the CIFAR backbones are registered by importing ``dstbench.models``."""
    import dstbench.models  # noqa: F401

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8] or list(dstbench.models.CIFAR_MODELS)
        raise ConfigError(f"unknown model {name!r}; e.g. {', '.join(close)} (see `dstbench models`)")
    model: nn.Module = timm.create_model(name, num_classes=num_classes)
    return model


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


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, cfg: TrainConfig, device: torch.device) -> tuple[float, float]:
    """(mean loss, accuracy) on a loader."""
    model.eval()
    total = 0
    # Running sums stay on the device: one host sync per evaluation, not one per batch.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in loader:
        with _autocast(cfg, device):
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        total += y.numel()
    return float(loss_sum) / max(total, 1), int(correct) / max(total, 1)


def data_config(cfg: TrainConfig) -> DataConfig:
    """The data part of a training config."""
    from dstbench.data import DataConfig

    return DataConfig(
        dataset=cfg.dataset,
        data_dir=cfg.data_dir,
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        max_train_samples=cfg.max_train_samples,
        max_test_samples=cfg.max_test_samples,
        loader=cfg.loader,
        beton_dir=cfg.beton_dir,
        seed=cfg.seed,
        augment=cfg.augment,
        channels_last=cfg.channels_last,
        num_workers=cfg.num_workers,
        synthetic_train_samples=cfg.synthetic_train_samples,
        synthetic_test_samples=cfg.synthetic_test_samples,
    )


def _check_resumable(run: RunDir, cfg: TrainConfig) -> None:
    saved = run.read_json(run.config)
    current = cfg.to_json()
    changed = sorted(k for k in current if k not in RESUME_IGNORED_FIELDS and saved.get(k) != current[k])
    if changed:
        key = changed[0]
        raise CheckpointError(
            f"--resume with a different config: {key} was {saved.get(key)!r}, now {current[key]!r} ({run.path})"
        )


def _micro_batches(loader: Any, accum: int) -> Iterator[tuple[int, bool, torch.Tensor, torch.Tensor]]:
    """(optimizer-step index in the epoch, last micro-batch of that step?, x, y)."""
    n = len(loader)
    for i, (x, y) in enumerate(loader):
        yield i // accum, (i + 1) % accum == 0 or i + 1 == n, x, y


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one run into ``cfg.out`` and return its summary."""
    from dstbench.data import build_data

    cfg.validate()
    device = resolve_device(cfg.device)
    run = RunDir(cfg.out)
    if resume:
        _check_resumable(run, cfg)
    elif run.checkpoint.exists() or run.summary.exists():
        raise ConfigError(f"{run.path} already holds a run; pass --resume to continue it or choose another --out")

    torch.manual_seed(cfg.seed)
    updater: MaskUpdater = create_updater(cfg.method, cfg.hp)
    data = build_data(data_config(cfg), device)
    model = build_model(cfg.model, data.num_classes).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    plan = plan_sparsity(
        describe_layers(model),
        cfg.sparsity if updater.needs.sparse else 0.0,
        cfg.distribution,
        cfg.dense_layers,
        min_active=cfg.min_active,
    )
    optimizer = build_optimizer(model, cfg)
    accum = cfg.grad_accum
    steps_per_epoch = math.ceil(len(data.train) / accum)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    engine = SparseEngine(
        model,
        plan,
        updater,
        optimizer,
        seed=cfg.seed,
        steps_per_epoch=steps_per_epoch,
        total_epochs=cfg.epochs,
        on_masks=run.save_masks,
    )
    engine.loss_fn = criterion

    metrics: list[dict[str, Any]] = []
    start_epoch = 0
    train_seconds = 0.0
    if resume:
        state = run.load_checkpoint(device)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            engine.load_state_dict(state["engine"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {run.checkpoint} does not match this run: {exc}") from None
        torch.set_rng_state(state["torch_rng"])
        metrics = state["metrics"]
        train_seconds = float(state["train_seconds"])
        start_epoch = int(state["epoch"]) + 1
        log.info("resuming %s from epoch %d", run.path, start_epoch)
    else:
        run.write_config(cfg.to_json())
        run.write_plan(plan)
        init_batch = next(iter(data.train)) if updater.needs.init_batch else None
        engine.initialize(init_batch)

    logger = create_logger(cfg.logger, run.path, cfg.to_json(), resume_step=start_epoch * steps_per_epoch if resume else None)
    logged_updates = len(engine.records) if resume else 0
    for epoch in range(start_epoch, cfg.epochs):
        epoch_start = time.perf_counter()
        updates_before = engine.update_seconds
        hooks_before = engine.step_hook_seconds
        data.train.set_epoch(epoch)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # on device: no per-step sync
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        batches = tqdm(
            _micro_batches(data.train, accum),
            total=len(data.train),
            desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
            leave=False,
        )
        for step_in_epoch, last_micro, x, y in batches:
            step = epoch * steps_per_epoch + step_in_epoch
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, warmup_steps, cfg)
            with _autocast(cfg, device):
                logits = model(x)
                loss = criterion(logits.float(), y)
            (loss / accum).backward()
            loss_sum += loss.detach().double() * y.numel()
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.numel()
            if last_micro:
                if engine.after_backward(step, (x, y)):
                    optimizer.step()
                engine.after_optimizer_step(step)
                optimizer.zero_grad(set_to_none=True)
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        test_loss, test_acc = evaluate(model, data.test, cfg, device)
        row = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * steps_per_epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_acc": int(correct) / max(seen, 1),
            "test_loss": test_loss,
            "test_acc": test_acc,
            "epoch_seconds": epoch_seconds,
            "update_seconds": engine.update_seconds - updates_before,
            "step_hook_seconds": engine.step_hook_seconds - hooks_before,
            "topology_updates": len(engine.records),
            "itop_rate": engine.itop_rate(),
        }
        metrics.append(row)
        logger.log_updates(engine.records[logged_updates:])
        logged_updates = len(engine.records)
        logger.log_epoch(row)
        if progress:
            tqdm.write(
                f"[{cfg.method}] epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.4f} "
                f"test_acc {test_acc:.4f} updates {row['topology_updates']} ({epoch_seconds:.1f}s)"
            )
        run.write_metrics(metrics)
        run.write_topology(engine.records)
        run.save_checkpoint(
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "engine": engine.state_dict(),
                "metrics": metrics,
                "train_seconds": train_seconds,
                "torch_rng": torch.get_rng_state(),
                "version": __version__,
            }
        )

    logger.close()
    problems = engine.violations()
    if problems:
        raise RuntimeError("sparse invariants broken at the end of training: " + "; ".join(problems))
    summary = _summary(cfg, engine, metrics, train_seconds, steps_per_epoch, data.input_size, data.num_train_samples)
    run.write_summary(summary)
    return summary


def _summary(
    cfg: TrainConfig,
    engine: SparseEngine,
    metrics: list[dict[str, Any]],
    train_seconds: float,
    steps_per_epoch: int,
    input_size: int,
    train_samples: int,
) -> dict[str, Any]:
    last = metrics[-1] if metrics else {}
    records = engine.records
    return {
        "method": cfg.method,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "sparsity": cfg.sparsity,
        "distribution": cfg.distribution,
        "dense_layers": cfg.dense_layers,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "steps_per_epoch": steps_per_epoch,
        "test_acc": last.get("test_acc"),
        "best_test_acc": max((m["test_acc"] for m in metrics), default=None),
        "test_loss": last.get("test_loss"),
        "train_loss": last.get("train_loss"),
        "topology_updates": len(records),
        "final_iou": records[-1].iou if records else None,
        "itop_rate": engine.itop_rate(),
        "realised_sparsity": engine.realised_sparsity(),
        "train_seconds": train_seconds,
        "update_seconds": engine.update_seconds,
        "update_time_fraction": engine.update_seconds / train_seconds if train_seconds else 0.0,
        "step_hook_seconds": engine.step_hook_seconds,
        "step_hook_time_fraction": engine.step_hook_seconds / train_seconds if train_seconds else 0.0,
        "hyperparameters": engine.updater.hyperparameters(),
        "needs": dataclasses.asdict(engine.updater.needs),
        "method_report": engine.updater.report(),
        "flops": run_flops(engine, input_size, train_samples),  # this run's own, from its masks and updates
    }
