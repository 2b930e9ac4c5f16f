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
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import timm
import torch
from torch import nn
from tqdm import tqdm

from dstbench import __version__
from dstbench.train.compiled import FastStep, get_lr, set_lr
from dstbench.config import TrainConfig
from dstbench.engine.cost import run_flops
from dstbench.train.distributed import DistContext, MaskAgreement, ReplicaRunDir
from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.errors import CheckpointError, ConfigError, DstbenchError, TrainingDiverged
from dstbench.runs.integrity import code_version
from dstbench.core.layers import describe_layers
from dstbench.train.loggers import create_logger
from dstbench.core.registry import create_updater
from dstbench.runs.reuse import check_same_run
from dstbench.runs.rundir import RunDir, check_output_dir
from dstbench.runs.tickets import method_inputs, pipeline_flops
from dstbench.core.updater import MaskUpdater

if TYPE_CHECKING:
    from dstbench.data import DataConfig

__all__ = ["train", "data_config", "build_model", "build_optimizer", "lr_at", "resolve_device"]
log = logging.getLogger(__name__)

DIVERGENCE_CHECK_EVERY = 50
"""On CUDA, steps between two reads of the divergence record (a host sync each): at most this many
steps are wasted after a divergence, and the step the report names is exact regardless."""


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return torch.device(name)


def check_model_name(name: str) -> None:
    """Fail on an unknown model name with close matches, before any data is read or model built."""
    import dstbench.models  # noqa: F401

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8] or list(dstbench.models.CIFAR_MODELS)
        raise ConfigError(f"unknown model {name!r}; e.g. {', '.join(close)} (see `dstbench models`)")


def build_model(name: str, num_classes: int) -> nn.Module:
    """Any timm model by name; the CIFAR backbones are registered by importing ``dstbench.models``."""
    check_model_name(name)
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
def evaluate(
    model: nn.Module, loader: Any, cfg: TrainConfig, device: torch.device, ctx: DistContext | None = None
) -> tuple[float, float]:
    """(mean loss, accuracy) on a loader (summed over the ranks' shards in a DDP run)."""
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
    if ctx is not None:
        from dstbench.train.distributed import reduce_sum

        sums = reduce_sum(loss_sum, correct, torch.tensor(total, device=device))
        return float(sums[0]) / max(float(sums[2]), 1), float(sums[1]) / max(float(sums[2]), 1)
    return float(loss_sum) / max(total, 1), int(correct) / max(total, 1)


def data_config(cfg: TrainConfig, ctx: DistContext | None = None) -> DataConfig:
    """The data part of a training config: every DataConfig field that TrainConfig also has, by name,
    and this rank's shard of every batch in a DDP run."""
    from dstbench.data import DataConfig

    shared = {f.name for f in dataclasses.fields(DataConfig)} & {f.name for f in dataclasses.fields(TrainConfig)}
    return DataConfig(
        **{name: getattr(cfg, name) for name in sorted(shared)},
        shard_rank=ctx.rank if ctx is not None else 0,
        shard_count=ctx.world_size if ctx is not None else 1,
    )


def _open_for_resume(run: RunDir, cfg: TrainConfig, device: torch.device) -> dict[str, Any] | None:
    """The verified checkpoint of the run in ``cfg.out`` if it is this run; None if it has none yet.

    Nothing is written here: a damaged checkpoint or a different config ends with one line and the
    folder exactly as it was. A run killed before its first checkpoint has nothing to continue, so it
    starts from scratch (unless its config says it was a different run).
    """
    if not run.checkpoint.exists():
        if run.summary.exists():
            raise CheckpointError(
                f"{run.checkpoint} is missing from a finished run (its results are in {run.summary.name}); "
                "nothing to resume: use another --out to train it again"
            )
        if run.config.exists():
            try:
                saved = run.read_json(run.config)
            except DstbenchError:
                saved = None  # damaged, and there is no checkpoint to protect: start over
            if saved is not None:  # nothing trained yet, so only the config can make it a different run
                check_same_run(run.path, saved, code_version(), cfg, resume=True)
        log.warning("%s has no checkpoint yet (killed before its first epoch ended): starting it from scratch", run.path)
        return None
    state = run.load_checkpoint(device)
    saved_config = state.get("config")
    if saved_config is None:  # legacy checkpoint: the config lives in config.json only
        saved_config = run.read_json(run.config)
    check_same_run(run.path, saved_config, state.get("code_version"), cfg, resume=True)
    return state


