"""The ``$ dstbench ...`` commands of README.md and docs/*.md still work.

Every documented command must parse; the ones that need no real data run, in document order, on
tiny synthetic data (the training commands get ``--epochs 1`` and a few dozen samples appended, which
override the documented values), and every documented error line must be exactly what the command
prints today. A sweep runs only its lowest and highest sparsity. The commands are read from the docs by ``docs/make_figures.py``'s own parser, the same
one that regenerates the docs' output, so the two cannot disagree on what is documented.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from dstbench.cli.app import build_parser, main
from tests.plugins import TEST_REGISTERED_METHODS, without_example_methods

ROOT = Path(__file__).resolve().parents[1]

# Documented commands the test only parses, with the reason; each must still match a documented command.
NOT_RUN = {
    "dstbench report c10-r32-e5": "the real CIFAR-10 runs of docs/results.md (run folders are not shipped)",
    "dstbench plot curves c10-r32-e5": "the real CIFAR-10 runs of docs/results.md (run folders are not shipped)",
    "dstbench report c10-r32-4k-e3": "the earlier subset runs of docs/results.md (run folders are not shipped)",
    "dstbench report runs/methods2": "the real CIFAR-10 runs of docs/methods.md (run folders are not shipped)",
    "dstbench speed /tmp/h7runs/vgg19-u98": "times VGG-19 for minutes; tests/test_speed.py runs the command on a tiny run",
    "dstbench train --model cifar_vgg19 --dataset synthetic": "docs/speed.md's VGG-19 run in /tmp/h7runs; tests/test_speed.py times a tiny run",
    "dstbench flops --model resnet50": "a ResNet-50 forward pass (7 s); tests/test_analysis_flops.py checks its numbers",
    "dstbench compare --methods set,rigl --model cifar_vgg19": "docs/speed.md's VGG-19 grid timed below it; tests/test_speed_report.py reports tiny runs",
    "dstbench speed runs/speed/": "times VGG-19 runs for minutes; tests/test_speed.py runs the command on a tiny run",
    "dstbench report runs/speed": "the VGG-19 grid of docs/speed.md (run folders are not shipped); tests/test_speed_report.py",
    "dstbench plot speed runs/speed": "the VGG-19 grid of docs/speed.md (run folders are not shipped); tests/test_speed_report.py",
    "dstbench plot crossover --model cifar_vgg19": "times every VGG-19 layer (1.5 min or more); tests/test_speed_report.py runs it on tiny_cnn",
}
TRAINING = {"train", "compare", "sweep"}
TINY = ["--epochs", "1", "--max-train-samples", "16", "--max-test-samples", "16", "--batch-size", "16"]


def _make_figures() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


MAKE_FIGURES = _make_figures()
DOCUMENTED: list[tuple[Path, str, list[str]]] = MAKE_FIGURES.dstbench_commands()
REGENERATED = {
    (path, command.text)
    for path in MAKE_FIGURES.DOCS
    for block in MAKE_FIGURES.console_blocks(path)
    if block.mode == "output"
    for command in block.commands
}
"""Commands whose documented output docs/make_figures.py rewrites (the other blocks may abridge)."""


def _skipped(command: str) -> bool:
    """Parsed, not run: commands on real data (``--data-dir``: a user's or this machine's path), on a
    SLURM cluster, and the paper's grids (``reproduce``: tests/test_reproduce.py runs them small)."""
    return (
        "--data-dir" in command
        or "--launcher slurm" in command
        or command.startswith("dstbench reproduce")
        or any(command.startswith(prefix) for prefix in NOT_RUN)
    )


def test_the_docs_document_commands_and_the_skip_list_is_current() -> None:
    files = {path.name for path, _, _ in DOCUMENTED}
    assert {"README.md", "analysis.md"} <= files
    assert len(DOCUMENTED) >= 20
    for prefix in NOT_RUN:
        assert any(command.startswith(prefix) for _, command, _ in DOCUMENTED), f"stale NOT_RUN entry: {prefix}"


@pytest.mark.parametrize("command", sorted({command for _, command, _ in DOCUMENTED}))
def test_documented_command_parses(command: str) -> None:
    build_parser().parse_args(shlex.split(command)[1:])  # a removed or misspelt option exits with 2


