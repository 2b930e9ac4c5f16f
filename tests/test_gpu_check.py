"""benchmarks/gpu_check.py: its projection arithmetic, and its --cpu-smoke mode end to end (the GPU
machine runs the same code with CUDA sides and ``--compile``)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_projection_scales_the_steady_epoch_to_158_full_cifar_epochs() -> None:
    gpu_check = _gpu_check()
    # 0.5 s for 9,600 images -> 50,000 images in 2.604 s, x 158 epochs = 411.5 s = 6.86 min.
    assert gpu_check._project_minutes({"wall_time": {"epoch_seconds": 0.5}}, 9600) == 0.5 * 50_000 / 9600 * 158 / 60
    assert gpu_check._project_minutes({}, 9600) is None  # a run from before the wall-time record


def test_cpu_smoke_runs_every_part(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-smoke", "--keep", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for method in ("rigl", "static"):
        assert f"  {method:10s} epoch " in out and "invariants ok" in out
    assert "27-run Table 1 grid in 14 waves of 2:" in out
    assert "  rigl       0 of " in out and "0 elsewhere" in out and "cpu (1 thread) against cpu (2 threads)" in out
    assert "cpu, 1 thread against cpu, 2 threads" in out
    assert out.rstrip().endswith("gpu_check: all checks passed")
    assert len(list((tmp_path / "grid").glob("*/summary.json"))) == 2
