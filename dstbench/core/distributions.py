"""How a global sparsity becomes exact per-layer active counts.

Two independent choices, because the literature mixes them:

* the *profile* says which prunable layers stay dense (``none``, ``first``: RigL ImageNet, ``mest``:
  MEST/BiDST CIFAR, ``vit``: patch embedding and head of a vision transformer);
* the *distribution* spreads the budget over the remaining layers (``uniform``, ``er``, ``erk``), or
  fixes only the total and lets a method's global ranking decide the layers (``global``: SNIP, GraSP,
  SynFlow, LT, DSR; see :func:`global_counts` and :mod:`dstbench.core.global_select`).

Counts use RigL's convention ``k = n - floor(s*n)`` (Evci et al. 2020; google-research/rigl,
rigl/sparse_utils.py), which keeps at least one weight per layer
whenever ``s < 1``; ``min_active`` raises that floor. At 99.9999 % the global budget is smaller than the
number of layers, so the realised sparsity is reported beside the nominal one rather than pretending.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from dstbench.core.errors import ConfigError
from dstbench.core.hparams import Sparsity, check_value
from dstbench.core.structures import parse_structure

if TYPE_CHECKING:  # only annotations: planning must not import torch (the CLI's help imports this)
    from dstbench.core.layers import PrunableLayer

__all__ = [
    "DISTRIBUTIONS",
    "DENSE_PROFILES",
    "LayerTarget",
    "SparsityPlan",
    "validate_sparsity",
    "dense_layer_names",
    "dense_layer_reasons",
    "layer_densities",
    "active_count",
    "plan_sparsity",
    "global_counts",
    "GLOBAL_POLICIES",
    "check_distribution_policy",
    "ranking_methods",
    "Distribution",
    "DenseProfile",
]

Distribution = Literal["uniform", "er", "erk", "global"]
DenseProfile = Literal["none", "first", "mest", "vit"]
DISTRIBUTIONS: tuple[str, ...] = get_args(Distribution)
DENSE_PROFILES: tuple[str, ...] = get_args(DenseProfile)


def validate_sparsity(sparsity: float) -> float:
    """``sparsity`` as a float inside :data:`~dstbench.core.hparams.Sparsity`, the one range of a
    sparsity (config fields and CLI options check the same alias), or a one-line :class:`ConfigError`."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ConfigError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    return float(check_value("sparsity", value, Sparsity))


def _floor_product(s: float, n: int) -> int:
    """floor(s*n) robust to binary representation: 0.7*10 is 7.000000000000001, but 0.29*100 is 28.999..."""
    product = s * n
    nearest = round(product)
    if abs(product - nearest) <= 1e-9 * max(1, n):
        return int(nearest)
    return math.floor(product)


def active_count(numel: int, density: float, min_active: int = 1) -> int:
    """k = n - floor((1-d)*n), then at least ``min_active`` (and never more than n)."""
    k = numel - _floor_product(1.0 - density, numel) if density < 1.0 else numel
    return min(numel, max(k, min_active))


def dense_layer_names(layers: Sequence[PrunableLayer], profile: str) -> set[str]:
    """Names of the layers a profile keeps dense (see :func:`dense_layer_reasons`)."""
    return set(dense_layer_reasons(layers, profile))


def _vit_reason(layer: PrunableLayer, first: bool) -> str | None:
    """Why ``vit`` keeps a layer dense: the patch embedding and the classifier head(s) (timm names)."""
    path = layer.name.split(".")
    if first or "patch_embed" in path:
        return "patch embedding"
    if path[0].startswith("head"):
        return "classifier head"
    return None


def dense_layer_reasons(layers: Sequence[PrunableLayer], profile: str) -> dict[str, str]:
    """The layers a profile keeps dense, each with the reason ``inspect`` shows.

    ``first`` is RigL's ImageNet profile (the first layer). ``mest`` follows the MEST (Yuan et al. 2021)
    and BiDST CIFAR profiles: the first conv, every fully connected layer, and the 1x1 projection
    shortcuts (modules named ``shortcut``/``downsample``); those hold 0.67 % of the GraSP ResNet-32's
    weights but keep the residual path alive at extreme sparsity. ``vit`` is the sparse-ViT convention
    (the patch embedding and the classifier head dense; the attention qkv/proj and MLP linears of every
    block sparse). Position embeddings, the class token and norms are never prunable (not conv/linear
    weights), whatever the profile.
    """
    if profile not in DENSE_PROFILES:
        raise ConfigError(f"unknown dense-layer profile {profile!r}; choose from {', '.join(DENSE_PROFILES)}")
    if profile == "none" or not layers:
        return {}
    if profile == "vit":
        reasons = {layer.name: _vit_reason(layer, i == 0) for i, layer in enumerate(layers)}
        return {name: reason for name, reason in reasons.items() if reason is not None}
    dense = {layers[0].name: "first layer"}
    if profile == "mest":
        for layer in layers[1:]:
            path = layer.name.split(".")
            if layer.kind == "linear":
                dense[layer.name] = "fully connected"
            elif "shortcut" in path or "downsample" in path:
                dense[layer.name] = "projection shortcut"
    return dense


