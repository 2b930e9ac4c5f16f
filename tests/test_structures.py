"""Sparsity structures: parsing, counts, the structured top-k, and every method under every structure."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.core.distributions import plan_sparsity
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater, get_method, list_methods
from dstbench.core.structured_select import groups_view, holds_structure, structured_topk, units_view
from dstbench.core.structures import Structure, parse_structure
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.models.tiny import TinyCNN

STRUCTURES = ["nm:2:4", "block:2x2", "channel"]


@pytest.mark.parametrize(
    ("text", "parsed", "shown"),
    [
        ("unstructured", Structure("unstructured"), "unstructured"),
        ("NM:2:4", Structure("nm", 2, 4), "nm:2:4"),
        (" block:4x4 ", Structure("block", 4, 4), "block:4x4"),
        ("channel", Structure("channel"), "channel"),
        ("nm:1:8", Structure("nm", 1, 8), "nm:1:8"),
    ],
)
def test_structures_parse_and_print_canonically(text: str, parsed: Structure, shown: str) -> None:
    assert parse_structure(text) == parsed
    assert str(parse_structure(text)) == shown


@pytest.mark.parametrize("bad", ["nm:4:2", "nm:0:4", "nm:2:2", "nm:2", "block:4", "block:0x4", "block:1x1", "channels", "2:4", ""])
def test_bad_structures_are_one_line_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_structure(bad)
    assert "\n" not in str(err.value) and "structure" in str(err.value)


def test_counts_per_structure_known_values() -> None:
    conv = (8, 4, 3, 3)  # 288 weights, fan-in 36
    assert Structure("nm", 2, 4).count(conv, 29) == 144  # N:M fixes the density at N/M
    assert Structure("nm", 1, 4).count(conv, 200) == 72
    assert Structure("nm", 2, 4).count((8, 3, 3, 3), 29) == 29  # 3 input channels: stays unstructured
    assert Structure("block", 2, 2).count(conv, 29) == 28  # 7.25 blocks -> 7
    assert Structure("block", 2, 2).count(conv, 30) == 32  # 7.5 -> 8 (ties up)
    assert Structure("block", 2, 2).count(conv, 1) == 4  # at least one block
    assert Structure("block", 3, 2).count(conv, 29) == 29  # 8 rows are not a multiple of 3
    assert Structure("channel").count(conv, 29) == 36  # 0.8 channels -> 1
    assert Structure("channel").count(conv, 90) == 108  # 2.5 -> 3
    assert Structure("channel").count(conv, 288) == 288
    assert Structure("channel").count(conv, 0) == 0


def test_realisable_density_known_values() -> None:
    conv = (8, 4, 3, 3)
    assert Structure("nm", 2, 4).realisable_density(conv, 144) == 0.5
    assert Structure("block", 2, 2).realisable_density(conv, 28) == 28 / 288
    assert Structure("channel").realisable_density(conv, 36) == 1 / 8
    assert Structure("unstructured").realisable_density(conv, 29) == 1.0
    assert Structure("nm", 2, 4).realisable_density((8, 3, 3, 3), 29) == 1.0


def test_nm_groups_run_along_input_channels_at_each_kernel_position() -> None:
    weight = torch.arange(2 * 4 * 1 * 2).reshape(2, 4, 1, 2)  # out, in, kh, kw
    groups = groups_view(weight, 4)
    assert groups[0].tolist() == weight[0, :, 0, 0].tolist()
    assert groups[1].tolist() == weight[0, :, 0, 1].tolist()


@settings(max_examples=40, deadline=None)
@given(
    shape=st.sampled_from([(4, 8), (8, 4, 3, 3), (6, 12), (4, 8, 1, 1)]),
    structure=st.sampled_from(STRUCTURES + ["nm:1:4", "block:2x4"]),
    density=st.floats(0.01, 1.0),
    seed=st.integers(0, 1000),
)
def test_structured_topk_holds_the_structure_with_the_exact_count(shape: tuple[int, ...], structure: str, density: float, seed: int) -> None:
    rule = parse_structure(structure)
    scores = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    k = max(1, round(density * math.prod(shape)))
    mask = structured_topk(scores, rule, k)
    assert holds_structure(mask, rule)
    assert int(mask.sum()) == rule.count(shape, k)
    if k == math.prod(shape):
        assert bool(mask.all())
    elif rule.kind == "nm":  # the N best of every group
        groups, chosen = groups_view(scores, rule.b), groups_view(mask, rule.b)
        best = groups.topk(rule.a, dim=1).indices
        assert torch.equal(chosen, torch.zeros_like(chosen).scatter_(1, best, True))
    elif rule.applies(shape):  # whole units, the best by summed score
        sums, kept = units_view(scores, rule).sum(dim=1), units_view(mask, rule).all(dim=1)
        if bool(kept.any()) and not bool(kept.all()):
            assert float(sums[kept].min()) >= float(sums[~kept].max())


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 10, (6,), generator=g)


def _fast_hp(method: str) -> dict[str, Any]:
    units = {"steps": 2, "epochs": 1}
    return {name: units[unit] for name, unit in get_method(method).cadence_fields.items()}


SELF_CONTAINED = [m for m in list_methods() if not get_method(m).inputs]


@pytest.mark.parametrize("structure", ["unstructured", *STRUCTURES])
@pytest.mark.parametrize("method", SELF_CONTAINED)
def test_every_method_keeps_every_structure_with_exact_counts(method: str, structure: str) -> None:
    """tiny_cnn (width 4): nm:2:4 skips the 3-channel stem; block:2x2 skips it too (27 columns). LT needs a
    ticket run of the same shapes (tests/test_methods_lt.py); the engine projects its masks like any other."""
    torch.manual_seed(0)
    updater = create_updater(method, _fast_hp(method))
    model = TinyCNN(width=4)
    plan = plan_sparsity(describe_layers(model), 0.8 if updater.needs.sparse else 0.0, "uniform", "none", structure=structure)
    rule = parse_structure(structure)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    engine = SparseEngine(model, plan, updater, opt, steps_per_epoch=3, total_epochs=2)
    engine.loss_fn = torch.nn.functional.cross_entropy
    engine.initialize(_batch(-1) if updater.needs.init_batch else None)
    for step in range(6):
        x, y = _batch(step)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        engine.step(step, (x, y))
        opt.zero_grad(set_to_none=True)
        assert engine.violations() == [], f"{method} {structure} after step {step}"
        for layer in engine.sparse_layers:
            assert holds_structure(layer.mask, rule), f"{method} {structure} {layer.name} step {step}"
            if updater.needs.density_policy == "exact":
                assert int(layer.mask.sum()) == layer.k == rule.count(tuple(layer.weight.shape), layer.k)
    assert engine.violations(final=True) == []
    if updater.needs.sparse and rule.kind == "nm":
        assert [layer.k / layer.numel for layer in engine.sparse_layers[1:]] == [0.5] * 4


class _TwoConvs(torch.nn.Module):
    """1x1 convs 4 -> 8 -> 4 on a 2x2 image: 2 * 32 outputs * 4 = 256 and 2 * 16 * 8 = 256 FLOPs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(4, 8, 1, bias=False)
        self.b = torch.nn.Conv2d(8, 4, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


@pytest.mark.parametrize(
    ("structure", "sparse", "realisable"),
    [
        # s = 0.7: each layer (32 weights) plans k = 32 - floor(22.4) = 10.
        ("unstructured", 160.0, 512.0),  # dense kernels skip nothing
        ("nm:2:4", 256.0, 256.0),  # 16 of 32 per layer; a 2:4 kernel does half of each matmul
        ("block:2x2", 192.0, 192.0),  # 10 / 4 = 2.5 -> 3 blocks = 12 weights per layer: 12/32 * 256 each
        ("channel", 160.0, 160.0),  # a: 10 / 4 = 2.5 -> 3 rows = 12 (96); b: 10 / 8 = 1.25 -> 1 row = 8 (64)
    ],
)
def test_realisable_flops_exact_numbers(structure: str, sparse: float, realisable: float) -> None:
    from dstbench.engine.cost import count_forward_flops, forward_report, plan_active, realisable_densities

    model = _TwoConvs()
    plan = plan_sparsity(describe_layers(model), 0.7, "uniform", "none", structure=structure)
    forward = count_forward_flops(model, 2, in_chans=4)
    active = plan_active(plan)
    report = forward_report(forward, active, realisable_densities(plan, active))
    assert report["dense_forward_flops"] == 512.0
    assert report["sparse_forward_flops"] == sparse
    assert report["realisable_forward_flops"] == realisable


def test_train_records_the_structure_and_inspect_and_report_show_it(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from dstbench.cli.app import main

    tiny = ["--preset", "quick", "--epochs", "1", "--max-train-samples", "64", "--max-test-samples", "32", "--quiet"]
    run = tmp_path / "run"
    assert main(["train", *tiny, "--method", "set", "--structure", "Channel", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["sparsity"]["structure"] == "channel"
    assert json.loads((run / "plan.json").read_text())["structure"] == "channel"
    flops = json.loads((run / "summary.json").read_text())["flops"]
    assert flops["realisable_inference_flops"] == pytest.approx(flops["inference_flops"])  # whole channels
    capsys.readouterr()
    assert main(["inspect", str(run)]) == 0
    assert "structure channel" in capsys.readouterr().out
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert "set [channel]" in (tmp_path / "report" / "report.md").read_text()
    assert main(["train", *tiny, "--structure", "nm:4:2", "--out", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.strip() == "dstbench: error: structure 'nm:4:2': N:M needs 0 < N < M, got N=4, M=2"
