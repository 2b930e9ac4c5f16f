"""The shipped BiDST numbers: a few entries read off the paper by hand, and every Table 1 / B.1 / B.3 row
checked against the paper's text where ``../shared/spec`` is present."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dstbench.analysis.paper import CITATION, paper_matches, paper_results

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "bidst-paper.md"


def _one(**fields: object) -> tuple[float, float | None, float]:
    (row,) = [r for r in paper_results() if all(getattr(r, k) == v for k, v in fields.items())]
    return row.accuracy, row.std, row.dense_accuracy


def test_entries_read_off_the_paper_by_hand() -> None:
    assert "ICML 2024" in CITATION
    c10 = {"model": "ResNet-32", "dataset": "CIFAR-10", "table": "1"}
    assert _one(method="bidst", distribution="erk", sparsity=0.9, **c10) == (94.12, 0.11, 94.9)
    assert _one(method="rigl", distribution="uniform", sparsity=0.98, table="1", dataset="CIFAR-100") == (64.07, None, 74.9)
    assert _one(method="dsr", sparsity=0.95, table="B.1", dataset="CIFAR-10") == (93.86, None, 94.2)
    assert _one(method="mest", variant="", sparsity=0.9, table="2") == (75.0, None, 77.1)
    assert _one(method="bidst", variant="", sparsity=0.9, table="B.3") == (73.08, None, 74.1)
    assert _one(method="bidst", distribution="erk", sparsity=0.98, table="B.2", dataset="CIFAR-100") == (69.8, None, 73.5)
    # Table 1 and B.1: 13 rows x 6 cells; Table 2: 21 rows x 2, less two dashes; B.2: 12 (one duplicate dropped); B.3: 8.
    counts = {t: sum(r.table == t for r in paper_results()) for t in ("1", "B.1", "2", "B.2", "B.3")}
    assert counts == {"1": 78, "B.1": 78, "2": 40, "B.2": 12, "B.3": 8}


def test_matching_uses_our_names_and_the_1x_schedule_only() -> None:
    (match,) = paper_matches("rigl", "cifar_resnet32", "cifar10", "erk", 0.9)
    assert (match.accuracy, match.dense_accuracy, round(match.gap, 2)) == (93.55, 94.9, -1.35)
    assert [m.accuracy for m in paper_matches("rigl", "resnet50", "imagefolder", "uniform", 0.8)] == [74.6]
    assert paper_matches("rigl", "tiny_cnn", "synthetic", "erk", 0.9) == []


@pytest.mark.skipif(not SPEC.exists(), reason=f"the paper's text is not at {SPEC}")
def test_every_cifar_table_row_is_in_the_paper_text() -> None:
    text = SPEC.read_text()
    blocks = {
        "1": text[text.index("Table 1: Accuracy") :].split("\n\n")[1],
        "B.1": text[text.index("Table B.1:") :].split("\n\n")[1],
        "B.3": text[text.index("Table B.3:") :].split("\n\n")[1],
    }
    checked = 0
    for row in paper_results():
        if row.table not in blocks:
            continue
        if row.table == "B.3":  # continuation rows carry no method name: sparsity and accuracy, tab-separated
            assert f"{row.sparsity:g}\t{row.accuracy:.2f}" in blocks["B.3"], row
            checked += 1
            continue
        printed = f"{row.accuracy:.2f}" + (f"±{row.std:.2f}" if row.std is not None else "")
        lines = [
            re.sub(r"<[^>]*>|\s", "", line)
            for line in blocks[row.table].splitlines()
            if row.paper_name.split(" ")[0] in line and row.distribution in line.lower()
        ]
        assert any(printed in line for line in lines), (row, lines)
        checked += 1
    assert checked == 78 + 78 + 8
