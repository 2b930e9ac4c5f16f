"""FFCV for ImageNet-style folders: variable-size images, random-resized / centre-crop decoders.

Separate from test_data_ffcv.py because every distinct ffcv pipeline JIT-compiles for seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dstbench.data import DataConfig, build_data, check_beton, prepare

CPU = torch.device("cpu")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """3 classes, 4 train / 2 val images each, sizes varying per image (JPEG-encoded)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "inet"
    for split, n in (("train", 4), ("val", 2)):
        for c in ("n01", "n02", "n03"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
                img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(img).save(d / f"{i}.jpg", quality=90)
    return root


def test_prepare_and_load_imagefolder_betons(folder: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSTBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "betons"
    paths = prepare("imagefolder", str(folder), str(out), max_train_samples=10, num_workers=1,
                    max_resolution=64)
    train_labels = check_beton(paths[0])
    assert np.bincount(train_labels).tolist() == [4, 3, 3]
    assert check_beton(paths[1]).tolist() == [0, 0, 1, 1, 2, 2]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["classes"] == ["n01", "n02", "n03"] and meta["num_train"] == 10

    cfg = DataConfig("imagefolder", None, batch_size=4, eval_batch_size=4, loader="ffcv",
                     beton_dir=str(out), num_workers=1)
    bundle = build_data(cfg, CPU)
    assert (bundle.num_classes, bundle.input_size, bundle.num_train_samples) == (3, 224, 10)
    train = list(bundle.train)
    assert [tuple(x.shape) for x, _ in train] == [(4, 3, 224, 224), (4, 3, 224, 224), (2, 3, 224, 224)]
    assert sorted(torch.cat([y for _, y in train]).tolist()) == sorted(train_labels.tolist())
    test = list(bundle.test)
    assert torch.cat([y for _, y in test]).tolist() == [0, 0, 1, 1, 2, 2]
    assert all(x.dtype == torch.float32 and x.shape[1:] == (3, 224, 224) for x, _ in test)
