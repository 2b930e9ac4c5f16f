"""The analysis subcommands: ``flops``, ``sweep``, ``plot {iou,sparsity-curve,overhead}`` and ``report``.

``dstbench.cli.app`` calls :func:`add_commands` while it builds its parser. ``sweep`` and ``reproduce``
take exactly ``compare``'s training and grid options (:mod:`dstbench.cli.options`) and train through
``compare``'s grid, so the three can never disagree on what an option means. Every error
is a :class:`~dstbench.core.errors.DstbenchError`, which the CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from dstbench.cli.speed import add_plot_kinds, written
from dstbench.cli.options import (
    Choice,
    GridFlags,
    GridOptions,
    add_execution_options,
    add_grid_options,
    add_train_options,
    execution_from_args,
    split_list,
    train_overrides,
)
from dstbench.core.distributions import DenseProfile, Distribution
from dstbench.core.errors import ConfigError
from dstbench.core.hparams import parse_hp_assignments
from dstbench.core.structures import STRUCTURE_FORMS
from dstbench.core.model_kwargs import parse_model_kwargs, to_timm
from dstbench.core.validation import NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, SPARSITY
from dstbench.grid.sweep import DEFAULT_SPARSITIES, SWEEP_FILE

if TYPE_CHECKING:
    from torch import nn

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    """Register the analysis subcommands on the CLI's subparsers."""
    _add_flops(sub)
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


# -- flops -----------------------------------------------------------------------------------------
def _add_flops(sub: Any) -> None:
    flops = sub.add_parser("flops", help="forward, inference and training FLOPs of a model (RigL App. H)")
    add = flops.add_argument
    add("--model", required=True, help="timm model name, e.g. resnet50 or cifar_resnet32")
    add("--input-size", type=POSITIVE_INT, required=True, help="input height = width, e.g. 224 or 32")
    add("--model-kwargs", default="", metavar="NAME=VALUE,...", help="arguments of timm.create_model, as train takes them")
    add("--num-classes", type=POSITIVE_INT, help="classifier outputs (default: the model's own default head)")
    add("--sparsity", type=SPARSITY, default=0.0, help="target sparsity in [0, 1); 0 is dense")
    add("--distribution", type=Choice(get_args(Distribution)), choices=get_args(Distribution), default="uniform",
        help="how sparsity is spread over layers")  # fmt: skip
    add("--dense-layers", type=Choice(get_args(DenseProfile)), choices=get_args(DenseProfile), default="none",
        help="layers kept dense")  # fmt: skip
    add("--min-active", type=NON_NEGATIVE_INT, default=1, help="minimum active weights per layer")
    add("--structure", help=f"mask structure: {STRUCTURE_FORMS} (default: the method's own, else unstructured)")
    add("--method", help="mask updater whose training FLOPs to count (needs --epochs and --train-samples)")
    add("--epochs", type=POSITIVE_INT, help="training epochs (needed with --method)")
    add("--train-samples", type=POSITIVE_INT, help="N_train, samples per epoch, e.g. 1281167 for ImageNet (needed with --method)")
    add("--batch-size", type=POSITIVE_INT, default=128, help="samples per step; sets how often schedules fire")
    add("--hp", action="append", default=[], metavar="NAME=VALUE",
        help="method hyper-parameter (repeatable; default: the method's own)")  # fmt: skip
    add("--json", action="store_true", help="print JSON instead of a table")
    flops.set_defaults(func=_cmd_flops)


def _build_model(name: str, num_classes: int | None, kwargs: dict[str, Any], input_size: int) -> nn.Module:
    """The model as training builds it; without ``num_classes``, with the model's own default head. A
    model that cannot take ``input_size`` images is one line, as in training."""
    import timm

    import dstbench.models  # noqa: F401  (registers the CIFAR backbones)
    from dstbench.train.backbone import build_model, check_model, check_model_name

    check_model_name(name)  # the one place unknown names are reported
    check_model(name, kwargs, num_classes or 1000, input_size)  # the head's width does not change what fits
    if num_classes is not None:
        return build_model(name, num_classes, kwargs)
    model: nn.Module = timm.create_model(name, **to_timm(kwargs))
    return model


def _narrowed_model(args: argparse.Namespace, updater: Any, num_classes: int) -> nn.Module:
    from dstbench.train.narrow import check_narrowable, narrow_for
    from dstbench.train.backbone import build_model

    check_narrowable(args.model, args.method)
    narrowing = narrow_for(args.model, num_classes, args.sparsity, args.distribution, args.dense_layers, args.min_active)
    updater.narrowed(narrowing.record())
    kwargs = {**parse_model_kwargs(args.model_kwargs), "channel_multiplier": narrowing.channel_multiplier}
    return build_model(args.model, num_classes, kwargs)


