"""The example plugin package (examples/dstbench-example-plugin), registered in this test process the way
its entry points register it when installed, so suite-wide tests over ``list_methods()`` cover
third-party methods too."""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLE_SRC = Path(__file__).resolve().parents[1] / "examples" / "dstbench-example-plugin" / "src"


EXAMPLE_METHODS = ("gradual-regrow", "magnitude-random")


# Registered by tests in this process: the example plugin's, and the README's plugin (tests/test_readme.py).
TEST_REGISTERED_METHODS = (*EXAMPLE_METHODS, "grad-swap")


def without_example_methods(text: str) -> str:
    """``text`` as a process without the test-registered methods prints it (method lists drop them)."""
    for name in TEST_REGISTERED_METHODS:
        text = text.replace(f"{name}, ", "").replace(f", {name}", "")
    return text


def register_example_plugin() -> None:
    if str(EXAMPLE_SRC) not in sys.path:
        sys.path.insert(0, str(EXAMPLE_SRC))
    from dstbench_example_plugin import GradualRegrow, MagnitudeRandom

    from dstbench.core.registry import list_methods, register_method

    known = set(list_methods())
    for name, cls in zip(EXAMPLE_METHODS, (GradualRegrow, MagnitudeRandom)):
        if name not in known:
            register_method(name)(cls)
