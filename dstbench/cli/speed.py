"""``dstbench speed``: prove and time each execution backend on runs' final masks (:mod:`dstbench.speed`).

:mod:`dstbench.cli.app` calls :func:`add_command` while it builds its parser. The numbers go to
``speed.json`` in the run folder (or ``--out/RUN_NAME/speed.json``), written atomically; the table
printed is the end-to-end speedup over ``masked`` per backend, and every refused backend's reason.
The figures of measured speed, ``plot speed`` and ``plot crossover``, are registered here too, on the
``plot`` command of :mod:`dstbench.cli.analysis`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dstbench.cli.options import split_list
from dstbench.core.errors import ConfigError
from dstbench.core.hparams import Sparsity, check_value
from dstbench.core.validation import POSITIVE_FLOAT, POSITIVE_INT

__all__ = ["add_command", "add_plot_kinds", "written"]


def add_command(sub: Any) -> None:
    speed = sub.add_parser("speed", help="prove and time execution backends (masked, shrink, csr, bsr, semi-structured) on runs' final masks")
    speed.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished or checkpointed run folders")
    speed.add_argument("--backend", default="masked,shrink,csr", help="comma-separated backends; masked is always added (the baseline)")
    speed.add_argument("--batch-size", type=POSITIVE_INT, help="throughput batch (default: the run's training batch)")
    speed.add_argument("--threads", type=POSITIVE_INT, help="CPU threads for torch (default: torch's current setting)")
    speed.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    speed.add_argument("--rounds", type=POSITIVE_INT, default=3, help="interleaved timing rounds per measurement")
    speed.add_argument("--min-time", type=POSITIVE_FLOAT, default=0.2, help="seconds of blocked_autorange per backend per round")
    speed.add_argument("--no-layers", action="store_true", help="time end to end only, not each layer")
    speed.add_argument("--out", help="write OUT/RUN_NAME/speed.json instead of RUN_DIR/speed.json")
    speed.set_defaults(func=_cmd_speed)


def _device(text: str) -> Any:
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"--device {text!r} is not a device; use cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {text}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {text}: speed measures cpu or cuda only")
    return device


def _cmd_speed(args: argparse.Namespace) -> int:
    import torch

    from dstbench.runs.atomic import atomic_write_json
    from dstbench.speed import backend_names
    from dstbench.speed.measure import Settings, load_run, measure

    names: list[str] = split_list(args.backend, str, "backend") or []
    unknown = [name for name in names if name not in backend_names()]
    if unknown:
        raise ConfigError(f"unknown backend {unknown[0]!r}; valid choices: {', '.join(backend_names())}")
    names = ["masked", *[name for name in names if name != "masked"]]
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings(tuple(names), _device(args.device), torch.get_num_threads(), args.batch_size, args.rounds, args.min_time, not args.no_layers)
    loaded = [load_run(path) for path in args.run_dirs]  # every folder checked before hours of timing
    for run in loaded:
        result = measure(run, settings)
        target = Path(args.out) / run.path.name / "speed.json" if args.out else run.path / "speed.json"
        atomic_write_json(target, result)
        print(_render(result, target))
    return 0


def _render(result: dict[str, Any], target: Path) -> str:
    lines = [f"{result['run_dir']} -> {target}"]
    lines.append(f"{'backend':16s} {'batch 1 ms':>11s} {'x masked':>9s} {'batch ' + str(result['batch_size']) + ' img/s':>15s} {'x masked':>9s} "
                 f"{'rebuild ms':>11s} {'train step ms':>14s} {'x masked':>9s}")  # fmt: skip
    ends = result["end_to_end"]
    one, big, train = ends["batch_1"], ends[f"batch_{result['batch_size']}"], result.get("training_step", {})
    for name, record in result["backends"].items():
        if record["status"] != "proved":
            lines.append(f"{name:16s} {record['status']}: {record['reason']}")
            continue
        lines.append(
            f"{name:16s} {one[name]['seconds'] * 1e3:11.2f} {one[name]['speedup_over_masked']:9.2f} "
            f"{big[name]['images_per_second']:15.1f} {big[name]['speedup_over_masked']:9.2f} {record['rebuild_seconds_per_update'] * 1e3:11.1f}"
            + (f" {train[name]['seconds'] * 1e3:14.1f} {train[name]['speedup_over_masked']:9.2f}" if name in train else f" {'-':>14s} {'-':>9s}")
        )
        lines.extend(f"  {note}" for note in [*record["notes"], *([record["training_status"]] if "training_status" in record else [])])
    return "\n".join(lines)


def written(paths: list[Path]) -> int:
    print("wrote " + ", ".join(map(str, paths)))
    return 0


# -- plot speed, plot crossover -----------------------------------------------------------------------
def add_plot_kinds(kinds: Any) -> None:
    """``plot speed`` and ``plot crossover``, on the ``plot`` command's subparsers (:mod:`dstbench.cli.analysis`)."""
    speed = kinds.add_parser("speed", help="speedup over masked per method and backend, and re-compression overhead, from `dstbench speed` (Figure 5)")
    speed.add_argument("dirs", nargs="+", metavar="DIR", help="folders of runs or run directories (runs timed by `dstbench speed`)")
    speed.add_argument("--out", required=True, help="FILE.png or FILE.pdf (both are written)")
    speed.set_defaults(func=_cmd_plot_speed)
    cross = kinds.add_parser("crossover", help="per-layer speedup against sparsity of each backend on a model's real layer shapes")
    cross.add_argument("--model", required=True, help="timm model name, e.g. cifar_vgg19 (see `dstbench models`)")
    cross.add_argument("--sparsities", default="0.5,0.8,0.9,0.95,0.98,0.99", help="comma-separated sparsities (default: 0.5,0.8,0.9,0.95,0.98,0.99)")
    cross.add_argument("--backends", default="csr,bsr,shrink", help="csr (unstructured masks), bsr (4x4 blocks), shrink (channels) (default: all)")
    cross.add_argument("--batch", type=POSITIVE_INT, default=1, help="input batch (1: latency; the training batch: throughput) (default: 1)")
    cross.add_argument("--threads", type=POSITIVE_INT, default=1, help="CPU threads for torch (default: 1)")
    cross.add_argument("--rounds", type=POSITIVE_INT, default=1, help="interleaved timing rounds per point (default: 1)")
    cross.add_argument("--min-time", type=POSITIVE_FLOAT, default=0.02, help="seconds of blocked_autorange per kernel per round (default: 0.02)")
    cross.add_argument("--out", required=True, help="FILE.png or FILE.pdf (both are written, and FILE.json with the measured points)")
    cross.set_defaults(func=_cmd_plot_crossover)


