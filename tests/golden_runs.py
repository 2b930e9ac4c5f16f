"""Short CPU runs of every built-in method, reduced to numbers that must not change under refactors.

``python tests/golden_runs.py > tests/golden.json`` records them; ``test_golden.py`` re-runs each
method and compares exactly (only where torch and the CPU kernel family are the recorded ones, since
another BLAS may sum in another order).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from dstbench.config import resolve_config
from dstbench.core.registry import list_methods
from dstbench.train.loop import train

SMALL = {"synthetic_train_samples": 640, "synthetic_test_samples": 64, "epochs": 3, "batch_size": 32}
"""20 steps an epoch: the quick preset's cadences (every 20 steps, every epoch) update every method."""
HP: dict[str, dict[str, Any]] = {}


def environment() -> dict[str, str]:
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if isinstance(value, torch.Tensor):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def golden_run(method: str, out: Path) -> dict[str, Any]:
    """One short run of ``method`` (LT: from a dense ticket trained first) reduced to exact numbers."""
    hp = dict(HP.get(method, {}))
    if method == "lt":
        ticket = out / "ticket"
        train(resolve_config("quick", overrides={"method": "dense", "out": str(ticket), "save_rewind_step": 0, **SMALL}), progress=False)
        hp["ticket_from"] = str(ticket)
    summary = train(resolve_config("quick", overrides={"method": method, "out": str(out / method), **SMALL}, hp=hp), progress=False)
    state = torch.load(out / method / "checkpoint.pt", map_location="cpu", weights_only=False)
    return {
        "train_loss": repr(summary["train_loss"]),
        "test_loss": repr(summary["test_loss"]),
        "test_acc": repr(summary["test_acc"]),
        "topology_updates": summary["topology_updates"],
        "itop_rate": repr(summary["itop_rate"]),
        "losses": [repr(row["train_loss"]) for row in state["metrics"]],
        "model": _digest(state["model"]),
    }


def main() -> None:
    torch.set_num_threads(1)  # CPU kernels sum in another order with more threads
    results: dict[str, Any] = {"environment": environment(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for method in list_methods():
            results["runs"][method] = golden_run(method, Path(tmp) / method)
            print(method, results["runs"][method]["test_acc"], file=sys.stderr)
    print(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