def _erdos_renyi_raw(layer: PrunableLayer, with_kernel: bool) -> float:
    """ER(K) raw density: (sum of dims) / (product of dims); ER drops the kernel dims."""
    dims = layer.shape if with_kernel else layer.shape[:2]
    return sum(dims) / math.prod(dims)


def _erk_densities(
    layers: Sequence[PrunableLayer], sparsity: float, with_kernel: bool, power: float
) -> dict[str, float]:
    """RigL's ``get_sparsities_erdos_renyi``: solve for epsilon, clamp over-dense layers, re-solve."""
    raw = {layer.name: _erdos_renyi_raw(layer, with_kernel) ** power for layer in layers}
    dense: set[str] = set()
    while True:
        rhs = 0.0
        divisor = 0.0
        for layer in layers:
            # Unrounded budgets (ERK as Evci et al. 2020 define it); RigL's code floors the zero count,
            # which moves densities by < 1e-3 relative.
            if layer.name in dense:
                rhs -= sparsity * layer.numel
            else:
                rhs += (1.0 - sparsity) * layer.numel
                divisor += raw[layer.name] * layer.numel
        if divisor == 0.0:
            break
        epsilon = rhs / divisor
        free = [layer.name for layer in layers if layer.name not in dense]
        peak = max(raw[name] for name in free) * epsilon
        if peak <= 1.0:
            break
        dense.update(name for name in free if raw[name] * epsilon == peak)
    return {layer.name: 1.0 if layer.name in dense else epsilon * raw[layer.name] for layer in layers}


def layer_densities(
    layers: Sequence[PrunableLayer],
    sparsity: float,
    distribution: str,
    dense_layers: str = "none",
    erk_power_scale: float = 1.0,
) -> dict[str, float]:
    """Unrounded target density of every prunable layer (1.0 for layers the profile keeps dense)."""
    sparsity = validate_sparsity(sparsity)
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"unknown distribution {distribution!r}; choose from {', '.join(DISTRIBUTIONS)}")
    dense = dense_layer_names(layers, dense_layers)
    sparsified = [layer for layer in layers if layer.name not in dense]
    if distribution in ("uniform", "global") or not sparsified:
        spread = {layer.name: 1.0 - sparsity for layer in sparsified}
    else:
        spread = _erk_densities(sparsified, sparsity, with_kernel=distribution == "erk", power=erk_power_scale)
    return {layer.name: spread.get(layer.name, 1.0) for layer in layers}


@dataclass(frozen=True)
class LayerTarget:
    """The engine's per-layer contract: exactly ``active`` of ``layer.numel`` weights are non-zero."""

    layer: PrunableLayer
    density: float
    active: int
    sparsified: bool

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def numel(self) -> int:
        return self.layer.numel


@dataclass(frozen=True)
class SparsityPlan:
    """Per-layer targets for one (sparsity, distribution, profile) choice."""

    sparsity: float
    distribution: str
    dense_layers: str
    targets: tuple[LayerTarget, ...]
    min_active: int = 1
    """The per-layer floor the counts were planned with; global selections guard layers with it."""
    structure: str = "unstructured"
    """The mask structure (:mod:`dstbench.core.structures`); the counts above are already rounded to it."""

    def target(self, name: str) -> LayerTarget:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    @property
    def sparsified(self) -> tuple[LayerTarget, ...]:
        return tuple(t for t in self.targets if t.sparsified)

    def realised_sparsity(self) -> dict[str, float]:
        """Sparsity actually delivered, over the sparsified layers and over all conv+FC weights."""
        return realised_sparsity(
            [(t.numel, t.active) for t in self.sparsified], [(t.numel, t.active) for t in self.targets]
        )


def realised_sparsity(
    sparsified: Sequence[tuple[int, int]], everything: Sequence[tuple[int, int]]
) -> dict[str, float]:
    """``1 - active/total`` over two groups of (numel, active) pairs."""

    def over(pairs: Sequence[tuple[int, int]]) -> float:
        total = sum(n for n, _ in pairs)
        return 1.0 - sum(k for _, k in pairs) / total if total else 0.0

    return {"sparsified": over(sparsified), "all": over(everything)}


