"""Execution backends compute what ``masked`` computes, refuse in one line what they cannot serve, and
``dstbench speed`` writes a proved, timed ``speed.json`` for a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dstbench.cli.app import main
from dstbench.speed import BackendMismatch, BackendUnavailable, get_backend, masked_layers, prove
from dstbench.speed.backends import Backend, Prepared
from dstbench.speed.kernels import block_size, is_two_four


class Net(nn.Module):
    """conv-BN-ReLU, a padded conv, an unpadded 1x1 conv, global pooling and a head: every shrink case."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        x = torch.relu(self.b3(self.c3(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _net(density: float = 0.3, seed: int = 0, dead: tuple[int, ...] = ()) -> Net:
    torch.manual_seed(seed)
    net = Net().eval()
    for name, module in [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]:
        mask = torch.rand_like(module.weight) < density
        if name != "fc":
            mask[list(dead)] = False
        module.register_buffer("weight_mask", mask)
    for bn in (net.b1, net.b2, net.b3):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)  # some dead channels carry a non-zero constant, some are cut by ReLU
    return net


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["masked", "shrink", "csr"])
def test_cpu_backends_equal_masked(name: str) -> None:
    net = _net(dead=(1, 4))
    backend = get_backend(name)
    reference = get_backend("masked").prepare(net, X).model
    proof = prove(backend, reference, backend.prepare(net, X).model, X)
    assert proof.forward_error <= backend.tolerance
    assert (proof.input_grad_error is not None) == backend.supports_backward


def test_masked_is_dense_kernel_on_masked_weight() -> None:
    net = _net()
    out = get_backend("masked").prepare(net, X).model
    for (_, before), (_, after) in zip(masked_layers(net), masked_layers(out)):
        assert torch.equal(after.weight, before.weight * before.weight_mask)
    assert not torch.equal(net.c1.weight, out.c1.weight)  # the input model is left as it was


def test_shrink_removes_exactly_the_dead_channels_it_can() -> None:
    net = _net(dead=(1, 4))
    shrunk = get_backend("shrink").prepare(net, X)
    model = shrunk.model

    def unread(consumer: nn.Module) -> set[int]:
        cols = (consumer.weight * consumer.weight_mask).transpose(0, 1).reshape(8, -1)
        return {c for c in range(8) if not cols[c].any()}

    # c3 (1x1, unpadded) -> fc and c2 -> c3 fold any constant: every dead channel goes. c1 -> c2 (padded):
    # a dead channel goes only where ReLU(BN(0)) == 0. Channels the consumer never reads go in any case.
    v1 = torch.relu(net.b1(torch.zeros(1, 8, 1, 1)))[0, :, 0, 0]
    assert model.c1.out_channels == 8 - len(unread(net.c2) | {c for c in (1, 4) if v1[c] == 0})
    assert model.c2.out_channels == 8 - len(unread(net.c3) | {1, 4})
    assert model.c3.out_channels == model.fc.in_features == model.b3.num_features == 8 - len(unread(net.fc) | {1, 4})
    assert model.c2.in_channels == model.c1.out_channels == model.b1.num_features
    assert model.c1.out_channels > 8 - len(unread(net.c2) | {1, 4})  # the seed has a dead channel BN lifts above 0
    assert any("removed" in note for note in shrunk.notes)
    with torch.no_grad():
        torch.testing.assert_close(model(X), get_backend("masked").prepare(net, X).model(X), rtol=0, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 1000), st.floats(0.02, 0.6), st.lists(st.integers(0, 7), max_size=7))
def test_shrink_and_csr_equal_masked_for_any_mask(seed: int, density: float, dead: list[int]) -> None:
    net = _net(density, seed, tuple(dead))
    reference = get_backend("masked").prepare(net, X).model
    for name in ("shrink", "csr"):
        backend = get_backend(name)
        prove(backend, reference, backend.prepare(net, X).model, X)


def test_bsr_equal_masked_on_block_masks_and_refuses_others() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(16, 8)
    blocks = torch.rand(2, 4) < 0.5
    layer.register_buffer("weight_mask", blocks.repeat_interleave(4, 0).repeat_interleave(4, 1))
    model = nn.Sequential(layer)
    x = torch.randn(5, 16)
    backend = get_backend("bsr")
    assert block_size(layer.weight_mask) == 4
    prove(backend, get_backend("masked").prepare(model, x).model, backend.prepare(model, x).model, x)
    layer.weight_mask[0, 0] = ~layer.weight_mask[0, 0]
    with pytest.raises(BackendUnavailable, match=r"^backend bsr: layer 0's mask is not block-structured"):
        backend.prepare(model, x)


