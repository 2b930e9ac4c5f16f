"""``train --backend csr`` trains with sparse kernels and reaches what ``masked`` reaches (issue 19, section 4):
per-step losses, final weights and masks agree to float tolerance over a short RigL run with several
mask updates; formats are rebuilt exactly when the engine writes a mask; the backend is part of the
run; a backend that cannot train is refused in one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dstbench.cli.app import main
from dstbench.config import TrainConfig, resolve_config
from dstbench.core.needs import Needs
from dstbench.runs.configs import flat_config, typed_config
from dstbench.runs.reuse import find_mismatch
from dstbench.speed.training import CsrPattern, CsrTrainingConv2d, attach, needs_dense_grad
from dstbench.train.loop import train
from dstbench.train.steppers import EagerStepper

SMALL = {"synthetic_train_samples": 256, "synthetic_test_samples": 64, "epochs": 2, "batch_size": 32, "method": "rigl"}


def _run(tmp_path: Path, backend: str, losses: list[float]) -> tuple[dict[str, Any], list[float], dict[str, torch.Tensor]]:
    """A 16-step RigL run (updates after every 4th step): its summary, per-step losses and final state."""
    losses.clear()
    cfg = resolve_config("quick", overrides={**SMALL, "backend": backend, "out": str(tmp_path / backend)}, hp={"delta_t": 4})
    summary = train(cfg, progress=False)
    state = torch.load(tmp_path / backend / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    return summary, list(losses), state


def _record_losses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    losses: list[float] = []
    original = EagerStepper.step

    def recording(self: EagerStepper, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = original(self, *args)
        losses.append(float(loss.detach()))
        return loss, logits

    monkeypatch.setattr(EagerStepper, "step", recording)
    return losses


def test_csr_training_equals_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    losses = _record_losses(monkeypatch)
    masked, masked_losses, masked_state = _run(tmp_path, "masked", losses)
    csr, csr_losses, csr_state = _run(tmp_path, "csr", losses)
    assert len(csr_losses) == len(masked_losses) == 16 and masked["topology_updates"] == csr["topology_updates"] >= 3
    torch.testing.assert_close(torch.tensor(csr_losses), torch.tensor(masked_losses), rtol=1e-5, atol=1e-6)
    assert masked_state.keys() == csr_state.keys()
    for key, value in masked_state.items():
        if key.endswith("weight_mask"):
            assert torch.equal(csr_state[key], value), key  # the same topology, bit for bit
        elif value.is_floating_point():
            torch.testing.assert_close(csr_state[key], value, rtol=1e-4, atol=1e-5, msg=key)
    # Every layer's format is built once, then rebuilt each time the engine installs its masks (the
    # initial ones and one per update, for the layers the plan sparsifies): no more, no less.
    plan = json.loads((tmp_path / "csr" / "plan.json").read_text())["layers"]
    installs = 1 + csr["topology_updates"]
    assert csr["step_time"]["recompressions"] == sum(installs if layer["sparsified"] else 1 for layer in plan)
    assert csr["step_time"]["backend"] == "csr" and masked["step_time"]["backend"] == "masked"
    assert "recompressions" not in masked["step_time"]
    for summary in (masked, csr):
        step = summary["step_time"]
        assert step["seconds_per_step"] == pytest.approx(summary["train_seconds"] / 16)
        assert step["train_flops_per_step"] == pytest.approx(summary["flops"]["train_flops"] / 16)


def _conv_with_mask(seed: int, density: float, stride: int, padding: int) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding, bias=True)
    mask = torch.rand_like(conv.weight) < density
    with torch.no_grad():
        conv.weight.mul_(mask)
    conv.register_buffer("weight_mask", mask)
    return conv


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 0.9), st.integers(1, 2), st.integers(0, 1), st.integers(1, 3), st.booleans())
def test_csr_layer_gradients_equal_the_masked_conv(seed: int, density: float, stride: int, padding: int, batch: int, dense: bool) -> None:
    """Forward, input gradient and weight gradient (dense, or at the mask's entries) against F.conv2d."""
    conv = _conv_with_mask(seed, density, stride, padding)
    reference = _conv_with_mask(seed, density, stride, padding)
    model = nn.Sequential(conv)
    kernels = attach(model, "csr", torch.device("cpu"))
    assert kernels is not None and isinstance(conv, CsrTrainingConv2d)
    kernels.before_step(Needs(dense_grad="update_steps"), update_due=dense)
    x = torch.randn(batch, 3, 7, 7, generator=torch.Generator().manual_seed(seed))
    outs, grads = [], []
    for net in (conv, reference):
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        outs.append(out.detach())
        grads.append((xi.grad, net.weight.grad, net.bias.grad))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for got, want in zip(grads[0][::2], grads[1][::2]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    expected_weight_grad = grads[1][1] if dense else grads[1][1] * reference.weight_mask
    torch.testing.assert_close(grads[0][1], expected_weight_grad, rtol=1e-5, atol=1e-5)


def test_the_format_is_rebuilt_exactly_when_the_mask_is_written() -> None:
    pattern = CsrPattern()
    mask = torch.rand(4, 6) < 0.5
    mask[0, 0] = False
    assert pattern.refresh(mask) and pattern.rebuilds == 1
    assert pattern.refresh(mask) and pattern.rebuilds == 1  # a step without an update: nothing rebuilt
    flat = torch.arange(24.0)
    assert torch.equal(pattern.matrix(flat).to_dense(), flat.reshape(4, 6) * mask)
    assert torch.equal(pattern.matrix(flat, transposed=True).to_dense(), (flat.reshape(4, 6) * mask).t())
    mask.copy_(torch.ones(4, 6, dtype=torch.bool))  # what an update's install does
    assert not pattern.refresh(mask) and pattern.rebuilds == 2  # a full mask: the dense kernel


@pytest.mark.parametrize(
    ("needs", "update_due", "dense"),
    [
        (Needs(), True, False),  # SET: magnitude and random growth read no gradient
        (Needs(dense_grad="update_steps"), False, False),
        (Needs(dense_grad="update_steps"), True, True),  # RigL grows by the dense gradient
        (Needs(dense_grad="every_step"), False, True),
        (Needs(masked_optimizer=False), False, True),  # SNFS: dense momentum
        (Needs(backward_set=True), False, True),  # Top-KAST trains on B, wider than the mask
        (Needs(per_step_hook=True), False, True),
    ],
)
def test_dense_weight_gradients_where_the_engine_reads_them(needs: Needs, update_due: bool, dense: bool) -> None:
    assert needs_dense_grad(needs, update_due) is dense


def test_backend_is_part_of_the_run() -> None:
    assert TrainConfig(backend="csr").to_json()["run"]["backend"] == "csr"
    old = {k: v for k, v in flat_config(TrainConfig().to_json()).items() if k != "backend"}  # a folder from before
    assert typed_config(old)["backend"] == "masked"
    assert find_mismatch(TrainConfig().to_json(), None, TrainConfig(backend="csr")) == ("backend", "masked", "csr")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backend", "shrink"], "backend shrink cannot train (no backward with weight gradients; `dstbench speed` measures its inference); train with masked or csr"),
        (["--backend", "bsr"], "backend bsr cannot train (no backward with weight gradients; `dstbench speed` measures its inference); train with masked or csr"),
        (["--backend", "semi-structured"], "backend semi-structured needs a CUDA device (PyTorch's 2:4 kernels); this is cpu"),
        (["--backend", "cusparse"], "unknown backend 'cusparse'; valid choices: masked, csr, bsr, semi-structured, shrink"),
        (["--backend", "csr", "--compile"], "--backend csr runs its own float32 kernels eagerly; drop --compile"),
    ],
)
def test_a_backend_that_cannot_train_is_refused_before_the_run(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["train", "--preset", "quick", "--epochs", "1", "--out", str(out), *extra]) == 2
    assert capsys.readouterr().err == f"dstbench: error: {message}\n"
    assert not out.exists()


