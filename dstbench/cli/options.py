"""Options shared by several commands, each written once: the training options (one per
:class:`~dstbench.config.TrainConfig` field), the grid flags of ``compare``, ``sweep`` and ``reproduce``,
and where a grid executes (``--jobs``, ``--launcher``, the SLURM options).

Nothing here imports torch, so building the parser (and ``dstbench --help``) stays instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from dstbench.config import PRESETS, TrainConfig
from dstbench.core.errors import ConfigError
from dstbench.core.fielddocs import field_docs
from dstbench.core.validation import NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT
from dstbench.grid.execution import LAUNCHERS, Execution, SlurmOptions

__all__ = [
    "RERUN_HELP",
    "Choice",
    "GridFlags",
    "GridOptions",
    "add_train_options",
    "train_overrides",
    "split_list",
    "add_grid_options",
    "add_execution_options",
    "execution_from_args",
]

RERUN_HELP = "retrain (replacing) runs in --out made with other settings or code, instead of refusing"

# Options of one run only; the grid commands take the plural forms (--methods, --sparsities, --seeds).
_SINGLE_RUN_FIELDS = ("method", "sparsity", "seed", "out")
_NOT_FLAGS = ("hp",)  # set with --hp NAME=VALUE


class Choice:
    """argparse type of a ``Literal`` field: one of its choices, in any case (``--distribution ERK``)."""

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices
        self.__name__ = "choice"  # argparse names a type by it in "invalid <name> value"

    def __call__(self, text: str) -> str:
        for choice in self.choices:
            if text.casefold() == choice.casefold():
                return choice
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(self.choices)})")


def _shown(value: Any) -> Any:
    return "unset" if value is None else str(value).lower() if isinstance(value, bool) else value


def _default_text(name: str, default: Any) -> str:
    """The value an omitted option takes. A command runs the quick preset when none of --preset,
    --config, --model, --dataset, --data-dir is given (``config.implied_preset``): its help says so."""
    quick = PRESETS["quick"].fields
    if name in quick and quick[name] != default:
        return f"(default: {_shown(quick[name])} from the quick preset; {_shown(default)} with --preset, --config, --model, --dataset or --data-dir)"
    return f"(default: {_shown(default)})"


def _field_option(parser: argparse.ArgumentParser, f: dataclasses.Field[Any], annotation: Any, doc: str) -> None:
    """One ``--field-name`` option from a TrainConfig field: its type, choices, meaning and default."""
    flag = "--" + f.name.replace("_", "-")
    annotation = typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(options) == 1:
        annotation = options[0]
        annotation = typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    default = None if default in (dataclasses.MISSING, {}) else default  # nothing given: "unset"
    help_text = f"{doc} {_default_text(f.name, default)}".replace("%", "%%")
    # Defaults stay None, so an explicit flag can be told apart from a preset's or a config file's value;
    # ranges are checked once the config is resolved (TrainConfig.validate names the option).
    if annotation is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif typing.get_origin(annotation) is typing.Literal:
        choices = tuple(map(str, typing.get_args(annotation)))
        parser.add_argument(flag, type=Choice(choices), choices=choices, metavar="{" + ",".join(choices) + "}", help=help_text)
    else:
        metavar = {int: "N", float: "X"}.get(annotation, "NAME=VALUE,..." if typing.get_origin(annotation) is dict else "TEXT")
        parser.add_argument(flag, type=annotation if annotation in (int, float) else str, metavar=metavar, help=help_text)


def add_train_options(parser: argparse.ArgumentParser, *, single_run: bool) -> None:
    """Options shared by ``train``, ``compare``, ``sweep``, ``lt`` and ``reproduce``: one per TrainConfig
    field, generated, so an option is written once (the field, its type and its docstring)."""
    docs = field_docs(TrainConfig)
    hints = typing.get_type_hints(TrainConfig, include_extras=True)
    for f in dataclasses.fields(TrainConfig):
        if f.name in _NOT_FLAGS or (not single_run and f.name in _SINGLE_RUN_FIELDS):
            continue
        _field_option(parser, f, hints[f.name], docs.get(f.name, ""))
    if single_run:
        parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe (BiDST Table A.1, the ViT/DeiT recipes, or quick)")
    parser.add_argument("--config", help="YAML file of options (and an `hp:` mapping)")
    parser.add_argument(
        "--hp", action="append", default=[], metavar="NAME=VALUE", help="method hyper-parameter (repeatable)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given explicitly on the command line (the grid flags are not fields here)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"hp"}
    grid = {"methods", "sparsities", "seeds", "out"} if "methods" in vars(args) else set()
    return {k: v for k, v in vars(args).items() if k in fields - grid and v is not None}


def split_list(text: str | None, kind: type, what: str) -> list[Any] | None:
    """``"a,b"`` -> ``[kind("a"), kind("b")]``; None stays None (the flag was not given)."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what} is empty")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ConfigError(f"--{what} expects comma-separated {kind.__name__} values, got {text!r}") from None


