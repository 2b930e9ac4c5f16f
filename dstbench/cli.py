"""The ``dstbench`` command line.

Bad input of any kind (unknown names, out-of-range values, missing or corrupt data or checkpoints)
ends with one line on stderr, ``dstbench: error: ...``, and exit code 2; never a traceback. Files
written before the error stay as they were, because every write is atomic.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .config import PRESETS, TrainConfig, resolve_config
from .errors import DstbenchError
from .hparams import parse_hp_assignments

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"dstbench: error: {message}\n")


def _add_train_options(parser: argparse.ArgumentParser, *, single_run: bool) -> None:
    """Options shared by ``train``, ``compare`` and ``sweep``. Defaults are None: unset means "use
    the preset/config/default", so explicit flags can be told apart from defaults."""
    add = parser.add_argument
    if single_run:
        add("--method", help="mask updater (see `dstbench methods`)")
        add("--sparsity", type=float, help="target sparsity in [0, 1), e.g. 0.9")
        add("--seed", type=int)
        add("--out", help="run directory")
        add("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add("--preset", choices=sorted(PRESETS), help="a named recipe (BiDST Table A.1, or quick)")
    add("--config", help="YAML file of options (and an `hp:` mapping)")
    add("--model", help="timm model name, e.g. cifar_resnet32 or resnet50")
    add("--dataset", help="cifar10, cifar100, imagefolder or synthetic")
    add("--data-dir", help="dataset folder or .tar.gz")
    add("--loader", choices=["memory", "ffcv", "torch"], help="data path (default: memory)")
    add("--beton-dir", help="folder with train.beton/test.beton from `dstbench data prepare`")
    add("--max-train-samples", type=int, help="class-balanced training subset")
    add("--max-test-samples", type=int, help="class-balanced test subset")
    add("--distribution", help="uniform, er or erk")
    add("--dense-layers", help="none, first or mest")
    add("--min-active", type=int, help="minimum active weights per layer (default 1)")
    add("--epochs", type=int)
    add("--batch-size", type=int)
    add("--eval-batch-size", type=int)
    add("--grad-accum", type=int, help="micro-batches per optimizer step")
    add("--lr", type=float)
    add("--momentum", type=float)
    add("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    add("--weight-decay", type=float)
    add("--decay-bn-and-bias", action=argparse.BooleanOptionalAction, default=None)
    add("--warmup-epochs", type=float)
    add("--eta-min", type=float)
    add("--label-smoothing", type=float)
    add("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast on CUDA")
    add("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    add("--device", help="cpu or cuda")
    add("--num-workers", type=int)
    add("--hp", action="append", default=[], metavar="NAME=VALUE", help="method hyper-parameter (repeatable)")
    add("--logger", choices=["none", "tensorboard", "wandb"], help="also log to TensorBoard or W&B offline (default none)")
    add("--quiet", action="store_true", help="no progress output")


_NOT_CONFIG = {"command", "preset", "config", "hp", "resume", "quiet", "func", "methods", "sparsities", "seeds", "run_dir", "json"}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = set(TrainConfig.__dataclass_fields__)
    return {k: v for k, v in vars(args).items() if k in fields and k not in _NOT_CONFIG and v is not None}


def _cmd_train(args: argparse.Namespace) -> int:
    from .trainer import train

    cfg = resolve_config(args.preset, args.config, _overrides(args), parse_hp_assignments(args.hp))
    summary = train(cfg, resume=args.resume, progress=not args.quiet)
    print(
        f"{summary['method']}: test_acc {summary['test_acc']:.4f}, topology updates {summary['topology_updates']}, "
        f"realised sparsity {summary['realised_sparsity']['sparsified']:.6f} -> {cfg.out}"
    )
    return 0


def _split(text: str | None, kind: type, what: str) -> list[Any] | None:
    if text is None:
        return None
    from .errors import ConfigError

    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what} is empty")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ConfigError(f"--{what} expects comma-separated {kind.__name__} values, got {text!r}") from None


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import format_table, run_grid

    methods = _split(args.methods, str, "methods") or ["set", "rigl"]
    summaries = run_grid(
        methods,
        sparsities=_split(args.sparsities, float, "sparsities"),
        seeds=_split(args.seeds, int, "seeds"),
        out=args.out,
        preset=args.preset,
        config_file=args.config,
        overrides=_overrides(args),
        hp=parse_hp_assignments(args.hp),
        progress=not args.quiet,
        baseline=args.baseline,
    )
    print(format_table(summaries, args.baseline))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect_run import inspect_run, render_inspection

    report = inspect_run(args.run_dir)
    print(json.dumps(report, indent=2) if args.json else render_inspection(report))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .registry import get_method, list_methods

    for name in list_methods():
        cls = get_method(name)
        print(f"{name:12s} {cls.paper}" if args.details else name)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import timm

    import dstbench.models

    names = timm.list_models(args.filter) if args.filter else list(dstbench.models.CIFAR_MODELS)
    print("\n".join(names))
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from dstbench.data import prepare

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
    parser = _Parser(prog="dstbench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train one sparse network")
    _add_train_options(train, single_run=True)
    train.set_defaults(func=_cmd_train)

    compare = sub.add_parser("compare", help="train every (method, sparsity, seed) and tabulate")
    compare.add_argument("--methods", help="comma-separated methods (default: set,rigl)")
    compare.add_argument("--sparsities", help="comma-separated sparsities")
    compare.add_argument("--seeds", help="comma-separated seeds (default: 0)")
    compare.add_argument("--out", help="output folder (default: runs/compare)")
    compare.add_argument("--baseline", help="method every other is tested against (default: the first of --methods)")
    _add_train_options(compare, single_run=False)
    compare.set_defaults(func=_cmd_compare)

    inspect = sub.add_parser("inspect", help="per-layer counts, realised sparsity and topology of a run")
    inspect.add_argument("run_dir")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=_cmd_inspect)

    methods = sub.add_parser("methods", help="list registered mask updaters")
    methods.add_argument("--details", action="store_true", help="with their papers")
    methods.set_defaults(func=_cmd_methods)

    models = sub.add_parser("models", help="list the CIFAR backbones (or timm models matching --filter)")
    models.add_argument("--filter", help="timm wildcard, e.g. 'resnet*'")
    models.set_defaults(func=_cmd_models)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    prepare = data_sub.add_parser("prepare", help="write train.beton and test.beton for the FFCV loader")
    prepare.add_argument("--dataset", required=True)
    prepare.add_argument("--data-dir")
    prepare.add_argument("--out", required=True, help="output folder")
    prepare.add_argument("--max-train-samples", type=int)
    prepare.add_argument("--max-test-samples", type=int)
    prepare.add_argument("--seed", type=int, default=0)
    prepare.set_defaults(func=_cmd_data_prepare)

    try:
        from dstbench.analysis.commands import add_commands
    except ImportError:
        pass
    else:
        add_commands(sub, _add_train_options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors (already printed as one line) and --help
        return exit_.code if isinstance(exit_.code, int) else 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
        return code
    except DstbenchError as exc:
        print(f"dstbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dstbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
