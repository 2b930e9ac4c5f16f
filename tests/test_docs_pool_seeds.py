"""docs/pool_seeds.py: the pooled 5-seed tables of README.md and docs/results.md are what the script
prints from the recorded accuracies, and a damaged record is refused."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


POOL = _load("pool_seeds")
MAKE_FIGURES = _load("make_figures")


@pytest.mark.parametrize("document", ["README.md", "docs/results.md"])
def test_the_docs_show_what_the_script_prints(document: str, capsys: pytest.CaptureFixture[str]) -> None:
    documented = [
        command.output
        for block in MAKE_FIGURES.console_blocks(ROOT / document)
        for command in block.commands
        if command.text == "python docs/pool_seeds.py"
    ]
    assert len(documented) == 1, f"{document} shows `python docs/pool_seeds.py` once"
    assert POOL.main([]) == 0
    assert capsys.readouterr().out.splitlines() == documented[0]


def test_the_record_holds_five_seeds_of_each_method_and_the_baseline_row() -> None:
    record = POOL.read_record(POOL.DEFAULT)
    assert {method: sorted(seeds) for method, seeds in record.items()} == {m: [0, 1, 2, 3, 4] for m in ("bidst", "rigl", "mest", "dense")}
    rows = POOL.pooled_table(record, "rigl")
    assert [row.split(" | ")[0] for row in rows[2:]] == ["| bidst", "| rigl", "| mest", "| dense"]


def test_a_seed_recorded_twice_is_refused(tmp_path: Path) -> None:
    record = tmp_path / "seeds.csv"
    record.write_text("method,seed,test_acc,source\nrigl,0,71.0,a\nrigl,0,72.0,b\n")
    with pytest.raises(SystemExit, match="rigl seed 0 is recorded twice"):
        POOL.read_record(record)


@pytest.mark.parametrize(
    ("row", "message"),
    [("rigl,zero,71.0,a", "not a method,seed,test_acc row"), ("rigl,0,0.71x,a", "not a method,seed,test_acc row"),
     ("rigl,0,171.0,a", "test_acc 171.0 is not a percentage")],
)
def test_a_damaged_row_is_refused_in_one_line(tmp_path: Path, row: str, message: str) -> None:
    record = tmp_path / "seeds.csv"
    record.write_text(f"method,seed,test_acc,source\n{row}\n")
    with pytest.raises(SystemExit, match=message):
        POOL.read_record(record)


def test_an_unknown_baseline_is_refused() -> None:
    with pytest.raises(SystemExit, match="--baseline 'set' is not among the methods"):
        POOL.pooled_table({"rigl": {0: 0.7, 1: 0.71}}, "set")
