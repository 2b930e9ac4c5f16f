"""Ticket runs: the finished run folders a Lottery Ticket round starts from, read and charged.

A round of ``lt`` names its ticket with ``--hp ticket_from=RUN_DIR``; the chain of such folders leads
back to the dense root run, whose ``rewind.pt`` holds the weights every round rewinds to. Reading them
is a matter of run folders, so it lives here; the pipeline that trains the rounds is
:mod:`dstbench.grid.lottery`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dstbench.core.errors import ConfigError
from dstbench.runs.rundir import RunDir

__all__ = ["ticket_chain", "ticket_weights", "rewind_weights", "pipeline_flops", "TicketRun", "method_inputs"]


def _finished(path: Path) -> RunDir:
    run = RunDir(path)
    if not run.config.exists():
        raise ConfigError(f"ticket_from: {path} is not a dstbench run directory (no config.json)")
    if not run.is_complete():
        raise ConfigError(f"ticket_from: {path} has not finished training (no summary.json); finish or --resume it first")
    return run


def ticket_chain(path: str | Path) -> list[Path]:
    """``path``, then the run its ``ticket_from`` names, and so on back to the root (the dense run)."""
    chain = [Path(path)]
    while True:
        hp = _finished(chain[-1]).read_json(RunDir(chain[-1]).config).get("hp", {})
        parent = hp.get("ticket_from")
        if not parent:
            return chain
        if Path(parent) in chain:
            raise ConfigError(f"ticket_from forms a cycle: {' -> '.join(map(str, chain))} -> {parent}")
        chain.append(Path(parent))


def ticket_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The final model state of a finished run and its masks (``weight_mask`` buffers), on the CPU."""
    state = _finished(Path(path)).load_checkpoint("cpu")["model"]
    masks = {key[: -len(".weight_mask")]: value.bool() for key, value in state.items() if key.endswith(".weight_mask")}
    return state, masks


def rewind_weights(path: str | Path, step: int) -> dict[str, torch.Tensor]:
    """theta_step of the root of ``path``'s ticket chain, from its ``rewind.pt``."""
    root = ticket_chain(path)[-1]
    run = RunDir(root)
    if not run.rewind.exists():
        raise ConfigError(
            f"{root} kept no weights to rewind to (no {run.rewind.name}); train it with --save-rewind-step {step}"
        )
    saved = run.load_rewind()
    if int(saved["step"]) != step:
        raise ConfigError(
            f"{root} kept the weights of step {saved['step']}, not {step}: use --hp rewind_step={saved['step']} "
            f"or retrain it with --save-rewind-step {step}"
        )
    model: dict[str, torch.Tensor] = saved["model"]
    return model


@dataclass(frozen=True)
class TicketRun:
    """A finished run folder as the ticket input a method declares (:class:`dstbench.core.inputs.Ticket`);
    read when the method asks, so a bad folder is a one-line error at initialisation."""

    path: Path

    def final_state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return ticket_weights(self.path)

    def rewind_state(self, step: int) -> dict[str, torch.Tensor]:
        return rewind_weights(self.path, step)

    def root(self) -> Path:
        return ticket_chain(self.path)[-1]


def method_inputs(updater: Any) -> dict[str, TicketRun]:
    """The run folders a method names in its declared ``inputs`` (LT's ``ticket_from``), for the engine."""
    return {name: TicketRun(Path(value)) for name in updater.inputs if (value := getattr(updater, name, ""))}


# -- cost -----------------------------------------------------------------------------------------------
def pipeline_flops(hp: Mapping[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A run's FLOPs with its ticket's training charged: unchanged for runs without ``ticket_from``."""
    ticket = hp.get("ticket_from")
    if not ticket:
        return own
    run = _finished(Path(ticket))
    before = float(run.read_json(run.summary)["flops"]["train_flops"])
    total = own["train_flops"] + before
    return {
        **own,
        "train_flops_run": own["train_flops"],
        "train_flops_ticket": before,
        "train_flops": total,
        "train_flops_relative": total / own["dense_train_flops"],
        "train_flops_per_sample_run": own["train_flops_per_sample"],
    }
