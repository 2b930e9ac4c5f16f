"""What a user reads: help, listings, messages and progress lines are true and self-contained.

* every option of every subcommand explains itself, and shows its default when it has one;
* ``dstbench --help`` does not import torch (so it answers at once);
* no string the package can print cites the unshipped spec ("spec §N"), names a ``--flag`` that no
  subcommand has, or points at a ``dstbench.*`` module that does not exist;
* argument errors come before "already holds a run";
* ``compare`` says which run of how many it is on, and whether it reuses, resumes or trains it.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dstbench.cli.app import build_parser, main
from dstbench.grid.progress import grid_line

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("dstbench", "data", "analysis", "methods", "models")
TINY = ["--preset", "quick", "--epochs", "1", "--max-train-samples", "64", "--max-test-samples", "32"]


def _parsers(parser: argparse.ArgumentParser, path: str = "dstbench") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser and every subcommand parser below it, with their command paths."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def _all_option_strings() -> set[str]:
    return {s for _, p in _parsers(build_parser()) for a in p._actions for s in a.option_strings}


def test_every_option_has_help_and_shows_its_default() -> None:
    """Training options included: their help and default come from TrainConfig (tests/test_options.py)."""
    checked: set[str] = set()
    for path, parser in _parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert (action.help or "").strip(), f"{path} {action.option_strings or action.dest} has no help"
            shown = formatter._expand_help(action)
            if action.option_strings and action.default not in (None, False, []):
                assert "default" in shown, f"{path} {action.option_strings}: default {action.default!r} not shown"
                if "%(default)s" in parser._get_formatter()._get_help_string(action):  # type: ignore[operator]
                    assert str(action.default) in shown
            checked.add(path)
    # The walk really reached the nested subcommands.
    assert {"dstbench", "dstbench data prepare", "dstbench plot iou", "dstbench flops", "dstbench sweep"} <= checked


def test_help_shows_generated_defaults() -> None:
    parser = build_parser()
    flops = dict(_parsers(parser))["dstbench flops"]
    text = flops.format_help()
    assert "(default: 128)" in text and "(default: uniform)" in text
    sweep = dict(_parsers(parser))["dstbench sweep"]
    assert "0.9,0.95,0.98,0.99,0.999,0.9999,0.99999,0.999999" in " ".join(sweep.format_help().split())


def test_top_level_help_is_plain_text_and_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from dstbench.cli.app import build_parser\n"
        "text = build_parser().format_help()\n"
        "print(repr('torch' in sys.modules), repr('``' in text))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
    code = "import sys, dstbench.config; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False"]  # the config module alone never pulls torch in
    result = subprocess.run([sys.executable, "-m", "dstbench.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "dynamic sparse training" in result.stdout.lower()


def test_models_lists_every_registered_model(capsys: pytest.CaptureFixture[str]) -> None:
    import timm
    from timm.models import model_entrypoint

    import dstbench.models

    assert main(["models"]) == 0
    listed = capsys.readouterr().out.split()
    registered = {n for n in timm.list_models() if model_entrypoint(n).__module__.startswith("dstbench.models")}
    assert set(listed) == registered
    assert {"tiny_cnn", *dstbench.models.CIFAR_MODELS} <= set(listed)


def _user_strings(path: Path) -> Iterator[tuple[int, str]]:
    """String constants that can reach a user: everything but docstrings (module, class, function,
    and the attribute docstrings written on the line after a field)."""
    tree = ast.parse(path.read_text())
    docs: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
        for previous, current in zip(body, body[1:]):
            if isinstance(previous, (ast.Assign, ast.AnnAssign)) and isinstance(current, ast.Expr):
                docs.add(id(current.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def _package_strings() -> Iterator[tuple[str, str]]:
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, text in _user_strings(path):
                yield f"{path.relative_to(ROOT)}:{line}", text


def test_user_strings_scan_sees_messages() -> None:
    texts = [text for _, text in _package_strings()]
    assert any("already holds a run" in t for t in texts)  # the scan reaches error messages
    assert not any(t.startswith("The ``dstbench`` command line") for t in texts)  # and skips docstrings


def test_no_user_string_cites_the_spec() -> None:
    cites = [(where, text) for where, text in _package_strings() if "§" in text or re.search(r"\bspec\b", text)]
    assert cites == []


def test_no_user_string_names_a_missing_flag_or_module() -> None:
    options = _all_option_strings()
    stale = []
    for where, text in _package_strings():
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
            if flag not in options and f"--no-{flag[2:]}" not in options:
                stale.append((where, flag))
        for module in re.findall(r"\bdstbench(?:\.[a-z_]+)+", text):
            if importlib.util.find_spec(module) is None:
                stale.append((where, module))
    assert stale == []


def test_method_details_cite_no_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "--details"]) == 0
    out = capsys.readouterr().out
    assert "rigl" in out and "§" not in out and not re.search(r"\bspec\b", out.lower())


def test_help_cites_no_spec() -> None:
    for path, parser in _parsers(build_parser()):
        assert "§" not in parser.format_help(), path


def test_argument_errors_come_before_an_occupied_run_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run"
    assert main(["train", *TINY, "--quiet", "--out", str(out_dir)]) == 0
    capsys.readouterr()
    for bad, expected in (
        (["--method", "nope"], "unknown method 'nope'"),
        (["--model", "no_such_net"], "unknown model 'no_such_net'"),
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--hp", "zeta=2x"], "zeta"),
    ):
        args = ["train", *TINY, "--method", "set", "--quiet", "--out", str(out_dir), *bad]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert expected in err and "already holds" not in err, (bad, err)


def test_grid_line_format() -> None:
    line = grid_line(3, 16, "rigl", 0.99, 0, "reused", "runs/compare/rigl_s0.99_seed0")
    assert line == "run 3 of 16: rigl, sparsity 0.99, seed 0 (reused runs/compare/rigl_s0.99_seed0)"


def test_compare_progress_counts_runs_and_says_reused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compare", "--methods", "static,set", "--seeds", "0", *TINY, "--out", str(tmp_path)]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err  # output is not a terminal here: no progress bars
    runs = [line for line in out.splitlines() if line.startswith("run ")]
    assert runs == [
        f"run 1 of 2: static, sparsity 0.9, seed 0 (training {tmp_path / 'static_s0.9_seed0'})",
        f"run 2 of 2: set, sparsity 0.9, seed 0 (training {tmp_path / 'set_s0.9_seed0'})",
    ]
    assert "epoch 1/1" in out  # redirected output: plain epoch lines, no bar
    assert "\r" not in out
    assert main(args) == 0
    again = [line for line in capsys.readouterr().out.splitlines() if line.startswith("run ")]
    assert [line.split("(")[1].split()[0] for line in again] == ["reused", "reused"]
    assert main([*args, "--quiet"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("run ")]


def test_resume_says_its_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "run"
    two = ["train", "--preset", "quick", "--max-train-samples", "64", "--max-test-samples", "32"]
    assert main([*two, "--epochs", "2", "--method", "static", "--quiet", "--out", str(out_dir)]) == 0
    # Turn the finished 2-epoch run into one interrupted after epoch 1 of 2: drop the summary and
    # rewind the checkpoint's epoch counter.
    from dstbench.runs.rundir import RunDir

    folder = RunDir(out_dir)  # (sealed as the run's own: a bare torch.save would be refused as foreign)
    state = folder.load_checkpoint()
    state["epoch"], state["metrics"] = 0, state["metrics"][:1]
    folder.save_checkpoint(state)
    (out_dir / "summary.json").unlink()
    capsys.readouterr()
    assert main([*two, "--epochs", "2", "--method", "static", "--resume", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert f"[static] resuming {out_dir}: from epoch 2/2" in out.splitlines()
    assert json.loads((out_dir / "summary.json").read_text())["epochs"] == 2
    # Killed after its last checkpoint but before its summary: nothing to train, and it says so (not "3/2").
    (out_dir / "summary.json").unlink()
    assert main([*two, "--epochs", "2", "--method", "static", "--resume", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert f"[static] resuming {out_dir}: all epochs are done; writing its summary" in out.splitlines()
    assert json.loads((out_dir / "summary.json").read_text())["epochs"] == 2
