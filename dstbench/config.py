"""Training configuration, presets (BiDST Table A.1 and ``quick``) and how they are merged.

Precedence, lowest first: dataclass defaults < ``--preset`` < ``--config`` YAML < explicit CLI flags.
The resolved config is written to the run directory and is what ``--resume`` compares against, so a
resumed run can never silently continue under different settings.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from dstbench.core.distributions import DENSE_PROFILES, DISTRIBUTIONS, validate_sparsity
from dstbench.core.errors import ConfigError
from dstbench.core.hparams import coerce_value
from dstbench.core.validation import (
    FRACTION,
    MOMENTUM,
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    SEED,
    SPARSITY,
    Rule,
)

__all__ = ["TrainConfig", "PRESETS", "Preset", "resolve_config", "load_yaml_config", "RESUME_IGNORED_FIELDS", "FIELD_RULES"]


@dataclass
class TrainConfig:
    """Everything that determines a training run.

    Each field is one CLI option (``--field-name``; its ``--help`` is the docstring under the field,
    with the default), one YAML key, and one key of the run's ``config.json``. The data fields are
    handed to :class:`dstbench.data.DataConfig` by name (``trainer.data_config``).
    """

    method: str = "rigl"
    """Mask updater (see `dstbench methods`)."""
    model: str = "cifar_resnet32"
    """timm model name, e.g. cifar_resnet32, cifar_vgg19 or resnet50 (see `dstbench models`)."""
    dataset: str = "cifar10"
    """cifar10, cifar100, imagefolder or synthetic."""
    data_dir: str | None = None
    """Dataset folder, or the .tar.gz of a CIFAR ImageFolder tree."""
    loader: Literal["memory", "torch", "ffcv"] = "memory"
    """Data path: memory (decoded tensors, batched augmentation on the device), torch (DataLoader), or ffcv
    (betons from `dstbench data prepare`)."""
    beton_dir: str | None = None
    """Folder with train.beton/test.beton from `dstbench data prepare` (loader ffcv)."""
    max_train_samples: int | None = None
    """Class-balanced training subset of this size (all samples when unset)."""
    max_test_samples: int | None = None
    """Class-balanced test subset of this size (all samples when unset)."""
    synthetic_train_samples: int = 2000
    """Training set size of the synthetic dataset."""
    synthetic_test_samples: int = 500
    """Test set size of the synthetic dataset."""
    sparsity: float = 0.9
    """Target sparsity in [0, 1), e.g. 0.9 or 0.999999."""
    distribution: str = "erk"
    """How the sparsity is spread over layers: uniform, er, erk, or global (only the total is fixed; the
    layers follow a method's global ranking: snip, grasp, synflow, lt, dsr, snfs)."""
    dense_layers: str = "none"
    """Layers kept dense: none, first (RigL ImageNet) or mest (stem, 1x1 shortcuts and FC)."""
    min_active: int = 1
    """Minimum active weights per sparsified layer."""
    epochs: int = 160
    """Training epochs."""
    batch_size: int = 128
    """Training batch size (per optimizer step, across micro-batches)."""
    eval_batch_size: int = 512
    """Batch size for evaluation."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 0.1
    """Peak learning rate (SGD)."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = False
    """Nesterov momentum."""
    weight_decay: float = 1e-4
    """L2 weight decay."""
    decay_bn_and_bias: bool = True
    """Decay BN and bias parameters too, as MEST/GraSP (BiDST's code lineage) do; off exempts them."""
    warmup_epochs: float = 0.0
    """Linear learning-rate warm-up, in epochs."""
    eta_min: float = 0.0
    """Final learning rate of the per-step cosine schedule."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy loss."""
    amp: bool = False
    """bf16 autocast on CUDA (no-op on CPU, where bf16 is slower and changes numbers)."""
    channels_last: bool = False
    """channels_last memory format for the model and its inputs."""
    compile: bool = False
    """torch.compile the training step (CPU and CUDA); eager training stays the reference."""
    cuda_graph: bool = True
    """With --compile on CUDA, capture the whole step in one CUDA graph (--no-cuda-graph: compile only)."""
    augment: bool = True
    """Random crop and horizontal flip of training images (CIFAR)."""
    seed: int = 0
    """Seed of the initialisation, data order, augmentation and every mask decision."""
    device: str = "cpu"
    """cpu, cuda or cuda:N."""
    num_workers: int = 2
    """DataLoader worker processes (loaders torch and ffcv)."""
    out: str = "runs/run"
    """Run directory."""
    logger: Literal["none", "tensorboard", "wandb"] = "none"
    """Mirror metrics to "tensorboard" or "wandb" (offline) as well as the run directory."""
    hp: dict[str, Any] = field(default_factory=dict)
    """Method hyper-parameters by name."""
    save_rewind_step: int | None = None
    """Save the model after this many steps to rewind.pt (0: the initialisation), for runs used as
    lottery tickets (``--hp ticket_from=RUN_DIR``, ``dstbench lt``)."""

    def validate(self) -> TrainConfig:
        self.sparsity = validate_sparsity(self.sparsity)
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(f"unknown distribution {self.distribution!r}; choose from {', '.join(DISTRIBUTIONS)}")
        if self.dense_layers not in DENSE_PROFILES:
            raise ConfigError(f"unknown dense-layer profile {self.dense_layers!r}; choose from {', '.join(DENSE_PROFILES)}")
        for name, rule in FIELD_RULES.items():
            rule.check(f"--{name.replace('_', '-')}", getattr(self, name))
        if not self.out.strip():
            raise ConfigError("--out is empty; give a folder for the run")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"--warmup-epochs ({self.warmup_epochs}) exceeds --epochs ({self.epochs})")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}; choose from cpu, cuda")
        return self

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_RULES: dict[str, Rule] = {
    "max_train_samples": POSITIVE_INT,
    "max_test_samples": POSITIVE_INT,
    "synthetic_train_samples": POSITIVE_INT,
    "synthetic_test_samples": POSITIVE_INT,
    "sparsity": SPARSITY,
    "min_active": NON_NEGATIVE_INT,
    "epochs": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "eval_batch_size": POSITIVE_INT,
    "grad_accum": POSITIVE_INT,
    "lr": NON_NEGATIVE_FLOAT,
    "momentum": MOMENTUM,
    "weight_decay": NON_NEGATIVE_FLOAT,
    "warmup_epochs": NON_NEGATIVE_FLOAT,
    "eta_min": NON_NEGATIVE_FLOAT,
    "label_smoothing": FRACTION,
    "seed": SEED,
    "num_workers": NON_NEGATIVE_INT,
    "save_rewind_step": NON_NEGATIVE_INT,
}
"""The range of every numeric field (None, for the optional ones, means unset); see ``validation``."""

