"""The external example plugin (examples/dstbench-example-plugin) registers through its entry point.

Installing it with pip would modify the test environment (and may need the network for build
dependencies), so the test makes the package discoverable the way an install would: its source folder
on ``PYTHONPATH`` plus a ``.dist-info`` folder whose ``entry_points.txt`` is generated from the
package's own ``pyproject.toml``. ``importlib.metadata`` finds entry points through exactly that file.
The CLI runs in a subprocess because ``dstbench.core.registry`` loads entry points once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "dstbench-example-plugin"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment in which a fresh interpreter sees the plugin as if it were pip-installed."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    site = tmp_path_factory.mktemp("site")
    dist_name = project["name"].replace("-", "_")
    dist_info = site / f"{dist_name}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {target}" for name, target in entries.items())
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    paths = [str(site), str(PLUGIN / "src"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dstbench.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_declares_its_method_in_the_dstbench_entry_point_group() -> None:
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["dstbench.methods"] == {
        "magnitude-random": "dstbench_example_plugin.magnitude_random:MagnitudeRandom",
        "gradual-regrow": "dstbench_example_plugin.gradual_regrow:GradualRegrow",
    }


def test_dstbench_methods_lists_the_plugin(plugin_env: dict[str, str]) -> None:
    result = _cli(plugin_env, "methods", "--details")
    assert result.returncode == 0, result.stderr
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert rows["magnitude-random"].startswith("Evci et al.")
    assert {"dense", "static", "set", "rigl", "rigl-itop", "mest", "mest-ems", "snfs"} <= set(rows)
    assert "could not load" not in result.stderr


def test_trains_one_epoch_with_the_plugin(plugin_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text("synthetic_train_samples: 256\nsynthetic_test_samples: 128\n")
    out = tmp_path / "run"
    result = _cli(
        plugin_env, "train", "--preset", "quick", "--config", str(config), "--method", "magnitude-random",
        "--epochs", "1", "--hp", "delta_t=1", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "magnitude-random"
    assert summary["topology_updates"] == 4  # 4 steps, every one an update step: t <= int(0.75 * 4)
    assert summary["needs"]["dense_grad"] == "never"
    assert summary["realised_sparsity"]["sparsified"] == pytest.approx(0.9, abs=1e-3)


def test_bad_plugin_hyperparameter_is_a_one_line_error(plugin_env: dict[str, str], tmp_path: Path) -> None:
    result = _cli(
        plugin_env, "train", "--preset", "quick", "--method", "magnitude-random", "--hp", "delta_t=0",
        "--out", str(tmp_path / "bad"),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "dstbench: error: magnitude-random: delta_t must be >= 1, got 0"
