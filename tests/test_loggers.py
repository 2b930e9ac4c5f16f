"""``--logger tensorboard``: the event files, read back with TensorBoard's own reader, hold the per-epoch
metrics at each epoch's last step and one IoU/turnover/overhead point per topology update."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dstbench.config import resolve_config
from dstbench.core.errors import ConfigError
from dstbench.train.loggers import create_logger
from dstbench.train.loop import train

pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'dstbench[tensorboard]')")


def test_tensorboard_events_mirror_metrics_and_topology(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = resolve_config(
            "quick",
            overrides={"method": "rigl", "epochs": 2, "max_train_samples": 64, "max_test_samples": 32,
                       "batch_size": 16, "logger": "tensorboard", "out": str(tmp_path / "run")},  # fmt: skip
            hp={"delta_t": 2},
        )
        train(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    records = [json.loads(line) for line in (tmp_path / "run" / "topology.jsonl").read_text().splitlines()]
    acc = events.Scalars("epoch/test_acc")
    assert [(e.step, e.value) for e in acc] == [(m["step"], pytest.approx(m["test_acc"])) for m in metrics]
    assert [e.step for e in events.Scalars("epoch/step_hook_seconds")] == [4, 8]
    iou = events.Scalars("topology/iou")
    assert [(e.step, e.value) for e in iou] == [(r["step"], pytest.approx(r["iou"])) for r in records]
    assert len(records) == 3  # rigl every 2 weight updates of 8 steps: after steps 0, 3, 6 (TF clock)
    turnover = events.Scalars("topology/turnover")
    expected = [r["grown"] / sum(layer["active"] for layer in r["layers"].values()) for r in records]
    assert [e.value for e in turnover] == pytest.approx(expected) and 0 < max(expected) < 1
    overhead = events.Scalars("topology/update_ms")
    assert [e.value for e in overhead] == pytest.approx([1000 * r["seconds"] for r in records], rel=1e-5)


def test_unknown_logger_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown logger"):
        create_logger("mlflow", tmp_path, {})
