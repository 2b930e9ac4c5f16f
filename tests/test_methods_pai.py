"""The ``global`` distribution, the shared global top-k with its collapse guard, and pruning at
initialisation (SNIP, GraSP, SynFlow): known answers computed by independent formulas in the test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import dstbench.models  # noqa: F401  (registers tiny_cnn)
from dstbench.grid.sweep import sweep_point
from dstbench.cli.app import main
from dstbench.config import TrainConfig, resolve_config
from dstbench.core.distributions import plan_sparsity
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.core.errors import ConfigError
from dstbench.core.global_select import global_topk
from dstbench.runs.inspect import inspect_run, render_inspection
from dstbench.core.layers import describe_layers
from dstbench.methods.pruning_at_init import grasp_samples, synflow_keep
from dstbench.core.registry import create_updater, list_methods
from dstbench.train.loop import train
from tests.kill import train_until_interrupted


# -- independent reference selections ---------------------------------------------------------------
def reference_global(scores: dict[str, list[float]], total: int, min_active: int) -> dict[str, list[int]]:
    """Plain global top-k by (score desc, layer order, index), then every layer below ``min_active`` gets
    its best entries back and the globally weakest surplus entries of the other layers are dropped."""
    entries = [(-s, li, i) for li, (name, values) in enumerate(scores.items()) for i, s in enumerate(values)]
    entries.sort()
    chosen = set(entries[:total])
    names = list(scores)
    for li, name in enumerate(names):
        own = sorted(e for e in entries if e[1] == li)
        need = min(min_active, len(own))
        have = [e for e in own if e in chosen]
        for entry in own[:need]:
            if len(have) >= need:
                break
            if entry not in chosen:
                chosen.add(entry)
                have.append(entry)
    while len(chosen) > total:
        counts = {li: sum(1 for e in chosen if e[1] == li) for li in range(len(names))}
        droppable = [e for e in chosen if counts[e[1]] > min(min_active, len(scores[names[e[1]]]))]
        chosen.discard(max(droppable))  # the weakest: lowest score, then the latest position
    return {name: sorted(i for (_, li, i) in chosen if li == layer) for layer, name in enumerate(names)}


def positions(masks: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {name: torch.nonzero(mask.reshape(-1)).flatten().tolist() for name, mask in masks.items()}


def plain_topk(scores: torch.Tensor, k: int) -> set[int]:
    """Top-k flat positions by score, ties to the lower position (Python's sort, not torch.topk)."""
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores.reshape(-1)[i]), i))
    return set(order[:k])


# -- global top-k and the guard ---------------------------------------------------------------------
def test_global_topk_known_answer_with_one_layer_clamped() -> None:
    scores = {"a": torch.tensor([5.0, 4.0, 3.0, 2.0]), "b": torch.tensor([0.1, 0.2]), "c": torch.tensor([9.0, 1.0])}
    chosen = global_topk(scores, 3, min_active=1)
    # Plain top-3 is 9 (c), 5, 4 (a): b would be empty; its best entry (0.2) replaces the weakest (4).
    assert positions(chosen.masks) == {"a": [0], "b": [1], "c": [0]}
    assert chosen.unguarded == {"a": 2, "b": 0, "c": 1}
    assert chosen.clamped == ("b",)
    report = chosen.report()
    assert report["clamped_layers"] == {"b": {"global_topk": 0, "active": 1}}
    assert report["layer_active"] == {"a": 1, "b": 1, "c": 1} and report["collapsed_layers"] == []
    off = global_topk(scores, 3, min_active=0)
    assert positions(off.masks) == {"a": [0, 1], "b": [], "c": [0]}
    assert off.clamped == () and off.collapsed == ("b",)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    data=st.data(),
    min_active=st.integers(0, 2),
)
def test_global_topk_matches_the_reference_and_keeps_the_total(sizes: list[int], data: st.DataObject, min_active: int) -> None:
    values = {f"l{i}": data.draw(st.lists(st.integers(-3, 3).map(float), min_size=n, max_size=n)) for i, n in enumerate(sizes)}
    floor = sum(min(min_active, n) for n in sizes)
    total = data.draw(st.integers(floor, sum(sizes)))
    chosen = global_topk({k: torch.tensor(v) for k, v in values.items()}, total, min_active=min_active)
    assert positions(chosen.masks) == reference_global(values, total, min_active)
    assert sum(chosen.active.values()) == total
    assert all(chosen.active[f"l{i}"] >= min(min_active, n) for i, n in enumerate(sizes))
    expected_clamped = {name for name, count in chosen.unguarded.items() if count < min(min_active, len(values[name]))}
    assert set(chosen.clamped) == expected_clamped


