"""The command line: every ``argparse`` parser of dstbench lives in this package.

Importing it does not import torch, so ``dstbench --help`` answers at once.
"""

from __future__ import annotations

from .app import main

__all__ = ["main"]
