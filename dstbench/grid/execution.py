"""What a grid of runs executes on, as the user asked for it: ``--jobs``, ``--devices``, ``--launcher``
and the SLURM options (parsed by :mod:`dstbench.cli.options`) as an :class:`Execution`.

Kept apart from :mod:`dstbench.grid.launch` (which runs the grid and needs torch, submitit and the trainer) so
that building the command line, and ``dstbench --help``, imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dstbench.core.errors import ConfigError

__all__ = ["LAUNCHERS", "Execution", "SlurmOptions"]

LAUNCHERS = ("none", "local", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    """What a user sets for a SLURM job (submitit's ``slurm_*`` parameters)."""

    partition: str | None = None
    gpus: int = 0
    cpus: int = 2
    mem_gb: float | None = None
    time_min: int = 60 * 24
    account: str | None = None
    sbatch: tuple[str, ...] = ()
    """Extra ``#SBATCH`` lines as ``key=value`` (e.g. ``constraint=a100``, ``qos=high``)."""
    array_parallelism: int = 256

    def executor_parameters(self, cluster: str) -> dict[str, Any]:
        """submitit ``update_parameters`` arguments (generic names work for slurm and local)."""
        params: dict[str, Any] = {
            "timeout_min": self.time_min,
            "cpus_per_task": self.cpus,
            "gpus_per_node": self.gpus,
            "tasks_per_node": 1,
            "nodes": 1,
        }
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if cluster == "slurm":
            params["slurm_array_parallelism"] = self.array_parallelism
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.account:
                params["slurm_account"] = self.account
            extra: dict[str, str] = {}
            for line in self.sbatch:
                key, sep, value = line.partition("=")
                if not sep or not key.strip():
                    raise ConfigError(f"--sbatch expects key=value, got {line!r}")
                extra[key.strip().lstrip("-")] = value.strip()
            if extra:
                params["slurm_additional_parameters"] = extra
        return params


@dataclass(frozen=True)
class Execution:
    """Where the runs of a grid train: how many at once, on which devices, through which launcher."""

    jobs: int = 1
    devices: tuple[str, ...] = ()
    launcher: str = "none"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    submitit_dir: str | None = None
    """Where submitit keeps job scripts and logs (default: OUT/.submitit)."""
