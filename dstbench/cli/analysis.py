"""The analysis subcommands: ``flops`` (:mod:`dstbench.cli.flops`), ``sweep``, ``plot {iou,sparsity-curve,overhead,curves,ablation}`` and ``report``.

``dstbench.cli.app`` calls :func:`add_commands` while it builds its parser. ``sweep`` and ``reproduce``
take exactly ``compare``'s training and grid options (:mod:`dstbench.cli.options`) and train through
``compare``'s grid, so the three can never disagree on what an option means. Every error
is a :class:`~dstbench.core.errors.DstbenchError`, which the CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dstbench.cli.flops import add_flops
from dstbench.cli.speed import add_plot_kinds, written
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
from dstbench.core.errors import ConfigError
from dstbench.core.hparams import parse_hp_assignments
from dstbench.core.validation import POSITIVE_FLOAT, POSITIVE_INT
from dstbench.grid.sweep import DEFAULT_SPARSITIES, SWEEP_FILE

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    """Register the analysis subcommands on the CLI's subparsers."""
    add_flops(sub)
    _add_sweep(sub)
    _add_plot(sub)
    _add_reproduce(sub)
    report = sub.add_parser("report", help="Markdown and CSV tables (BiDST Tables 1 and 2) of a folder of runs")
    report.add_argument(
        "dir", help="a folder of runs (from compare or sweep) or one run directory; only finished runs are read"
    )
    report.add_argument("--out", metavar="DIR", help="where report.md and report.csv go (default: dir itself)")
    report.add_argument("--baseline", help="method every other is tested against (default: the first method)")
    report.add_argument("--paper", action="store_true", help="add the BiDST paper's published accuracies and gaps")
    report.add_argument(
        "--skip-incomplete", action="store_true",
        help="report the finished runs and list the rest (unfinished, empty, not folders) instead of refusing",
    )  # fmt: skip
    report.set_defaults(func=_cmd_report)


# -- sweep -----------------------------------------------------------------------------------------
def _add_sweep(sub: Any) -> None:
    sweep = sub.add_parser("sweep", help="extreme-sparsity sweep: every method at every sparsity (BiDST Figure 3)")
    add_grid_options(sweep, GridFlags(
        "comma-separated methods, e.g. rigl,set", "output folder (sweep.json, sweep.csv and one folder per run)",
        out_default="runs/sweep", methods_required=True,
    ))  # fmt: skip
    sweep.add_argument(
        "--sparsities",
        default=",".join(f"{s:g}" for s in DEFAULT_SPARSITIES),
        help="comma-separated sparsities",
    )
    sweep.add_argument(
        "--hp-grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="hyper-parameter values to sweep (repeatable; method.NAME for one method); every combination runs",
    )
    add_train_options(sweep, single_run=False)
    add_execution_options(sweep)
    sweep.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from dstbench.grid.sweep import TABLE_FILE, parse_hp_grid, run_sweep

    grid = GridOptions.from_args(args)
    points = run_sweep(
        grid.methods or [],
        out=args.out,
        sparsities=split_list(args.sparsities, float, "sparsities") or [],
        seeds=grid.seeds,
        preset=args.preset,
        config_file=args.config,
        overrides=train_overrides(args),
        hp=parse_hp_assignments(args.hp),
        hp_grid=parse_hp_grid(args.hp_grid),
        baseline=grid.baseline,
        progress=not args.quiet,
        execution=execution_from_args(args),
        rerun_mismatched=grid.rerun_mismatched,
    )
    print((Path(args.out) / TABLE_FILE).read_text())
    print(f"sweep: {len(points)} points -> {Path(args.out) / SWEEP_FILE}")
    return 0


