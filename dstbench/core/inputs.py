"""Inputs a method declares and the training side loads: a method reads run folders only through them.

LT starts from a finished run (``--hp ticket_from=RUN_DIR``). Reading run folders is the business of
``dstbench.runs``, which the contract must not depend on; so the method declares the field
(``inputs = ("ticket_from",)``), the trainer hands over an object with this interface, and the method
finds it in ``ctx.inputs["ticket_from"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import torch

__all__ = ["Ticket"]


class Ticket(Protocol):
    """A finished run to start from, and the root of its chain of tickets (the dense run)."""

    path: Path

    def final_state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The run's final model state and its masks by layer name, on the CPU."""
        ...

    def rewind_state(self, step: int) -> Mapping[str, torch.Tensor]:
        """theta_step of the chain's root (one-line error if it kept no such weights)."""
        ...

    def root(self) -> Path:
        """The chain's root run (``ticket_from`` followed back to a run without one)."""
        ...
