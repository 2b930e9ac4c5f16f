"""The contract, checked for every registered method (built-ins and the example plugin alike):
engine invariants after every step, bit-identical resume, and hyper-parameters validated on input.

A new method is covered the moment it is registered; none of these tests names a method.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.cli.app import main
from dstbench.config import resolve_config
from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.hparams import Range, field_annotations
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater, get_method, list_methods
from dstbench.runs.rundir import RunDir
from dstbench.runs.snapshots import load_mask_snapshot
from dstbench.train.loop import train
from tests.helpers import SmallNet
from tests.kill import train_until_interrupted

METHODS = list_methods()


def fast_hp(method: str, steps: int = 2) -> dict[str, Any]:
    """Every declared cadence field made short, so a few steps see several topology updates."""
    units = {"steps": steps, "epochs": 1}
    return {name: units[unit] for name, unit in get_method(method).cadence_fields.items()}


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randn(8, 2, 5, 5, generator=g), torch.randint(0, 3, (8,), generator=g)


# Methods that need an input run (LT's ticket) are built on one in the resume test below; the engine test
# on random small models cannot give them a ticket of the same shapes (tests/test_methods_lt.py does).
SELF_CONTAINED = [m for m in METHODS if not get_method(m).inputs]


@pytest.mark.parametrize("method", SELF_CONTAINED)
@settings(max_examples=4, deadline=None)
@given(
    c1=st.integers(1, 8),
    c2=st.integers(1, 8),
    sparsity=st.sampled_from([0.5, 0.8, 0.95, 0.999999]),
    distribution=st.sampled_from(["uniform", "erk"]),
    optimizer=st.sampled_from(["sgd", "adam"]),
)
def test_engine_invariants_hold_after_init_and_every_step(
    method: str, c1: int, c2: int, sparsity: float, distribution: str, optimizer: str
) -> None:
    torch.manual_seed(0)
    updater = create_updater(method, fast_hp(method))
    model = SmallNet(c1, c2)
    plan = plan_sparsity(describe_layers(model), sparsity if updater.needs.sparse else 0.0, distribution, "none")
    opt: torch.optim.Optimizer = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        if optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=0.01)
    )
    engine = SparseEngine(model, plan, updater, opt, steps_per_epoch=4, total_epochs=3)
    engine.loss_fn = torch.nn.functional.cross_entropy
    engine.initialize(_batch(-1) if updater.needs.init_batch else None)
    assert engine.violations() == []
    rates = [engine.itop_rate()]
    for step in range(12):
        x, y = _batch(step)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        engine.step(step, (x, y))
        opt.zero_grad(set_to_none=True)
        assert engine.violations() == [], f"{method} after step {step}"
        rates.append(engine.itop_rate())
    assert engine.violations(final=True) == []
    assert rates == sorted(rates)  # the ITOP union only grows
    for layer in engine.sparse_layers:
        assert int((layer.weight != 0).sum()) <= int(layer.mask.sum())


_TIME_KEYS = ("seconds", "time_fraction", "update_time", "_share")


def _timeless(value: Any) -> Any:
    """Drop wall-clock numbers, which differ between any two runs."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if not any(t in k for t in _TIME_KEYS)}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def _run_files(run: Path) -> dict[str, Any]:
    files: dict[str, Any] = {
        "summary": _timeless(json.loads((run / "summary.json").read_text())),
        "metrics": _timeless([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]),
        "topology": _timeless([json.loads(line) for line in (run / "topology.jsonl").read_text().splitlines()]),
    }
    for snapshot in sorted((run / "masks").glob("*.npz")):
        files[snapshot.name] = {k: v.tobytes() for k, v in load_mask_snapshot(snapshot).items()}
    model = RunDir(run).load_checkpoint("cpu")["model"]
    files["weights"] = {k: v.numpy().tobytes() for k, v in model.items()}
    return files


