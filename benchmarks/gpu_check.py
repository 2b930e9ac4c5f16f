"""One command that checks and times dstbench's GPU path (under 5 minutes on one modern GPU).

    python benchmarks/gpu_check.py [--steps 300] [--data-dir cifar10-jpeg.tar.gz] [--device cuda]

1. Trains ``cifar_resnet32_grasp`` with the BiDST Table A.1 recipe (``--preset cifar-resnet32``:
   batch 64, SGD 0.1 with cosine schedule, wd 1e-4, RigL masks at 90 %) with bf16 autocast and
   channels_last, three ways: eager, ``--compile --no-cuda-graph`` (torch.compile), and ``--compile``
   (the whole step captured in one CUDA graph). Each run's second epoch (steady state, compilation
   excluded) gives its images per second; every engine invariant is checked after GPU training (the
   trainer refuses to finish otherwise, and the script re-checks the saved masks and weights).
2. Checks that the masks of the first topology update on the GPU equal the CPU path's (fp32, TF32
   off; SET, whose first update follows 8 steps, 5 of them replayed from the CUDA graph in the
   graph-captured run): identical initial masks, and first-update masks identical up to
   float-rounding flips at the magnitude boundary (at most 0.1 % of entries, printed).
3. Runs ``dstbench compare --jobs 4 --devices cuda:0`` (four runs sharing the GPU) and reports the
   aggregate images per second.
4. Prints the projected wall time of one 158-epoch CIFAR run (50,000 images per epoch) per mode and
   of the 27-run Table 1 grid at the ``--jobs 4`` throughput.

Without CUDA it stops at once with one line on stderr and exit code 2. Synthetic CIFAR-shaped data
is used unless ``--data-dir`` names real CIFAR-10 (throughput does not depend on pixel values).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CIFAR_TRAIN_IMAGES = 50_000
TABLE1_RUNS = 27  # 3 methods x 3 sparsities x 3 seeds per architecture block, as counted in the issue
EPOCHS = 158


def _config(out: Path, args: argparse.Namespace, hp: dict[str, Any] | None = None, **fields: Any) -> Any:
    from dstbench.config import resolve_config

    data: dict[str, Any] = (
        {"dataset": "cifar10", "data_dir": args.data_dir, "max_train_samples": fields.pop("samples")}
        if args.data_dir
        else {"dataset": "synthetic", "synthetic_train_samples": fields.pop("samples")}
    )
    base = {"method": "rigl", "device": args.device, "out": str(out), "synthetic_test_samples": 512,
            "max_test_samples": 512, "num_workers": 0, **data}
    return resolve_config("cifar-resnet32", None, {**base, **fields}, {"delta_t": 100} if hp is None else hp)


def _train(cfg: Any) -> dict[str, Any]:
    from dstbench.train.loop import train

    summary: dict[str, Any] = train(cfg, progress=False)
    return summary


def _mask_files(run: Path) -> list[Path]:
    return sorted((run / "masks").glob("*.npz"))


def _compare_masks(cpu: Path, gpu: Path, label: str) -> bool:
    """Initial masks identical; first-update masks identical up to boundary flips (<= 0.1 %).

    Later updates are not compared: once one float differs, magnitude ties among freshly grown
    (near-zero) weights make later masks diverge chaotically, on any two devices or kernels."""
    ok = True
    files = [p.name for p in _mask_files(cpu)]
    for name in files[:2]:  # init.npz, then the first step_*.npz
        if not (gpu / "masks" / name).exists():
            print(f"  {label}: no {name} on the GPU run")
            return False
        with np.load(cpu / "masks" / name) as a, np.load(gpu / "masks" / name) as b:
            differ = sum(int((a[k] != b[k]).sum()) for k in a.files)
            total = sum(int(a[k].size) for k in a.files)
        exact = differ == 0
        allowed = name != "init.npz" and differ <= 1e-3 * total
        print(f"  {label} {name}: {'identical' if exact else f'{differ} of {total} entries differ'}")
        ok &= exact or allowed
    return ok


def _check_saved_invariants(run: Path) -> list[str]:
    """Pruned weights are exactly zero in the saved model (the trainer checked counts and state)."""
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    problems = []
    for key, mask in state.items():
        if key.endswith("weight_mask"):
            weight = state[key[: -len("_mask")]]
            if bool((weight[~mask] != 0).any()):
                problems.append(f"{key}: pruned weights non-zero")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=300, help="training steps per mode (two epochs)")
    parser.add_argument("--data-dir", help="real CIFAR-10 (folder or .tar.gz); default synthetic")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--keep", help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="exercise this script's plumbing on the CPU (tiny, no GPU numbers, for development)")
    args = parser.parse_args()
    if args.cpu_dry_run:
        args.device = "cpu"
    elif not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    steps_per_epoch = max(2, args.steps // 2)
    samples = 64 * steps_per_epoch
    name = "CPU (dry run)" if args.cpu_dry_run else torch.cuda.get_device_name(args.device)
    print(f"gpu_check on {name}, torch {torch.__version__}, "
          f"{'real CIFAR-10' if args.data_dir else 'synthetic data'}, {2 * steps_per_epoch} steps per mode")
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(args.keep or tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)

        # 1. three modes, bf16 + channels_last
        rates: dict[str, float] = {}
        modes = {"eager": {}, "compiled": {"compile": True, "cuda_graph": False},
                 "graph-captured": {"compile": True, "cuda_graph": True}}
        for mode, extra in modes.items():
            out = tmp / f"mode_{mode}"
            cfg = _config(out, args, samples=samples, epochs=2, amp=True, channels_last=True, **extra)
            try:
                summary = _train(cfg)
            except Exception as exc:  # report every mode, then fail
                failures.append(f"{mode}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                print(f"  {mode:15s} FAILED: {failures[-1]}")
                continue
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            rates[mode] = samples / rows[-1]["epoch_seconds"]
            problems = _check_saved_invariants(out)
            failures += [f"{mode}: {p}" for p in problems]
            extra_info = summary.get("compile") or {}
            print(f"  {mode:15s} {rates[mode]:9.0f} img/s  (first epoch incl. warm-up {rows[0]['epoch_seconds']:.1f}s"
                  f"{', ' + json.dumps(extra_info) if extra_info else ''}); invariants "
                  f"{'ok' if not problems else 'BROKEN'}")

        # 2. masks at the first topology update, CPU against GPU (fp32, TF32 off)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        # SET first updates at the end of epoch 0 (after step 7): after the graph-captured steps 3-7.
        check: dict[str, Any] = dict(samples=64 * 8, epochs=2, method="set", hp={})
        cpu_run, gpu_eager, gpu_graph = tmp / "masks_cpu", tmp / "masks_gpu_eager", tmp / "masks_gpu_graph"
        _train(_config(cpu_run, args, device="cpu", **check))
        _train(_config(gpu_eager, args, **check))
        _train(_config(gpu_graph, args, compile=True, cuda_graph=True, **check))
        print("masks before training and at the first topology update (SET), CPU vs GPU (fp32):")
        if not _compare_masks(cpu_run, gpu_eager, "eager"):
            failures.append("eager GPU masks differ from the CPU path's")
        if not _compare_masks(cpu_run, gpu_graph, "graph-captured"):
            failures.append("graph-captured GPU masks differ from the CPU path's")

        # 3. compare --jobs N on one GPU
        grid = tmp / "grid"
        grid_yaml = tmp / "grid.yaml"  # synthetic sizes are config fields, not flags
        grid_yaml.write_text(f"synthetic_train_samples: {samples}\nsynthetic_test_samples: 512\n")
        data_flags = (["--dataset", "cifar10", "--data-dir", args.data_dir, "--max-train-samples", str(samples)]
                      if args.data_dir else ["--dataset", "synthetic", "--config", str(grid_yaml)])
        cmd = [sys.executable, "-m", "dstbench", "compare", "--methods", "rigl,set,mest,static", "--preset",
               "cifar-resnet32", *data_flags, "--epochs", "1", "--amp", "--channels-last", "--device", args.device,
               "--jobs", str(args.jobs), "--devices", args.device, "--out", str(grid), "--quiet"]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        grid_seconds = time.perf_counter() - t0
        if done.returncode != 0:
            failures.append(f"compare --jobs {args.jobs}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            grid_rate = float("nan")
        else:
            summaries = [json.loads(p.read_text()) for p in grid.glob("*/summary.json")]
            train_seconds = max(s["train_seconds"] for s in summaries)
            grid_rate = len(summaries) * samples / train_seconds
            print(f"compare --jobs {args.jobs} on {args.device}: {len(summaries)} runs, {grid_rate:.0f} img/s in all "
                  f"(slowest run's training time {train_seconds:.1f}s; wall incl. start-up {grid_seconds:.1f}s)")

        # 4. projections
        print("projected wall time (training only):")
        for mode, rate in rates.items():
            hours = EPOCHS * CIFAR_TRAIN_IMAGES / rate / 3600
            print(f"  one {EPOCHS}-epoch run, {mode:15s}: {hours:6.2f} h")
        if grid_rate == grid_rate:
            grid_hours = TABLE1_RUNS * EPOCHS * CIFAR_TRAIN_IMAGES / grid_rate / 3600
            print(f"  {TABLE1_RUNS}-run Table 1 grid at the --jobs {args.jobs} throughput on one GPU: {grid_hours:6.1f} h")
    print(f"gpu_check took {time.perf_counter() - start:.0f}s")
    if failures:
        print("gpu_check: FAILED: " + "; ".join(failures))
        return 1
    print("gpu_check: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
