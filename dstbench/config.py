"""Training configuration, presets (BiDST Table A.1 and ``quick``) and how they are merged.

A :class:`TrainConfig` is composed of small groups (method and hyper-parameters, data, sparsity,
optimizer, run), each field declared once in its group with its type, range and docstring; code reads
the fields flat (``cfg.lr``). Precedence, lowest first: dataclass defaults < ``--preset`` < ``--config``
YAML < explicit CLI flags. The resolved config, hyper-parameters typed, is written to the run
directory nested by group (``config.json`` schema 2) and is what ``--resume`` compares against, so a
resumed run can never silently continue under different settings.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, overload

import yaml

from dstbench.core.budget import Budget, stretch
from dstbench.core.distributions import DenseProfile, Distribution
from dstbench.core.errors import ConfigError
from dstbench.core.structures import parse_structure
from dstbench.core.fastpath import resolve_compile
from dstbench.core.hparams import (
    Fraction,
    Momentum,
    NonNegative,
    NonNegativeInt,
    PositiveInt,
    Range,
    Seed,
    Sparsity,
    check_fields,
    coerce_value,
)
from dstbench.core.model_kwargs import ModelKwargs, check_model_kwargs
from dstbench.core.presets import PRESETS, Preset

__all__ = [
    "TrainConfig",
    "MethodOptions",
    "DataOptions",
    "SparsityOptions",
    "OptimOptions",
    "RunOptions",
    "GROUPS",
    "SCHEMA_VERSION",
    "PRESETS",
    "Preset",
    "resolve_config",
    "load_yaml_config",
    "typed_hyperparameters",
    "RESUME_IGNORED_FIELDS",
    "RESUME_WARNED_FIELDS",
    "MAX_EPOCHS",
    "MAX_SYNTHETIC_SAMPLES",
]

SCHEMA_VERSION = 2
"""Version of ``config.json``: 2 is nested by group (:data:`GROUPS`); 0.1/0.2 wrote one flat mapping
and no version (read by :mod:`dstbench.runs.configs`)."""

G = TypeVar("G")

MAX_EPOCHS = 100_000
"""More epochs than any schedule needs; a larger count is a typo (and would hang in planning)."""
MAX_SYNTHETIC_SAMPLES = 1_000_000
"""The synthetic set is drawn in memory (about 25 KB of float64 per image while drawn): a million
images is ImageNet-sized and needs some 25 GB; more is a typo, refused before anything is drawn."""


@dataclass
class MethodOptions:
    """What updates the masks: the method and its hyper-parameters (the top level of ``config.json``)."""

    method: str = "rigl"
    """Mask updater (see `dstbench methods`)."""
    hp: dict[str, Any] = field(default_factory=dict)
    """Method hyper-parameters by name, typed by the method's fields once the config is resolved."""


@dataclass
class DataOptions:
    """What is read and how it is batched: everything :class:`dstbench.data.DataConfig` takes from a user."""

    dataset: str = "cifar10"
    """cifar10, cifar100, imagefolder or synthetic."""
    data_dir: str | None = None
    """Dataset folder, or the .tar.gz of a CIFAR ImageFolder tree."""
    loader: Literal["memory", "torch", "ffcv"] = "memory"
    """Data path: memory (decoded tensors, batched augmentation on the device), torch (DataLoader), or ffcv
    (betons from `dstbench data prepare`)."""
    beton_dir: str | None = None
    """Folder with train.beton/test.beton from `dstbench data prepare` (loader ffcv)."""
    max_train_samples: PositiveInt | None = None
    """Class-balanced training subset of this size (all samples when unset)."""
    max_test_samples: PositiveInt | None = None
    """Class-balanced test subset of this size (all samples when unset)."""
    synthetic_train_samples: Annotated[int, Range(ge=1, le=MAX_SYNTHETIC_SAMPLES)] = 2000
    """Training set size of the synthetic dataset."""
    synthetic_test_samples: Annotated[int, Range(ge=1, le=MAX_SYNTHETIC_SAMPLES)] = 500
    """Test set size of the synthetic dataset."""
    batch_size: PositiveInt = 128
    """Training batch size (per optimizer step, across micro-batches)."""
    eval_batch_size: PositiveInt = 512
    """Batch size for evaluation."""
    augment: bool = True
    """Random crop and horizontal flip of training images (CIFAR)."""
    auto_augment: Literal["none", "randaugment", "trivialaugment"] = "none"
    """torchvision v2 RandAugment or TrivialAugmentWide after crop and flip (batched on the device in memory)."""
    num_workers: NonNegativeInt = 2
    """DataLoader worker processes (loaders torch and ffcv)."""


