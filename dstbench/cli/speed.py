"""``dstbench speed``: prove and time each execution backend on runs' final masks (:mod:`dstbench.speed`).

:mod:`dstbench.cli.app` calls :func:`add_command` while it builds its parser. The numbers go to
``speed.json`` in the run folder (or ``--out/RUN_NAME/speed.json``), written atomically; the table
printed is the end-to-end speedup over ``masked`` per backend, and every refused backend's reason.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dstbench.cli.options import split_list
from dstbench.core.errors import ConfigError
from dstbench.core.validation import POSITIVE_FLOAT, POSITIVE_INT

__all__ = ["add_command"]


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
    lines.append(f"{'backend':16s} {'batch 1 ms':>11s} {'x masked':>9s} {'batch ' + str(result['batch_size']) + ' img/s':>15s} {'x masked':>9s} {'rebuild ms':>11s}")
    ends = result["end_to_end"]
    one, big = ends["batch_1"], ends[f"batch_{result['batch_size']}"]
    for name, record in result["backends"].items():
        if record["status"] != "proved":
            lines.append(f"{name:16s} {record['status']}: {record['reason']}")
            continue
        lines.append(
            f"{name:16s} {one[name]['seconds'] * 1e3:11.2f} {one[name]['speedup_over_masked']:9.2f} "
            f"{big[name]['images_per_second']:15.1f} {big[name]['speedup_over_masked']:9.2f} {record['rebuild_seconds_per_update'] * 1e3:11.1f}"
        )
        lines.extend(f"  {note}" for note in record["notes"])
    return "\n".join(lines)
