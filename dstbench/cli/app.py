"""The ``dstbench`` command line.

Bad input of any kind (unknown names, out-of-range values, missing or corrupt data or checkpoints)
ends with one line on stderr, ``dstbench: error: ...``, and exit code 2; never a traceback. Files
written before the error stay as they were, because every write is atomic. SIGINT and SIGTERM (what
SLURM and ``timeout`` send) end with one line too, leaving a folder that ``--resume`` continues; the
handlers are installed before torch is imported, so a Ctrl-C during start-up is no traceback either.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from dstbench.config import PRESETS, TrainConfig
from dstbench.core.errors import DstbenchError
from dstbench.grid.execution import add_execution_options
from dstbench.core.fielddocs import field_docs
from dstbench.core.hparams import parse_hp_assignments

__all__ = ["main", "build_parser", "add_train_options", "train_overrides", "split_list", "describe_method"]


DESCRIPTION = (
    "Benchmark dynamic sparse training: train sparse networks with interchangeable mask-update methods, "
    "compare them over sparsities and seeds, and analyse FLOPs, mask topology, figures and tables."
)
"""The top-level ``--help`` text: plain words, not the module's reStructuredText docstring."""


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the default is "unset" (None, False, an empty
    list) or the help already states it, so ``--help`` shows the value an omitted option takes."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and default not in (None, False, [], argparse.SUPPRESS)
            and "default" not in text
        ):
            text += (" " if text else "") + "(default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other error, and help shows defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"dstbench: error: {message}\n")


# Options of one run only; compare and sweep take the plural forms (--methods, --sparsities, --seeds).
_SINGLE_RUN_FIELDS = ("method", "sparsity", "seed", "out")
_NOT_FLAGS = ("hp",)  # set with --hp NAME=VALUE


def _field_option(parser: argparse.ArgumentParser, f: dataclasses.Field[Any], annotation: Any, doc: str) -> None:
    """One ``--field-name`` option from a TrainConfig field: its type, choices, meaning and default."""
    flag = "--" + f.name.replace("_", "-")
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(options) == 1:
        annotation = options[0]
    default = f.default if f.default is not dataclasses.MISSING else None
    shown = "unset" if default is None else str(default).lower() if isinstance(default, bool) else default
    help_text = f"{doc} (default: {shown})".replace("%", "%%")
    # Defaults stay None, so an explicit flag can be told apart from a preset's or a config file's value.
    if annotation is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif typing.get_origin(annotation) is typing.Literal:
        parser.add_argument(flag, choices=typing.get_args(annotation), help=help_text)
    else:
        metavar = {int: "N", float: "X"}.get(annotation, "TEXT")
        parser.add_argument(flag, type=annotation if annotation in (int, float) else str, metavar=metavar, help=help_text)