def _check_flops_args(args: argparse.Namespace) -> None:
    if args.input_size < 1:
        raise ConfigError(f"--input-size must be >= 1, got {args.input_size}")
    if args.method is None:
        if args.hp or args.epochs is not None or args.train_samples is not None:
            raise ConfigError("--hp, --epochs and --train-samples describe training: give --method too")
        return
    if args.epochs is None or args.train_samples is None:
        raise ConfigError("--method needs --epochs and --train-samples to count training FLOPs")
    for name in ("epochs", "train_samples", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def _cmd_flops(args: argparse.Namespace) -> int:
    from dstbench.core.distributions import plan_sparsity
    from dstbench.core.layers import describe_layers
    from dstbench.core.registry import create_updater

    from dstbench.engine.cost import count_forward_flops, forward_report, plan_active, predict_flops, realisable_densities
    from dstbench.runs.tickets import method_inputs
    from dstbench.train.narrow import full_width_flops

    _check_flops_args(args)
    updater = create_updater(args.method, parse_hp_assignments(args.hp)) if args.method else None
    model = _build_model(args.model, args.num_classes, parse_model_kwargs(args.model_kwargs), args.input_size)
    if updater is not None and updater.narrows_model:  # small-dense: the narrowed network, as training builds it
        model = _narrowed_model(args, updater, int(getattr(model, "num_classes", args.num_classes or 1000)))
    sparsity = args.sparsity if updater is None or updater.needs.sparse else 0.0
    layers = describe_layers(model)
    structure = args.structure or (updater.default_structure if updater is not None else "unstructured")
    plan = plan_sparsity(layers, sparsity, args.distribution, args.dense_layers, min_active=args.min_active, structure=structure)
    forward = count_forward_flops(model, args.input_size)
    result: dict[str, Any] = {
        "model": args.model,
        "input_size": args.input_size,
        "num_classes": getattr(model, "num_classes", args.num_classes),
        "sparsity": plan.sparsity,
        "distribution": plan.distribution,
        "dense_layers": plan.dense_layers,
        "structure": plan.structure,
    }
    if updater is None:
        result.update(forward_report(forward, plan_active(plan), realisable_densities(plan, plan_active(plan))))
    else:
        result.update(
            method=args.method, epochs=args.epochs, train_samples=args.train_samples, batch_size=args.batch_size
        )
        result.update(
            predict_flops(
                forward,
                model,
                plan,
                updater,
                epochs=args.epochs,
                train_samples=args.train_samples,
                batch_size=args.batch_size,
                input_size=args.input_size,
                inputs=method_inputs(updater),
            )
        )
        if updater.narrows_model:  # small-dense: "x dense" against the full-width network, as a run reports it
            result.update(full_width_flops(result, args.model, int(result["num_classes"]), args.input_size))
    print(json.dumps(result, indent=2) if args.json else _render_flops(result))
    return 0


def _render_flops(result: dict[str, Any]) -> str:
    lines = [
        f"{result['model']} at {result['input_size']}x{result['input_size']}, sparsity {result['sparsity']:g} "
        f"({result['distribution']}, dense layers: {result['dense_layers']})",
        f"{'layer':40s} {'dense FLOPs':>14s} {'density':>9s} {'sparse FLOPs':>14s}",
    ]
    for name, layer in result["layers"].items():
        lines.append(f"{name:40s} {layer['dense_flops']:14.4g} {layer['density']:9.4f} {layer['sparse_flops']:14.4g}")
    lines.append(
        f"forward FLOPs per sample: dense {result['dense_forward_flops']:.4g}, "
        f"sparse {result['sparse_forward_flops']:.4g}, realisable with {result['structure']} kernels "
        f"{result['realisable_forward_flops']:.4g}"
    )
    if "train_flops" in result:
        lines.append(
            f"training FLOPs ({result['method']}, {result['epochs']} epochs x {result['train_samples']} samples, "
            f"{result['mask_updates']} mask updates): {result['train_flops']:.4g} = "
            f"{result['train_flops_relative']:.4f} x dense ({result['dense_train_flops']:.4g})"
        )
        if result["density_policy"] == "scheduled_global":
            lines.append(
                f"note: {result['method']}'s total follows its schedule, but global pruning splits it across layers "
                "during training; this spreads it like the plan (a run's summary.json integrates the real split)"
            )
        elif result["density_policy"] not in ("exact", "scheduled") and result["mask_updates"]:
            lines.append(
                f"note: {result['method']}'s layer counts change during training; this assumes its initial masks "
                "throughout (a run's summary.json integrates the real timeline)"
            )
    return "\n".join(lines)


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
    plot = sub.add_parser("plot", help="figures (PNG and PDF): iou, sparsity-curve, overhead, ablation, speed, crossover")
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
