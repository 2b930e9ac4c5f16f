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
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from dstbench.cli.options import (
    GridFlags,
    GridOptions,
    add_execution_options,
    add_grid_options,
    add_train_options,
    execution_from_args,
    split_list,
    train_overrides,
)
from dstbench.core.errors import DstbenchError
from dstbench.core.fielddocs import field_docs
from dstbench.core.hparams import parse_hp_assignments

__all__ = ["main", "build_parser", "describe_method"]


DESCRIPTION = (
    "Benchmark dynamic sparse training: train sparse networks with interchangeable mask-update methods, "
    "compare them over sparsities and seeds, and analyse FLOPs, mask topology, figures and tables."
)
"""The top-level ``--help`` text: plain words, not the module's reStructuredText docstring."""


COMPARE_SEEDS = (0, 1, 2)
"""``compare``'s seeds when ``--seeds`` is not given: with one seed its verdicts would all be "n=1: no test"."""


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


def _cmd_train(args: argparse.Namespace) -> int:
    from dstbench.config import implied_preset, resolve_config
    from dstbench.train.distributed import device_line
    from dstbench.train.loop import train

    overrides = train_overrides(args)
    preset = implied_preset(args.preset, args.config, overrides)
    cfg = resolve_config(preset, args.config, overrides, parse_hp_assignments(args.hp))
    if not args.quiet and os.environ.get("RANK", "0") == "0":
        print(device_line([cfg.device], cfg.threads), flush=True)
    summary = train(cfg, resume=args.resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") != "0":
        return 0  # torchrun: rank 0 reports
    print(
        f"{summary['method']}: test_acc {summary['test_acc']:.4f}, topology updates {summary['topology_updates']}, "
        f"realised sparsity {summary['realised_sparsity']['sparsified']:.6f} -> {cfg.out}"
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from dstbench.grid.compare import format_table, run_grid

    grid = GridOptions.from_args(args)
    summaries = run_grid(
        grid.methods or ["set", "rigl"],
        sparsities=split_list(args.sparsities, float, "sparsities"),
        seeds=grid.seeds or list(COMPARE_SEEDS),
        out=grid.out,
        preset=args.preset,
        config_file=args.config,
        overrides=train_overrides(args),
        hp=parse_hp_assignments(args.hp),
        progress=not args.quiet,
        execution=execution_from_args(args),
        rerun_mismatched=grid.rerun_mismatched,
        baseline=grid.baseline,
    )
    print(format_table(summaries, grid.baseline))
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
    from dstbench.core.budget import describe_budget
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
    lines.append(f"  budget: {describe_budget(cls)}")
    if getattr(cls, "narrows_model", False):
        from dstbench.train.narrow import narrowable_models

        lines.append(f"  models (with a channel_multiplier): {', '.join(narrowable_models())}")
    if (structure := getattr(cls, "default_structure", "unstructured")) != "unstructured":
        lines.append(f"  default structure: {structure} (--structure sets another)")
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dstbench", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train one sparse network")
    add_train_options(train, single_run=True)
    train.set_defaults(func=_cmd_train)

    compare = sub.add_parser("compare", help="train every (method, sparsity, seed) and tabulate")
    add_grid_options(compare, GridFlags(
        "comma-separated methods (default: set,rigl)", "output folder (default: runs/compare)",
        seeds_help="comma-separated seeds (default: 0,1,2: enough for Welch's test against the baseline; one seed gives no test)",
    ))  # fmt: skip
    compare.add_argument("--sparsities", help="comma-separated sparsities (default: the preset's, 0.9 for quick)")
    add_train_options(compare, single_run=False)
    add_execution_options(compare)
    compare.set_defaults(func=_cmd_compare)

    _add_lottery(sub)

    inspect = sub.add_parser("inspect", help="per-layer counts, realised sparsity and topology of a run")
    inspect.add_argument("run_dir", help="a run directory (from train, compare or sweep)")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    inspect.set_defaults(func=_cmd_inspect)

    methods = sub.add_parser(
        "methods", help="list registered mask updaters",
        epilog="Baselines: dense, small-dense (a dense network narrowed to the sparse one's active weights) and "
        "--budget 2x|5x of train/compare/sweep (RigL's longer schedules; --details says what each method scales).",
    )  # fmt: skip
    methods.add_argument(
        "--details", action="store_true", help="also print each method's paper, needs and hyper-parameters"
    )
    methods.set_defaults(func=_cmd_methods)

    models = sub.add_parser("models", help="list the models dstbench registers (or timm models matching --filter)")
    models.add_argument(
        "--filter", help="list timm's models matching this wildcard instead, e.g. 'resnet*' (default: dstbench's own)"
    )
    models.set_defaults(func=_cmd_models)

    _add_data(sub)

    from dstbench.cli.analysis import add_commands

    add_commands(sub)
    from dstbench.cli.speed import add_command as add_speed

    add_speed(sub)
    return parser


def _add_lottery(sub: Any) -> None:
    from dstbench.core.validation import FRACTION, NON_NEGATIVE_INT, POSITIVE_INT, SEED, SPARSITY

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


def _add_data(sub: Any) -> None:
    from dstbench.core.validation import POSITIVE_INT, SEED

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
    if command == "train":
        return f"dstbench: interrupted by {name}; every finished epoch is saved: run the same command with --resume to continue"
    if command in ("compare", "sweep", "lt", "reproduce"):
        return (f"dstbench: interrupted by {name}; finished runs and epochs are saved: run the same command "
                "to continue")
    return f"dstbench: interrupted by {name}"


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of a closed pipe raises nothing
    (the Python documentation's recipe for SIGPIPE)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _import_numpy_before_torch() -> None:
    """Import numpy here, where a Ctrl-C during the import propagates.

    Otherwise torch's C extension imports it, and clears any error on the way, a KeyboardInterrupt
    included: the signal is lost and the command carries on with a half-initialised numpy (seen in CI
    as ``module 'numpy' has no attribute 'matrix'`` after a SIGINT during start-up)."""
    import numpy  # noqa: F401


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
            _import_numpy_before_torch()
            code: int = args.func(args)
            return code
        except DstbenchError as exc:
            print(f"dstbench: error: {exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `dstbench models | head`: the reader has all it wanted
            _silence_stdout()
            return 128 + signal.SIGPIPE
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            with contextlib.suppress(Interrupted):
                print(_interrupted_message(signum, command), file=sys.stderr)
            return 128 + int(signum)


if __name__ == "__main__":
    sys.exit(main())