def _cmd_plot_speed(args: argparse.Namespace) -> int:
    from dstbench.analysis.plots import figure_paths, save_figure
    from dstbench.analysis.report import report_rows, run_summaries
    from dstbench.analysis.runs import complete_runs
    from dstbench.analysis.speed import speed_rows
    from dstbench.analysis.speed_plots import speed_figure

    figure_paths(args.out)  # a bad --out fails before any run is read
    summaries = run_summaries(complete_runs(*args.dirs))
    rows = speed_rows(report_rows(summaries), {summary["run_dir"]: summary for summary in summaries})
    return written(save_figure(speed_figure(rows), args.out))


def _cmd_plot_crossover(args: argparse.Namespace) -> int:
    from dstbench.analysis.plots import figure_paths, save_figure
    from dstbench.analysis.speed_plots import crossover_figure
    from dstbench.runs.atomic import atomic_write_json
    from dstbench.speed.crossover import LayerTiming, crossover

    paths = figure_paths(args.out)
    sparsities = [check_value("--sparsities", value, Sparsity) for value in split_list(args.sparsities, float, "sparsities") or []]
    backends: list[str] = split_list(args.backends, str, "backends") or []
    data = crossover(args.model, sparsities, backends, LayerTiming(args.batch, args.threads, args.rounds, args.min_time))
    target = paths[0].with_suffix(".json")
    atomic_write_json(target, data)
    return written([*save_figure(crossover_figure(data), args.out), target])
