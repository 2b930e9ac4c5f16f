"""One colour and one marker per method, identical in every figure.

Matplotlib's default colour cycle hands out colours in drawing order, so a method was orange in one
figure and green in the next, depending on which other methods happened to be plotted. Here a method's
style is a function of its name alone: the built-in methods have fixed, hand-picked styles (the tab10
colours, related methods told apart by marker), and any other name (a plugin) gets a style derived
from a hash of the name, so it too is the same in every figure, process and machine. Sparsities of
one method are told apart by line style, in numeric order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "Style",
    "BUILTIN_STYLES",
    "method_style",
    "method_order",
    "sparsity_linestyle",
    "SPARSITY_LINESTYLES",
    "SPARSITY_PALETTE",
    "sparsity_colors",
    "method_colors",
]


@dataclass(frozen=True)
class Style:
    """How one method is drawn: ``color`` (hex) and ``marker`` (a matplotlib marker code)."""

    color: str
    marker: str


BUILTIN_STYLES: dict[str, Style] = {
    "bidst": Style("#d62728", "o"),  # red: the method the benchmark was built around
    "rigl": Style("#ff7f0e", "s"),
    "rigl-itop": Style("#8c564b", "D"),
    "set": Style("#1f77b4", "^"),
    "mest": Style("#2ca02c", "v"),
    "mest-ems": Style("#17becf", "P"),
    "snfs": Style("#9467bd", "X"),
    "static": Style("#7f7f7f", "*"),
    "dense": Style("#000000", "h"),
}
"""The built-in methods, in the order legends list them."""

# Plugins draw from colours and markers no built-in uses, so a plugin never looks like a built-in.
_PLUGIN_COLORS = ("#e377c2", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd")
_PLUGIN_MARKERS = ("<", ">", "p", "d", "8", "H")

SPARSITY_LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
"""Line styles for a method's sparsities, lowest sparsity first."""


def method_style(method: str) -> Style:
    """The style of ``method``: fixed for the built-ins, derived from the name's hash otherwise."""
    if method in BUILTIN_STYLES:
        return BUILTIN_STYLES[method]
    digest = int.from_bytes(hashlib.sha256(method.encode()).digest()[:8], "big")
    return Style(_PLUGIN_COLORS[digest % len(_PLUGIN_COLORS)], _PLUGIN_MARKERS[digest // len(_PLUGIN_COLORS) % len(_PLUGIN_MARKERS)])


def method_order(methods: Iterable[str]) -> list[str]:
    """The distinct ``methods`` in legend order: built-ins in their fixed order, then others by name."""
    names = set(methods)
    builtin = [name for name in BUILTIN_STYLES if name in names]
    return builtin + sorted(names - set(BUILTIN_STYLES))


def sparsity_linestyle(sparsity: float, sparsities: Iterable[float]) -> str:
    """The line style of ``sparsity`` among ``sparsities`` (sorted numerically, cycling after four)."""
    ordered = sorted(set(sparsities))
    return SPARSITY_LINESTYLES[ordered.index(sparsity) % len(SPARSITY_LINESTYLES)]


SPARSITY_PALETTE = "viridis"
"""The sequential colour map of a figure whose colours stand for sparsities (the ablation plot): its
colours are none of the methods', so a sparsity is never read as a method, and their order (light to
dark as sparsity grows) reads as an order."""


def method_colors() -> set[str]:
    """Every colour a method can be drawn in: the built-ins' and the plugins'."""
    return {style.color for style in BUILTIN_STYLES.values()} | set(_PLUGIN_COLORS)


def sparsity_colors(sparsities: Iterable[float]) -> dict[float, str]:
    """One colour per sparsity from :data:`SPARSITY_PALETTE`, evenly spaced by rank (lowest sparsity
    lightest), never a method's colour."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    ordered = sorted(set(sparsities))
    palette = colormaps[SPARSITY_PALETTE]
    # From 0.85 (yellow-green) to 0.15 (dark purple): the palette's ends are too pale or too dark to read.
    positions = [0.85 - 0.7 * i / max(1, len(ordered) - 1) for i in range(len(ordered))] if len(ordered) > 1 else [0.5]
    colors = {s: to_hex(palette(p)) for s, p in zip(ordered, positions)}
    assert not set(colors.values()) & method_colors()  # the palette shares no colour with the methods
    return colors