@dataclass
class SparsityOptions:
    """How sparse, and how the budget is spread over layers (the plan, ``plan.json``)."""

    sparsity: Sparsity = 0.9
    """Target sparsity in [0, 1), e.g. 0.9 or 0.999999."""
    distribution: Distribution = "erk"
    """How the sparsity is spread over layers: uniform, er, erk, or global (only the total is fixed; the
    layers follow the global ranking of a method whose density policy is global, see `dstbench methods
    --details`)."""
    dense_layers: DenseProfile = "none"
    """Layers kept dense: none, first (RigL ImageNet), mest (stem, 1x1 shortcuts and FC) or vit (patch
    embedding and classifier head; attention qkv/proj and MLP linears stay sparse)."""
    min_active: NonNegativeInt = 1
    """Minimum active weights per sparsified layer."""
    structure: str = "unstructured"
    """Mask structure of every layer: unstructured, nm:N:M (e.g. nm:2:4), block:RxC (e.g. block:4x4) or
    channel; when not given, the method's own (sr-ste: nm:2:4). See docs/methods.md, Structures."""


@dataclass
class OptimOptions:
    """Optimizer (SGD by default), its warm-up + per-step cosine schedule, and the recipe (docs/recipes.md)."""

    epochs: Annotated[int, Range(ge=1, le=MAX_EPOCHS)] = 160
    """Training epochs."""
    grad_accum: PositiveInt = 1
    """Micro-batches per optimizer step (at most --batch-size: each micro-batch needs a sample)."""
    opt: Literal["sgd", "adam", "adamw", "nadamw", "lamb", "lion", "rmsprop"] = "sgd"
    """Optimizer, by timm's create_optimizer_v2 (sgd: torch SGD with --momentum, --nesterov; docs/recipes.md)."""
    opt_eps: Annotated[float, Range(gt=0.0)] | None = None
    """Optimizer epsilon (Adam family, LAMB, RMSprop; unset: the optimizer's default)."""
    opt_betas: tuple[float, ...] | None = None
    """Optimizer betas, e.g. 0.9,0.999 (Adam family, LAMB, Lion; unset: the optimizer's default)."""
    lr: NonNegative = 0.1
    """Peak learning rate."""
    momentum: Momentum = 0.9
    """SGD (and RMSprop) momentum."""
    nesterov: bool = False
    """Nesterov momentum."""
    weight_decay: NonNegative = 1e-4
    """Weight decay (L2 for SGD; decoupled for adamw, nadamw, lamb, lion)."""
    decay_bn_and_bias: bool = True
    """Decay BN and bias parameters too, as MEST/GraSP (BiDST's code lineage) do; off: timm's no-decay rule."""
    warmup_epochs: NonNegative = 0.0
    """Linear learning-rate warm-up, in epochs."""
    eta_min: NonNegative = 0.0
    """Final learning rate of the per-step cosine schedule."""
    label_smoothing: Fraction = 0.0
    """Label smoothing of the cross-entropy loss (of the mixed targets with --mixup/--cutmix)."""
    mixup: NonNegative = 0.0
    """Mixup alpha (timm.data.Mixup; 0: off); with --cutmix, one of the two per batch."""
    cutmix: NonNegative = 0.0
    """CutMix alpha (timm.data.Mixup; 0: off)."""
    ema: Annotated[float, Range(ge=0.0, lt=1.0)] = 0.0
    """Decay of a masked EMA of the weights (timm.utils.ModelEmaV3; 0: off), evaluated as ema_test_acc."""
    budget: Budget = "1x"
    """RigL's longer schedules: 2x/5x multiply --epochs, --warmup-epochs and every method cadence."""