def _rewrite_derived(run: RunDir, config: dict[str, Any], plan: Any, metrics: list[dict[str, Any]], engine: SparseEngine) -> None:
    """Rewrite config, plan, metrics and topology from the checkpoint, and say which ones were damaged.

    A file behind the checkpoint (a kill between the checkpoint and its write) is simply brought up to
    date; a damaged one is named. Mask snapshots cannot be rebuilt: a damaged one is an error.
    """
    steps = [record.step for record in engine.records]
    snapshots = run.verify_snapshots(steps)
    keep = {path.name for path in run.snapshot_paths(steps)}
    run.remove(sorted(p for p in run.masks_dir.glob("*.npz") if p.name not in keep))  # from an epoch lost to a kill
    for path in (run.config, run.plan, run.metrics, run.topology, run.summary):
        try:
            if path.suffix == ".jsonl":
                run.read_jsonl(path)
            elif path.exists():
                run.read_json(path)
        except DstbenchError as exc:
            log.warning("repairing %s from the checkpoint (%s)", path.name, exc)
    run.keep_or_start_manifest()
    run.list_snapshots(snapshots)
    run.write_config(config)
    run.write_plan(plan)
    run.write_metrics(metrics)
    run.write_topology(engine.records)


class _DivergenceGuard:
    """Stops training at the first non-finite loss, naming its step and the last finite loss before it.

    The record (first bad step, its loss, the last finite loss) is kept on the device and read only
    every ``every`` steps and at the end of each epoch, before the checkpoint: reading a CUDA tensor
    waits for the GPU, and doing that every step would stall the asynchronous (CUDA-graph) step. On
    the CPU reading is free and ``every`` is 1. Either way the report names the exact step.
    """

    def __init__(self, run: RunDir, device: torch.device, every: int = 1) -> None:
        self.run = run
        self.every = every
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.float64, device=device)
        self.last_finite = torch.full((), math.nan, dtype=torch.float64, device=device)

    def record(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        value = loss.detach().double()
        finite = torch.isfinite(value)
        fresh = ~finite & (self.first_bad < 0)
        self.first_bad = torch.where(fresh, step, self.first_bad)
        self.bad_loss = torch.where(fresh, value, self.bad_loss)
        self.last_finite = torch.where(finite & (self.first_bad < 0), value, self.last_finite)
        if (step + 1) % self.every == 0:
            self.check(epoch)

    def check(self, epoch: int) -> None:
        step = int(self.first_bad)
        if step < 0:
            return
        last = float(self.last_finite)
        last_text = "none yet" if math.isnan(last) else f"{last:.6g}"
        kept = (
            f"the checkpoint of epoch {epoch} in {self.run.path} is intact"
            if epoch > 0
            else "no checkpoint was written"
        )
        raise TrainingDiverged(
            f"training diverged: loss is {float(self.bad_loss)} at epoch {epoch + 1}, step {step} "
            f"(last finite loss {last_text}); {kept}; try a lower --lr"
        )


def _micro_batches(loader: Any, accum: int) -> Iterator[tuple[int, bool, torch.Tensor, torch.Tensor]]:
    """(optimizer-step index in the epoch, last micro-batch of that step?, x, y)."""
    n = len(loader)
    for i, (x, y) in enumerate(loader):
        yield i // accum, (i + 1) % accum == 0 or i + 1 == n, x, y


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one run into ``cfg.out`` and return its summary (one rank of it under torchrun)."""
    from dstbench.train.distributed import init_from_env, shutdown

    cfg.validate()
    # Fix the code version now (it is cached per process): the code this process imported is what
    # trains, and a commit made while it runs must not be recorded as the code of this run.
    code_version()
    ctx = init_from_env(cfg.device)
    try:
        return _train(cfg, ctx, resume=resume, progress=progress and (ctx is None or ctx.is_main))
    finally:
        shutdown(ctx)


def _train(cfg: TrainConfig, ctx: DistContext | None, *, resume: bool, progress: bool) -> dict[str, Any]:
    from dstbench.data import build_data, dataset_info

    if ctx is not None and cfg.compile:
        raise ConfigError("--compile is not supported with torchrun (DDP) yet; drop one of them")
    device = ctx.device if ctx is not None else resolve_device(cfg.device)
    # Every check of the command's own arguments comes before "already holds a run", so a typo is
    # reported as a typo and not hidden behind the state of the output folder.
    updater: MaskUpdater = create_updater(cfg.method, cfg.hp)
    if ctx is not None and updater.needs.init_batch:
        raise ConfigError(f"{cfg.method} scores a batch before training, which DDP runs do not support yet")
    check_model_name(cfg.model)
    dataset_info(cfg.dataset)
    run = RunDir(cfg.out) if ctx is None or ctx.is_main else ReplicaRunDir(cfg.out)
    check_output_dir(cfg.out)
    if ctx is None or ctx.is_main:
        run.clean_orphans()
    state: dict[str, Any] | None = None
    if resume:
        state = _open_for_resume(run, cfg, device)
    elif run.checkpoint.exists() or run.summary.exists():
        raise ConfigError(f"{run.path} already holds a run; pass --resume to continue it or choose another --out")

    torch.manual_seed(cfg.seed)
    data = build_data(data_config(cfg, ctx), device)
    _check_subset_sizes(cfg, data)
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
    if cfg.save_rewind_step is not None and cfg.save_rewind_step > total_steps:
        raise ConfigError(f"--save-rewind-step {cfg.save_rewind_step} is past the run's last step ({total_steps})")
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    agreement = MaskAgreement(ctx, updater, run, run.save_masks) if ctx is not None else None
    engine = SparseEngine(
        model,
        plan,
        updater,
        optimizer,
        seed=cfg.seed,
        steps_per_epoch=steps_per_epoch,
        total_epochs=cfg.epochs,
        on_masks=agreement if agreement is not None else run.save_masks,
        inputs=method_inputs(updater),
    )
    engine.loss_fn = criterion
    train_model = model
    if ctx is not None:
        from dstbench.train.distributed import wrap_model

        train_model = wrap_model(model, ctx)  # gradients are averaged inside backward()

    metrics: list[dict[str, Any]] = []
    start_epoch = 0
    train_seconds = 0.0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            engine.load_state_dict(state["engine"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {run.checkpoint} does not match this run: {exc}") from None
        torch.set_rng_state(state["torch_rng"])
        if agreement is not None:
            agreement.load_state_dict(state.get("distributed", []))
        metrics = state["metrics"]
        train_seconds = float(state["train_seconds"])
        start_epoch = int(state["epoch"]) + 1
        if progress:
            tqdm.write(f"[{cfg.method}] resuming {run.path} from epoch {start_epoch + 1}/{cfg.epochs}")
        run_config = state.get("config") or run.read_json(run.config)
        _rewrite_derived(run, run_config, plan, metrics, engine)
    else:
        run_config = cfg.to_json()
        stale = [run.metrics, run.topology, run.summary, *sorted(run.masks_dir.glob("*.npz"))]
        run.remove([path for path in stale if path.exists()])
        run.start_manifest()
        run.write_config(run_config)
        run.write_plan(plan)
        init_batch = next(iter(data.train)) if updater.needs.init_batch else None
        engine.initialize(init_batch)
        if cfg.save_rewind_step == 0:
            run.save_rewind(0, model.state_dict())
    # Built after resuming, so the compiled code and any captured graph see the restored tensors.
    fast = (
        FastStep(model, engine, optimizer, criterion, device, amp=cfg.amp, cuda_graph=cfg.cuda_graph,
                 grad_accum=accum, batch_size=cfg.batch_size)
        if cfg.compile
        else None
    )
    if fast is not None:
        train_model = fast.forward_model

    guard = _DivergenceGuard(run, device, DIVERGENCE_CHECK_EVERY if device.type == "cuda" else 1)
    logger = create_logger(cfg.logger, run.path, cfg.to_json(), resume_step=start_epoch * steps_per_epoch if state is not None else None)
    logged_updates = len(engine.records) if state is not None else 0
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
            disable=not progress or not sys.stderr.isatty(),  # bars on a terminal; redirected: epoch lines only
            leave=False,
        )
        for step_in_epoch, last_micro, x, y in batches:
            step = epoch * steps_per_epoch + step_in_epoch
            set_lr(optimizer, lr_at(step, total_steps, warmup_steps, cfg))
            if fast is not None and fast.graph_ready(step, x):
                loss, logits = fast.replay(x, y)  # the whole step, from one captured CUDA graph
            else:
                if fast is not None:
                    fast.before_eager_step()
                with fast.warmup_context() if fast is not None else contextlib.nullcontext():
                    with _autocast(cfg, device):
                        logits = train_model(x)
                        loss = criterion(logits.float(), y)
                    (loss / accum).backward()
                    if last_micro:
                        if fast is not None and fast.compiles(step):
                            fast.optimizer_step()
                        else:
                            engine.step(step, (x, y))
                            if fast is not None:
                                fast.eager_steps += 1
                        if fast is not None:
                            fast.zero_grad()
                        else:
                            optimizer.zero_grad(set_to_none=True)
                if fast is not None:
                    fast.after_warmup_step()
            guard.record(loss, epoch, step)
            loss_sum += loss.detach().double() * y.numel()
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.numel()
            if last_micro and cfg.save_rewind_step is not None and step + 1 == cfg.save_rewind_step:
                run.save_rewind(step + 1, model.state_dict())
        guard.check(epoch)  # before anything of this epoch is written
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        if ctx is not None:
            from dstbench.train.distributed import average_buffers, reduce_sum

            average_buffers(model, ctx)  # every rank evaluates and saves the same model
            loss_sum, correct, seen_sum = reduce_sum(loss_sum, correct, torch.tensor(seen, device=device))
            seen = int(seen_sum)
        test_loss, test_acc = evaluate(model, data.test, cfg, device, ctx)
        row = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * steps_per_epoch,
            "lr": get_lr(optimizer),
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
        # The checkpoint first: metrics and topology are never ahead of it (a kill in between leaves
        # them one epoch behind, and --resume rewrites them from the checkpoint).
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
                **({"distributed": agreement.state_dict()} if agreement is not None else {}),
                "code_version": code_version(),
                "config": run_config,
            }
        )
        run.write_metrics(metrics)
        run.write_topology(engine.records)

    logger.close()
    problems = engine.violations(final=True)
    if problems:
        raise RuntimeError("sparse invariants broken at the end of training: " + "; ".join(problems))
    summary = _summary(cfg, engine, metrics, train_seconds, steps_per_epoch, data.input_size, data.num_train_samples)
    if fast is not None:
        summary["compile"] = fast.report()
    if ctx is not None and agreement is not None:
        summary["distributed"] = {
            "world_size": ctx.world_size,
            "backend": "nccl" if device.type == "cuda" else "gloo",
            "mask_checks": len(agreement.records),
            "all_agreed": all(r["agreed"] for r in agreement.records),
        }
    summary["code_version"] = code_version()
    run.write_summary(summary)
    return summary


def _check_subset_sizes(cfg: TrainConfig, data: Any) -> None:
    """A subset larger than the data is an error, not a silent clamp (the run would be mislabelled)."""
    for option, limit, loader, split in (
        ("--max-train-samples", cfg.max_train_samples, data.train, "training"),
        ("--max-test-samples", cfg.max_test_samples, data.test, "test"),
    ):
        available = getattr(loader, "num_samples", None)
        if limit is not None and available is not None and limit > available:
            raise ConfigError(f"{option} {limit} exceeds the {available} {split} samples of {cfg.dataset}")


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
        # This run's own, from its masks and updates; a lottery ticket adds its ticket's training.
        "flops": pipeline_flops(cfg.hp, run_flops(engine, input_size, train_samples)),
    }
