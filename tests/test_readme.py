"""The README's plugin example is real code: it registers, trains, and keeps the engine's invariants."""

from __future__ import annotations

import re
import sys
import types
import warnings
from pathlib import Path

from dstbench.config import resolve_config
from dstbench.core.registry import list_methods
from dstbench.train.loop import train

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_plugin_example_trains(tmp_path: Path) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    module = types.ModuleType("readme_example")
    sys.modules[module.__name__] = module  # dataclasses resolve annotations through sys.modules
    exec(compile(code, "README.md", "exec"), module.__dict__)
    assert "grad-swap" in list_methods()
    cfg = resolve_config(
        "quick",
        overrides={"method": "grad-swap", "epochs": 3, "max_train_samples": 256, "max_test_samples": 64,
                   "out": str(tmp_path / "run")},  # fmt: skip
        hp={"every": "1"},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(cfg, progress=False)
    deprecated = [w for w in caught if issubclass(w.category, DeprecationWarning) and "dstbench" in str(w.filename)]
    assert not deprecated, "the README example must use the current contract, not a 0.2 hook"
    assert summary["topology_updates"] == 2  # start of epochs 1 and 2
    assert summary["needs"]["dense_grad"] == "update_steps"