def test_documented_commands_run_and_print_the_documented_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the docs' runs/... paths land here
    monkeypatch.setenv("DSTBENCH_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ran = 0
    try:
        runnable = [(path, command, output) for path, command, output in DOCUMENTED if not _skipped(command)]
        # Training first (a document may show a figure of runs it trains further down), then the rest.
        ordered = sorted(runnable, key=lambda item: shlex.split(item[1])[1] not in TRAINING)
        for path, command, documented in ordered:
            argv = shlex.split(command)[1:]
            errors = [line for line in documented if line.startswith("dstbench: error:")]
            if argv[0] in TRAINING and not errors:  # a documented error is reproduced as documented
                argv += [*TINY, "--quiet"]
            if argv[0] == "sweep":  # the lowest and the highest of the documented sparsities
                argv += ["--sparsities", "0.9,0.999999"]
            code = main(argv)
            out, err = capsys.readouterr()
            if errors:
                assert (code, without_example_methods(err.strip())) == (2, errors[0]), f"{path.name}: $ {command}"
            else:
                assert code == 0, f"{path.name}: $ {command}\n{err}"
                _check_printed_tables(path, command, documented, out.splitlines())
            ran += 1
    finally:
        torch.set_num_threads(threads)
    assert ran == len(DOCUMENTED) - sum(_skipped(command) for _, command, _ in DOCUMENTED)


def _table_headers(lines: list[str]) -> list[str]:
    """The header row of every markdown table printed (a ``|`` line followed by a ``|---`` line)."""
    return [" ".join(a.split()) for a, b in zip(lines, lines[1:]) if a.startswith("|") and b.startswith("|-")]


def _check_printed_tables(path: Path, command: str, documented: list[str], printed: list[str]) -> None:
    """What the docs print must be what the command prints today: the same tables (header rows) for
    every command, and for ``flops`` (arithmetic, no training) the very same lines."""
    where = f"{path.name}: $ {command} (regenerate with docs/make_figures.py)"
    if (path, command) not in REGENERATED:
        return
    assert _table_headers(printed) == _table_headers(documented), where
    if shlex.split(command)[1] == "flops":
        assert [line.rstrip() for line in printed] == documented, where


def test_the_per_method_flops_loop_lists_every_built_in_method() -> None:
    """docs/analysis.md's loop over `dstbench methods` shows one line per registered built-in method
    (but LT's: its FLOPs need the finished run it starts from, so `flops --method lt` asks for it)."""
    from dstbench.core.registry import get_method, list_methods

    methods = {name for name in set(list_methods()) - set(TEST_REGISTERED_METHODS) if not get_method(name).inputs}
    (block,) = [b for b in MAKE_FIGURES.console_blocks(ROOT / "docs" / "analysis.md") if b.commands and b.commands[0].text.startswith("for m in")]
    shown = {line.split("(", 1)[1].split(",", 1)[0] for line in block.commands[0].output if line.startswith("training FLOPs (")}
    assert shown == methods


def test_the_readme_figure_is_regenerated_by_make_figures() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/figures/sparsity_curve.png" in readme
    assert "docs/figures/sparsity_curve.png" in MAKE_FIGURES.FIGURES.values()
    for target in MAKE_FIGURES.FIGURES.values():
        assert (ROOT / target).is_file(), target
    marked = [block for path in MAKE_FIGURES.DOCS for block in MAKE_FIGURES.console_blocks(path) if block.mode]
    assert marked, "no block is marked for regeneration"


def test_console_block_parser_handles_continuations_and_heredocs() -> None:
    lines = ["$ dstbench a \\", "    --b 1", "out 1", "$ python - <<'EOF'", "print(2)", "EOF", "2", "$ dstbench c"]
    commands = MAKE_FIGURES.parse_commands(lines)
    assert [(c.text, c.output) for c in commands] == [
        ("dstbench a \\\n    --b 1", ["out 1"]),
        ("python - <<'EOF'\nprint(2)\nEOF", ["2"]),
        ("dstbench c", []),
    ]