@dataclass
class RunOptions:
    """Which network, seeded how, executed where and how fast, written where."""

    model: str = "cifar_resnet32"
    """timm model name, e.g. cifar_resnet32, cifar_vgg19 or resnet50 (see `dstbench models`)."""
    model_kwargs: ModelKwargs = field(default_factory=dict)
    """Arguments of timm.create_model as name=value pairs, e.g. img_size=32,patch_size=4 (a ViT on 32x32
    images); values typed as in YAML (32, 0.1, true, none, avg, [8,8]). A YAML config takes a mapping; each
    source adds to (and overrides names of) the preset's."""
    seed: Seed = 0
    """Seed of the initialisation, data order, augmentation and every mask decision."""
    device: str = "auto"
    """auto (CUDA when available, else the CPU), cpu, cuda or cuda:N; printed once at start and recorded
    in summary.json. Never part of the run's identity: the numbers are the same run on any device."""
    amp: bool = False
    """bf16 autocast on CUDA (no-op on CPU, where bf16 is slower and changes numbers)."""
    threads: PositiveInt = 1
    """Torch CPU threads of this run. Part of the run: the thread count changes the order in which CPU
    kernels sum, so the same run gives other low bits with another count; it is the same whatever
    --jobs (compare/sweep) runs beside it. More threads speed up one run on an idle machine."""
    channels_last: bool = False
    """channels_last memory format for the model and its inputs."""
    compile: bool | None = None
    """torch.compile the training step; eager stays the reference. Unset: on for a CUDA device that can
    capture the step (one CUDA graph per step), off on the CPU; config.json records the choice."""
    cuda_graph: bool = True
    """With --compile on CUDA, capture the whole step in one CUDA graph (--no-cuda-graph: compile only)."""
    backend: str = "masked"
    """Execution backend of the sparse layers in training: masked (a dense kernel on the masked weight, the
    reference) or csr (torch CSR kernels forward and backward, formats rebuilt at every mask update; the
    same results to float tolerance). See docs/speed.md."""
    out: str = "runs/run"
    """Run directory."""
    logger: Literal["none", "tensorboard", "wandb"] = "none"
    """Mirror metrics to "tensorboard" or "wandb" (offline) as well as the run directory."""
    save_rewind_step: NonNegativeInt | None = None
    """Save the model after this many steps to rewind.pt (0: the initialisation), for runs used as
    lottery tickets (``--hp ticket_from=RUN_DIR``, ``dstbench lt``)."""


GROUPS: dict[str, type] = {
    "data": DataOptions,
    "sparsity": SparsityOptions,
    "optim": OptimOptions,
    "run": RunOptions,
}
"""The nested groups of ``config.json`` by key; :class:`MethodOptions` (method, hp) stays at its top."""


@dataclass
class TrainConfig(RunOptions, OptimOptions, SparsityOptions, DataOptions, MethodOptions):
    """Everything that determines a training run: the groups above, each field declared once.

    Each field is one CLI option (``--field-name``; its ``--help`` is the docstring under the field,
    with the default), one YAML key, and one entry of the run's ``config.json`` (in its group). Code
    reads fields flat (``cfg.lr``); :meth:`group` hands out one group, e.g. the data options the
    loaders take (:meth:`dstbench.data.DataConfig.from_options`).
    """

    @overload
    def group(self, which: type[G]) -> G: ...
    @overload
    def group(self, which: str) -> Any: ...
    def group(self, which: type[G] | str) -> G | Any:
        """One group of options (a class, or its key in :data:`GROUPS` or ``"method"``), as a copy."""
        cls = MethodOptions if which == "method" else GROUPS[which] if isinstance(which, str) else which
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    def validate(self) -> TrainConfig:
        """Every field typed and inside its range (one line naming ``--the-option`` otherwise), then
        the rules between fields."""
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):
            setattr(self, f.name, _typed(getattr(self, f.name), hints[f.name], f.name, "option"))
        check_fields(self, lambda name: f"--{name.replace('_', '-')}")
        self.sparsity += 0.0  # -0.0 is 0.0: one run name (s0, not s-0) and one identity
        self.structure = str(parse_structure(self.structure))  # one spelling, one identity
        if not self.out.strip():
            raise ConfigError("--out is empty; give a folder for the run")
        if self.grad_accum > self.batch_size:
            raise ConfigError(
                f"--grad-accum {self.grad_accum} exceeds --batch-size {self.batch_size}: each micro-batch needs at "
                f"least one sample; use at most --grad-accum {self.batch_size}"
            )
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"--warmup-epochs ({self.warmup_epochs}) exceeds --epochs ({self.epochs})")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}; choose from auto, cpu, cuda, cuda:N")
        self.model_kwargs = check_model_kwargs(self.model_kwargs)
        if self.compile is None:  # automatic: the fast path where it exists (the sparse-kernel backends have none)
            self.compile = self.backend == "masked" and resolve_compile(self.device, self.grad_accum, self.cuda_graph)
        return self

    def to_json(self) -> dict[str, Any]:
        """``config.json`` (schema 2): the method and its typed hyper-parameters, then one object per group."""
        groups = {name: dataclasses.asdict(self.group(cls)) for name, cls in GROUPS.items()}
        return {"schema": SCHEMA_VERSION, "method": self.method, "hp": dict(self.hp), **groups}