# -- the grid flags of compare, sweep and reproduce ------------------------------------------------------
@dataclass(frozen=True)
class GridFlags:
    """How one grid command words and defaults the shared flags."""

    methods_help: str
    out_help: str
    out_default: str | None = None
    methods_required: bool = False
    seeds_help: str = "comma-separated seeds (default: 0)"


@dataclass(frozen=True)
class GridOptions:
    """The grid flags as parsed: which methods and seeds, where, against which baseline, and whether
    runs made with other settings are retrained."""

    methods: list[str] | None
    seeds: list[int] | None
    out: str | None
    baseline: str | None
    rerun_mismatched: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GridOptions:
        return cls(
            methods=split_list(args.methods, str, "methods"),
            seeds=split_list(args.seeds, int, "seeds"),
            out=args.out,
            baseline=args.baseline,
            rerun_mismatched=args.rerun_mismatched,
        )


def add_grid_options(parser: argparse.ArgumentParser, flags: GridFlags) -> None:
    """``--methods``, ``--seeds``, ``--out``, ``--baseline`` and ``--rerun-mismatched``."""
    add = parser.add_argument
    add("--methods", required=flags.methods_required, help=flags.methods_help)
    add("--seeds", help=flags.seeds_help)
    add("--out", default=flags.out_default, help=flags.out_help)
    add("--baseline", help="method every other is tested against (default: the first of --methods)")
    add("--rerun-mismatched", action="store_true", help=RERUN_HELP)


# -- where a grid executes ---------------------------------------------------------------------------------
def add_execution_options(parser: argparse.ArgumentParser) -> None:
    """``--jobs``, ``--devices``, ``--launcher`` and the SLURM options, for the grid commands."""
    add = parser.add_argument
    add("--jobs", type=POSITIVE_INT, default=1, help="runs at once, one process each (default: 1, in this process)")
    add("--devices", help="comma-separated devices the runs are placed on round-robin, e.g. cuda:0,cuda:1 (default: --device)")
    add("--launcher", choices=LAUNCHERS, default="none",
        help="submitit: slurm job array, or local (same path, no cluster) (default: none)")  # fmt: skip
    add("--slurm-partition", help="SLURM partition (default: the cluster's)")
    add("--slurm-gpus", type=NON_NEGATIVE_INT, default=0, help="GPUs per job (default: 0)")
    add("--slurm-cpus", type=POSITIVE_INT, default=2, help="CPUs per job (default: 2)")
    add("--slurm-mem-gb", type=POSITIVE_FLOAT, help="memory per job in GB (default: the cluster's)")
    add("--slurm-time", type=POSITIVE_INT, default=60 * 24, help="minutes per job before it is requeued (default: 1440)")
    add("--slurm-account", help="SLURM account to charge (default: the user's)")
    add("--sbatch", action="append", default=[], metavar="KEY=VALUE", help="extra #SBATCH line (repeatable)")
    add("--submitit-dir", help="job scripts and logs (default: OUT/.submitit)")


def execution_from_args(args: argparse.Namespace) -> Execution:
    devices = tuple(d.strip() for d in (args.devices or "").split(",") if d.strip())
    for device in devices:
        if device != "cpu" and not (device == "cuda" or device.startswith("cuda:")):
            raise ConfigError(f"--devices: unknown device {device!r}; e.g. cuda:0,cuda:1 or cpu")
    return Execution(
        jobs=args.jobs,
        devices=devices,
        launcher=args.launcher,
        slurm=SlurmOptions(
            partition=args.slurm_partition,
            gpus=args.slurm_gpus,
            cpus=args.slurm_cpus,
            mem_gb=args.slurm_mem_gb,
            time_min=args.slurm_time,
            account=args.slurm_account,
            sbatch=tuple(args.sbatch),
        ),
        submitit_dir=args.submitit_dir,
    )
