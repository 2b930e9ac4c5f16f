"""``--budget 2x|5x``: RigL's longer schedules stretch the epochs and every cadence, and say so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dstbench.analysis.report import _label, report_rows
from dstbench.config import MAX_EPOCHS, resolve_config
from dstbench.core.budget import budget_defaults, scaled_cadences
from dstbench.core.errors import ConfigError
from dstbench.core.registry import create_updater, get_method
from dstbench.core.updater import update_steps_of
from dstbench.runs.configs import flat_config
from dstbench.train.loop import train

# 20 steps an epoch (160 samples, batches of 8): the quick preset's RigL updates every 20 steps.
SMALL = {"synthetic_train_samples": 160, "synthetic_test_samples": 32, "batch_size": 8, "epochs": 3}


def _rigl(budget: str, **extra: object) -> object:
    return resolve_config("quick", overrides={"method": "rigl", "budget": budget, **SMALL, **extra})


def test_rigl_mask_updates_come_at_the_stretched_steps() -> None:
    # 1x: 60 steps, t_end 0.75 -> 45; TF's clock pauses on mask steps, so 0, 20+1, 40+2.
    # 2x: 120 steps, delta_t 40, t_end -> 90: the same three updates, twice as far apart.
    expected = {"1x": (3, 20, [0, 21, 42]), "2x": (6, 40, [0, 41, 82]), "5x": (15, 100, [0, 101, 202])}
    for budget, (epochs, delta_t, steps) in expected.items():
        cfg = _rigl(budget)
        assert (cfg.epochs, cfg.hp["delta_t"], cfg.budget) == (epochs, delta_t, budget)
        assert update_steps_of(create_updater(cfg.method, cfg.hp), 20 * epochs, 20) == steps


def test_a_trained_2x_run_updates_where_the_schedule_says_and_records_its_budget(tmp_path: Path) -> None:
    summaries = []
    for budget in ("1x", "2x"):
        out = tmp_path / budget
        summaries.append(train(_rigl(budget, out=str(out)), progress=False))
        config = json.loads((out / "config.json").read_text())
        assert config["optim"]["budget"] == budget
        records = [json.loads(line)["step"] for line in (out / "topology.jsonl").read_text().splitlines()]
        assert records == {"1x": [1, 22, 43], "2x": [1, 42, 83]}[budget]  # a record is made after its step
        summaries[-1]["config"] = flat_config(config)
    rows = report_rows(summaries)
    assert [row["label"] for row in rows] == ["rigl (delta_t=20)", "rigl (2x, delta_t=40)"]
    assert [row["epochs"] for row in rows] == [3, 6]


def test_the_label_compares_hyperparameters_with_the_defaults_of_the_budget() -> None:
    assert _label("rigl", {"delta_t": 200, "drop_fraction": 0.3}, [], "2x") == "rigl (2x)"
    assert _label("rigl", {"delta_t": 100, "drop_fraction": 0.3}, [], "2x") == "rigl (2x, delta_t=100)"
    assert _label("rigl", {"delta_t": 100, "drop_fraction": 0.3}, [], "1x") == "rigl"
    assert budget_defaults(get_method("set"), "5x")["update_frequency"] == 5


def test_every_declared_cadence_scales_and_fractions_and_other_rules_do_not() -> None:
    for name in ("set", "mest", "bidst", "dsr", "granet", "top-kast", "rigl-itop"):
        cls = get_method(name)
        assert cls.cadence_fields
        scaled = scaled_cadences(cls, {}, "2x")
        defaults = budget_defaults(cls, "1x")
        assert scaled == {field: 2 * defaults[field] for field in cls.cadence_fields}
    cfg = resolve_config(None, overrides={"method": "rigl", "budget": "5x", "epochs": 10, "warmup_epochs": 1.5})
    assert (cfg.epochs, cfg.warmup_epochs, cfg.hp) == (50, 7.5, {"delta_t": 500})
    assert create_updater(cfg.method, cfg.hp).t_end == 0.75  # type: ignore[attr-defined]
    deep_r = resolve_config("quick", overrides={"method": "deep-r", "budget": "2x"})
    assert deep_r.hp.get("rewire_every", 1) == 1  # per step by definition, not a cadence
    assert resolve_config("quick", overrides={"method": "rigl"}).budget == "1x"


def test_a_budget_past_the_epoch_limit_is_one_line() -> None:
    with pytest.raises(ConfigError, match=f"--budget 5x makes {5 * (MAX_EPOCHS // 2)} epochs, more than {MAX_EPOCHS}"):
        resolve_config(None, overrides={"method": "rigl", "budget": "5x", "epochs": MAX_EPOCHS // 2})


@pytest.mark.parametrize("command", ["train", "compare", "sweep"])
def test_help_offers_the_budget(command: str) -> None:
    text = subprocess.run([sys.executable, "-m", "dstbench", command, "--help"], capture_output=True, text=True, check=True).stdout
    assert "--budget {1x,2x,5x}" in text


def test_methods_details_say_what_the_budget_scales() -> None:
    text = subprocess.run([sys.executable, "-m", "dstbench", "methods", "--details"], capture_output=True, text=True, check=True).stdout
    assert "  budget: --budget 2x|5x multiplies --epochs, --warmup-epochs and: delta_t (steps)" in text
    assert "  budget: --budget 2x|5x multiplies --epochs, --warmup-epochs and: update_frequency (epochs)" in text
