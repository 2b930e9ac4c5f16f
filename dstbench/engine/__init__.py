"""The sparse-training engine: it owns every invariant a method could break.

``SparseEngine`` keeps masks, weights and optimizer state consistent and applies a method's decisions;
``topology`` records what each update changed; ``cost`` charges FLOPs from what a method declares.
"""

from __future__ import annotations

from .sparse_engine import MaskInvariantError, SparseEngine, derive_seed

__all__ = ["SparseEngine", "MaskInvariantError", "derive_seed"]
