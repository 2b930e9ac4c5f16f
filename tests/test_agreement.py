"""The device-agreement check: same inputs give the same masks; exact ties are counted, not failed; a
disagreement away from a tie fails. Two CPU sides stand in for CPU and GPU (another dtype or thread
count); on a machine with CUDA the CPU-against-GPU case runs too."""

from __future__ import annotations

import copy

import pytest
import torch

from dstbench.core.selection import recording_selections, topk_mask
from dstbench.speed.agreement import Side, UpdateInputs, check_agreement, compare, prepare_inputs, run_update


@pytest.mark.parametrize("method", ["rigl", "set", "bidst", "top-kast", "granet"])
def test_identical_inputs_give_identical_masks(method: str) -> None:
    for other in (Side(threads=2), Side(dtype=torch.float64)):
        result = check_agreement(method, Side(), other)
        assert result is not None and result.selections > 0
        assert (result.mask_differences, result.at_ties, result.after_ties, result.failing) == (0, 0, 0, 0)
        assert result.ok and result.line().endswith(": ok")


def test_a_method_that_never_updates_has_nothing_to_check() -> None:
    assert check_agreement("static", Side(), Side(threads=2)) is None


def _layer_weight(inputs: UpdateInputs) -> tuple[str, torch.Tensor]:
    name = next(k for k, v in inputs.model_state.items() if k.endswith("weight_mask") and not bool(v.all()))  # sparsified
    return name.removesuffix("_mask"), inputs.model_state[name]


def test_ties_that_float32_creates_are_counted_not_failed() -> None:
    """Active weights 0.5·(1 + j·2⁻⁴⁰): all distinct in float64, all equal to 0.5 in float32. float64
    drops the lowest j; float32 sees one big tie and keeps the lower indices (the kernel's tie-break)."""
    inputs = prepare_inputs("rigl")
    assert inputs is not None
    weight_name, mask = _layer_weight(inputs)
    weight = inputs.model_state[weight_name]
    active = mask.reshape(-1).nonzero().squeeze(1)
    values = 0.5 * (1 + torch.arange(1, active.numel() + 1, dtype=torch.float64) * 2.0**-40)
    weight.view(-1)[active] = values  # the lowest magnitudes at the lowest indices, which the tie-break keeps
    assert len(set(values.float().tolist())) == 1 and len(set(values.tolist())) == active.numel()
    result = compare(run_update(inputs, Side(dtype=torch.float64)), run_update(inputs, Side()))
    assert result.mask_differences > 0 and result.at_ties > 0
    assert result.failing == 0 and result.ok, result.line()


def test_a_perturbed_score_fails() -> None:
    """The largest active weight of a layer shrunk on one side only: RigL drops it there, a difference
    no tie explains, as a device that computed a wrong magnitude would produce."""
    inputs = prepare_inputs("rigl")
    assert inputs is not None
    perturbed = copy.deepcopy(inputs)
    weight_name, mask = _layer_weight(perturbed)
    weight = perturbed.model_state[weight_name]
    largest = (weight.abs() * mask).reshape(-1).argmax()
    weight.view(-1)[largest] = 1e-6
    result = compare(run_update(inputs, Side()), run_update(perturbed, Side()))
    assert result.failing >= 1 and not result.ok
    assert "away from any tie" in result.line()


def test_kernel_records_selections_only_when_asked() -> None:
    scores = torch.tensor([3.0, 1.0, 1.0, 0.0])
    with recording_selections() as calls:
        topk_mask(scores, 2)
    topk_mask(scores, 2)
    (call,) = calls
    assert call.chosen.tolist() == [[True, True, False, False]]  # the tie at 1.0 goes to the lower index


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_gpu_agree_on_one_update() -> None:
    result = check_agreement("rigl", Side(), Side(device="cuda"))
    assert result is not None and result.ok, result.line()