# -- reproduce -------------------------------------------------------------------------------------
def _add_reproduce(sub: Any) -> None:
    from dstbench.grid.reproduce import SCALES, TARGETS

    reproduce = sub.add_parser("reproduce", help="run one of the BiDST paper's experiments at a scale, then report")
    reproduce.add_argument("target", choices=list(TARGETS), help="; ".join(f"{k}: {v.description}" for k, v in TARGETS.items()).replace("%", "%%"))
    reproduce.add_argument(
        "--scale", required=True, choices=list(SCALES), help="; ".join(f"{k}: {v.description}" for k, v in SCALES.items()).replace("%", "%%")
    )
    add_grid_options(reproduce, GridFlags(
        "comma-separated methods (default: the paper's, every built-in method with dense; plugins join when named)",
        "output folder (default: runs/reproduce/TARGET-SCALE-DATASET)",
        seeds_help="comma-separated seeds (default: the scale's)",
    ))  # fmt: skip
    reproduce.add_argument(
        "--extra-methods", metavar="METHODS",
        help="comma-separated methods (e.g. installed plugins) added to the grid of --methods; the scale's preset "
        "sets their cadences as the built-ins'",
    )  # fmt: skip
    add_train_options(reproduce, single_run=False)
    add_execution_options(reproduce)
    reproduce.set_defaults(func=_cmd_reproduce)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from dstbench.grid.reproduce import reproduce

    if args.preset or args.config:
        raise ConfigError("reproduce takes its recipe from the target and --scale; --preset and --config do not apply")
    grid = GridOptions.from_args(args)
    overrides = train_overrides(args)
    dataset = overrides.pop("dataset", None)
    grid_options: dict[str, Any] = {"execution": execution_from_args(args), "rerun_mismatched": grid.rerun_mismatched}
    if grid.seeds:
        grid_options["seeds"] = grid.seeds
    text = reproduce(
        args.target,
        args.scale,
        dataset=dataset,
        out=grid.out,
        methods=grid.methods,
        extra_methods=split_list(args.extra_methods, str, "extra-methods"),
        baseline=grid.baseline,
        overrides=overrides,
        hp=parse_hp_assignments(args.hp),
        progress=not args.quiet,
        **grid_options,
    )
    print(text)
    return 0


# -- plot ------------------------------------------------------------------------------------------
def _add_plot(sub: Any) -> None:
    plot = sub.add_parser("plot", help="figures (PNG and PDF): iou, sparsity-curve, overhead, curves, ablation, speed, crossover")
    kinds = plot.add_subparsers(dest="plot_command", required=True, parser_class=type(plot))

    iou = kinds.add_parser("iou", help="mask IoU against training progress (BiDST Figure 4)")
    iou.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories or folders of runs")
    iou.add_argument("--out", required=True, help="FILE.png or FILE.pdf (both are written)")
    interval = iou.add_mutually_exclusive_group()
    interval.add_argument("--interval", type=POSITIVE_FLOAT, help="compare masks EPOCHS apart (default: 1)")
    interval.add_argument("--interval-steps", type=POSITIVE_INT, help="compare masks N steps apart (default: --interval 1)")
    interval.add_argument("--per-update", action="store_true",
                          help="each update against the mask it replaced instead (not comparable across cadences)")  # fmt: skip
    iou.set_defaults(func=_cmd_plot_iou)

    curve = kinds.add_parser("sparsity-curve", help="accuracy against sparsity from a sweep (BiDST Figure 3)")
    curve.add_argument("sweep_dir", help="folder written by `dstbench sweep`")
    curve.add_argument("--out", required=True, help="FILE.png or FILE.pdf (both are written)")
    curve.set_defaults(func=_cmd_plot_curve)

    overhead = kinds.add_parser(
        "overhead", help="shares of training time in mask updates and inside per-step hooks, and time per update (BiDST Figure 5)"
    )
    overhead.add_argument("dirs", nargs="+", metavar="DIR", help="folders of runs or run directories")
    overhead.add_argument("--out", required=True, help="FILE.png or FILE.pdf (both are written)")
    overhead.set_defaults(func=_cmd_plot_overhead)

    curves = kinds.add_parser("curves", help="test accuracy and training loss per epoch, mean ± std over seeds, per cell")
    curves.add_argument("dirs", nargs="+", metavar="DIR", help="folders of runs or run directories")
    curves.add_argument("--out", required=True, help="FILE.png or FILE.pdf (both are written)")
    curves.add_argument("--metrics", type=_metric_list, default=None,
                        help="comma-separated panels from test_acc, train_loss, test_loss, train_acc (default: test_acc,train_loss)")  # fmt: skip
    curves.set_defaults(func=_cmd_plot_curves)

    ablation = kinds.add_parser("ablation", help="accuracy against a hyper-parameter from a --hp-grid sweep (Figure C.1)")
    ablation.add_argument("sweep_dir", help="folder written by `dstbench sweep --hp-grid ...`")
    ablation.add_argument("--hp", required=True, help="the swept hyper-parameter, e.g. lam or bidst.lam")
    ablation.add_argument("--out", required=True, help="FILE.png or FILE.pdf (both are written)")
    ablation.set_defaults(func=_cmd_plot_ablation)
    add_plot_kinds(kinds)  # speed, crossover


