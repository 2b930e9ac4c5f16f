"""Two warnings torch prints for every ``--compile`` run that say nothing about the run.

* ``torch.utils.cpp_extension``: "No CUDA runtime is found, using CUDA_HOME=..." on a CPU-only machine,
  when inductor imports its C++ toolchain; the CPU kernels it builds need no CUDA.
* ``torch._dynamo.variables.ctx_manager``: "Profiler record function ... will be ignored", because
  ``torch.optim.Optimizer.step`` wraps itself in a profiler range that dynamo drops when it traces it.

Only these two messages are filtered; every other torch warning still reaches the user.
"""

from __future__ import annotations

import logging

_UNINFORMATIVE = {
    "torch.utils.cpp_extension": "No CUDA runtime is found",
    "torch._dynamo.variables.ctx_manager": "Profiler record function",
}


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def quiet_compile_warnings() -> None:
    """Filter the two messages above at their loggers (idempotent)."""
    for name, prefix in _UNINFORMATIVE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) for f in logger.filters):
            logger.addFilter(_DropMessage(prefix))
