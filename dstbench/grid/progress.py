"""One progress line per run of a ``compare`` or ``sweep`` grid.

A grid can hold dozens of runs, most of them reused from an earlier, interrupted invocation; the line
says which run of how many is starting, which setting it is, and whether it is trained, resumed or
reused, so a re-issued command shows at a glance how much work is left. Lines are plain text
(``tqdm.write``, so they never tear a progress bar) and go where the trainer's epoch lines go.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["RunState", "grid_line", "announce_run"]

RunState = Literal["training", "resuming", "reused"]


def grid_line(index: int, total: int, method: str, sparsity: float, seed: int, state: RunState, out: str) -> str:
    """``run 3 of 16: rigl, sparsity 0.99, seed 0 (reused runs/compare/rigl_s0.99_seed0)``."""
    return f"run {index} of {total}: {method}, sparsity {sparsity:g}, seed {seed} ({state} {out})"


def announce_run(index: int, total: int, method: str, sparsity: float, seed: int, state: RunState, out: str) -> None:
    """Print :func:`grid_line`."""
    from tqdm import tqdm

    tqdm.write(grid_line(index, total, method, sparsity, seed, state, out))