def test_two_four_pattern() -> None:
    assert is_two_four(torch.tensor([[1, 0, 1, 0, 0, 0, 0, 1]], dtype=torch.bool))
    assert not is_two_four(torch.tensor([[1, 1, 1, 0, 0, 0, 0, 1]], dtype=torch.bool))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is what a CPU-only machine must say")
def test_semi_structured_refuses_cpu_in_one_line() -> None:
    with pytest.raises(BackendUnavailable, match="^backend semi-structured needs a CUDA device"):
        get_backend("semi-structured").prepare(_net(), X)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0), reason="needs CUDA with compute capability >= 8.0 (PyTorch 2:4 kernels)")
def test_semi_structured_equal_masked_on_cuda() -> None:
    layer = nn.Linear(128, 64).half().cuda()
    mask = torch.zeros(64, 128, dtype=torch.bool)
    mask[:, 0::4] = mask[:, 1::4] = True
    layer.register_buffer("weight_mask", mask.cuda())
    model, x = nn.Sequential(layer), torch.randn(32, 128, device="cuda", dtype=torch.half)
    backend = get_backend("semi-structured")
    prove(backend, get_backend("masked").prepare(model, x).model, backend.prepare(model, x).model, x)


def test_a_wrong_backend_is_caught_before_timing() -> None:
    class Wrong(Backend):
        name = "wrong"

        def prepare(self, model: nn.Module, example: torch.Tensor) -> Prepared:
            return Prepared(nn.Sequential(model, nn.Identity()) if False else _net(seed=9))

    net = _net()
    with pytest.raises(BackendMismatch, match="^backend wrong differs from masked by"):
        prove(Wrong(), get_backend("masked").prepare(net, X).model, Wrong().prepare(net, X).model, X)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("speed") / "run"
    code = main(["train", "--model", "tiny_cnn", "--dataset", "synthetic", "--synthetic-train-samples", "32",
                 "--synthetic-test-samples", "16", "--epochs", "1", "--batch-size", "16", "--sparsity", "0.9", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_speed_command_writes_proved_timed_json(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["speed", str(tiny_run), "--backend", "csr,shrink,bsr", "--rounds", "1", "--min-time", "0.01", "--out", str(tmp_path)]
    assert main(argv) == 0
    result = json.loads((tmp_path / tiny_run.name / "speed.json").read_text())
    assert set(result["backends"]) == {"masked", "csr", "shrink", "bsr"}
    assert result["backends"]["bsr"]["status"] == "unavailable"
    assert result["backends"]["csr"]["status"] == "proved" and result["backends"]["csr"]["updates"] >= 1
    assert result["end_to_end"]["batch_1"]["masked"]["speedup_over_masked"] == 1.0
    assert set(result["end_to_end"]["batch_16"]) == {"masked", "csr", "shrink"}
    assert set(result["training_step"]) == {"masked", "csr"}  # the backends that train, proved on one step first
    assert result["backends"]["csr"]["training_proof"]["weight_grad_rel_error"] <= 1e-4
    assert result["provenance"]["threads"] >= 1 and result["mask_file"]["checkpoint_sha256"]
    assert set(result["layers"]["batch_1"]) == {name for name, _ in masked_layers(_tiny(tiny_run))}
    assert "bsr" in capsys.readouterr().out


def _tiny(path: Path) -> nn.Module:
    from dstbench.speed.measure import load_run

    return load_run(path).model


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["speed", "/nonexistent/run"], "dstbench: error: speed: /nonexistent/run is not a dstbench run directory (no config.json)\n"),
        (["speed", "RUN", "--backend", "cusparse"], "dstbench: error: unknown backend 'cusparse'; valid choices: masked, csr, bsr, semi-structured, shrink\n"),
        (["speed", "RUN", "--device", "tpu"], "dstbench: error: --device 'tpu' is not a device; use cpu or cuda[:N]\n"),
    ],
)
def test_speed_bad_input_is_one_line(argv: list[str], message: str, tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tiny_run) if word == "RUN" else word for word in argv]
    assert main(argv) == 2
    assert capsys.readouterr().err == message
