"""The real CIFAR-10 JPEG archive from ``../shared/data`` beside the checkout (always there in CI).

Checks what synthetic fixtures cannot: the actual archive layout, class order and pixel statistics
(README: decoded training mean (0.4913, 0.4821, 0.4465)). The cache goes to a temporary folder so the
test never writes beside the shared data. Decoding all 60k images takes about 10 s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dstbench.data import DataConfig, load_splits
from dstbench.data.catalog import CIFAR10_CLASSES

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"real CIFAR-10 archive not present at {ARCHIVE}")
def test_real_cifar10_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSTBENCH_CACHE", str(tmp_path / "cache"))
    cfg = DataConfig("cifar10", str(ARCHIVE), batch_size=1, max_train_samples=2000, max_test_samples=100)
    splits = load_splits(cfg)
    assert len(list((tmp_path / "cache").glob("cifar10-*.npz"))) == 1
    test = splits.test
    assert test.images.shape == (100, 32, 32, 3) and test.images.dtype == np.uint8
    assert np.bincount(test.labels, minlength=10).tolist() == [10] * 10
    assert test.classes == list(CIFAR10_CLASSES)
    train = splits.train
    assert np.bincount(train.labels, minlength=10).tolist() == [200] * 10
    mean = (train.images.reshape(-1, 3) / 255.0).mean(axis=0)
    np.testing.assert_allclose(mean, [0.4913, 0.4821, 0.4465], atol=0.015)
    std = (train.images.reshape(-1, 3) / 255.0).std(axis=0)
    np.testing.assert_allclose(std, [0.2452, 0.2428, 0.2606], atol=0.015)
    # The second load reads the cache and picks the same subset.
    again = load_splits(cfg)
    np.testing.assert_array_equal(again.test.images, test.images)
