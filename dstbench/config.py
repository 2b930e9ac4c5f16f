"""Training configuration, presets (BiDST Table A.1 and ``quick``) and how they are merged.

Precedence, lowest first: dataclass defaults < ``--preset`` < ``--config`` YAML < explicit CLI flags.
The resolved config is written to the run directory and is what ``--resume`` compares against, so a
resumed run can never silently continue under different settings.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .distributions import DENSE_PROFILES, DISTRIBUTIONS, validate_sparsity
from .errors import ConfigError
from .hparams import coerce_value

__all__ = ["TrainConfig", "PRESETS", "Preset", "resolve_config", "load_yaml_config", "RESUME_IGNORED_FIELDS"]


@dataclass
class TrainConfig:
    """Everything that determines a training run. Field names are the CLI's long options."""

    method: str = "rigl"
    model: str = "cifar_resnet32"
    dataset: str = "cifar10"
    data_dir: str | None = None
    loader: str = "memory"
    beton_dir: str | None = None
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    synthetic_train_samples: int = 2000
    synthetic_test_samples: int = 500
    sparsity: float = 0.9
    distribution: str = "erk"
    dense_layers: str = "none"
    min_active: int = 1
    epochs: int = 160
    batch_size: int = 128
    eval_batch_size: int = 512
    grad_accum: int = 1
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    decay_bn_and_bias: bool = True
    """MEST/GraSP (BiDST's code lineage) decay every parameter; False exempts BN and biases."""
    warmup_epochs: float = 0.0
    eta_min: float = 0.0
    label_smoothing: float = 0.0
    amp: bool = False
    """bf16 autocast on CUDA (no-op on CPU, where bf16 is slower and changes numbers)."""
    channels_last: bool = False
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 2
    out: str = "runs/run"
    logger: str = "none"
    """Mirror metrics to "tensorboard" or "wandb" (offline) as well as the run directory."""
    hp: dict[str, Any] = field(default_factory=dict)
    """Method hyper-parameters by name."""

    def validate(self) -> TrainConfig:
        self.sparsity = validate_sparsity(self.sparsity)
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(f"unknown distribution {self.distribution!r}; choose from {', '.join(DISTRIBUTIONS)}")
        if self.dense_layers not in DENSE_PROFILES:
            raise ConfigError(f"unknown dense-layer profile {self.dense_layers!r}; choose from {', '.join(DENSE_PROFILES)}")
        for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("max_train_samples", "max_test_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        for name in ("lr", "weight_decay", "momentum", "eta_min", "warmup_epochs", "label_smoothing"):
            value = float(getattr(self, name))
            if math.isnan(value) or value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a non-negative number, got {value}")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"--warmup-epochs ({self.warmup_epochs}) exceeds --epochs ({self.epochs})")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}; choose from cpu, cuda")
        return self

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fields that may differ between a killed run and its resumption without changing the numbers.
RESUME_IGNORED_FIELDS = frozenset({"device", "num_workers", "out", "eval_batch_size", "logger"})


@dataclass(frozen=True)
class Preset:
    """A named recipe: config fields, plus method hyper-parameters applied when that method runs."""

    description: str
    fields: Mapping[str, Any]
    method_hp: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


_CIFAR = {
    "dataset": "cifar10",
    "batch_size": 64,
    "lr": 0.1,
    "eta_min": 4e-8,
    "momentum": 0.9,
    "epochs": 158,
    "sparsity": 0.9,
    "distribution": "uniform",
    "dense_layers": "mest",
}

