"""Every built-in method gives exactly the numbers it gave before the 0.3 restructure.

``tests/golden.json`` was recorded by ``tests/golden_runs.py`` on the code before the layers moved
(a short CPU run per method: per-epoch losses, accuracy, topology updates, ITOP rate and a hash of the
final weights and masks). A refactor that changes any of them, by one ulp or one mask bit, fails here.
Recorded with one torch thread on one CPU kernel family; elsewhere other kernels sum in another
order, so the comparison is skipped with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dstbench.core.registry import get_method, list_methods
from tests.golden_runs import environment, golden_run

GOLDEN = json.loads((Path(__file__).parent / "golden.json").read_text())


def test_the_record_covers_every_built_in_method() -> None:
    builtin = [name for name in list_methods() if get_method(name).__module__.startswith("dstbench.methods.")]
    assert sorted(GOLDEN["runs"]) == sorted(builtin)


@pytest.mark.parametrize("method", sorted(GOLDEN["runs"]))
def test_results_are_bit_identical_to_the_record(method: str, tmp_path: Path) -> None:
    assert torch.get_num_threads() == 1  # as recorded (tests/conftest.py sets it for the suite)
    if environment() != GOLDEN["environment"]:
        pytest.skip(f"recorded on {GOLDEN['environment']}, this is {environment()}: kernels may sum in another order")
    assert golden_run(method, tmp_path) == GOLDEN["runs"][method]
