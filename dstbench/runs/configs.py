"""Reading a run's config, whichever version wrote it: the one reader of ``config.json`` and of the
config a checkpoint carries.

``config.json`` schema 2 (0.3) is nested by group, ``{"schema": 2, "method": ..., "hp": {...},
"data": {...}, "sparsity": {...}, "optim": {...}, "run": {...}}``, with hyper-parameters typed. 0.1 and
0.2 wrote every field in one flat mapping, no ``schema``, hyper-parameters as given (often strings).
Everything that reads a run (``--resume``, reuse by ``compare``/``sweep``/``lt``, the analyses) goes
through :func:`flat_config` or :func:`typed_config`, so a folder of either age is read, resumed and
reused alike.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from dstbench.config import GROUPS, SCHEMA_VERSION, TrainConfig, typed_hyperparameters
from dstbench.core.errors import DstbenchError
from dstbench.runs.rundir import RunDir

__all__ = ["flat_config", "typed_config", "train_config", "read_config", "to_legacy_json"]


def flat_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{field: value}`` from either form of a config (a flat one is returned as a copy)."""
    schema = data.get("schema")
    if schema is None:
        return dict(data)
    if schema != SCHEMA_VERSION:
        raise DstbenchError(f"config schema {schema!r} is newer than this dstbench reads ({SCHEMA_VERSION}); upgrade dstbench")
    flat = {key: value for key, value in data.items() if key != "schema" and key not in GROUPS}
    for name in GROUPS:
        group = data.get(name) or {}
        if not isinstance(group, Mapping):
            raise DstbenchError(f"config group {name!r} must be an object, got {type(group).__name__}")
        flat.update(group)
    return flat


def typed_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """A config of either form as the JSON of its typed fields: defaults for the fields a run predates,
    hyper-parameters typed by the method's fields (``"0.50"`` and ``0.5`` are one value). Values that no
    longer type (an uninstalled method, a value now out of range) are kept as written, so a comparison
    still names them instead of failing."""
    merged = {**flat_config(TrainConfig().to_json()), **flat_config(data)}
    try:
        merged["hp"] = typed_hyperparameters(str(merged.get("method")), dict(merged.get("hp") or {}))
    except DstbenchError:
        pass
    normalised: dict[str, Any] = json.loads(json.dumps(merged))
    return normalised


def train_config(data: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from either form: fields the run predates take their defaults, and
    fields this version no longer has are dropped."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{key: value for key, value in flat_config(data).items() if key in known})


def read_config(run: RunDir) -> dict[str, Any]:
    """A run folder's ``config.json`` as flat fields (either form), after its integrity check."""
    return flat_config(run.read_json(run.config))


def to_legacy_json(config: TrainConfig) -> dict[str, Any]:
    """The flat form 0.1/0.2 wrote (for tests that hold an old folder, and tools that want it flat)."""
    return flat_config(config.to_json())