def test_global_topk_eligible_keeps_pruned_entries_pruned_and_guard_errors_in_one_line() -> None:
    scores = {"a": torch.tensor([9.0, 8.0, 1.0]), "b": torch.tensor([7.0, 0.5])}
    eligible = {"a": torch.tensor([False, True, True]), "b": torch.tensor([True, True])}
    assert positions(global_topk(scores, 2, eligible=eligible).masks) == {"a": [1], "b": [0]}
    with pytest.raises(ConfigError, match="collapse guard keeps 1 weight"):
        global_topk(scores, 1, min_active=1)


# -- the global distribution ------------------------------------------------------------------------
def test_global_plan_total_is_exact_and_raised_to_the_guard() -> None:
    layers = describe_layers(timm.create_model("tiny_cnn"))
    numels = [layer.numel for layer in layers]
    n = sum(numels)
    assert n == 60976
    for sparsity, expected in ((0.9, n - math.floor(0.9 * n)), (0.9999, 7), (0.999999, 5)):
        plan = plan_sparsity(layers, sparsity, "global")
        counts = [t.active for t in plan.targets]
        assert sum(counts) == expected  # 0.999999: 1 weight by budget, 5 by the guard (one per layer)
        assert all(c >= 1 for c in counts)
    plan = plan_sparsity(layers, 0.999999, "global", min_active=0)
    assert sum(t.active for t in plan.targets) == n - math.floor(0.999999 * n) == 1


def test_rigl_with_the_global_distribution_is_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["train", "--preset", "quick", "--method", "rigl", "--distribution", "global", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("dstbench: error: --distribution global fixes only the total, and 'rigl' keeps per-layer counts")


# -- engines on crafted nets ------------------------------------------------------------------------
def linear_net(*shapes: tuple[int, int], seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(i, o, bias=False) for o, i in shapes])


def engine_for(method: str, model: nn.Module, sparsity: float, batch: tuple[torch.Tensor, torch.Tensor] | None,
               distribution: str = "global", min_active: int = 1, **hp: object) -> SparseEngine:
    plan = plan_sparsity(describe_layers(model), sparsity, distribution, min_active=min_active)
    engine = SparseEngine(model, plan, create_updater(method, dict(hp)), None)
    engine.loss_fn = nn.functional.cross_entropy
    engine.initialize(batch)
    return engine


def engine_masks(engine: SparseEngine) -> dict[str, torch.Tensor]:
    return {layer.name: layer.mask.clone() for layer in engine.sparse_layers}


def expected_global(scores: dict[str, torch.Tensor], total: int) -> dict[str, list[int]]:
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    keep = plain_topk(flat, total)
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = sorted(i - start for i in keep if start <= i < start + s.numel())
        start += s.numel()
    return out


def test_snip_known_answer_on_a_two_layer_linear_net() -> None:
    model = linear_net((4, 3), (3, 4))
    w1, w2 = (model[0].weight.detach().clone(), model[1].weight.detach().clone())
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 3, generator=g), torch.tensor([0, 1, 2, 0, 1])
    # Hand-derived gradient of mean cross-entropy of W2 W1 x.
    h = x @ w1.T
    delta = (torch.softmax(h @ w2.T, 1) - nn.functional.one_hot(y, 3).float()) / 5
    grad2 = delta.T @ h
    grad1 = (delta @ w2).T @ x
    scores = {"0": (w1 * grad1).abs(), "1": (w2 * grad2).abs()}
    engine = engine_for("snip", model, 0.75, (x, y))
    assert positions(engine_masks(engine)) == expected_global(scores, 24 - math.floor(0.75 * 24))
    assert engine.updater.report()["scope"] == "global"


