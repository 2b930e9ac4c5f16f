"""Every ``--opt`` offered, under every method that can use it: the engine keeps each state tensor at
zero off the mask (and the weights), methods that read momentum refuse an optimizer without one, and
the default optimizer is today's SGD."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.cli.app import main
from dstbench.config import TrainConfig
from dstbench.core.distributions import plan_sparsity
from dstbench.core.errors import ConfigError
from dstbench.core.layers import describe_layers
from dstbench.core.registry import create_updater
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.train.optimizers import OPTIMIZERS, build_optimizer, check_optimizer, momentum_state
from tests.helpers import SmallNet
from tests.test_methods_contract import SELF_CONTAINED, _batch, fast_hp

# The state each optimizer must hold per weight after a step: a test of zeroing must not pass because
# the optimizer kept nothing shaped like the weight.
STATE_KEYS = {
    "sgd": {"momentum_buffer"},
    "adam": {"exp_avg", "exp_avg_sq"},
    "adamw": {"exp_avg", "exp_avg_sq"},
    "nadamw": {"exp_avg", "exp_avg_sq"},
    "lamb": {"exp_avg", "exp_avg_sq"},
    "lion": {"exp_avg"},
    "rmsprop": {"square_avg", "momentum_buffer"},
}


def test_the_option_lists_exactly_the_vetted_optimizers() -> None:
    choices = typing.get_args(typing.get_type_hints(TrainConfig)["opt"])
    assert list(choices) == list(OPTIMIZERS) == list(STATE_KEYS)


def _optim_config(opt: str) -> TrainConfig:
    return TrainConfig(opt=opt, lr=0.1 if opt == "sgd" else 0.01, weight_decay=5e-4)


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("method", SELF_CONTAINED)
@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 2**16), sparsity=st.sampled_from([0.5, 0.9]), distribution=st.sampled_from(["uniform", "erk"]))
def test_state_and_weights_stay_zero_off_the_mask(method: str, opt: str, seed: int, sparsity: float, distribution: str) -> None:
    torch.manual_seed(seed)
    updater = create_updater(method, fast_hp(method))
    model = SmallNet(5, 6)
    optimizer = build_optimizer(model, _optim_config(opt))
    plan = plan_sparsity(describe_layers(model), sparsity if updater.needs.sparse else 0.0, distribution, "none")
    engine = SparseEngine(model, plan, updater, optimizer, seed=seed, steps_per_epoch=4, total_epochs=3)
    engine.loss_fn = torch.nn.functional.cross_entropy
    engine.initialize(_batch(-1) if updater.needs.init_batch else None)
    for step in range(12):
        x, y = _batch(seed + step)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        engine.step(step, (x, y))
        optimizer.zero_grad(set_to_none=True)
        for layer in engine.sparse_layers:
            assert not layer.weight.detach()[~layer.mask].any(), f"{method}/{opt} step {step}: {layer.name} weight"
            state = optimizer.state[layer.weight]
            if step >= 3:  # a method may skip the optimizer on an update step, never three in a row
                assert STATE_KEYS[opt] <= state.keys(), f"{method}/{opt}: state {sorted(state)}"
            if not updater.needs.masked_optimizer:
                continue  # SNFS keeps gradients and momentum dense, as its paper does
            backward = engine.backward.mask(layer)
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == layer.weight.shape:
                    assert not value[~backward].any(), f"{method}/{opt} step {step}: {layer.name} {key}"
    assert engine.violations(final=True) == []


def test_methods_that_read_momentum_declare_it() -> None:
    readers = [m for m in SELF_CONTAINED if create_updater(m, {}).needs.reads_momentum]
    assert readers == ["snfs"]  # MEST+EM reads weights and gradients only (methods/mest.py)


@pytest.mark.parametrize("method", [m for m in SELF_CONTAINED if create_updater(m, {}).needs.reads_momentum])
def test_a_momentum_reader_refuses_an_optimizer_without_momentum(method: str) -> None:
    updater = create_updater(method, {})
    with pytest.raises(ConfigError, match=rf"^{method} reads the optimizer's momentum; --opt sgd --momentum 0 keeps none"):
        check_optimizer(TrainConfig(method=method, momentum=0.0), updater, method)
    for opt in OPTIMIZERS:  # every vetted optimizer keeps one at the default --momentum
        assert momentum_state(opt, 0.9) in STATE_KEYS[opt]
        check_optimizer(TrainConfig(method=method, opt=opt), updater, method)


def test_the_refusal_is_one_line_on_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["train", "--preset", "quick", "--method", "snfs", "--momentum", "0", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("dstbench: error: snfs reads the optimizer's momentum; --opt sgd --momentum 0 keeps none")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("flag", "opt"), [("--opt-eps", "sgd"), ("--opt-betas", "rmsprop")])
def test_an_option_the_optimizer_has_no_use_for_is_refused(flag: str, opt: str) -> None:
    cfg = TrainConfig(opt=opt, **({"opt_eps": 1e-6} if flag == "--opt-eps" else {"opt_betas": (0.9, 0.99)}))
    with pytest.raises(ConfigError, match=f"^{flag} does not apply to --opt {opt}"):
        check_optimizer(cfg, create_updater("rigl", {}), "rigl")


def test_betas_are_two_values_in_the_unit_interval() -> None:
    rigl = create_updater("rigl", {})
    with pytest.raises(ConfigError, match=r"^--opt-betas expects two values in \[0, 1\)"):
        check_optimizer(TrainConfig(opt="adamw", opt_betas=(0.9,)), rigl, "rigl")
    with pytest.raises(ConfigError, match=r"^--opt-betas expects two values"):
        check_optimizer(TrainConfig(opt="lion", opt_betas=(0.9, 1.0)), rigl, "rigl")


def test_default_is_todays_sgd_and_adamw_takes_its_options() -> None:
    model = SmallNet()
    sgd = build_optimizer(model, TrainConfig(weight_decay=1e-4))
    assert type(sgd) is torch.optim.SGD and len(sgd.param_groups) == 1
    group = sgd.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"], group["lr"]) == (0.9, False, 1e-4, 0.1)
    cfg = TrainConfig(opt="adamw", lr=1e-3, weight_decay=0.05, opt_eps=1e-6, opt_betas=(0.8, 0.99), decay_bn_and_bias=False)
    adamw = build_optimizer(model, cfg)
    assert type(adamw) is torch.optim.AdamW
    decayed, exempt = adamw.param_groups  # timm's rule: 1-d parameters and biases are not decayed
    assert (decayed["weight_decay"], exempt["weight_decay"]) == (0.05, 0.0)
    assert {id(p) for p in decayed["params"]} == {id(model.conv.weight), id(model.conv2.weight), id(model.fc.weight)}
    assert (decayed["betas"], decayed["eps"], decayed["lr"]) == ((0.8, 0.99), 1e-6, 1e-3)


def test_timm_no_weight_decay_names_are_exempt() -> None:
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10, depth=1)
    optimizer = build_optimizer(vit, TrainConfig(opt="adamw", weight_decay=0.05, decay_bn_and_bias=False))
    exempt = {id(p) for p in optimizer.param_groups[1]["params"]}
    assert id(vit.pos_embed) in exempt and id(vit.cls_token) in exempt and id(vit.blocks[0].attn.qkv.bias) in exempt
    assert id(vit.blocks[0].attn.qkv.weight) not in exempt



def test_the_options_are_part_of_the_run_identity_and_read_from_yaml(tmp_path: Path) -> None:
    import json

    from dstbench.config import resolve_config
    from dstbench.runs.reuse import find_mismatch

    (tmp_path / "c.yaml").write_text("opt: adamw\nopt_betas: [0.9, 0.95]\nopt_eps: 1.0e-6\nema: 0.99\nmixup: 0.8\n")
    cfg = resolve_config(None, str(tmp_path / "c.yaml"), {"out": "x"})
    assert (cfg.opt, cfg.opt_betas, cfg.opt_eps, cfg.ema, cfg.mixup) == ("adamw", (0.9, 0.95), 1e-6, 0.99, 0.8)
    saved = json.loads(json.dumps(cfg.to_json()))  # as config.json holds it: betas as a list
    assert find_mismatch(saved, None, cfg) is None
    assert find_mismatch(saved, None, resolve_config(None, str(tmp_path / "c.yaml"), {"out": "x", "opt": "lamb"})) == (
        "opt", "adamw", "lamb")  # fmt: skip
    old = TrainConfig(out="x").to_json()  # a run from before these options: their defaults
    for key in ("opt", "opt_betas", "opt_eps", "mixup", "cutmix", "ema"):
        del old["optim"][key]
    del old["data"]["auto_augment"]
    assert find_mismatch(old, None, TrainConfig(out="x")) is None
