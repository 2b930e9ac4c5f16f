"""SR-STE (Zhou et al., ICLR 2021): one step on a tiny layer computed by hand, and its default structure."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dstbench.config import resolve_config
from dstbench.core.distributions import plan_sparsity
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater
from dstbench.engine.sparse_engine import SparseEngine

W0 = np.array(
    [[0.5, -0.1, 0.3, 0.05, -0.2, 0.4, 0.01, -0.6], [0.02, 0.7, -0.3, 0.25, 0.15, -0.15, 0.9, 0.1]], dtype=np.float64
)
X = np.array([1.0, -2.0, 3.0, 0.5, 0.0, -1.0, 0.25, 2.0])
LR, DECAY = 0.1, 0.5


def nm_mask(weights: np.ndarray) -> np.ndarray:
    """The 2 largest |w| of every 4 consecutive inputs, by hand (no ties in these numbers)."""
    mask = np.zeros_like(weights, dtype=bool)
    for row in range(weights.shape[0]):
        for start in range(0, weights.shape[1], 4):
            group = np.abs(weights[row, start : start + 4])
            for index in np.argsort(-group)[:2]:
                mask[row, start + index] = True
    return mask


def test_one_step_known_answer() -> None:
    m0 = nm_mask(W0)
    # loss = sum(x @ (M0*W)^T): dL/dW~ = x in every row; SR-STE adds DECAY * (1 - M0) * W0; plain SGD.
    w1 = W0 - LR * (np.tile(X, (2, 1)) + DECAY * (~m0) * W0)
    m1 = nm_mask(w1)
    assert (m1 != m0).any()  # the step moves the mask, so the test sees the update
    model = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(W0, dtype=torch.float32))
    plan = plan_sparsity(describe_layers(model), 0.5, "uniform", "none", structure="nm:2:4")
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    engine = SparseEngine(model, plan, create_updater("sr-ste", {"decay": DECAY}), opt, steps_per_epoch=4, total_epochs=1)
    engine.initialize()
    (layer,) = engine.sparse_layers
    assert layer.mask.numpy().tolist() == m0.tolist()
    assert np.allclose(layer.weight.detach().numpy(), W0 * m0)
    model(torch.tensor(X, dtype=torch.float32).unsqueeze(0)).sum().backward()
    engine.step(0)
    dense = (layer.weight.detach() + model.weight_reserve).numpy()
    assert np.allclose(dense, w1, atol=1e-6)
    assert layer.mask.numpy().tolist() == m1.tolist()
    assert np.allclose(layer.weight.detach().numpy(), w1 * m1, atol=1e-6)
    assert engine.violations() == []


def test_default_structure_is_two_of_four_and_an_explicit_one_wins(tmp_path: object) -> None:
    assert resolve_config("quick", overrides={"method": "sr-ste", "out": "x"}).structure == "nm:2:4"
    assert resolve_config("quick", overrides={"method": "sr-ste", "out": "x", "structure": "Block:4x4"}).structure == "block:4x4"
    assert resolve_config("quick", overrides={"method": "rigl", "out": "x"}).structure == "unstructured"
