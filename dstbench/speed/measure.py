"""``dstbench speed``: a run's final masked network under each backend, proved, then timed.

The model is rebuilt from the run folder alone: ``config.json`` names the model and dataset, the sealed
``checkpoint.pt`` holds the final weights and ``weight_mask`` buffers (the masks of the last topology
update, also in ``masks/``), and ``topology.jsonl`` counts the updates that each cost one
re-compression. Every backend is first proved equal to ``masked`` (:func:`dstbench.speed.prove`); a
backend that does not apply or does not match is recorded with its one-line reason and not timed.
Backends that train also get one training step timed (:mod:`dstbench.speed.train_step`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from dstbench.core.errors import ConfigError, DstbenchError
from dstbench.core.model_kwargs import check_model_kwargs, to_timm
from dstbench.runs.configs import read_config
from dstbench.runs.integrity import sha256
from dstbench.runs.rundir import RunDir
from dstbench.speed.backends import BackendMismatch, BackendUnavailable, Prepared, get_backend, masked_layers, prove
from dstbench.speed.timing import format_bytes, provenance, time_interleaved
from dstbench.speed.train_step import training_steps

__all__ = ["LoadedRun", "load_run", "measure", "Settings"]


@dataclass
class LoadedRun:
    path: Path
    model: nn.Module
    input_shape: tuple[int, int, int]
    batch_size: int
    updates: int
    mask_file: dict[str, Any]


def _num_classes(state: dict[str, torch.Tensor]) -> int:
    """The classifier's width: the last 2-D weight of the state (the head of every CIFAR/timm model)."""
    heads = [value for key, value in state.items() if key.endswith(".weight") and value.dim() == 2]
    if not heads:
        raise ConfigError("speed: the checkpoint has no linear layer to read the number of classes from")
    return int(heads[-1].shape[0])


def load_run(path: str | Path) -> LoadedRun:
    """The run's final masked model on the CPU, in eval mode, and what the timing needs to know."""
    import dstbench.models  # noqa: F401  (registers the CIFAR backbones with timm)
    from dstbench.data.catalog import dataset_info

    run = RunDir(path)
    if not run.path.is_dir() or not run.config.exists():
        raise ConfigError(f"speed: {path} is not a dstbench run directory (no config.json)")
    cfg = read_config(run)
    if not isinstance(cfg.get("model"), str):
        raise ConfigError(f"speed: {run.config} names no model")
    state = run.load_checkpoint("cpu")["model"]
    kwargs = to_timm(check_model_kwargs(cfg.get("model_kwargs") or {}, f"model_kwargs in {run.config}"))
    model = timm.create_model(cfg["model"], num_classes=_num_classes(state), **kwargs)  # as the run built it
    for key, value in state.items():
        if key.endswith(".weight_mask"):
            model.get_submodule(key[: -len(".weight_mask")]).register_buffer("weight_mask", value.bool())
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"speed: {run.checkpoint} does not fit model {cfg['model']}: {str(exc).splitlines()[0]}") from None
    size = dataset_info(cfg.get("dataset", "cifar10")).input_size
    snapshots = sorted(run.masks_dir.glob("*.npz")) if run.masks_dir.is_dir() else []
    mask_file = {
        "checkpoint": str(run.checkpoint), "checkpoint_sha256": sha256(run.checkpoint.read_bytes()),
        "last_snapshot": snapshots[-1].name if snapshots else None,
    }  # fmt: skip
    updates = len(run.read_jsonl(run.topology)) if run.topology.exists() else 0
    return LoadedRun(run.path, model.eval(), (3, size, size), int(cfg.get("batch_size", 128)), updates, mask_file)


@dataclass(frozen=True)
class Settings:
    backends: tuple[str, ...]
    device: torch.device
    threads: int
    batch_size: int | None = None
    rounds: int = 3
    min_run_time: float = 0.2
    layers: bool = True