def test_a_layer_the_csr_kernels_do_not_cover_is_named() -> None:
    from dstbench.speed import BackendUnavailable

    grouped = nn.Conv2d(4, 4, 3, groups=2)
    grouped.register_buffer("weight_mask", torch.ones_like(grouped.weight, dtype=torch.bool))
    with pytest.raises(BackendUnavailable, match="^backend csr: layer 0 is a grouped"):
        attach(nn.Sequential(grouped), "csr", torch.device("cpu"))



def test_a_loaded_checkpoint_re_compresses_before_the_next_forward() -> None:
    """A resume loads masks with ``load_state_dict``: the next forward must compute with them."""
    conv = _conv_with_mask(1, 0.3, 1, 1)
    model = nn.Sequential(conv)
    attach(model, "csr", torch.device("cpu"))
    x = torch.randn(2, 3, 7, 7)
    model(x)
    saved = _conv_with_mask(2, 0.5, 1, 1)  # another run's weights and masks, as a checkpoint holds them
    model.load_state_dict(nn.Sequential(saved).state_dict())
    assert isinstance(conv, CsrTrainingConv2d) and conv.csr_pattern.rebuilds == 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), saved(x), rtol=1e-5, atol=1e-5)
    assert conv.csr_pattern.rebuilds == 2