def test_grasp_known_answer_hessian_gradient_product() -> None:
    model = linear_net((4, 3), (3, 4), seed=2)
    params = [model[0].weight.detach().clone(), model[1].weight.detach().clone()]
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(12, 3, generator=g), torch.tensor([2, 0, 1, 0, 2, 1, 0, 0, 1, 2, 2, 1])
    spc, temp = 3, 200.0
    # GraSP_fetch_data: the first 3 of each class, class 0 first.
    idx = [i for c in range(3) for i in [j for j in range(12) if int(y[j]) == c][:spc]]
    assert grasp_samples(y, spc).tolist() == idx
    xs, ys = x[idx], y[idx]

    def loss(flat: torch.Tensor, part: slice) -> torch.Tensor:
        a, b = flat[:12].view(4, 3), flat[12:].view(3, 4)
        return nn.functional.cross_entropy((xs[part] @ a.T @ b.T) / temp, ys[part])

    theta = torch.cat([p.reshape(-1) for p in params])
    halves = [slice(0, 4), slice(4, 9)]
    grad = sum(torch.autograd.functional.jacobian(lambda t, h=h: loss(t, h), theta) for h in halves)
    hg = sum(torch.autograd.functional.hessian(lambda t, h=h: loss(t, h), theta) @ grad for h in halves)
    keep_score = theta * hg  # GraSP removes the largest -theta*Hg, i.e. keeps the largest theta*Hg
    scores = {"0": keep_score[:12].view(4, 3), "1": keep_score[12:].view(3, 4)}
    engine = engine_for("grasp", model, 0.5, (x, y), samples_per_class=spc, reinit_fc=False)
    assert positions(engine_masks(engine)) == expected_global(scores, 12)
    assert engine.updater.report()["samples"] == 9


def synflow_scores(weights: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Saliency of each |W_l| entry in R = 1^T |W_L|...|W_1| 1, by hand: S_l = (u_l v_l^T) * |W_l| with
    u_l the column sums of the layers above and v_l the row sums of the layers below."""
    w = [wi.abs().double() * m for wi, m in zip(weights, masks)]
    out = []
    for l in range(len(w)):
        above = torch.ones(1, w[-1].shape[0], dtype=torch.float64)
        for wj in reversed(w[l + 1 :]):
            above = above @ wj
        below = torch.ones(w[0].shape[1], 1, dtype=torch.float64)
        for wj in w[:l]:
            below = wj @ below
        out.append(above.T @ below.T * w[l])
    return out


@pytest.mark.parametrize("rounds", [1, 3])
def test_synflow_known_answer_on_a_three_layer_linear_net(rounds: int) -> None:
    model = linear_net((4, 3), (5, 4), (2, 5), seed=4)
    weights = [m.weight.detach().clone() for m in model]
    numels = [w.numel() for w in weights]
    total_n, keep = sum(numels), 10
    masks = [torch.ones_like(w, dtype=torch.bool) for w in weights]
    for r in range(1, rounds + 1):
        scores = synflow_scores(weights, masks)
        k = keep if r == rounds else total_n - math.floor((1 - (keep / total_n) ** (r / rounds)) * total_n)
        eligible = torch.cat([m.reshape(-1) for m in masks])
        flat = torch.cat([s.reshape(-1) for s in scores]).masked_fill(~eligible, -1.0)
        chosen = plain_topk(flat, k)
        flags = torch.tensor([i in chosen for i in range(total_n)])
        masks = [part.view(w.shape) for part, w in zip(flags.split(numels), weights)]
    x = torch.zeros(2, 3)
    engine = engine_for("synflow", model, 1 - keep / total_n, (x, torch.zeros(2, dtype=torch.long)), rounds=rounds)
    assert sum(t.active for t in engine.plan.targets) == keep
    assert positions(engine_masks(engine)) == {str(i): torch.nonzero(m.reshape(-1)).flatten().tolist() for i, m in enumerate(masks)}


def test_synflow_schedule_is_exponential_in_density() -> None:
    assert synflow_keep(1000, 0.01, 50, 100) == 1000 - math.floor((1 - 0.1) * 1000) == 100
    counts = [synflow_keep(1000, 0.01, r, 100) for r in range(1, 100)]
    assert counts == sorted(counts, reverse=True) and counts[0] == 1000 - math.floor((1 - 0.01**0.01) * 1000)


def _synflow_round_budgets(monkeypatch: pytest.MonkeyPatch, distribution: str) -> list[tuple[dict[str, int], int]]:
    """(per-layer counts, total) SynFlow asks the selection for in each of its 100 rounds on tiny_cnn
    (60,976 sparsified weights) at s = 0.9."""
    from dstbench.methods.pruning_at_init import SynFlow

    asked: list[tuple[dict[str, int], int]] = []
    select = SynFlow.select

    def recorded(self: SynFlow, scores: dict[str, torch.Tensor], layers: list, **kw: object) -> dict[str, torch.Tensor]:
        asked.append((dict(kw["counts"]), int(kw["total"])))  # type: ignore[call-overload]
        return select(self, scores, layers, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(SynFlow, "select", recorded)
    batch = (torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))
    engine_for("synflow", timm.create_model("tiny_cnn"), 0.9, batch, distribution=distribution)
    return asked


def test_synflow_round_budgets_use_the_nominal_density_as_prune_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """ganguli-lab/Synaptic-Flow ``prune.py: prune_loop`` (exponential) with ``_global_mask``: round r of
    R prunes ``int((1 - d**(r/R)) * N)`` with d the nominal density 0.1, not the plan's K/N = 6098/60976
    (which gives a different count in 46 of the 99 intermediate rounds)."""
    asked = _synflow_round_budgets(monkeypatch, "global")
    n, k = 60976, 6098
    reference = [n - int((1.0 - 0.1 ** (r / 100)) * n) for r in range(1, 101)]
    assert [total for _, total in asked] == reference and reference[-1] == k
    realised = [n - int((1.0 - (k / n) ** (r / 100)) * n) for r in range(1, 100)]
    assert sum(a != b for a, b in zip(reference, realised)) == 46  # what the plan's density got wrong


def test_synflow_layer_scope_round_budgets_are_local_masks_at_the_nominal_density(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--scope local`` (``_local_mask``): each layer prunes ``int((1 - d**(r/R)) * n_l)``."""
    asked = _synflow_round_budgets(monkeypatch, "uniform")
    numels = {"features.0.0": 432, "features.1.0": 4608, "features.2.0": 18432, "features.3.0": 36864, "fc": 640}
    for r, (counts, _) in enumerate(asked, start=1):
        assert counts == {name: n - int((1.0 - 0.1 ** (r / 100)) * n) for name, n in numels.items()}


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow"])
def test_layer_scope_keeps_the_plans_per_layer_counts(method: str) -> None:
    model = timm.create_model("tiny_cnn")
    batch = (torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(20) % 10)
    engine = engine_for(method, model, 0.9, batch, distribution="erk", **({"rounds": 5} if method == "synflow" else {}))
    assert {layer.name: int(layer.mask.sum()) for layer in engine.sparse_layers} == {l.name: l.k for l in engine.sparse_layers}
    assert engine.updater.report()["scope"] == "layer"
    assert engine.violations() == []


# -- layer collapse at 99.99 % on tiny_cnn -----------------------------------------------------------
def snip_reference_scores(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    model.eval()
    names = [layer.name for layer in describe_layers(model)]
    modules = dict(model.named_modules())
    weights = [modules[n].weight for n in names]
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(batch[0]), batch[1]), weights)
    model.train()
    return {n: (w.detach() * g).abs() for n, w, g in zip(names, weights, grads)}


