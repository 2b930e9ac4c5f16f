"""DDP on CPU (gloo, 2 processes through torchrun): equal masks on every rank, checked and recorded.

The reference for a 2-rank run with global batch 64 is a single process with ``--batch-size 32
--grad-accum 2``: the same global batches, and BatchNorm normalising over the same 32-sample pieces
(CPU DDP keeps per-rank BatchNorm statistics; SyncBatchNorm is CUDA-only). Stated tolerance: training
losses, weights and every mask snapshot agree to 1e-6 (gradients are averaged in a different order);
test metrics read BatchNorm running statistics, which a DDP run averages over ranks once per epoch
instead of chaining them, so they are not compared with the single process; instead the sharded,
all-reduced evaluation is checked against evaluating the saved model in one process (1e-6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.data.arrays import ArrayDataset
from dstbench.data.tensor_loader import TensorLoader
from dstbench.train.distributed import AGREEMENT_FILE, DESYNC_ENV
from tests.kill import sigkill_at_first_checkpoint

COMMON = [
    "train", "--device", "cpu", "--preset", "quick", "--method", "rigl", "--epochs", "3", "--hp", "delta_t=4",
    "--max-train-samples", "512", "--max-test-samples", "128", "--quiet",
]  # fmt: skip


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "dstbench", *args]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    subprocess.run(_torchrun(*COMMON, "--batch-size", "64", "--out", str(out)), check=True, timeout=300,
                   env=_env(), capture_output=True)
    return out


def test_two_ranks_agree_at_every_update_and_match_one_process(ddp_run: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "dstbench", *COMMON, "--batch-size", "32", "--grad-accum", "2",
                    "--out", str(single)], check=True, timeout=300, env=_env())
    agreement = _rows(ddp_run / AGREEMENT_FILE)
    updates = _rows(ddp_run / "topology.jsonl")
    assert len(updates) >= 4
    # One check for the initial masks plus one per topology update, all agreed.
    assert [row["step"] for row in agreement] == [0] + [row["step"] for row in updates]
    assert all(row["agreed"] and row["world_size"] == 2 and row["masks_checked"] == 5 for row in agreement)
    summary = json.loads((ddp_run / "summary.json").read_text())
    assert summary["distributed"] == {"world_size": 2, "backend": "gloo", "mask_checks": len(agreement),
                                      "all_agreed": True}

    ddp_metrics, one_metrics = _rows(ddp_run / "metrics.jsonl"), _rows(single / "metrics.jsonl")
    for a, b in zip(ddp_metrics, one_metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6, abs=1e-6)
    _assert_sharded_evaluation_is_exact(ddp_run, ddp_metrics[-1])
    snapshots = sorted(p.name for p in (single / "masks").glob("*.npz"))
    assert snapshots == sorted(p.name for p in (ddp_run / "masks").glob("*.npz"))
    for name in snapshots:
        with np.load(ddp_run / "masks" / name) as a, np.load(single / "masks" / name) as b:
            assert all(np.array_equal(a[k], b[k]) for k in b.files), name
    ddp_w = torch.load(ddp_run / "checkpoint.pt", weights_only=False)["model"]
    one_w = torch.load(single / "checkpoint.pt", weights_only=False)["model"]
    for key, value in one_w.items():
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(ddp_w[key], value, rtol=1e-5, atol=1e-6, msg=key)


def _assert_sharded_evaluation_is_exact(run: Path, last: dict[str, object]) -> None:
    from dstbench.data import build_data
    from dstbench.runs.configs import train_config
    from dstbench.train.epoch import evaluate
    from dstbench.train.setup import build_model, data_config

    cfg = train_config(json.loads((run / "config.json").read_text()))
    data = build_data(data_config(cfg), torch.device("cpu"))
    model = build_model(cfg.model, data.num_classes)
    from dstbench.core.layers import find_prunable_layers

    for _, module in find_prunable_layers(model):  # the checkpoint holds the masks as buffers
        module.register_buffer("weight_mask", torch.ones_like(module.weight, dtype=torch.bool))
    model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["model"])
    loss, acc = evaluate(model, data.test, cfg, torch.device("cpu"))
    assert last["test_loss"] == pytest.approx(loss, rel=1e-6)
    assert last["test_acc"] == acc


def test_a_desynchronised_rank_stops_the_run_naming_the_layer(tmp_path: Path) -> None:
    out = tmp_path / "desync"
    proc = subprocess.run(_torchrun(*COMMON, "--batch-size", "64", "--out", str(out)), timeout=300,
                          env=_env(**{DESYNC_ENV: "1"}), capture_output=True, text=True)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dstbench: error:")]
    assert errors and all("ranks disagree at step" in e and "mask features.0.0 differs" in e for e in errors)
    rows = _rows(out / AGREEMENT_FILE)
    assert rows[-1]["agreed"] is False and rows[-1]["first_difference"] == "mask features.0.0"
    assert all(row["agreed"] for row in rows[:-1])
    assert not (out / "summary.json").exists()


def test_a_killed_ddp_run_resumes_to_the_same_numbers(ddp_run: Path, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    args = _torchrun(*COMMON, "--batch-size", "64", "--out", str(killed))
    proc = subprocess.Popen(args, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    sigkill_at_first_checkpoint(proc, killed, group=True)  # torchrun and both ranks
    assert not (killed / "summary.json").exists()
    subprocess.run([*args, "--resume"], check=True, timeout=300, env=_env(), capture_output=True)
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert strip(_rows(killed / "metrics.jsonl")) == strip(_rows(ddp_run / "metrics.jsonl"))
    assert _rows(killed / AGREEMENT_FILE) == _rows(ddp_run / AGREEMENT_FILE)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), batch=st.integers(1, 12), count=st.integers(1, 4), train=st.booleans())
def test_rank_shards_partition_every_batch(n: int, batch: int, count: int, train: bool) -> None:
    """Concatenating the ranks' pieces of each batch gives the unsharded loader's batch, exactly."""
    rng = np.random.default_rng(n)
    data = ArrayDataset(rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), rng.integers(0, 3, n), ["a", "b", "c"])
    last = n - (-(-n // batch) - 1) * batch
    if train and count > 1 and last < count:
        with pytest.raises(Exception, match="fewer than the"):
            TensorLoader(data, batch, torch.device("cpu"), [0.5] * 3, [0.2] * 3, train=True, shard=(0, count))
        return
    kwargs = dict(device=torch.device("cpu"), mean=[0.5] * 3, std=[0.2] * 3, train=train, seed=7, pad=1)
    whole = list(TensorLoader(data, batch, **kwargs))  # type: ignore[arg-type]
    pieces = [list(TensorLoader(data, batch, shard=(r, count), **kwargs)) for r in range(count)]  # type: ignore[arg-type]
    if train:
        assert all(len(p) == len(whole) for p in pieces)  # every rank takes every step
    for b, (x, y) in enumerate(whole):
        parts = [p[b] for p in pieces if b < len(p)] if train else None
        if parts is not None:
            torch.testing.assert_close(torch.cat([x_ for x_, _ in parts]), x, rtol=0, atol=0)
            assert torch.equal(torch.cat([y_ for _, y_ in parts]), y)
    if not train:
        ys = torch.cat([y for p in pieces for _, y in p])
        assert sorted(ys.tolist()) == sorted(torch.cat([y for _, y in whole]).tolist())