# Fields that may differ between a killed run and its resumption without changing the numbers.
RESUME_IGNORED_FIELDS = frozenset({"device", "num_workers", "out", "eval_batch_size", "logger"})
# Fields a --resume may change with a warning: the numbers go on correctly, but their low bits drift
# from the uninterrupted run's (a finished run with another value is another run: compare refuses it).
RESUME_WARNED_FIELDS = frozenset({"threads"})


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


def _typed(value: Any, annotation: Any, name: str, what: str) -> Any:
    """``value`` converted to the field's type; a failure names the option, not a hyper-parameter."""
    try:
        return coerce_value(value, annotation, name)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("hyper-parameter ", f"{what} ")) from None


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
        if name == "model_kwargs":
            typed[name] = check_model_kwargs(value, f"model_kwargs in {source}")
            continue
        try:
            typed[name] = _typed(value, hints[name], name, "option")
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return typed


def typed_hyperparameters(method: str, hp: Mapping[str, Any]) -> dict[str, Any]:
    """``hp`` typed by ``method``'s field annotations (``"0.5"`` -> 0.5): what ``config.json`` holds,
    so two spellings of one value are one run. An unknown method or name is a one-line ConfigError."""
    from dstbench.core.hparams import build_hyperparameters
    from dstbench.core.registry import get_method

    return build_hyperparameters(get_method(method), dict(hp))


# A command given none of these (nor --preset or --config) runs the quick preset: synthetic data and a
# tiny CNN, so a bare `dstbench train` or `dstbench compare` runs anywhere instead of asking for CIFAR.
_NAMES_A_SETUP = frozenset({"model", "dataset", "data_dir"})


def implied_preset(preset: str | None, config_file: str | None, overrides: Mapping[str, Any]) -> str | None:
    """The preset a command runs: the one named, else ``quick`` when nothing names a model or data."""
    if preset is None and config_file is None and not _NAMES_A_SETUP & set(overrides):
        return "quick"
    return preset


def resolve_config(
    preset: str | None = None,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    hp: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Merge defaults, preset, YAML file and explicit options (in that order) into a valid config
    whose hyper-parameters are typed."""
    values: dict[str, Any] = {}
    recipe: Preset | None = None
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        recipe = PRESETS[preset]
        values.update(recipe.fields)
    sources = [_typed_fields(load_yaml_config(config_file), config_file)] if config_file is not None else []
    for source in [*sources, _typed_fields(overrides or {}, "the command line")]:
        # Model arguments add to the preset's (a ViT preset's img_size stays when --model-kwargs sets depth).
        kwargs = {**values.get("model_kwargs", {}), **source.pop("model_kwargs", {})}
        values.update(source, **({"model_kwargs": kwargs} if kwargs else {}))
    method = values.get("method", TrainConfig.method)
    if "structure" not in values:  # the method's own default
        from dstbench.core.registry import get_method

        values["structure"] = get_method(method).default_structure
    preset_hp = recipe.hyperparameters(method) if recipe is not None else {}
    merged_hp = {**preset_hp, **values.pop("hp", {}), **(hp or {})}
    cfg = TrainConfig(**values, hp=merged_hp).validate()
    cfg.hp = typed_hyperparameters(cfg.method, cfg.hp)
    cfg.epochs, cfg.warmup_epochs, cfg.hp = stretch(cfg.budget, cfg.method, cfg.epochs, cfg.warmup_epochs, cfg.hp, MAX_EPOCHS)
    return cfg
