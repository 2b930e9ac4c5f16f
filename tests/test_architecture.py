"""The layers of the package, checked from the source: dependencies run one way, and nothing cycles.

``cli -> grid -> train -> engine -> core``; ``train`` runs ``speed``'s execution backends; ``runs`` serves train, grid and analysis; ``methods``
import only ``core``; ``analysis`` reads runs and never imports ``grid``, ``cli`` or ``train``. Every
import counts, also one inside a function or under ``TYPE_CHECKING``: hiding an import does not
remove the dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"dstbench": "dstbench", "methods": "dstbench.methods", "models": "dstbench.models", "data": "dstbench.data", "analysis": "dstbench.analysis"}

# Which layer may import which (besides itself). "dstbench" is the package root (__init__, _compat).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "engine": {"core"},
    "runs": {"core", "engine", "config", "dstbench"},
    "config": {"core"},
    "data": {"core", "runs", "config"},
    "models": {"core", "data"},
    "methods": {"core"},
    "train": {"core", "engine", "runs", "config", "data", "models", "dstbench", "speed"},
    "analysis": {"core", "engine", "runs", "config"},
    "speed": {"core", "engine", "runs", "config", "models", "data"},
    "grid": {"core", "engine", "runs", "config", "train", "analysis", "data"},
    "cli": {"core", "engine", "runs", "config", "train", "grid", "analysis", "data", "models", "dstbench", "speed"},
    "dstbench": {"core", "engine", "cli"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every dstbench module ``name`` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        out.update(target for target in targets if target in MODULES and target != name)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def layer(module: str) -> str:
    if module == "dstbench.__main__":
        return "cli"  # ``python -m dstbench`` is the command line
    parts = module.split(".")
    if parts[1:2] and parts[1] in {"methods", "models", "data", "analysis", "core", "engine", "train", "runs", "grid", "cli", "config", "speed"}:
        return parts[1]
    return "dstbench"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_walker_sees_imports_inside_functions_and_relative_ones() -> None:
    assert "dstbench.core.errors" in GRAPH["dstbench.core.hparams"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_files() -> None:
    assert _cycle(GRAPH) is None


def test_no_import_cycle_between_layers() -> None:
    layers: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        layers.setdefault(layer(module), set()).update(layer(t) for t in targets if layer(t) != layer(module))
    assert _cycle(layers) is None


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_dependencies_run_one_way(module: str) -> None:
    own = layer(module)
    wrong = sorted(t for t in GRAPH[module] if layer(t) != own and layer(t) not in ALLOWED[own])
    assert not wrong, f"{module} ({own}) imports {wrong}"