@pytest.mark.parametrize("min_active", [1, 0])
def test_snip_collapse_at_extreme_sparsity_is_clamped_and_reported(min_active: int) -> None:
    torch.manual_seed(0)
    model = timm.create_model("tiny_cnn")
    batch = (torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 10)
    scores = snip_reference_scores(model, batch)
    plan_total = sum(t.active for t in plan_sparsity(describe_layers(model), 0.9999, "global", min_active=min_active).targets)
    assert plan_total == 7  # 60976 - floor(0.9999 * 60976)
    plain = {name: len(kept) for name, kept in expected_global(scores, plan_total).items()}
    empty = sorted(name for name, count in plain.items() if count == 0)
    assert empty, "at 99.99 % a plain global SNIP threshold empties some tiny_cnn layer"
    engine = engine_for("snip", model, 0.9999, batch, min_active=min_active)
    counts = {layer.name: int(layer.mask.sum()) for layer in engine.sparse_layers}
    report = engine.updater.report()
    assert sum(counts.values()) == plan_total and report["total_active"] == plan_total
    assert report["layer_active"] == counts
    if min_active:
        assert sorted(report["clamped_layers"]) == empty and report["collapsed_layers"] == []
        assert all(counts[name] == 1 for name in empty)
    else:
        assert report["clamped_layers"] == {} and sorted(report["collapsed_layers"]) == empty
        assert counts == plain