def add_train_options(parser: argparse.ArgumentParser, *, single_run: bool) -> None:
    """Options shared by ``train``, ``compare`` and ``sweep``: one per TrainConfig field, generated, so
    an option is written once (the field, its type and its docstring)."""
    docs = field_docs(TrainConfig)
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in _NOT_FLAGS or (not single_run and f.name in _SINGLE_RUN_FIELDS):
            continue
        _field_option(parser, f, hints[f.name], docs.get(f.name, ""))
    if single_run:
        parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe (BiDST Table A.1, or quick)")
    parser.add_argument("--config", help="YAML file of options (and an `hp:` mapping)")
    parser.add_argument(
        "--hp", action="append", default=[], metavar="NAME=VALUE", help="method hyper-parameter (repeatable)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


_NOT_CONFIG = {"command", "preset", "config", "hp", "resume", "quiet", "func", "methods", "sparsities", "seeds", "run_dir", "json"}


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = set(TrainConfig.__dataclass_fields__)
    return {k: v for k, v in vars(args).items() if k in fields and k not in _NOT_CONFIG and v is not None}


def _cmd_train(args: argparse.Namespace) -> int:
    from dstbench.config import resolve_config
    from dstbench.core.hparams import parse_hp_assignments
    from dstbench.train.loop import train

    cfg = resolve_config(args.preset, args.config, train_overrides(args), parse_hp_assignments(args.hp))
    summary = train(cfg, resume=args.resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") != "0":
        return 0  # torchrun: rank 0 reports
    print(
        f"{summary['method']}: test_acc {summary['test_acc']:.4f}, topology updates {summary['topology_updates']}, "
        f"realised sparsity {summary['realised_sparsity']['sparsified']:.6f} -> {cfg.out}"
    )
    return 0


def split_list(text: str | None, kind: type, what: str) -> list[Any] | None:
    if text is None:
        return None
    from dstbench.core.errors import ConfigError

    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what} is empty")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ConfigError(f"--{what} expects comma-separated {kind.__name__} values, got {text!r}") from None


def _cmd_compare(args: argparse.Namespace) -> int:
    from dstbench.grid.compare import format_table, run_grid
    from dstbench.grid.execution import execution_from_args

    methods = split_list(args.methods, str, "methods") or ["set", "rigl"]
    summaries = run_grid(
        methods,
        sparsities=split_list(args.sparsities, float, "sparsities"),
        seeds=split_list(args.seeds, int, "seeds"),
        out=args.out,
        preset=args.preset,
        config_file=args.config,
        overrides=train_overrides(args),
        hp=parse_hp_assignments(args.hp),
        progress=not args.quiet,
        execution=execution_from_args(args),
        rerun_mismatched=args.rerun_mismatched,
        baseline=args.baseline,
    )
    print(format_table(summaries, args.baseline))
    return 0


def _cmd_lt(args: argparse.Namespace) -> int:
    from dstbench.grid.compare import format_table
    from dstbench.grid.lottery import run_lottery

    overrides = {k: v for k, v in train_overrides(args).items() if k not in ("out", "sparsity")}
    summaries = run_lottery(
        args.sparsity,
        rounds=1 if args.one_shot else args.rounds,
        per_round=args.prune_per_round,
        rewind_step=args.rewind_step,
        out=args.out,
        preset=args.preset,
        config_file=args.config,
        overrides=overrides,
        hp=parse_hp_assignments(args.hp),
        progress=not args.quiet,
    )
    print(format_table(summaries))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from dstbench.runs.inspect import inspect_run, render_inspection

    report = inspect_run(args.run_dir)
    print(json.dumps(report, indent=2) if args.json else render_inspection(report))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from dstbench.core.registry import get_method, list_methods

    for name in list_methods():
        cls = get_method(name)
        print("\n".join(describe_method(name, cls)) if args.details else name)
    return 0


def describe_method(name: str, cls: type) -> list[str]:
    """A method's paper, what it needs (its declared cost) and every hyper-parameter with its default
    and docstring, for ``dstbench methods --details``; plugins are described the same way."""
    from dstbench.core.updater import Needs

    lines = [f"{name:12s} {getattr(cls, 'paper', '') or cls.__name__}"]
    try:
        needs = cls().needs
    except Exception as exc:  # a plugin that cannot be built with its defaults still gets listed
        lines.append(f"  needs: unknown ({type(exc).__name__}: {exc})")
    else:
        declared = [f"{f.name}={getattr(needs, f.name)}" for f in dataclasses.fields(Needs)
                    if getattr(needs, f.name) != f.default]  # fmt: skip
        lines.append(f"  needs: {', '.join(declared) or 'a sparse forward and backward only'}")
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        lines.append(f"  {f.name} = {default}  {docs.get(f.name, '')}".rstrip())
    return lines


def _cmd_models(args: argparse.Namespace) -> int:
    import timm
    from timm.models import model_entrypoint

    import dstbench.models

    if args.filter:
        names = timm.list_models(args.filter)
    else:  # every model dstbench registers into timm (the paper backbones and tiny_cnn), from timm itself
        names = [n for n in timm.list_models() if model_entrypoint(n).__module__.startswith(dstbench.models.__name__)]
    print("\n".join(names))
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from dstbench.data import prepare

    from dstbench.runs.rundir import check_output_dir

    check_output_dir(args.out)
    paths = prepare(
        args.dataset,
        args.data_dir,
        args.out,
        max_train_samples=args.max_train_samples,
        max_test_samples=args.max_test_samples,
        seed=args.seed,
    )
    print("\n".join(paths))
    return 0


RERUN_HELP = "retrain (replacing) runs in --out made with other settings or code, instead of refusing"


RERUN_HELP = "retrain (replacing) runs in --out made with other settings or code, instead of refusing"


def build_parser() -> argparse.ArgumentParser:
    from dstbench.core.validation import FRACTION, NON_NEGATIVE_INT, POSITIVE_INT, SEED, SPARSITY

    parser = _Parser(prog="dstbench", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train one sparse network")
    add_train_options(train, single_run=True)
    train.set_defaults(func=_cmd_train)

    compare = sub.add_parser("compare", help="train every (method, sparsity, seed) and tabulate")
    compare.add_argument("--methods", help="comma-separated methods (default: set,rigl)")
    compare.add_argument("--sparsities", help="comma-separated sparsities (default: the preset's, 0.9 for quick)")
    compare.add_argument("--seeds", help="comma-separated seeds (default: 0)")
    compare.add_argument("--out", help="output folder (default: runs/compare)")
    compare.add_argument("--rerun-mismatched", action="store_true", help=RERUN_HELP)
    compare.add_argument("--baseline", help="method every other is tested against (default: the first of --methods)")
    add_train_options(compare, single_run=False)
    add_execution_options(compare)
    compare.set_defaults(func=_cmd_compare)

    lottery = sub.add_parser("lt", help="lottery ticket: a dense run, then rounds of global magnitude pruning with rewinding")
    lottery.add_argument("--sparsity", type=SPARSITY, required=True, help="final sparsity, e.g. 0.9")
    lottery.add_argument("--rounds", type=POSITIVE_INT, help="pruning rounds (default: enough 20 %% rounds to reach --sparsity)")
    lottery.add_argument("--one-shot", action="store_true", help="one round straight to --sparsity")
    lottery.add_argument(
        "--prune-per-round", type=FRACTION, default=0.2, help="fraction of the remaining weights pruned per round (default: 0.2)"
    )
    lottery.add_argument(
        "--rewind-step", type=NON_NEGATIVE_INT, default=0, help="rewind to the dense run's weights after this many steps (0: init; default: 0)"
    )
    lottery.add_argument("--seed", type=SEED, help="seed of every run in the pipeline (default: 0)")
    lottery.add_argument("--out", default="runs/lt", help="pipeline folder: dense/, round01/, ... (default: runs/lt)")
    add_train_options(lottery, single_run=False)
    lottery.set_defaults(func=_cmd_lt)

    inspect = sub.add_parser("inspect", help="per-layer counts, realised sparsity and topology of a run")
    inspect.add_argument("run_dir", help="a run directory (from train, compare or sweep)")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    inspect.set_defaults(func=_cmd_inspect)

    methods = sub.add_parser("methods", help="list registered mask updaters")
    methods.add_argument(
        "--details", action="store_true", help="also print each method's paper, needs and hyper-parameters"
    )
    methods.set_defaults(func=_cmd_methods)

    models = sub.add_parser("models", help="list the models dstbench registers (or timm models matching --filter)")
    models.add_argument(
        "--filter", help="list timm's models matching this wildcard instead, e.g. 'resnet*' (default: dstbench's own)"
    )
    models.set_defaults(func=_cmd_models)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    prepare = data_sub.add_parser("prepare", help="write train.beton and test.beton for the FFCV loader")
    prepare.add_argument("--dataset", required=True, help="cifar10, cifar100, imagefolder or synthetic")
    prepare.add_argument("--data-dir", help="dataset folder or .tar.gz (default: none; synthetic needs none)")
    prepare.add_argument("--out", required=True, help="output folder for train.beton and test.beton")
    prepare.add_argument("--max-train-samples", type=POSITIVE_INT, help="class-balanced training subset (default: all)")
    prepare.add_argument("--max-test-samples", type=POSITIVE_INT, help="class-balanced test subset (default: all)")
    prepare.add_argument("--seed", type=SEED, default=0, help="seed of the subset draw (and of synthetic data)")
    prepare.set_defaults(func=_cmd_data_prepare)

    from dstbench.cli.analysis import add_commands

    add_commands(sub)
    return parser


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; raised where the program is, so atomic writes unwind cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` while the command runs (then the old handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _interrupted_message(signum: int, command: str | None) -> str:
    name = signal.Signals(signum).name
    if command in ("train", "compare", "sweep"):
        return (f"dstbench: interrupted by {name}; every finished epoch is saved: "
                "run the same command with --resume (compare/sweep: the same command) to continue")
    return f"dstbench: interrupted by {name}"


def main(argv: Sequence[str] | None = None) -> int:
    words = [word for word in (sys.argv[1:] if argv is None else argv) if not word.startswith("-")]
    command: str | None = words[0] if words else None  # known before parsing, for a signal during start-up
    with _signals_interrupt():
        try:
            parser = build_parser()
            try:
                args = parser.parse_args(argv)
            except SystemExit as exit_:  # usage errors (already printed as one line) and --help
                return exit_.code if isinstance(exit_.code, int) else 2
            logging.basicConfig(
                level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
            )
            code: int = args.func(args)
            return code
        except DstbenchError as exc:
            print(f"dstbench: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            with contextlib.suppress(Interrupted):
                print(_interrupted_message(signum, command), file=sys.stderr)
            return 128 + int(signum)


if __name__ == "__main__":
    sys.exit(main())