def plan_sparsity(
    layers: Sequence[PrunableLayer],
    sparsity: float,
    distribution: str = "uniform",
    dense_layers: str = "none",
    *,
    min_active: int = 1,
    erk_power_scale: float = 1.0,
    structure: str = "unstructured",
) -> SparsityPlan:
    """Exact per-layer active counts for ``layers``. At ``sparsity == 0`` every layer is dense. Under a
    ``structure`` each sparsified layer's count is the structure's (:meth:`Structure.count`)."""
    shape = parse_structure(structure)
    if min_active < 0:
        raise ConfigError(f"min_active must be >= 0, got {min_active}")
    densities = layer_densities(layers, sparsity, distribution, dense_layers, erk_power_scale)
    dense = dense_layer_names(layers, dense_layers)
    active = {layer.name: active_count(layer.numel, densities[layer.name], min_active) for layer in layers}
    if sparsity > 0.0:
        _check_floor([layer for layer in layers if layer.name not in dense], densities, sparsity, min_active)
    if distribution == "global" and sparsity > 0.0:
        sparsified = [layer for layer in layers if layer.name not in dense]
        active.update(global_counts([layer.numel for layer in sparsified], sparsity, min_active, names=[layer.name for layer in sparsified]))
    if sparsity > 0.0 and not shape.unstructured:
        active.update({layer.name: shape.count(layer.shape, active[layer.name]) for layer in layers if layer.name not in dense})
    targets = tuple(
        LayerTarget(
            layer=layer,
            density=densities[layer.name],
            active=active[layer.name],
            sparsified=layer.name not in dense and sparsity > 0.0,
        )
        for layer in layers
    )
    return SparsityPlan(float(sparsity), distribution, dense_layers, targets, min_active, str(shape))


def _check_floor(sparsified: Sequence[PrunableLayer], densities: Mapping[str, float], sparsity: float, min_active: int) -> None:
    """A floor that keeps a layer the plan sparsifies entirely dense is an error, not a quietly dense
    network: the run would be labelled with a sparsity it does not have."""
    for layer in sparsified:
        planned = active_count(layer.numel, densities[layer.name], 0)
        if planned < layer.numel <= min_active:
            possible = min(other.numel for other in sparsified) - 1
            raise ConfigError(
                f"--min-active {min_active} would keep layer {layer.name} ({layer.numel} weights) dense while "
                f"--sparsity {sparsity:g} asks it to keep {planned}; at most --min-active {possible} keeps every "
                "sparsified layer sparse"
            )


def global_counts(numels: Sequence[int], sparsity: float, min_active: int = 1, *, names: Sequence[str]) -> dict[str, int]:
    """``global``: the total ``T = N - floor(s*N)`` over the sparsified layers, spread for bookkeeping.

    ``T`` is RigL's count convention applied once to all sparsified weights together (the
    "global budget"), raised to ``sum_l min(n_l, min_active)`` when the collapse guard needs more (the
    realised sparsity is then below the nominal one and reported, as for the other distributions).
    Only ``T`` binds a method that selects globally (``density_policy="global"``); the per-layer counts
    returned here are a placeholder it overrides: each layer's floor plus a share of the rest in
    proportion to its size, rounded by largest remainder (ties to the earlier layer) so they sum to ``T``.
    """
    total_numel = sum(numels)
    floors = [min(n, min_active) for n in numels]
    total = max(total_numel - _floor_product(sparsity, total_numel), sum(floors))
    free = [n - f for n, f in zip(numels, floors)]
    spare = total - sum(floors)
    room = sum(free)
    exact = [spare * f / room if room else 0.0 for f in free]
    shares = [math.floor(x) for x in exact]
    order = sorted(range(len(numels)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: spare - sum(shares)]:
        shares[i] += 1
    return {name: f + share for name, f, share in zip(names, floors, shares)}


GLOBAL_POLICIES = ("global", "scheduled_global")
"""Density policies that fix only the total: the methods ``--distribution global`` can serve."""

ranking_methods: Callable[[], Sequence[str]] = lambda: ()
"""The registered methods that rank globally (their density policy is in :data:`GLOBAL_POLICIES`), for
the error below. :mod:`dstbench.core.registry` sets it when it loads, since it knows the methods (it
imports this module, never the reverse); no list of names is kept here by hand."""


def check_distribution_policy(distribution: str, policy: str, method: str) -> None:
    """``global`` fixes only the total, so it needs a method whose layer counts are free.

    A method that keeps per-layer counts (RigL, SET, MEST, static: ``exact``/``at_least``/``scheduled``)
    has no global score to decide them with; it gets one clear error instead of a silent stand-in.
    """
    if distribution == "global" and policy not in GLOBAL_POLICIES:
        names = ", ".join(ranking_methods()) or "see `dstbench methods --details`"
        raise ConfigError(
            f"--distribution global fixes only the total, and {method!r} keeps per-layer counts "
            f"(density policy {policy!r}); use uniform, er or erk, or a method that ranks globally "
            f"(density policy {' or '.join(map(repr, GLOBAL_POLICIES))}: {names})"
        )