PRESETS: dict[str, Preset] = {
    "cifar-resnet32": Preset(
        "BiDST Table A.1, ResNet-32 (GraSP, 1.86M) on CIFAR: 158 epochs, bs 64, cosine 0.1->4e-8, wd 1e-4",
        {**_CIFAR, "model": "cifar_resnet32_grasp", "weight_decay": 1e-4, "warmup_epochs": 0},
    ),
    "cifar-vgg19": Preset(
        "BiDST Table A.1, VGG-19 on CIFAR: 158 epochs, bs 64, cosine 0.1->4e-8, wd 5e-4, 5 warm-up epochs",
        {**_CIFAR, "model": "cifar_vgg19", "weight_decay": 5e-4, "warmup_epochs": 5},
    ),
    "cifar-mobilenetv2": Preset(
        "BiDST Table A.1, MobileNet-v2 on CIFAR: 347 epochs, bs 64, cosine 0.1->4e-8, wd 5e-5, 5 warm-up",
        {**_CIFAR, "model": "cifar_mobilenetv2", "epochs": 347, "weight_decay": 5e-5, "warmup_epochs": 5},
        # Table A.1: MobileNet-v2 searches a larger space, S = 0.08 / 0.05 / 0.04 at s = 0.90 / 0.95 / 0.98.
        method_hp={"bidst": {"search_space_table": "mobilenetv2"}},
    ),
    "imagenet-resnet50": Preset(
        "BiDST Table A.1, ResNet-50 on ImageNet: 148 epochs, bs 1024, cosine 1.024->0, momentum 0.875, "
        "wd 2^-15, 8 warm-up epochs, label smoothing 0.1",
        {
            "model": "resnet50",
            "dataset": "imagefolder",
            "loader": "torch",
            "epochs": 148,
            "batch_size": 1024,
            "lr": 1.024,
            "eta_min": 0.0,
            "momentum": 0.875,
            "weight_decay": 3.0517578125e-05,
            "warmup_epochs": 8,
            "label_smoothing": 0.1,
            "sparsity": 0.8,
            "distribution": "uniform",
            "dense_layers": "first",
        },
        # Table A.1, ImageNet column: lambda 5e-5, topology updates every 5 epochs.
        method_hp={"bidst": {"lam": 5e-5, "update_frequency": 5}},
    ),
    "quick": Preset(
        "synthetic data and a tiny CNN: about a minute on a laptop CPU",
        {
            "model": "tiny_cnn",
            "dataset": "synthetic",
            "synthetic_train_samples": 2048,
            "synthetic_test_samples": 512,
            "epochs": 6,
            "batch_size": 64,
            "lr": 0.05,
            "eta_min": 0.0,
            "weight_decay": 5e-4,
            "sparsity": 0.9,
            "distribution": "erk",
            "dense_layers": "none",
        },
        # Cadences scaled to a 6-epoch, 192-step run so every method updates its topology.
        method_hp={
            "rigl": {"delta_t": 20},
            "bidst": {"update_frequency": 2},
            "rigl-itop": {"delta_t": 20},
            "mest": {"update_frequency": 1},
            "mest-ems": {"update_frequency": 1},
        },
    ),
}


def load_yaml_config(path: str) -> dict[str, Any]:
    """Read a YAML mapping of TrainConfig fields (``hp:`` holds method hyper-parameters)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of options, got {type(data).__name__}")
    return data


def _typed_fields(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    typed: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in names:
            raise ConfigError(f"unknown option {key!r} in {source}")
        if name == "hp":
            if not isinstance(value, Mapping):
                raise ConfigError(f"'hp' in {source} must be a mapping of name: value")
            typed[name] = dict(value)
            continue
        try:
            typed[name] = coerce_value(value, hints[name], name)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {str(exc).replace('hyper-parameter ', 'option ')}") from None
    return typed


def resolve_config(
    preset: str | None = None,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    hp: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Merge defaults, preset, YAML file and explicit options (in that order) into a valid config."""
    values: dict[str, Any] = {}
    preset_hp: Mapping[str, Mapping[str, Any]] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        values.update(PRESETS[preset].fields)
        preset_hp = PRESETS[preset].method_hp
    if config_file is not None:
        values.update(_typed_fields(load_yaml_config(config_file), config_file))
    values.update(_typed_fields(overrides or {}, "the command line"))
    method = values.get("method", TrainConfig.method)
    merged_hp = {**preset_hp.get(method, {}), **values.pop("hp", {}), **(hp or {})}
    return TrainConfig(**values, hp=merged_hp).validate()
