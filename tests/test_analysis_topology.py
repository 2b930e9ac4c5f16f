"""Mask IoU and ITOP rate from snapshots: known answers on hand-made masks and on a
hand-made run folder, so the fixed-interval rule "the mask in force at t is the latest snapshot at or
before t" is checked exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.analysis.runs import load_run
from dstbench.analysis.topology import (
    MaskChange,
    compare_masks,
    interval_iou_series,
    interval_steps,
    itop_rate,
    snapshots,
    update_iou_series,
)
from dstbench.runs.atomic import atomic_write_json
from dstbench.core.errors import ConfigError, DstbenchError
from dstbench.runs.snapshots import save_mask_snapshot


def _change(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> MaskChange:
    return MaskChange(step=1, epoch=0, seconds=0.0, layers=compare_masks(before, after), progress=0.5)


def _mask(n: int, active: list[int]) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[active] = True
    return mask


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(2, 300))
def test_replacing_a_fraction_r_of_the_active_set_gives_iou_1_minus_r_over_1_plus_r(
    data: st.DataObject, n: int
) -> None:
    k = data.draw(st.integers(1, n - 1), label="k")
    swapped = data.draw(st.integers(0, min(k, n - k)), label="swapped")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    order = np.random.default_rng(seed).permutation(n)
    before = _mask(n, list(order[:k]))
    after = _mask(n, list(order[swapped:k + swapped]))  # the first `swapped` actives replaced by inactive ones
    change = _change({"w": before}, {"w": after})
    r = swapped / k
    assert change.iou == pytest.approx((1 - r) / (1 + r))
    assert (change.grown, change.dropped) == (swapped, swapped)
    assert _change({"w": before}, {"w": before}).iou == 1.0


def test_global_iou_concatenates_layers_rather_than_averaging() -> None:
    before = {"small": _mask(4, [0, 1]), "big": _mask(100, list(range(20)))}
    after = {"small": _mask(4, [2, 3]), "big": _mask(100, list(range(20)))}
    change = _change(before, after)
    assert change.layer_iou == {"small": 0.0, "big": 1.0}
    assert change.iou == pytest.approx(20 / 24)  # (0 + 20) / (4 + 20)
    assert change.mean_layer_iou == 0.5 and change.min_layer_iou == 0.0


# -- a hand-made run folder: 3 epochs x 4 steps, snapshots at steps 4 and 10 ----------------------------
A0 = _mask(10, [0, 1, 2, 3])
A4 = _mask(10, [0, 1, 2, 4])  # one of four swapped: IoU 3/5
A10 = _mask(10, [5, 6, 7, 8])  # all swapped: IoU 0
DENSE = np.ones((2, 3), dtype=bool)


def _snapshot(path: Path, step: int, mask: np.ndarray) -> None:
    save_mask_snapshot(path, {"w": torch.from_numpy(mask), "head": torch.from_numpy(DENSE)}, step=step, epoch=step // 4)


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    atomic_write_json(tmp_path / "config.json", {"method": "crafted", "sparsity": 0.6, "seed": 0, "epochs": 3})
    layers = [{"name": "w", "numel": 10, "sparsified": True}, {"name": "head", "numel": 6, "sparsified": False}]
    atomic_write_json(tmp_path / "plan.json", {"layers": layers})
    atomic_write_json(tmp_path / "summary.json", {"steps_per_epoch": 4, "itop_rate": 0.9})
    _snapshot(tmp_path / "masks" / "init.npz", 0, A0)
    _snapshot(tmp_path / "masks" / "step_00000004.npz", 4, A4)
    _snapshot(tmp_path / "masks" / "step_00000010.npz", 10, A10)
    return tmp_path


def test_snapshots_are_in_time_order_from_the_initial_masks(run_dir: Path) -> None:
    assert [s.step for s in snapshots(load_run(run_dir))] == [0, 4, 10]


def test_update_series_compares_each_update_with_the_mask_it_replaced(run_dir: Path) -> None:
    series = update_iou_series(load_run(run_dir))
    assert [(p.step, p.iou) for p in series] == [(4, pytest.approx(3 / 5)), (10, 0.0)]
    assert [p.progress for p in series] == [4 / 12, 10 / 12]
    assert [(p.grown, p.dropped) for p in series] == [(1, 1), (4, 4)]
    assert all(set(p.layers) == {"w"} for p in series)  # the dense-profile layer is left out


def test_interval_series_uses_the_mask_in_force_at_each_time(run_dir: Path) -> None:
    run = load_run(run_dir)
    # t = 0, 4, 8, 12: in force are init, step 4, step 4 (nothing new before 8), step 10.
    series = interval_iou_series(run, interval_steps(run, epochs=1))
    assert [(p.step, p.iou) for p in series] == [(4, pytest.approx(3 / 5)), (8, 1.0), (12, 0.0)]
    # Δ = 6 steps: t = 0, 6, 12 -> init vs step 4, then step 4 vs step 10.
    series = interval_iou_series(run, interval_steps(run, steps=6))
    assert [(p.step, p.iou) for p in series] == [(6, pytest.approx(3 / 5)), (12, 0.0)]
    # Δ = 5 steps: t = 0, 5, 10 (t = 10 sees the snapshot taken at step 10).
    assert [p.iou for p in interval_iou_series(run, 5)] == [pytest.approx(3 / 5), 0.0]


def test_interval_must_be_given_once_and_fit_the_run(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert interval_steps(run, epochs=0.5) == 2
    with pytest.raises(ConfigError, match="not both"):
        interval_steps(run, epochs=1, steps=4)
    with pytest.raises(ConfigError, match="not both and not neither"):
        interval_steps(run)
    with pytest.raises(ConfigError, match=r"1\.\.12 steps"):
        interval_steps(run, steps=13)


def test_itop_rate_is_the_share_of_sparsified_weights_ever_active(run_dir: Path) -> None:
    # init ∪ step 4 ∪ step 10 = {0..8}: 9 of the 10 weights of the only sparsified layer.
    assert itop_rate(load_run(run_dir)) == pytest.approx(0.9)


def test_a_run_without_snapshots_is_a_one_line_error(run_dir: Path) -> None:
    for path in (run_dir / "masks").iterdir():
        path.unlink()
    with pytest.raises(DstbenchError, match="no mask snapshots"):
        update_iou_series(load_run(run_dir))
    with pytest.raises(DstbenchError, match="no such run directory"):
        load_run(run_dir / "missing")