def _cmd_plot_iou(args: argparse.Namespace) -> int:
    from dstbench.analysis.plots import figure_paths, plot_iou
    from dstbench.analysis.runs import find_runs

    figure_paths(args.out)  # a bad --out fails before any run is read
    runs = find_runs(*args.run_dirs)
    return written(
        plot_iou(runs, args.out, interval_epochs=args.interval, interval=args.interval_steps, per_update=args.per_update)
    )


def _cmd_plot_curve(args: argparse.Namespace) -> int:
    from dstbench.analysis.plots import chance_accuracy, figure_paths, plot_sparsity_curve
    from dstbench.analysis.runs import load_run
    from dstbench.grid.sweep import load_sweep

    figure_paths(args.out)
    points = load_sweep(args.sweep_dir)
    # Chance accuracy from the runs' own classifiers. run_dir is as the sweep was given it (maybe relative
    # to another working directory), so a run is also looked for by name inside the sweep folder.
    run_dirs = set()
    for point in points:
        if point.get("run_dir"):
            for candidate in (Path(point["run_dir"]), Path(args.sweep_dir) / Path(point["run_dir"]).name):
                if (candidate / "plan.json").is_file():
                    run_dirs.add(candidate)
                    break
    chance = sorted({chance_accuracy(load_run(run_dir).plan) for run_dir in run_dirs})
    return written(plot_sparsity_curve(points, args.out, chance=chance))


def _cmd_plot_overhead(args: argparse.Namespace) -> int:
    from dstbench.analysis.overhead import plot_overhead
    from dstbench.analysis.plots import figure_paths
    from dstbench.analysis.runs import complete_runs

    figure_paths(args.out)
    return written(plot_overhead([run.summary for run in complete_runs(*args.dirs) if run.summary], args.out))


def _metric_list(text: str) -> list[str]:
    from dstbench.analysis.curves import METRICS

    metrics = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in metrics if name not in METRICS]
    if not metrics or unknown:
        raise argparse.ArgumentTypeError(f"expected names from {', '.join(METRICS)}, got {text!r}")
    return metrics


def _cmd_plot_curves(args: argparse.Namespace) -> int:
    from dstbench.analysis.curves import DEFAULT_METRICS, plot_curves
    from dstbench.analysis.plots import figure_paths
    from dstbench.analysis.runs import complete_runs

    figure_paths(args.out)
    return written(plot_curves(complete_runs(*args.dirs), args.out, args.metrics or DEFAULT_METRICS))


def _cmd_plot_ablation(args: argparse.Namespace) -> int:
    from dstbench.analysis.ablation import plot_ablation
    from dstbench.analysis.plots import figure_paths
    from dstbench.grid.sweep import load_sweep

    figure_paths(args.out)
    return written(plot_ablation(load_sweep(args.sweep_dir), args.hp, args.out))


# -- report ----------------------------------------------------------------------------------------
def _cmd_report(args: argparse.Namespace) -> int:
    from dstbench.analysis.report import write_report
    from dstbench.analysis.runs import Skipped
    from dstbench.runs.lock import run_lock

    skipped: list[Skipped] = []
    target = Path(args.out or args.dir)  # one writer per folder: not into a run that is training
    with run_lock(target, "writing report.md", enabled=target.is_dir()):
        text = write_report(
            args.dir, baseline=args.baseline, paper=args.paper, out=args.out, skip_incomplete=args.skip_incomplete,
            skipped=skipped,
        )  # fmt: skip
    for entry in skipped:
        print(f"dstbench: skipped {entry.line()}", file=sys.stderr)
    print(text)
    return 0
