"""Sparsity distributions against the spec's test vectors (§7.2 ERK, §10 extreme counts)."""

from __future__ import annotations

import math

import pytest
import timm
from hypothesis import given, settings
from hypothesis import strategies as st

import dstbench.models  # noqa: F401
from dstbench.core.distributions import active_count, dense_layer_names, layer_densities, plan_sparsity
from dstbench.core.errors import ConfigError
from dstbench.core.layers import PrunableLayer, describe_layers

GRASP = describe_layers(timm.create_model("cifar_resnet32_grasp", num_classes=10))
HE = describe_layers(timm.create_model("cifar_resnet32", num_classes=10))


def _block_convs(layers: list[PrunableLayer]) -> list[PrunableLayer]:
    return [layer for layer in layers if layer.kind == "conv" and layer.shape[2:] == (3, 3) and layer.shape[1] != 3]


def test_grasp_resnet32_shape_facts() -> None:
    assert sum(layer.numel for layer in GRASP) == 1_855_584
    assert len(_block_convs(GRASP)) == 30
    assert sum(layer.numel for layer in _block_convs(GRASP)) == 1_843_200


@pytest.mark.parametrize(
    "density, expected",
    [
        (0.10, {"stem": 1.0, "l1": 0.2895, "l2c1": 0.2109, "l2sc": 1.0, "l3": 0.0677, "l3sc": 0.9027, "fc": 1.0}),
        (0.05, {"stem": 0.8867, "l1": 0.1419, "l2c1": 0.1034, "l2sc": 0.8941, "l3": 0.0332, "l3sc": 0.4425, "fc": 1.0}),
        (0.02, {"stem": 0.3498, "l1": 0.0560, "l2c1": 0.0408, "l2sc": 0.3527, "l3": 0.0131, "l3sc": 0.1746, "fc": 0.7947}),
    ],
)
def test_erk_matches_spec_table(density: float, expected: dict[str, float]) -> None:
    d = layer_densities(GRASP, 1 - density, "erk", "none")
    names = [layer.name for layer in GRASP]
    shortcuts = [n for n in names if "shortcut" in n]
    got = {
        "stem": d[names[0]],
        "l1": d["layer1.0.conv1"],
        "l2c1": d["layer2.0.conv1"],
        "l2sc": d[shortcuts[0]],
        "l3": d["layer3.1.conv1"],
        "l3sc": d[shortcuts[1]],
        "fc": d[names[-1]],
    }
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-4), key
    # The budget is honoured: total active = (1-s) * N up to per-layer rounding.
    plan = plan_sparsity(GRASP, 1 - density, "erk", "none")
    total = sum(t.active for t in plan.targets)
    assert abs(total - density * 1_855_584) <= len(GRASP)


@pytest.mark.parametrize(
    "layers, sparsity, expected_total, expected_min",
    [
        (HE, 0.999, 477, 3),
        (HE, 0.9999, 58, 1),
        (HE, 0.99999, 30, 1),
        (HE, 0.999999, 30, 1),
        (GRASP, 0.9999, 191, 1),
        (GRASP, 0.99999, 39, 1),
        (GRASP, 0.999999, 30, 1),
    ],
)
def test_extreme_sparsity_block_conv_counts(
    layers: list[PrunableLayer], sparsity: float, expected_total: int, expected_min: int
) -> None:
    plan = plan_sparsity(layers, sparsity, "uniform", "mest")
    block = {layer.name for layer in _block_convs(layers)}
    counts = [t.active for t in plan.targets if t.name in block]
    assert sum(counts) == expected_total
    assert min(counts) == expected_min
    # Every block conv is sparsified under the MEST profile; stem, shortcuts, FC are dense.
    assert {t.name for t in plan.sparsified} == block


def test_mest_profile_realised_sparsity_matches_spec() -> None:
    plan = plan_sparsity(GRASP, 0.9, "uniform", "mest")
    realised = plan.realised_sparsity()
    assert realised["sparsified"] == pytest.approx(0.9, abs=1e-5)  # ceil of k per layer
    assert realised["all"] == pytest.approx(0.9 * 1_843_200 / 1_855_584, abs=1e-5)  # 89.4 %


def test_profiles() -> None:
    names = [layer.name for layer in GRASP]
    assert dense_layer_names(GRASP, "none") == set()
    assert dense_layer_names(GRASP, "first") == {names[0]}
    mest = dense_layer_names(GRASP, "mest")
    assert mest == {names[0], names[-1], *[n for n in names if "shortcut" in n]}
    assert len(mest) == 4


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), "x"])
def test_bad_sparsity_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="sparsity"):
        plan_sparsity(GRASP, bad, "uniform")  # type: ignore[arg-type]


def test_unknown_distribution_and_profile() -> None:
    with pytest.raises(ConfigError, match="uniform, er, erk"):
        plan_sparsity(GRASP, 0.9, "gaussian")
    with pytest.raises(ConfigError, match="none, first, mest"):
        plan_sparsity(GRASP, 0.9, "uniform", "all")


def test_count_convention() -> None:
    assert active_count(100, 0.1) == 10
    assert active_count(10, 0.3) == 3  # 0.7*10 is 7.000000000000001 in floating point
    assert active_count(100, 0.71) == 71  # 0.29*100 is 28.999999999999996
    assert active_count(1000, 0.0) == 1  # min_active keeps a weight
    assert active_count(1000, 0.0, min_active=0) == 0
    assert active_count(5, 1e-9, min_active=7) == 5


@settings(max_examples=80, deadline=None)
@given(
    shapes=st.lists(
        st.tuples(st.integers(1, 64), st.integers(1, 64), st.sampled_from([1, 3])), min_size=1, max_size=6
    ),
    sparsity=st.one_of(st.floats(0.0, 0.999999), st.sampled_from([0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999])),
    distribution=st.sampled_from(["uniform", "er", "erk"]),
    profile=st.sampled_from(["none", "first", "mest"]),
)
def test_plan_invariants(
    shapes: list[tuple[int, int, int]], sparsity: float, distribution: str, profile: str
) -> None:
    layers = [PrunableLayer(f"conv{i}", (o, c, k, k), "conv") for i, (o, c, k) in enumerate(shapes)]
    plan = plan_sparsity(layers, sparsity, distribution, profile)
    for t in plan.targets:
        assert 1 <= t.active <= t.numel
        assert 0.0 <= t.density <= 1.0 + 1e-12
        if not t.sparsified:
            assert t.active == t.numel
        elif distribution == "uniform":
            assert t.active == t.numel - math.floor(sparsity * t.numel + 1e-9 * t.numel) or t.active == 1
    realised = plan.realised_sparsity()
    assert 0.0 <= realised["all"] <= realised["sparsified"] + 1e-12 or not plan.sparsified