@pytest.mark.parametrize("method", METHODS)
def test_resume_after_an_interruption_is_bit_identical(method: str, tmp_path: Path) -> None:
    small = {"synthetic_train_samples": 96, "synthetic_test_samples": 32, "batch_size": 16, "epochs": 3}

    hp = fast_hp(method, 4)
    if "ticket_from" in get_method(method).inputs:  # a finished dense run of the same setting
        train(resolve_config("quick", None, {**small, "method": "dense", "out": str(tmp_path / "ticket"),
                                                    "save_rewind_step": 0}), progress=False)
        hp["ticket_from"] = str(tmp_path / "ticket")

    def config(name: str) -> Any:
        return resolve_config("quick", None, {**small, "method": method, "out": str(tmp_path / name)}, hp)

    train(config("reference"), progress=False)

    train_until_interrupted(config("killed"), after_checkpoint=1)
    assert not (tmp_path / "killed" / "summary.json").exists()
    train(config("killed"), resume=True, progress=False)

    reference, resumed = _run_files(tmp_path / "reference"), _run_files(tmp_path / "killed")
    assert reference.keys() == resumed.keys()
    for key in reference:
        assert resumed[key] == reference[key], f"{method}: {key} differs after resume"


# -- hyper-parameters --------------------------------------------------------------------------------------
def _numeric_fields(cls: type) -> list[tuple[str, Any, list[Range], bool]]:
    """(name, base type, declared ranges, is a tuple) of every int/float field, optional or in a tuple."""
    found = []
    for f in dataclasses.fields(cls):
        annotation = field_annotations(cls)[f.name]
        is_tuple = False
        if get_origin(annotation) in (Union, types.UnionType):
            (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
        if get_origin(annotation) in (tuple, list):
            annotation, is_tuple = get_args(annotation)[0], True
        base, ranges = annotation, []
        if get_origin(annotation) is typing.Annotated:
            base, *extras = get_args(annotation)
            ranges = [e for e in extras if isinstance(e, Range)]
        if base in (int, float):
            found.append((f.name, base, ranges, is_tuple))
    return found


def _outside(bound: Range, base: type) -> list[float]:
    step = 1 if base is int else 0.5
    values = []
    if bound.ge is not None:
        values.append(bound.ge - step)
    if bound.gt is not None:
        values.append(bound.gt)
    if bound.le is not None:
        values.append(bound.le + step)
    if bound.lt is not None:
        values.append(bound.lt)
    return values


def _bad_inputs(method: str) -> list[tuple[str, str]]:
    cls = get_method(method)
    cases = []
    for name, base, ranges, is_tuple in _numeric_fields(cls):
        bad: list[Any] = [v for r in ranges for v in _outside(r, base)]
        if base is float:
            bad += [math.inf, math.nan]
        default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
        for value in bad:
            text = str(int(value)) if base is int else repr(float(value))
            if is_tuple:
                text = ",".join([text, *map(str, list(default)[1:])])
            cases.append((name, text))
    return cases


BUILTINS = [m for m in METHODS if get_method(m).__module__.startswith("dstbench.methods")]


@pytest.mark.parametrize("method", BUILTINS)
def test_every_numeric_hyperparameter_of_a_builtin_declares_its_range(method: str) -> None:
    missing = [name for name, _, ranges, _ in _numeric_fields(get_method(method)) if not ranges]
    assert not missing, f"{method}: no Range on {missing}"


@pytest.mark.parametrize("method", METHODS)
def test_out_of_range_hyperparameters_are_one_line_errors(
    method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = _bad_inputs(method)
    for name, text in cases:
        out = tmp_path / name
        assert main(["train", "--preset", "quick", "--method", method, "--hp", f"{name}={text}", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dstbench: error: ") and err.count("\n") == 1 and name in err, (name, text, err)
        assert not out.exists()


def test_compare_with_a_mistyped_hyperparameter_starts_no_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grid"
    assert main(["compare", "--methods", "set,rigl", "--hp", "rigl.delta_tt=5", "--out", str(out)]) == 2
    assert "unknown hyper-parameter 'delta_tt' for method 'rigl'" in capsys.readouterr().err
    assert not any(out.glob("*/config.json"))
    assert main(["compare", "--methods", "set,rigl", "--hp", "rigl.delta_t=0", "--out", str(out)]) == 2
    assert "rigl: delta_t must be >= 1, got 0" in capsys.readouterr().err
    assert not any(out.glob("*/config.json"))