# -- one-epoch runs ------------------------------------------------------------------------------------
def test_methods_are_registered() -> None:
    assert {"snip", "grasp", "synflow"} <= set(list_methods())


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow"])
def test_one_epoch_quick_run_global(tmp_path: Path, method: str) -> None:
    overrides = {"method": method, "epochs": 1, "distribution": "global", "out": str(tmp_path / method),
                 "synthetic_train_samples": 256, "synthetic_test_samples": 64}
    summary = train(resolve_config("quick", overrides=overrides), progress=False)
    assert summary["topology_updates"] == 0
    assert summary["needs"]["init_batch"] and summary["needs"]["density_policy"] == "global"
    report = summary["method_report"]
    assert report["scope"] == "global" and report["total_active"] == 60976 - math.floor(0.9 * 60976)
    assert 1 - report["total_active"] / 60976 == pytest.approx(summary["realised_sparsity"]["sparsified"])
    assert summary["flops"]["train_flops_per_sample"] == pytest.approx(3 * summary["flops"]["inference_flops"])


def test_inspect_marks_clamped_layers(tmp_path: Path) -> None:
    overrides = {"method": "snip", "epochs": 1, "distribution": "global", "sparsity": 0.9999, "out": str(tmp_path / "x"),
                 "synthetic_train_samples": 128, "synthetic_test_samples": 64}
    summary = train(resolve_config("quick", overrides=overrides), progress=False)
    clamped = set(summary["method_report"]["clamped_layers"])
    assert clamped
    report = inspect_run(tmp_path / "x")
    assert {layer["name"] for layer in report["layers"] if layer["clamped"]} == clamped
    assert report["distribution"] == "global" and report["min_active"] == 1
    text = render_inspection(report)
    assert text.count("(clamped to min_active 1)") == len(clamped) and "per-layer targets are placeholders" in text
    assert json.loads(json.dumps(report)) == report
    point = sweep_point({**summary, "run_dir": str(tmp_path / "x")})
    assert point["clamped_layers"] == len(clamped) and point["collapsed_layers"] == 0


@pytest.mark.parametrize("method", ["grasp", "synflow"])
def test_resume_after_an_interruption_is_bit_identical(tmp_path: Path, method: str) -> None:
    def config(name: str) -> TrainConfig:
        overrides = {"method": method, "epochs": 2, "distribution": "global", "sparsity": 0.99, "out": str(tmp_path / name),
                     "synthetic_train_samples": 128, "synthetic_test_samples": 32, "batch_size": 32}
        return resolve_config("quick", overrides=overrides, hp={"rounds": 10} if method == "synflow" else None)

    reference = train(config("reference"), progress=False)
    train_until_interrupted(config("killed"), in_epoch=2)  # the checkpoint holds epoch 1 only
    resumed = train(config("killed"), resume=True, progress=False)
    assert resumed["method_report"] == reference["method_report"]
    assert resumed["test_acc"] == reference["test_acc"] and resumed["train_loss"] == reference["train_loss"]
    ref_state = torch.load(tmp_path / "reference" / "checkpoint.pt", weights_only=False)["model"]
    new_state = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(ref_state[key], new_state[key]) for key in ref_state)


def test_synflow_reports_layers_the_guard_held_up_in_any_round() -> None:
    # Each layer of a linear chain carries the same total flow R, so the widest layer (2500 weights) has
    # the smallest per-weight saliencies. Round 1 of 2 keeps floor-convention sqrt(3/2700) * 2700 = 90
    # weights: all 50 of the last layer and 40 of the first, none of the middle one, which the guard
    # holds at 1. That weight then carries all the flow (saliency R), so it passes round 2's threshold on
    # its own: only the round-1 clamp says the guard was needed.
    model = linear_net((50, 3), (50, 50), (1, 50), seed=5)
    batch = (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    assert synflow_keep(2700, 3 / 2700, 1, 2) == 90
    engine = engine_for("synflow", model, 1 - 3 / 2700, batch, rounds=2)
    report = engine.updater.report()
    counts = {layer.name: int(layer.mask.sum()) for layer in engine.sparse_layers}
    assert sum(counts.values()) == 3 and counts["1"] == 1 and report["layer_active"] == counts
    assert report["clamped_layers"] == {"1": {"global_topk": 0, "first_round": 1, "active": 1}}
    off = engine_for("synflow", linear_net((50, 3), (50, 50), (1, 50), seed=5), 1 - 3 / 2700, batch, min_active=0, rounds=2)
    # Unguarded, round 1 empties the middle layer, the flow R drops to 0, every round-2 score is 0 and
    # the tie-break keeps the three lowest positions (layer "0"): the last layer collapses too.
    assert off.updater.report()["clamped_layers"] == {} and off.updater.report()["collapsed_layers"] == ["1", "2"]
    assert off.updater.report()["layer_active"] == {"0": 3, "1": 0, "2": 0}
