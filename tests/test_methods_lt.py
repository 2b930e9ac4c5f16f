"""Lottery Ticket: rounds, global magnitude masks, rewinding, the pipeline and its FLOPs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.methods.lt import global_magnitude_masks
from dstbench.core.registry import create_updater
from dstbench.runs.tickets import method_inputs
from dstbench.runs.reuse import Mismatch
from dstbench.grid.lottery import lt_rounds, round_sparsities, run_lottery
from dstbench.train.loop import build_model

from .methods_helpers import SMALL


# -- rounds -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("sparsity", "rounds"), [(0.9, 11), (0.95, 14), (0.98, 18), (0.2, 1), (0.36, 2), (0.5, 4)])
def test_rounds_at_twenty_percent(sparsity: float, rounds: int) -> None:
    assert lt_rounds(sparsity) == rounds


@given(st.floats(0.01, 0.999))
def test_rounds_are_the_fewest_that_reach_the_target(sparsity: float) -> None:
    rounds = lt_rounds(sparsity)
    assert 0.8**rounds <= 1 - sparsity + 1e-9
    assert rounds == 1 or 0.8 ** (rounds - 1) > 1 - sparsity - 1e-9



def lt_engine(model: nn.Module, plan: Any, hp: dict[str, Any]) -> SparseEngine:
    """An LT engine with its ticket loaded as the trainer loads it (the method's declared input)."""
    updater = create_updater("lt", hp)
    return SparseEngine(model, plan, updater, inputs=method_inputs(updater))

def test_round_sparsities_end_at_the_target() -> None:
    plan = round_sparsities(0.9, 11)
    assert plan[:10] == pytest.approx([1 - 0.8**r for r in range(1, 11)])
    assert plan[-1] == 0.9 and len(plan) == 11
    assert round_sparsities(0.9, 1) == [0.9]  # one-shot
    with pytest.raises(ConfigError, match="rounds"):
        round_sparsities(0.5, 6)  # 1 - 0.8^5 = 0.67 passes 0.5 before the last round


# -- the global magnitude selection ---------------------------------------------------------------------
def test_global_magnitude_masks_known_answer() -> None:
    scores = {"a": torch.tensor([[0.9, 0.1, 0.5, 0.3]]), "b": torch.tensor([0.2, 0.8, 0.05, 0.6, 0.7, 0.02])}
    masks, clamped = global_magnitude_masks(scores, 4, min_active=1, eligible={k: torch.ones_like(v, dtype=torch.bool) for k, v in scores.items()})
    assert masks["a"].tolist() == [[True, False, False, False]]  # 0.9
    assert masks["b"].tolist() == [False, True, False, True, True, False]  # 0.8, 0.7, 0.6
    assert clamped == []
    # Layer a only has tiny scores: the guard keeps its best, the globally weakest survivor (0.6) goes.
    masks, clamped = global_magnitude_masks(
        {"a": torch.tensor([0.01, 0.03]), "b": scores["b"]}, 3, min_active=1, eligible={"a": torch.tensor([True, True]), "b": torch.ones(6, dtype=torch.bool)}
    )
    assert masks["a"].tolist() == [False, True] and masks["b"].tolist() == [False, True, False, False, True, False]
    assert clamped == ["a"]


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.floats(0, 1, allow_nan=False), min_size=6, max_size=30, unique=True),
    split=st.integers(1, 5),
    data=st.data(),
)
def test_global_selection_is_the_global_top_k(values: list[float], split: int, data: st.DataObject) -> None:
    """Without a binding guard, the kept set is exactly the ``total`` largest values overall."""
    scores = {"a": torch.tensor(values[:split], dtype=torch.float64), "b": torch.tensor(values[split:], dtype=torch.float64)}
    total = data.draw(st.integers(0, len(values)))
    masks, _ = global_magnitude_masks(scores, total, min_active=0, eligible={k: torch.ones_like(v, dtype=torch.bool) for k, v in scores.items()})
    kept = sorted(float(v) for name in scores for v in scores[name][masks[name]])
    assert kept == sorted(values)[len(values) - total :]


