"""One-line descriptions of third-party exceptions for DataError/ConfigError messages.

dstbench promises one-line error messages; library exceptions (tarfile, Pillow, ffcv) sometimes
span several lines, so they are flattened here.
"""

from __future__ import annotations


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` on one line."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