def _prepare_all(loaded: LoadedRun, settings: Settings, inputs: torch.Tensor) -> tuple[dict[str, Prepared], dict[str, Any]]:
    """Each backend's model, proved against masked; the refused or mismatched ones with their reason."""
    reference = get_backend("masked").prepare(loaded.model, inputs).model
    prepared: dict[str, Prepared] = {}
    records: dict[str, Any] = {}
    for name in settings.backends:
        backend = get_backend(name)
        try:
            start = time.perf_counter()
            ready = backend.prepare(loaded.model, inputs)
            rebuild = time.perf_counter() - start
            proof = prove(backend, reference, ready.model, inputs)
        except (BackendUnavailable, BackendMismatch) as exc:
            records[name] = {"status": "unavailable" if isinstance(exc, BackendUnavailable) else "mismatch", "reason": str(exc)}
            continue
        prepared[name] = ready
        records[name] = {
            "status": "proved", "proof": proof.as_dict(), "notes": ready.notes, "format_bytes": format_bytes(ready.model),
            "rebuild_seconds_per_update": rebuild, "updates": loaded.updates, "rebuild_seconds_total": rebuild * loaded.updates,
        }  # fmt: skip
    return prepared, records


def _layer_inputs(model: nn.Module, names: list[str], inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each named layer's input in one forward pass (hooks on the masked model's layer names, which
    every backend keeps for the module it puts in a layer's place)."""
    seen: dict[str, torch.Tensor] = {}
    present = {name for name, _ in model.named_modules()}
    names = [name for name in names if name in present]
    handles = [model.get_submodule(name).register_forward_pre_hook(lambda m, a, n=name: seen.__setitem__(n, a[0])) for name in names]
    with torch.no_grad():
        model(inputs)
    for handle in handles:
        handle.remove()
    return seen


def timed(fns: dict[str, Any], settings: Settings, batch: int) -> dict[str, Any]:
    seconds = time_interleaved(fns, settings.device, settings.threads, settings.rounds, settings.min_run_time)
    base = seconds.get("masked")
    return {
        name: {"seconds": value, "images_per_second": batch / value, "speedup_over_masked": (base / value) if base else None}
        for name, value in seconds.items()
    }


def measure(loaded: LoadedRun, settings: Settings) -> dict[str, Any]:
    """speed.json's content for one run (see the module doc)."""
    torch.manual_seed(0)
    batch = settings.batch_size or loaded.batch_size
    model = loaded.model.to(settings.device)
    loaded.model = model
    big = torch.randn(batch, *loaded.input_shape, device=settings.device)
    one = big[:1].clone()
    prepared, records = _prepare_all(loaded, settings, big[: min(batch, 8)])
    result: dict[str, Any] = {"run_dir": str(loaded.path), "mask_file": loaded.mask_file, "batch_size": batch,
                              "provenance": provenance(settings.device, settings.threads, torch.float32), "backends": records}  # fmt: skip
    if "masked" not in prepared:
        raise DstbenchError("speed: the masked baseline is needed for every ratio; include masked in --backend")
    result["end_to_end"] = {}
    for label, x in (("batch_1", one), (f"batch_{batch}", big)):
        fns = {name: (lambda m=ready.model, x=x: m(x)) for name, ready in prepared.items()}
        result["end_to_end"][label] = timed(fns, settings, x.shape[0])
        if settings.device.type == "cuda":
            _peak_memory(prepared, x, result["end_to_end"][label])
    steps = training_steps(loaded.model, [name for name in prepared if get_backend(name).supports_training], big, records)
    result["training_step"] = timed(steps, settings, batch)
    if settings.layers:
        result["layers"] = _per_layer(prepared, settings, {"batch_1": one, f"batch_{batch}": big})
    return result


def _peak_memory(prepared: dict[str, Prepared], x: torch.Tensor, into: dict[str, Any]) -> None:
    for name, ready in prepared.items():
        torch.cuda.reset_peak_memory_stats(x.device)
        with torch.no_grad():
            ready.model(x)
        into[name]["peak_bytes"] = int(torch.cuda.max_memory_allocated(x.device))


def _per_layer(prepared: dict[str, Prepared], settings: Settings, batches: dict[str, torch.Tensor]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, x in batches.items():
        names = [name for name, _ in masked_layers(prepared["masked"].model)]
        inputs = {name: _layer_inputs(ready.model, names, x) for name, ready in prepared.items()}
        rows: dict[str, Any] = {}
        for layer in inputs["masked"]:
            fns = {
                name: (lambda mod=ready.model.get_submodule(layer), inp=inputs[name][layer]: mod(inp))
                for name, ready in prepared.items() if layer in inputs[name]
            }  # fmt: skip
            rows[layer] = timed(fns, settings, x.shape[0])
        out[label] = rows
    return out
