"""Issue 20, item 5: every cell of a grid is checked before the first run trains, including what
depends on the run's length, and LT's pipeline shares its rounds between the sparsities of a grid.

A plugin with a run-length check in ``setup`` (like the GraNet-style plugin that stopped ``reproduce
table1`` at its 19th run) is put late in a ``compare``, a ``sweep`` and a ``reproduce``: each fails in
one line before any run folder exists."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from dstbench.cli.app import main
from dstbench.core import registry
from dstbench.core.errors import ConfigError
from dstbench.core.hparams import PositiveInt
from dstbench.core.schedules import Periodic
from dstbench.core.updater import CadenceUnit, MaskUpdater, RunView
from dstbench.grid.lottery import lottery_pipeline
from dstbench.train.preflight import preflight
from dstbench.config import resolve_config

TINY = ["--epochs", "1", "--synthetic-train-samples", "64", "--synthetic-test-samples", "16", "--batch-size", "16", "--quiet"]


@dataclass
class LatePruner(MaskUpdater):
    """A plugin whose first update must come before the end of training (checked in ``setup``)."""

    name: ClassVar[str] = "late-pruner"
    cadence_fields: ClassVar[dict[str, CadenceUnit]] = {"delta_t": "steps"}
    delta_t: PositiveInt = 1000

    @cached_property
    def schedule(self) -> Periodic:
        return Periodic(self.delta_t)

    def setup(self, run: RunView) -> None:
        if self.delta_t >= run.total_steps:
            raise ConfigError(
                f"late-pruner: with delta_t={self.delta_t} the first update (step {self.delta_t}) is not before "
                f"the end of training ({run.total_steps} steps)"
            )


@pytest.fixture(autouse=True)
def plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(registry._REGISTRY, "late-pruner", LatePruner)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_preflight_makes_the_run_length_checks_without_data() -> None:
    fields = {"method": "late-pruner", "epochs": 1, "synthetic_train_samples": 64, "batch_size": 16}
    preflight(resolve_config("quick", None, fields, {"delta_t": 3}))  # 4 steps: the update at 3 is in time
    with pytest.raises(ConfigError, match=r"\(step 4\) is not before the end of training \(4 steps\)"):
        preflight(resolve_config("quick", None, fields, {"delta_t": 4}))
    with pytest.raises(ConfigError, match=r"--save-rewind-step 5 is past the run's last step \(4\)"):
        preflight(resolve_config("quick", None, {**fields, "method": "dense", "save_rewind_step": 5}))
    with pytest.raises(ConfigError, match="--batch-size 128 exceeds the 64 training samples"):
        preflight(resolve_config("quick", None, {**fields, "method": "rigl", "batch_size": 128}))
    cifar = resolve_config("cifar-resnet32", None, {"method": "late-pruner", "epochs": 1, "max_train_samples": 640}, {"delta_t": 10})
    with pytest.raises(ConfigError, match=r"end of training \(10 steps\)"):  # 640 of CIFAR's 50000 at 64 a batch
        preflight(cifar)


def test_a_setup_that_reads_weight_values_is_checked_when_its_run_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Meta tensors have no values: such a setup is not an error of the grid, only its own errors are."""

    def reads_values(self: LatePruner, run: RunView) -> None:
        self.scale = float(run.sparse_layers[0].weight.abs().mean())  # raises on the meta device

    monkeypatch.setattr(LatePruner, "setup", reads_values)
    preflight(resolve_config("quick", None, {"method": "late-pruner"}, {}))


def _one_line_and_nothing_made(code: int, err: str, folder: Path) -> None:
    assert code == 2 and err.count("\n") == 1 and err.startswith("dstbench: error: late-pruner: with delta_t=1000")
    assert not list(folder.rglob("config.json")) and not list(folder.rglob("*_seed*"))


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--methods", "static,rigl,late-pruner", "--sparsities", "0.5,0.9", "--hp", "late-pruner.delta_t=1000",
         *TINY],
        ["sweep", "--methods", "static,late-pruner", "--sparsities", "0.5,0.9", "--hp-grid", "late-pruner.delta_t=2,1000",
         *TINY],
        ["reproduce", "table1", "--scale", "micro", "--extra-methods", "late-pruner", "--hp", "late-pruner.delta_t=1000",
         "--quiet"],
    ],
    ids=["compare", "sweep", "reproduce"],
)
def test_a_bad_cell_late_in_a_grid_fails_before_any_run(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*argv, "--out", str(tmp_path / "grid")])
    _one_line_and_nothing_made(code, capsys.readouterr().err, tmp_path)


def test_lt_pipelines_of_several_sparsities_share_their_rounds(tmp_path: Path) -> None:
    pipeline = lottery_pipeline(
        [0.9, 0.95, 0.98], folder=tmp_path, preset="quick", config_file=None, overrides={"seed": 3}, hp={}
    )
    names = [[Path(cfg.out).name for cfg in level] for level in pipeline.levels]
    assert names[0] == ["dense"] and [len(level) for level in names[1:]] == [1] * 10 + [2] + [1] * 2 + [2] + [1] * 3 + [1]
    assert names[11] == ["round11", "round11_s0.9"] and names[14] == ["round14", "round14_s0.95"] and names[18] == ["round18_s0.98"]
    finals = {s: (Path(cfg.out).name, Path(cfg.hp["ticket_from"]).name, cfg.sparsity) for s, cfg in pipeline.finals.items()}
    assert finals == {0.9: ("round11_s0.9", "round10", 0.9), 0.95: ("round14_s0.95", "round13", 0.95),
                      0.98: ("round18_s0.98", "round17", 0.98)}  # fmt: skip
    shared = [cfg for level in pipeline.levels[1:] for cfg in level if "_s" not in Path(cfg.out).name]
    assert [cfg.sparsity for cfg in shared] == pytest.approx([1 - 0.8**r for r in range(1, 18)])
    assert all(cfg.seed == 3 and cfg.method == "lt" for cfg in pipeline.configs[1:])
    dense = pipeline.levels[0][0]
    assert (dense.method, dense.save_rewind_step, Path(shared[0].hp["ticket_from"])) == ("dense", 0, Path(dense.out))
    one = lottery_pipeline([0.9], folder=tmp_path, rounds=1, preset="quick", config_file=None, overrides={}, hp={"rewind_step": 2})
    assert [[Path(c.out).name for c in level] for level in one.levels] == [["dense"], ["round01"]]
    assert one.levels[0][0].save_rewind_step == 2 and one.finals[0.9].hp["rewind_step"] == 2


def test_extra_methods_join_the_target_with_the_scale_cadence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A plugin named in --extra-methods runs in every part, its step cadence set by the scale's preset
    as the built-ins' (its default delta_t=1000 would never update in a 28-step run, and fails preflight)."""
    argv = ["reproduce", "table1", "--scale", "micro", "--methods", "static", "--extra-methods", "late-pruner",
            "--out", str(tmp_path), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((tmp_path / "erk" / "compare.json").read_text()) + json.loads((tmp_path / "uniform" / "compare.json").read_text())
    assert sorted((row["method"], row["distribution"], row["sparsity"]) for row in rows) == [
        ("late-pruner", "erk", 0.98), ("late-pruner", "uniform", 0.98), ("static", "erk", 0.98), ("static", "uniform", 0.98)
    ]  # fmt: skip
    assert {row["label"] for row in rows if row["method"] == "late-pruner"} == {"late-pruner (delta_t=20)"}
    assert "| late-pruner (delta_t=20) |" in capsys.readouterr().out
