"""FFCV betons: atomic writing, validation, and reading through the dstbench Loader interface.

ffcv is a CI dependency, so nothing here is skipped. numba compiles each pipeline on its first
epoch (several seconds), so the loaders are built once per module.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dstbench.data import (
    ArrayDataset,
    DataConfig,
    FFCVLoader,
    balanced_subset,
    build_data,
    check_beton,
    load_splits,
    prepare,
    write_beton,
)
from dstbench.data.ffcv_io import require_ffcv
from dstbench.core.errors import ConfigError, DataError

CPU = torch.device("cpu")
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
SYN = dict(synthetic_train_samples=230, synthetic_test_samples=70, seed=2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSTBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small() -> ArrayDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(45, 32, 32, 3), dtype=np.uint8)
    labels = rng.permutation(np.arange(45, dtype=np.int64) % 4)
    return ArrayDataset(images, labels, ["a", "b", "c", "d"])


@pytest.fixture(scope="module")
def beton(small: ArrayDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("beton") / "small.beton"
    assert write_beton(small, path, num_workers=1) == str(path)
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    paths = prepare("synthetic", None, str(out), num_workers=2, **SYN)  # type: ignore[arg-type]
    assert paths == [str(out / "train.beton"), str(out / "test.beton")]
    return out


def test_write_is_atomic_and_labels_exact(beton: Path, small: ArrayDataset) -> None:
    assert sorted(os.listdir(beton.parent)) == ["small.beton"]  # no temporary files left
    np.testing.assert_array_equal(check_beton(beton), small.labels)


def test_eval_loader_exact_pixels(beton: Path, small: ArrayDataset) -> None:
    threads = torch.get_num_threads()
    loader = FFCVLoader(beton, 16, CPU, MEAN, STD, train=False, num_workers=2)
    batches = list(loader)
    assert len(loader) == 3 and [x.shape for x, _ in batches] == [(16, 3, 32, 32)] * 2 + [(13, 3, 32, 32)]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and y.shape == (45,)
    assert torch.equal(y, torch.from_numpy(small.labels))  # sequential order
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    ref = (torch.from_numpy(small.images).permute(0, 3, 1, 2).float() / 255 - m) / s
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-5)  # raw mode stores pixels exactly
    assert torch.get_num_threads() == threads  # ffcv's set_num_threads side effect is undone


def test_build_data_ffcv_train(prepared: Path) -> None:
    cfg = DataConfig("synthetic", None, batch_size=64, loader="ffcv", beton_dir=str(prepared),
                     num_workers=1, **SYN)  # type: ignore[arg-type]
    bundle = build_data(cfg, CPU)
    ref = load_splits(DataConfig("synthetic", None, batch_size=1, **SYN))  # type: ignore[arg-type]
    assert (bundle.num_classes, bundle.input_size, bundle.num_train_samples) == (10, 32, 230)
    assert len(bundle.train) == 4 and len(bundle.test) == 1
    for epoch in (0, 1):
        bundle.train.set_epoch(epoch)
        batches = list(bundle.train)
        assert [x.shape[0] for x, _ in batches] == [64, 64, 64, 38]
        assert all(x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32 for x, _ in batches)
        ys = torch.cat([y for _, y in batches])
        assert sorted(ys.tolist()) == sorted(ref.train.labels.tolist())  # exact label multiset
    bundle.train.set_epoch(0)
    order0 = torch.cat([y for _, y in bundle.train])
    bundle.train.set_epoch(0)
    assert torch.equal(order0, torch.cat([y for _, y in bundle.train]))  # ffcv's seeded order
    (x, y), = list(bundle.test)
    assert torch.equal(y, torch.from_numpy(ref.test.labels))
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["dataset"] == "synthetic" and meta["num_train"] == 230 and len(meta["classes"]) == 10


def test_build_data_ffcv_subset_indices(prepared: Path) -> None:
    cfg = DataConfig("synthetic", None, batch_size=50, eval_batch_size=25, loader="ffcv",
                     beton_dir=str(prepared), num_workers=1, max_train_samples=53,
                     max_test_samples=20, **SYN)  # type: ignore[arg-type]
    bundle = build_data(cfg, CPU)
    assert bundle.num_train_samples == 53 and len(bundle.train) == 2 and len(bundle.test) == 1
    ys = torch.cat([y for _, y in bundle.train])
    assert torch.bincount(ys, minlength=10).tolist() == [6, 6, 6] + [5] * 7
    labels = check_beton(prepared / "train.beton")
    expected = labels[balanced_subset(labels, 10, 53, 2)]
    assert sorted(ys.tolist()) == sorted(expected.tolist())
    assert torch.bincount(torch.cat([y for _, y in bundle.test])).tolist() == [2] * 10


def test_corrupt_and_truncated_betons(beton: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.beton"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(DataError, match="garbage.beton"):
        check_beton(garbage)
    truncated = tmp_path / "trunc.beton"
    truncated.write_bytes(beton.read_bytes()[: beton.stat().st_size // 2])
    with pytest.raises(DataError, match="trunc.beton") as err:
        FFCVLoader(truncated, 8, CPU, MEAN, STD, train=False)
    assert "\n" not in str(err.value)
    empty = tmp_path / "empty.beton"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.beton"):
        check_beton(empty)


def test_config_errors(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="beton_dir"):
        build_data(DataConfig("synthetic", None, batch_size=8, loader="ffcv"), CPU)
    with pytest.raises(DataError, match=str(tmp_path / "train.beton")):
        build_data(DataConfig("synthetic", None, batch_size=8, loader="ffcv", beton_dir=str(tmp_path)), CPU)
    with pytest.raises(ConfigError, match="'synthetic' betons but dataset is 'cifar10'"):
        build_data(DataConfig("cifar10", None, batch_size=8, loader="ffcv", beton_dir=str(prepared)), CPU)
    with pytest.raises(ConfigError, match="write_mode"):
        write_beton(ArrayDataset(np.zeros((1, 4, 4, 3), np.uint8), np.zeros(1, np.int64), ["a"]),
                    tmp_path / "x.beton", write_mode="png")


def test_missing_ffcv_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ffcv", None)  # makes `import ffcv` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install 'dstbench\[ffcv\]'"):
        require_ffcv()


def test_jpeg_mode_roundtrip_close(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    colours = rng.uniform(0.1, 1.0, size=(8, 2, 3))  # smooth colour ramps survive JPEG well
    ramps = xx[None, :, :, None] * colours[:, None, None, 0] + yy[None, :, :, None] * colours[:, None, None, 1]
    images = np.rint(ramps / ramps.max(axis=(1, 2, 3), keepdims=True) * 255).astype(np.uint8)
    data = ArrayDataset(images, np.arange(8, dtype=np.int64) % 2, ["a", "b"])
    path = write_beton(data, tmp_path / "j.beton", write_mode="jpg", jpeg_quality=95, num_workers=1)
    raw = write_beton(data, tmp_path / "r.beton", write_mode="raw", num_workers=1)
    from ffcv.reader import Reader

    stored = [int(Reader(str(p)).alloc_table["size"].sum()) for p in (path, raw)]
    assert stored[1] == data.images.nbytes and stored[0] < stored[1] // 2  # jpg compresses
    (x, y), = list(FFCVLoader(path, 8, CPU, (0.0,) * 3, (1 / 255,) * 3, train=False, num_workers=1))
    assert torch.equal(y, torch.from_numpy(data.labels))
    ref = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    assert float((x - ref).abs().mean()) < 3.0  # lossy but close (0..255 units) ...
    assert float((x - ref.flip(1)).abs().mean()) > 10.0  # ... and in RGB order, not BGR


def test_failing_sample_reported_not_hung(tmp_path: Path) -> None:
    from dstbench.data.ffcv_io import write_samples

    def load(i: int) -> tuple[np.ndarray, int]:
        if i == 3:
            raise ValueError("boom")
        return np.zeros((8, 8, 3), np.uint8), 0

    with pytest.raises(DataError, match=r"1 samples could not be written .*sample 3: ValueError: boom"):
        write_samples(6, load, tmp_path / "f.beton", num_workers=1)
    assert os.listdir(tmp_path) == []  # neither the beton nor temporary files remain


def test_writing_into_a_redirected_log_draws_no_progress_bar(
    small: ArrayDataset, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """ffcv's writer draws a tqdm bar; with stderr not a terminal (a log file) it must draw nothing."""
    capfd.readouterr()
    write_beton(small, tmp_path / "x.beton", num_workers=1)
    err = capfd.readouterr().err
    assert "it/s" not in err and "\r" not in err and "%|" not in err
