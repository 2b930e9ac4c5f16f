"""One command that checks and times dstbench's GPU path, as a user with one GPU would run it.

    python benchmarks/gpu_check.py [--steps 300] [--jobs 4] [--data-dir cifar10-jpeg.tar.gz]
    python benchmarks/gpu_check.py --cpu-smoke      # the same plumbing, tiny, on the CPU (no GPU numbers)

1. **Every built-in method on the fast path.** ``dstbench compare --jobs 1 --compile --amp
   --channels-last`` trains each built-in method (``--preset cifar-resnet32``: He ResNet-32, batch 64,
   90 %) for two epochs alone on the GPU. Each run's steady-state epoch (``summary.json``'s
   ``wall_time``: the median of epochs 2..E, here epoch 2) gives its projected wall time for a
   158-epoch run on full CIFAR-10 (50,000 images): epoch seconds x 50,000 / images per epoch x 158.
   Goal on one H200: at most 8 minutes per run. The run's ``compile`` report (fast steps, eager
   hooks) is printed beside it, and the saved weights are checked to be zero off their masks.
2. **Table 1's grid with ``--jobs N``.** ``compare --jobs N`` runs BiDST, RigL and MEST (N runs at
   once on the one GPU); the slowest run's steady epoch under that sharing gives the projected wall
   time of the 27-run grid (3 methods x 3 sparsities x 3 seeds) in waves of N. Goal: at most one
   GPU-hour.
3. **Device agreement.** One mask update per built-in method, fed identical weights, gradients and
   method state on the CPU and on the GPU (fp32, TF32 off), must give identical masks except at
   exact ties (:mod:`dstbench.speed.agreement`). This is the pass/fail check: it fails only for a
   device bug.
4. **Training-level spread, for information.** SET trained 8 steps on the CPU (1 thread), on the CPU
   with 2 threads and on the GPU: the entries in which the masks of the first topology update differ.
   Rounding before the update moves boundary entries on any two set-ups, so the GPU's spread is
   printed beside the CPU's own thread-to-thread spread and is not a criterion.

Without CUDA it stops at once with one line on stderr and exit code 2 (unless ``--cpu-smoke``).
Synthetic CIFAR-shaped data is used unless ``--data-dir`` names real CIFAR-10 (throughput does not
depend on pixel values).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ beside it, however it is started
from mask_agreement import builtin_methods, check_methods  # noqa: E402

from dstbench.speed.agreement import Agreement, Side  # noqa: E402

CIFAR_TRAIN_IMAGES = 50_000
EPOCHS = 158
TABLE1_RUNS = 27  # 3 methods x 3 sparsities x 3 seeds, as counted in issue 24
TABLE1_METHODS = ("bidst", "rigl", "mest")
RUN_GOAL_MINUTES = 8.0
GRID_GOAL_HOURS = 1.0
NEEDS_A_TICKET = ("lt",)  # trains from another run's ticket: not a stand-alone run


def _project_minutes(summary: dict[str, Any], images_per_epoch: int) -> float | None:
    """A 158-epoch full-CIFAR run's minutes from this run's steady-state epoch (None: not recorded)."""
    seconds = (summary.get("wall_time") or {}).get("epoch_seconds")
    return None if seconds is None else seconds * CIFAR_TRAIN_IMAGES / images_per_epoch * EPOCHS / 60


def _compare(args: argparse.Namespace, out: Path, methods: Sequence[str], jobs: int, seeds: str) -> list[dict[str, Any]]:
    """``dstbench compare`` as a user runs it (a subprocess), on the fast path; the runs' summaries."""
    grid_yaml = out.parent / "grid.yaml"  # synthetic sizes are config fields, not flags
    grid_yaml.write_text(f"synthetic_train_samples: {args.samples}\nsynthetic_test_samples: 64\n")
    data = (["--dataset", "cifar10", "--data-dir", args.data_dir, "--max-train-samples", str(args.samples)]
            if args.data_dir else ["--dataset", "synthetic", "--config", str(grid_yaml)])  # fmt: skip
    fast = ["--compile", "--amp", "--channels-last"] if args.device.startswith("cuda") else []
    cmd = [sys.executable, "-m", "dstbench", "compare", "--methods", ",".join(methods), "--preset", args.preset,
           *data, "--epochs", "2", "--batch-size", str(args.batch_size), "--seeds", seeds, *fast,
           "--device", args.device, "--jobs", str(jobs), "--devices", args.device, "--out", str(out), "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if done.returncode != 0:
        raise RuntimeError(f"compare --jobs {jobs}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return [json.loads(path.read_text()) | {"run_dir": str(path.parent)} for path in sorted(out.glob("*/summary.json"))]


def _check_saved_invariants(run: Path) -> list[str]:
    """Pruned weights are exactly zero in the saved model (the trainer checked counts and state)."""
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    return [f"{key}: pruned weights non-zero" for key, mask in state.items()
            if key.endswith("weight_mask") and bool((state[key[: -len("_mask")]][~mask] != 0).any())]  # fmt: skip


def _fast_path(summary: dict[str, Any]) -> str:
    report = summary.get("compile") or {}
    shown = {k: report[k] for k in ("fast_steps", "eager_hooks") if k in report}
    return json.dumps(shown) if shown else "eager"


def per_method(args: argparse.Namespace, tmp: Path, failures: list[str]) -> None:
    """Part 1: every built-in method alone, its projected 158-epoch run against the goal."""
    methods = args.methods.split(",") if args.methods else [m for m in builtin_methods() if m not in NEEDS_A_TICKET]
    summaries = _compare(args, tmp / "methods", methods, 1, "0")
    print(f"every method alone ({'--compile' if args.device.startswith('cuda') else 'eager: no CUDA'}), "
          f"projected {EPOCHS}-epoch run on {CIFAR_TRAIN_IMAGES:,} images (goal <= {RUN_GOAL_MINUTES:g} min):")  # fmt: skip
    for summary in summaries:
        minutes = _project_minutes(summary, args.samples)
        wall = summary.get("wall_time") or {}
        verdict = "-" if minutes is None else ("meets" if minutes <= RUN_GOAL_MINUTES else "misses")
        problems = _check_saved_invariants(Path(summary["run_dir"]))
        failures += [f"{summary['method']}: {p}" for p in problems]
        print(f"  {summary['method']:10s} epoch {wall.get('epoch_seconds', float('nan')):7.3f}s -> "
              f"{float('nan') if minutes is None else minutes:7.1f} min ({verdict}); fast path {_fast_path(summary)}; "
              f"invariants {'ok' if not problems else 'BROKEN'}")  # fmt: skip


def grid(args: argparse.Namespace, tmp: Path) -> None:
    """Part 2: Table 1's methods with ``--jobs N`` sharing the device, projected to the 27-run grid."""
    methods = args.grid_methods.split(",")
    seeds = ",".join(str(s) for s in range(math.ceil(args.jobs / len(methods))))
    start = time.perf_counter()
    summaries = _compare(args, tmp / "grid", methods, args.jobs, seeds)
    minutes = [m for s in summaries if (m := _project_minutes(s, args.samples)) is not None]
    waves = math.ceil(TABLE1_RUNS / args.jobs)
    hours = waves * max(minutes) / 60 if minutes else float("nan")
    print(f"compare --jobs {args.jobs} ({len(summaries)} runs of {','.join(methods)}, {time.perf_counter() - start:.0f}s "
          f"wall): slowest run's 158-epoch projection under sharing {max(minutes, default=float('nan')):.1f} min")  # fmt: skip
    print(f"  {TABLE1_RUNS}-run Table 1 grid in {waves} waves of {args.jobs}: {hours:.2f} h "
          f"(goal <= {GRID_GOAL_HOURS:g} GPU-hour: {'meets' if hours <= GRID_GOAL_HOURS else 'misses'})")


def agreement(args: argparse.Namespace, failures: list[str]) -> None:
    """Part 3: one mask update per built-in method, CPU against the device (the pass/fail check)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    other = Side(threads=2) if args.cpu_smoke else Side(device=args.device)
    print(f"device agreement: one mask update from identical inputs, {Side().label()} against {other.label()}:")
    methods = args.agreement_methods.split(",") if args.agreement_methods else builtin_methods()
    results = check_methods(methods, Side(), other, model=args.agreement_model)
    failures += [f"{name}: masks disagree away from ties" for name, r in results.items() if isinstance(r, Agreement) and not r.ok]


def _first_update_masks(args: argparse.Namespace, out: Path, device: str, threads: int) -> dict[str, np.ndarray]:
    from dstbench.config import resolve_config
    from dstbench.train.loop import train

    samples = args.batch_size * 8  # SET updates at the end of epoch 0, after 8 steps
    cfg = resolve_config(args.preset, None, {"method": "set", "device": device, "threads": threads, "out": str(out),
                         "dataset": "synthetic", "synthetic_train_samples": samples, "synthetic_test_samples": 64,
                         "batch_size": args.batch_size, "epochs": 2, "num_workers": 0}, {})  # fmt: skip
    train(cfg, progress=False)
    first = sorted((out / "masks").glob("step_*.npz"))[0]
    with np.load(first) as masks:
        return {key: masks[key] for key in masks.files}


def spread(args: argparse.Namespace, tmp: Path) -> None:
    """Part 4: SET's first-update masks after 8 trained steps, other set-ups against the CPU's 1 thread."""
    reference = _first_update_masks(args, tmp / "spread_cpu1", "cpu", 1)
    others = [("cpu, 2 threads", "cpu", 2)] + ([] if args.cpu_smoke else [(torch.cuda.get_device_name(args.device), args.device, 1)])
    total = sum(m.size for m in reference.values())
    print("training-level spread (for information, not a criterion): SET's masks at its first update after 8 steps")
    for i, (label, device, threads) in enumerate(others):
        masks = _first_update_masks(args, tmp / f"spread_{i}", device, threads)
        differ = sum(int((reference[k] != masks[k]).sum()) for k in reference)
        print(f"  cpu, 1 thread against {label:22s}: {differ} of {total} entries differ")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (two epochs)")
    parser.add_argument("--jobs", type=int, default=4, help="runs at once in the grid part (default 4)")
    parser.add_argument("--data-dir", help="real CIFAR-10 (folder or .tar.gz); default synthetic")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--methods", help="part 1's methods (default: every built-in method but lt)")
    parser.add_argument("--keep", help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="the same four parts, tiny, on the CPU (tiny_cnn, a few steps): tests the plumbing, no GPU numbers")  # fmt: skip
    args = parser.parse_args()
    args.preset, args.batch_size, args.grid_methods = "cifar-resnet32", 64, ",".join(TABLE1_METHODS)
    args.agreement_methods, args.agreement_model = None, "cifar_resnet32_grasp"
    if args.cpu_smoke:
        args.device, args.preset, args.batch_size, args.steps, args.jobs = "cpu", "quick", 16, 4, 2
        args.methods, args.grid_methods, args.agreement_methods = args.methods or "rigl,static", "rigl,static", "rigl,set"
        args.agreement_model = "tiny_cnn"
    args.samples = args.batch_size * max(1, args.steps // 2)
    return args


def main() -> int:
    args = _arguments()
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine "
              "(or --cpu-smoke to test the script)", file=sys.stderr)  # fmt: skip
        return 2
    start = time.perf_counter()
    name = f"CPU smoke test ({os.cpu_count()} cpus)" if args.cpu_smoke else torch.cuda.get_device_name(args.device)
    print(f"gpu_check on {name}, torch {torch.__version__}, {'real CIFAR-10' if args.data_dir else 'synthetic data'}, "
          f"--preset {args.preset}, {args.samples} images per epoch")  # fmt: skip
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(args.keep or tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        for part in (lambda: per_method(args, tmp, failures), lambda: grid(args, tmp)):
            try:
                part()
            except RuntimeError as exc:  # report every part, then fail
                failures.append(str(exc))
                print(f"  FAILED: {exc}")
        agreement(args, failures)
        spread(args, tmp)
    print(f"gpu_check took {time.perf_counter() - start:.0f}s")
    if failures:
        print("gpu_check: FAILED: " + "; ".join(failures))
        return 1
    print("gpu_check: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
