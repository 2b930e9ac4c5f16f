"""What a grid of runs executes on, as the user asked for it: ``--jobs``, ``--devices``, ``--launcher``
and the SLURM options, parsed into an :class:`Execution`.

Kept apart from :mod:`dstbench.grid.launch` (which runs the grid and needs torch, submitit and the trainer) so
that building the command line, and ``dstbench --help``, imports none of them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from dstbench.core.errors import ConfigError
from dstbench.core.validation import NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT

__all__ = ["LAUNCHERS", "Execution", "SlurmOptions", "add_execution_options", "execution_from_args"]

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
    jobs: int = 1
    devices: tuple[str, ...] = ()
    launcher: str = "none"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    submitit_dir: str | None = None
    """Where submitit keeps job scripts and logs (default: OUT/.submitit)."""


# -- command-line options ----------------------------------------------------------------------------
def add_execution_options(parser: argparse.ArgumentParser) -> None:
    """``--jobs``, ``--devices``, ``--launcher`` and the SLURM options, for ``compare`` and ``sweep``."""
    add = parser.add_argument
    add("--jobs", type=POSITIVE_INT, default=1, help="runs at once, one process each (default: 1, in this process)")
    add("--devices", help="comma-separated devices the runs are placed on round-robin, e.g. cuda:0,cuda:1 (default: --device)")
    add("--launcher", choices=LAUNCHERS, default="none",
        help="submitit: slurm job array, or local (same path, no cluster) (default: none)")  # fmt: skip
    add("--slurm-partition", help="SLURM partition (default: the cluster's)")
    add("--slurm-gpus", type=NON_NEGATIVE_INT, default=0, help="GPUs per job (default: 0)")
    add("--slurm-cpus", type=POSITIVE_INT, default=2, help="CPUs per job (default: 2)")
    add("--slurm-mem-gb", type=POSITIVE_FLOAT, help="memory per job in GB (default: the cluster's)")
    add("--slurm-time", type=POSITIVE_INT, default=60 * 24, help="minutes per job before it is requeued (default: 1440)")
    add("--slurm-account", help="SLURM account to charge (default: the user's)")
    add("--sbatch", action="append", default=[], metavar="KEY=VALUE", help="extra #SBATCH line (repeatable)")
    add("--submitit-dir", help="job scripts and logs (default: OUT/.submitit)")


def execution_from_args(args: argparse.Namespace) -> Execution:
    devices = tuple(d.strip() for d in (args.devices or "").split(",") if d.strip())
    for device in devices:
        if device != "cpu" and not (device == "cuda" or device.startswith("cuda:")):
            raise ConfigError(f"--devices: unknown device {device!r}; e.g. cuda:0,cuda:1 or cpu")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    return Execution(
        jobs=args.jobs,
        devices=devices,
        launcher=args.launcher,
        slurm=SlurmOptions(
            partition=args.slurm_partition,
            gpus=args.slurm_gpus,
            cpus=args.slurm_cpus,
            mem_gb=args.slurm_mem_gb,
            time_min=args.slurm_time,
            account=args.slurm_account,
            sbatch=tuple(args.sbatch),
        ),
        submitit_dir=args.submitit_dir,
    )
