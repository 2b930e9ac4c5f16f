"""Regenerate the documentation's example output and figures from real command output.

    python docs/make_figures.py            # every marked block of README.md and docs/*.md, and the figures
    python docs/make_figures.py --check    # only list the marked blocks and the commands they run
    python docs/make_figures.py --keep DIR # the same, keeping the scratch folder DIR (new) for later --only
    python docs/make_figures.py --keep DIR --only "plot "   # redo some blocks, reusing DIR's runs

A console block in README.md or docs/*.md preceded by the line ``<!-- make_figures: output -->`` is
regenerated: each ``$ command`` in it is run with bash, and the lines under it are replaced by what the
command printed (stdout and stderr, as a terminal shows them). ``<!-- make_figures: run -->`` runs the
block's commands but keeps the block as written (for commands whose output the docs do not show, such
as the sweep behind the README's figure). All commands of all files run in order (README.md first, then
docs/*.md by name) in one fresh scratch folder, so ``runs/...`` paths in the docs are relative to it and
a later block can use the runs of an earlier one. Afterwards :data:`FIGURES` are copied from the
scratch folder into ``docs/figures/``.

Unmarked blocks are left alone: they need data this script cannot assume (real CIFAR-10) or abridge
long output by hand. ``tests/test_docs_commands.py`` still checks every documented ``dstbench`` command
parses, runs the cheap ones on tiny synthetic data, and compares documented error lines exactly.

A full run trains the quick preset (synthetic data, tiny CNN) a few dozen times: about half an hour
on a 2-core CPU. Wall times in the output are whatever this machine took.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!-- make_figures: (output|run) -->$")
FIGURES = {
    "sparsity.png": "docs/figures/sparsity_curve.png",
    "runs/compare6/figures/iou_every_epoch.png": "docs/figures/iou_every_epoch.png",
    "runs/compare6/figures/overhead.png": "docs/figures/overhead.png",
}
"""Scratch-folder file -> documentation file, copied after every block has run."""


@dataclass
class Command:
    """One ``$ ...`` entry of a console block: the command (continuation and here-document lines
    included, without the ``$ ``) and the output lines printed under it."""

    text: str
    output: list[str]


@dataclass
class Block:
    """A ```` ```console ```` block: where its body lies in the file, its marker, and its commands."""

    path: Path
    start: int  # index of the first body line
    end: int  # index of the closing fence
    mode: str | None  # "output", "run" or None (unmarked)
    commands: list[Command]


def parse_commands(lines: list[str]) -> list[Command]:
    """Split a console block's lines into commands and their output."""
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            if commands:
                commands[-1].output.append(line)
            i += 1
            continue
        text = line[2:]
        heredoc = re.search(r"<<-?'?(\w+)'?", text)
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text += "\n" + lines[i]
        if heredoc:
            while i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
                if lines[i] == heredoc.group(1):
                    break
        commands.append(Command(text, []))
        i += 1
    return commands


def console_blocks(path: Path) -> list[Block]:
    """Every console block of a Markdown file, with the marker on the line before its fence."""
    lines = path.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i] == "```console":
            marker = MARKER.match(lines[i - 1]) if i > 0 else None
            end = lines.index("```", i + 1)
            blocks.append(Block(path, i + 1, end, marker.group(1) if marker else None, parse_commands(lines[i + 1 : end])))
            i = end
        i += 1
    return blocks


def dstbench_commands(paths: list[Path] = DOCS) -> list[tuple[Path, str, list[str]]]:
    """Every documented ``$ dstbench ...`` command (continuations joined, comments dropped), with the
    file it is in and the output documented under it."""
    found = []
    for path in paths:
        for block in console_blocks(path):
            for command in block.commands:
                text = command.text.replace("\\\n", " ")
                if text.startswith("dstbench "):
                    found.append((path, " ".join(text.split("#")[0].split()), command.output))
    return found


def _run(command: str, cwd: Path) -> list[str]:
    """Run one command as a user would and return what it printed, line by line."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)
    printed = (result.stdout + result.stderr).rstrip("\n")
    return [line.rstrip() for line in printed.splitlines()]


def regenerate(scratch: Path, only: str | None = None) -> None:
    """Run every marked block's commands in document order (or only the blocks with ``only`` in a
    command), then rewrite the files and copy the figures."""
    bodies: dict[Path, list[tuple[Block, list[str]]]] = {}
    for path in DOCS:
        for block in console_blocks(path):
            if not block.mode or (only is not None and not any(only in c.text for c in block.commands)):
                continue
            body: list[str] = []
            for command in block.commands:
                print(f"$ {command.text.splitlines()[0]}", file=sys.stderr, flush=True)
                output = _run(command.text, scratch)
                body += f"$ {command.text}".splitlines()
                body += output if block.mode == "output" else command.output
            bodies.setdefault(path, []).append((block, body))
    for path, replaced in bodies.items():
        lines = path.read_text().splitlines()
        for block, body in reversed(replaced):  # from the end, so earlier line numbers stay valid
            lines[block.start : block.end] = body
        path.write_text("\n".join(lines) + "\n")
    for source, target in FIGURES.items():
        if (scratch / source).is_file():
            shutil.copyfile(scratch / source, ROOT / target)
            print(f"copied {source} -> {target}", file=sys.stderr)
        else:
            print(f"not copied (not written by the blocks run): {source}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="list the marked blocks and their commands; run nothing")
    parser.add_argument("--keep", help="run in this folder (kept afterwards) instead of a temporary one")
    parser.add_argument(
        "--only",
        metavar="TEXT",
        help="regenerate only the blocks with TEXT in a command; with --keep DIR of an earlier full run, "
        "their commands find the runs they read (compare and sweep reuse finished runs)",
    )
    args = parser.parse_args()
    if args.check:
        for path in DOCS:
            for block in console_blocks(path):
                if block.mode:
                    for command in block.commands:
                        print(f"{path.relative_to(ROOT)}:{block.start} [{block.mode}] $ {command.text.splitlines()[0]}")
        return 0
    if args.keep:
        scratch = Path(args.keep)
        scratch.mkdir(parents=True, exist_ok=args.only is not None)
        regenerate(scratch, args.only)
    else:
        with tempfile.TemporaryDirectory(prefix="dstbench-docs-") as tmp:
            regenerate(Path(tmp), args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
