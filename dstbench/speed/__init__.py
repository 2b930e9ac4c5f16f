"""Execution backends and measured speed: how a masked network is computed, and how fast.

Imports ``core``, ``engine``, ``runs``, ``config``, ``models`` and ``data`` only; the command line
(:mod:`dstbench.cli.speed`) calls into it. Importing the package registers the built-in backends.
"""

from dstbench.speed import kernels, shrink  # noqa: F401  (registers masked, csr, bsr, semi-structured, shrink)
from dstbench.speed.backends import (
    Backend,
    BackendMismatch,
    BackendUnavailable,
    LayerBackend,
    Prepared,
    backend_names,
    get_backend,
    masked_layers,
    prove,
    register_backend,
)

__all__ = [
    "Backend", "BackendMismatch", "BackendUnavailable", "LayerBackend", "Prepared",
    "backend_names", "get_backend", "masked_layers", "prove", "register_backend",
]  # fmt: skip