# -- the two-round pipeline on synthetic data -------------------------------------------------------------
def _pipeline(out: Path, **extra: Any) -> list[dict[str, Any]]:
    return run_lottery(
        0.36, out=str(out), preset="quick", config_file=None, overrides={**SMALL, "epochs": 1, **extra}, hp={}, rewind_step=2, progress=False
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("lt") / "pipeline"
    return out, _pipeline(out)


def _state(run: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    return state


def _layer_names(state: dict[str, torch.Tensor]) -> list[str]:
    return [key[: -len(".weight_mask")] for key in state if key.endswith(".weight_mask")]


def test_pipeline_rounds_prune_globally_inside_the_previous_mask(pipeline: tuple[Path, list[dict[str, Any]]]) -> None:
    out, summaries = pipeline
    assert [s["method"] for s in summaries] == ["dense", "lt", "lt"]
    assert [s["sparsity"] for s in summaries[1:]] == pytest.approx([0.2, 0.36])
    dense, first, second = (_state(out / name) for name in ("dense", "round01", "round02"))
    names = _layer_names(dense)
    for before, after, run in ((dense, first, "round01"), (first, second, "round02")):
        # Independent formula: sort every surviving |theta| of the ticket, keep the run's budget.
        keep = sum(layer["target_active"] for layer in json.loads((out / run / "plan.json").read_text())["layers"])
        survivors = torch.cat([before[f"{name}.weight"].abs()[before[f"{name}.weight_mask"]] for name in names])
        cut = torch.sort(survivors, descending=True).values[keep - 1]
        for name in names:
            mask = after[f"{name}.weight_mask"]
            assert bool((before[f"{name}.weight_mask"] | ~mask).all())  # nested masks
            assert bool((before[f"{name}.weight"].abs()[mask] >= cut).all())
        assert sum(int(after[f"{name}.weight_mask"].sum()) for name in names) == keep


def test_pipeline_charges_every_round(pipeline: tuple[Path, list[dict[str, Any]]]) -> None:
    _, (dense, first, second) = pipeline
    assert "train_flops_run" not in dense["flops"]
    assert first["flops"]["train_flops"] == pytest.approx(first["flops"]["train_flops_run"] + dense["flops"]["train_flops"])
    assert second["flops"]["train_flops"] == pytest.approx(
        second["flops"]["train_flops_run"] + first["flops"]["train_flops_run"] + dense["flops"]["train_flops"]
    )
    assert second["flops"]["train_flops_relative"] > 2.0  # three trainings, two of them sparse
    assert second["method_report"]["ticket_root"].endswith("dense")
    assert second["method_report"]["rewind_step"] == 2


def test_rewinding_restores_the_dense_runs_weights_at_step_k(pipeline: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = pipeline
    saved = torch.load(out / "dense" / "rewind.pt", weights_only=False)
    assert saved["step"] == 2
    torch.manual_seed(123)  # a different initialisation, overwritten by the rewind
    model = build_model("tiny_cnn", 10)
    plan = plan_sparsity(describe_layers(model), 0.2, "erk", "none")
    engine = lt_engine(model, plan, {"ticket_from": str(out / "dense"), "rewind_step": 2})
    engine.initialize()
    state = model.state_dict()
    for key, value in saved["model"].items():
        if key.endswith(".weight") and key[: -len(".weight")] in {layer.name for layer in engine.layers}:
            mask = state[key[: -len(".weight")] + ".weight_mask"]
            assert torch.equal(state[key], value * mask), key
        elif not key.endswith("weight_mask"):
            assert torch.equal(state[key], value), key


def test_rerunning_the_pipeline_reuses_finished_rounds(pipeline: tuple[Path, list[dict[str, Any]]]) -> None:
    out, summaries = pipeline
    stamp = (out / "round02" / "summary.json").stat().st_mtime_ns
    again = _pipeline(out)
    assert [s["test_acc"] for s in again] == [s["test_acc"] for s in summaries]
    assert (out / "round02" / "summary.json").stat().st_mtime_ns == stamp


def test_rerunning_with_other_settings_is_refused_before_anything_trains(pipeline: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = pipeline
    stamps = {run: (out / run / "summary.json").stat().st_mtime_ns for run in ("dense", "round01", "round02")}
    with pytest.raises(Mismatch, match=r"different config: lr was 0\.05, now 0\.02; use another --out"):
        _pipeline(out, lr=0.02)
    assert {run: (out / run / "summary.json").stat().st_mtime_ns for run in stamps} == stamps


# -- errors -------------------------------------------------------------------------------------------------
def test_bad_tickets_are_one_line_errors(pipeline: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    out, _ = pipeline
    model = build_model("tiny_cnn", 10)
    plan = plan_sparsity(describe_layers(model), 0.5, "erk", "none")
    with pytest.raises(ConfigError, match="ticket_from=RUN_DIR"):
        lt_engine(model, plan, {}).initialize()
    with pytest.raises(ConfigError, match="kept the weights of step 2, not 0"):
        lt_engine(model, plan, {"ticket_from": str(out / "round01")}).initialize()
    with pytest.raises(ConfigError, match="not a dstbench run"):
        lt_engine(model, plan, {"ticket_from": str(tmp_path)}).initialize()
    dense_plan = plan_sparsity(describe_layers(model), 0.1, "erk", "none")  # denser than round02's 36 %
    with pytest.raises(ConfigError, match="only"):
        lt_engine(model, dense_plan, {"ticket_from": str(out / "round02"), "rewind_step": 2}).initialize()


def test_cli_lt_without_a_ticket_fails_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dstbench.cli", "train", "--preset", "quick", "--method", "lt", "--epochs", "1", "--quiet",
         "--max-train-samples", "64", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("dstbench: error: lt needs --hp ticket_from=RUN_DIR") and result.stderr.count("\n") == 1