# Fields that may differ between a killed run and its resumption without changing the numbers.
RESUME_IGNORED_FIELDS = frozenset({"device", "num_workers", "out", "eval_batch_size", "logger"})


@dataclass(frozen=True)
class Preset:
    """A named recipe: config fields, plus method hyper-parameters applied when that method runs.

    ``cadence`` sets every method's declared cadence fields (``MaskUpdater.cadence_fields``) by unit,
    plugins included, so a short recipe changes the topology of every method as often;
    ``method_hp`` then sets what one method needs beyond that.
    """

    description: str
    fields: Mapping[str, Any]
    method_hp: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    cadence: Mapping[str, int] = field(default_factory=dict)

    def hyperparameters(self, method: str) -> dict[str, Any]:
        """What this preset sets for ``method``: its cadence fields, then its own entries."""
        from dstbench.core.registry import get_method

        cadence = {name: self.cadence[unit] for name, unit in get_method(method).cadence_fields.items() if unit in self.cadence}
        return {**cadence, **self.method_hp.get(method, {})}


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
        # Cadences scaled to a 6-epoch, 192-step run so every method updates its topology: every 20
        # steps or every epoch. BiDST learns its scores for 2 epochs between updates; DSR's doubling
        # period starts at 8 steps: 8, 16, 32, 64 over epochs 0-3, none from epoch 4, 7 updates.
        cadence={"steps": 20, "epochs": 1},
        method_hp={"bidst": {"update_frequency": 2}, "dsr": {"period": 8}},
    ),
}


def load_yaml_config(path: str) -> dict[str, Any]:
    """Read a YAML mapping of TrainConfig fields (``hp:`` holds method hyper-parameters)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text file (not UTF-8); give a YAML file") from None
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
    recipe: Preset | None = None
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        recipe = PRESETS[preset]
        values.update(recipe.fields)
    if config_file is not None:
        values.update(_typed_fields(load_yaml_config(config_file), config_file))
    values.update(_typed_fields(overrides or {}, "the command line"))
    method = values.get("method", TrainConfig.method)
    preset_hp = recipe.hyperparameters(method) if recipe is not None else {}
    merged_hp = {**preset_hp, **values.pop("hp", {}), **(hp or {})}
    return TrainConfig(**values, hp=merged_hp).validate()
