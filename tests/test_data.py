"""Sources, cache, subsets, augmentation and the in-memory/streaming loaders of dstbench.data.

All data is generated in tmp_path; nothing here reads the shared archive or needs a network.
"""

from __future__ import annotations

import math
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dstbench.data import (
    DATASETS,
    ArrayDataset,
    DataConfig,
    TensorLoader,
    balanced_subset,
    build_data,
    class_quotas,
    load_cifar,
    load_splits,
    make_synthetic,
)
from dstbench.data import cache as cache_mod
from dstbench.data.augment import Normalizer, crop_flip, draw_crop_flip, epoch_generator, epoch_seed
from dstbench.data.catalog import CIFAR10_CLASSES, dataset_info
from dstbench.core.errors import ConfigError, DataError

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- fixtures/helpers


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test caches into its own folder and has a private HOME."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DSTBENCH_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return cache


def _rng_images(rng: np.random.Generator, n: int, h: int = 32, w: int = 32) -> np.ndarray:
    return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def write_cifar_pickles(folder: Path, *, cifar100: bool = False, per_batch: int = 4,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fake torchvision CIFAR folder (bytes keys, protocol 2, like the python-2 originals).

    Returns train/test images (NHWC) and labels the loader must reproduce.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    num_classes = 100 if cifar100 else 10
    label_key = b"fine_labels" if cifar100 else b"labels"
    names = ["train"] if cifar100 else [f"data_batch_{i}" for i in range(1, 6)]
    test_name = "test" if cifar100 else "test_batch"
    xs, ys = [], []
    for name in [*names, test_name]:
        n = per_batch * (5 if cifar100 and name == "train" else 1)
        imgs = _rng_images(rng, n)
        labels = rng.integers(0, num_classes, size=n).tolist()
        flat = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)  # channel-major rows, as in the originals
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": b"x", b"data": flat, label_key: labels}, fh, protocol=2)
        xs.append(imgs)
        ys.append(np.asarray(labels, dtype=np.int64))
    meta = ({b"fine_label_names": [f"c{i:03d}".encode() for i in range(100)]} if cifar100
            else {b"label_names": [c.encode() for c in CIFAR10_CLASSES]})
    with open(folder / ("meta" if cifar100 else "batches.meta"), "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    return np.concatenate(xs[:-1]), np.concatenate(ys[:-1]), xs[-1], ys[-1]


def write_tree(root: Path, classes: list[str], per_class: dict[str, int], *, seed: int = 0,
               size: tuple[int, int] = (32, 32), test_name: str = "test") -> dict[str, list[np.ndarray]]:
    """PNG ImageFolder tree; returns ``{split: [images in (class, file name) order]}``."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    for split in ("train", test_name):
        out[split] = []
        for cls in classes:
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class[split]):
                img = _rng_images(rng, 1, *size)[0]
                Image.fromarray(img).save(d / f"{i:04d}.png")
                out[split].append(img)
    return out


def tar_tree(root: Path, archive: Path, prefix: str = "cifar10") -> None:
    with tarfile.open(archive, "w:gz") as tf:
        for split in sorted(p for p in root.iterdir() if p.is_dir()):
            tf.add(split, arcname=f"{prefix}/{split.name}")


# ----------------------------------------------------------------------------- CIFAR pickles


def test_cifar10_pickle_folder_exact(tmp_path: Path) -> None:
    tx, ty, vx, vy = write_cifar_pickles(tmp_path / "cifar-10-batches-py")
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the folder or its parent
        s = load_cifar("cifar10", data_dir)
        assert s.train.images.shape == (20, 32, 32, 3) and s.test.images.shape == (4, 32, 32, 3)
        np.testing.assert_array_equal(s.train.images, tx)
        np.testing.assert_array_equal(s.train.labels, ty)
        np.testing.assert_array_equal(s.test.images, vx)
        np.testing.assert_array_equal(s.test.labels, vy)
        assert s.train.labels.dtype == np.int64
        assert s.train.classes == list(CIFAR10_CLASSES)


def test_cifar100_pickle_folder_fine_labels(tmp_path: Path) -> None:
    tx, ty, vx, vy = write_cifar_pickles(tmp_path / "cifar-100-python", cifar100=True)
    s = load_cifar("cifar100", tmp_path)
    np.testing.assert_array_equal(s.train.images, tx)
    np.testing.assert_array_equal(s.train.labels, ty)
    np.testing.assert_array_equal(s.test.labels, vy)
    assert s.train.classes[:2] == ["c000", "c001"] and len(s.train.classes) == 100


def test_official_pickle_archive(tmp_path: Path) -> None:
    tx, ty, _, vy = write_cifar_pickles(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    s = load_cifar("cifar10", archive)
    np.testing.assert_array_equal(s.train.images, tx)
    np.testing.assert_array_equal(s.test.labels, vy)


def test_corrupt_pickle_names_file(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_pickles(folder)
    (folder / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar("cifar10", tmp_path)


def test_pickle_refuses_code_execution(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_pickles(folder)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DataError, match=r"refusing to load .*system.*data_batch_1|data_batch_1.*refusing"):
        load_cifar("cifar10", folder)


def test_missing_batch_file(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_pickles(folder)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        load_cifar("cifar10", folder)


def test_download_path_uses_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--download hands data_dir to torchvision's CIFAR10 (faked here: there is no network)."""
    import torchvision.datasets as tvd

    calls: list[tuple[str, bool, bool]] = []

    class FakeCIFAR10:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            if not (Path(root) / "cifar-10-batches-py").exists():
                write_cifar_pickles(Path(root) / "cifar-10-batches-py")

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    target = tmp_path / "fresh"
    with pytest.raises(DataError, match="download"):
        load_cifar("cifar10", target)  # without download=True nothing is fetched
    assert calls == []
    s = load_cifar("cifar10", target, download=True)
    assert len(s.train) == 20 and calls == [(str(target), True, True), (str(target), False, True)]

    class Offline:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd, "CIFAR10", Offline)
    with pytest.raises(DataError, match=r"downloading cifar10 into .*offline.* failed: OSError"):
        load_cifar("cifar10", tmp_path / "offline", download=True)


# ----------------------------------------------------------------------------- image trees


def test_image_tree_exact_and_sorted_labels(tmp_path: Path) -> None:
    classes = ["cat", "airplane", "dog"]  # written out of order: labels follow sorted names
    imgs = write_tree(tmp_path / "tree", classes, {"train": 3, "test": 2})
    cfg_classes = sorted(classes)
    from dstbench.data.image_tree import read_tree

    s2 = read_tree(tmp_path / "tree", None)
    assert s2.train.classes == cfg_classes
    order = {c: i for i, c in enumerate(classes)}
    # expected: images grouped by sorted class name, each class in file-name order
    exp_train = np.stack([imgs["train"][order[c] * 3 + i] for c in cfg_classes for i in range(3)])
    np.testing.assert_array_equal(s2.train.images, exp_train)
    np.testing.assert_array_equal(s2.train.labels, np.repeat(np.arange(3), 3))
    np.testing.assert_array_equal(s2.test.labels, np.repeat(np.arange(3), 2))


def test_cifar10_tree_and_archive_exact(tmp_path: Path) -> None:
    classes = list(CIFAR10_CLASSES)
    imgs = write_tree(tmp_path / "tree", classes, {"train": 2, "test": 1})
    archive = tmp_path / "c10.tar.gz"
    tar_tree(tmp_path / "tree", archive)
    for src in (tmp_path / "tree", archive):
        s = load_cifar("cifar10", src)
        assert s.train.classes == classes
        np.testing.assert_array_equal(s.train.images, np.stack(imgs["train"]))
        np.testing.assert_array_equal(s.test.images, np.stack(imgs["test"]))
        np.testing.assert_array_equal(s.train.labels, np.repeat(np.arange(10), 2))
        np.testing.assert_array_equal(s.test.labels, np.arange(10))


def test_folder_holding_known_archive(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", list(CIFAR10_CLASSES), {"train": 1, "test": 1})
    (tmp_path / "dl").mkdir()
    tar_tree(tmp_path / "tree", tmp_path / "dl" / "cifar10-jpeg.tar.gz")
    assert len(load_cifar("cifar10", tmp_path / "dl").train) == 10


def test_wrong_class_count_for_dataset(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", list(CIFAR10_CLASSES), {"train": 1, "test": 1})
    with pytest.raises(DataError, match="found 10 class folders, expected 100"):
        load_cifar("cifar100", tmp_path / "tree")


def test_corrupt_image_names_file(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", list(CIFAR10_CLASSES), {"train": 1, "test": 1})
    (tmp_path / "tree" / "train" / "bird" / "0000.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"0000\.png"):
        load_cifar("cifar10", tmp_path / "tree")


@pytest.mark.parametrize("content", [b"", os.urandom(200), b"\x1f\x8b" + os.urandom(100)])
def test_corrupt_archive(tmp_path: Path, content: bytes) -> None:
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(content)
    with pytest.raises(DataError, match=r"broken\.tar\.gz") as err:
        load_cifar("cifar10", archive)
    assert "\n" not in str(err.value)


def test_truncated_archive(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", list(CIFAR10_CLASSES), {"train": 3, "test": 1})
    archive = tmp_path / "trunc.tar.gz"
    tar_tree(tmp_path / "tree", archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"trunc\.tar\.gz"):
        load_cifar("cifar10", archive)


def test_missing_and_empty_and_none(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        load_cifar("cifar10", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=str(tmp_path / "empty")):
        load_cifar("cifar10", tmp_path / "empty")
    (tmp_path / "empty_tree" / "train").mkdir(parents=True)
    (tmp_path / "empty_tree" / "test").mkdir()
    with pytest.raises(DataError, match=str(tmp_path / "empty_tree")):
        load_cifar("cifar10", tmp_path / "empty_tree")
    with pytest.raises(DataError, match="needs data_dir"):
        load_cifar("cifar10", None)
    with pytest.raises(DataError, match="does not exist"):
        build_data(DataConfig("cifar100", str(tmp_path / "nope"), batch_size=8), CPU)


def test_unknown_dataset_and_loader() -> None:
    with pytest.raises(ConfigError, match="valid choices: cifar10, cifar100, imagefolder, synthetic"):
        build_data(DataConfig("mnist", None, batch_size=8), CPU)
    assert DATASETS == ("cifar10", "cifar100", "imagefolder", "synthetic")
    with pytest.raises(ConfigError, match="valid choices: memory, ffcv, torch"):
        build_data(DataConfig("synthetic", None, batch_size=8, loader="dali"), CPU)
    with pytest.raises(ConfigError, match="batch_size"):
        build_data(DataConfig("synthetic", None, batch_size=0), CPU)
    with pytest.raises(ConfigError, match="max_train_samples"):
        build_data(DataConfig("synthetic", None, batch_size=4, max_train_samples=0), CPU)


# ----------------------------------------------------------------------------- cache


def test_cache_written_and_used_after_source_removed(tmp_path: Path, _isolated_cache: Path) -> None:
    write_tree(tmp_path / "tree", list(CIFAR10_CLASSES), {"train": 1, "test": 1})
    archive = tmp_path / "c.tar.gz"
    tar_tree(tmp_path / "tree", archive)
    first = load_cifar("cifar10", archive)
    cached = list(_isolated_cache.glob("cifar10-*.npz"))
    assert len(cached) == 1
    assert not list(_isolated_cache.glob("*.tmp"))  # atomic write leaves nothing behind
    archive.unlink()
    second = load_cifar("cifar10", archive)
    np.testing.assert_array_equal(first.train.images, second.train.images)
    np.testing.assert_array_equal(first.test.labels, second.test.labels)


def test_cache_reused_not_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar_pickles(tmp_path / "cifar-10-batches-py")
    load_cifar("cifar10", tmp_path)
    import dstbench.data.cifar as cifar_mod

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("decoded again although a valid cache exists")

    monkeypatch.setattr(cifar_mod, "read_pickle_folder", boom)
    assert len(load_cifar("cifar10", tmp_path).train) == 20


def test_stale_cache_rebuilt(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", list(CIFAR10_CLASSES), {"train": 1, "test": 1})
    assert len(load_cifar("cifar10", tmp_path / "tree").train) == 10
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "tree" / "train" / "cat" / "9999.png")
    s = load_cifar("cifar10", tmp_path / "tree")
    assert len(s.train) == 11 and int((s.train.labels == 3).sum()) == 2


def test_cache_beside_data_without_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSTBENCH_CACHE")
    write_tree(tmp_path / "tree", list(CIFAR10_CLASSES), {"train": 1, "test": 1})
    tar_tree(tmp_path / "tree", tmp_path / "c.tar.gz")
    load_cifar("cifar10", tmp_path / "tree")
    assert (tmp_path / "tree" / "dstbench-cifar10-cache.npz").is_file()
    load_cifar("cifar10", tmp_path / "c.tar.gz")
    assert (tmp_path / "c.tar.gz.dstbench-cifar10.npz").is_file()


def test_cache_falls_back_to_home_when_data_dir_readonly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSTBENCH_CACHE")
    write_cifar_pickles(tmp_path / "data" / "cifar-10-batches-py")
    real_write = cache_mod.atomic_write_npz

    def readonly_data(path: Path, arrays: dict[str, np.ndarray]) -> None:
        if str(path).startswith(str(tmp_path / "data")):
            raise PermissionError(13, "Read-only file system", str(path))
        real_write(path, arrays)

    monkeypatch.setattr(cache_mod, "atomic_write_npz", readonly_data)
    load_cifar("cifar10", tmp_path / "data")
    assert len(list((tmp_path / "home" / ".cache" / "dstbench").glob("cifar10-*.npz"))) == 1


def test_corrupt_cache_is_rebuilt(tmp_path: Path, _isolated_cache: Path) -> None:
    tx, *_ = write_cifar_pickles(tmp_path / "cifar-10-batches-py")
    load_cifar("cifar10", tmp_path)
    (cached,) = _isolated_cache.glob("cifar10-*.npz")
    cached.write_bytes(b"PK\x03\x04 broken")
    np.testing.assert_array_equal(load_cifar("cifar10", tmp_path).train.images, tx)


# ----------------------------------------------------------------------------- subsets


@settings(max_examples=60, deadline=None)
@given(num_classes=st.integers(1, 12), per_class=st.integers(1, 20), data=st.data())
def test_balanced_subset_exact_counts(num_classes: int, per_class: int, data: st.DataObject) -> None:
    total = num_classes * per_class
    n = data.draw(st.integers(1, total))
    seed = data.draw(st.integers(0, 2**31))
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))
    idx = balanced_subset(labels, num_classes, n, seed)
    assert idx.shape == (n,) and np.all(np.diff(idx) > 0)
    counts = np.bincount(labels[idx], minlength=num_classes)
    expected = [n // num_classes + (1 if c < n % num_classes else 0) for c in range(num_classes)]
    assert counts.tolist() == expected
    np.testing.assert_array_equal(idx, balanced_subset(labels, num_classes, n, seed))


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 15), min_size=1, max_size=10), data=st.data())
def test_class_quotas_unbalanced(counts: list[int], data: st.DataObject) -> None:
    total = sum(counts)
    n = data.draw(st.integers(1, max(1, total + 3)))
    q = class_quotas(np.array(counts), n)
    assert int(q.sum()) == min(n, total)
    assert np.all(q <= np.array(counts)) and np.all(q >= 0)


def test_subset_examples() -> None:
    labels = np.repeat(np.arange(4), 5)
    assert np.bincount(labels[balanced_subset(labels, 4, 7, 0)]).tolist() == [2, 2, 2, 1]
    assert balanced_subset(labels, 4, 100, 0).tolist() == list(range(20))
    assert not np.array_equal(balanced_subset(labels, 4, 8, 0), balanced_subset(labels, 4, 8, 1))
    uneven = np.array([0] * 10 + [1] * 1 + [2] * 10)
    assert np.bincount(uneven[balanced_subset(uneven, 3, 9, 0)]).tolist() == [4, 1, 4]
    with pytest.raises(ConfigError):
        balanced_subset(labels, 4, 0, 0)


def test_build_data_subset_counts() -> None:
    cfg = DataConfig("synthetic", None, batch_size=16, max_train_samples=105, max_test_samples=30)
    b = build_data(cfg, CPU)
    assert b.num_train_samples == 105 and b.train.num_samples == 105 and b.test.num_samples == 30
    ys = torch.cat([y for _, y in b.train])
    assert torch.bincount(ys, minlength=10).tolist() == [11] * 5 + [10] * 5
    assert torch.bincount(torch.cat([y for _, y in b.test])).tolist() == [3] * 10


# ----------------------------------------------------------------------------- augmentation


def _reference_crop_flip(img: np.ndarray, dy: int, dx: int, flip: bool, pad: int) -> np.ndarray:
    """Slow per-image reference: zero pad, crop, then mirror (CHW)."""
    c, h, w = img.shape
    padded = np.zeros((c, h + 2 * pad, w + 2 * pad), img.dtype)
    padded[:, pad : pad + h, pad : pad + w] = img
    out = padded[:, dy : dy + h, dx : dx + w]
    return out[:, :, ::-1] if flip else out


def test_crop_flip_matches_reference() -> None:
    rng = np.random.default_rng(0)
    imgs = torch.from_numpy(rng.integers(1, 256, size=(64, 3, 32, 32), dtype=np.uint8))
    dy, dx, flip = draw_crop_flip(64, 4, torch.Generator().manual_seed(3))
    out = crop_flip(imgs, dy, dx, flip, 4)
    assert out.dtype == torch.uint8 and out.shape == (64, 3, 32, 32)
    for i in range(64):
        ref = _reference_crop_flip(imgs[i].numpy(), int(dy[i]), int(dx[i]), bool(flip[i]), 4)
        np.testing.assert_array_equal(out[i].numpy(), ref)
    assert set(dy.tolist()) <= set(range(9)) and 0 < int(flip.sum()) < 64


def test_crop_flip_known_values() -> None:
    img = torch.arange(1, 1 + 3 * 5 * 5, dtype=torch.uint8).view(1, 3, 5, 5)
    ident = crop_flip(img, torch.tensor([2]), torch.tensor([2]), torch.tensor([False]), pad=2)
    assert torch.equal(ident, img)
    mirrored = crop_flip(img, torch.tensor([2]), torch.tensor([2]), torch.tensor([True]), pad=2)
    assert torch.equal(mirrored, img.flip(3))
    top_left = crop_flip(img, torch.tensor([0]), torch.tensor([0]), torch.tensor([False]), pad=2)
    assert int(top_left[:, :, :2, :].abs().sum()) == 0 and int(top_left[:, :, :, :2].abs().sum()) == 0
    assert torch.equal(top_left[:, :, 2:, 2:], img[:, :, :3, :3])
    # shifted right by one then mirrored: column x of the output is input column 3-x (clipped by pad)
    shifted = crop_flip(img, torch.tensor([2]), torch.tensor([3]), torch.tensor([True]), pad=2)
    assert torch.equal(shifted[0, :, :, 1:], img[0, :, :, 1:].flip(2))
    assert int(shifted[0, :, :, 0].abs().sum()) == 0


def test_normalizer_exact() -> None:
    u8 = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2).contiguous()
    x = Normalizer((0.2, 0.5, 0.4), (0.5, 0.25, 0.3), CPU)(u8)
    expected = torch.tensor([(0 - 0.2) / 0.5, (0.2 - 0.5) / 0.25, (1.0 - 0.4) / 0.3])
    assert x.dtype == torch.float32
    torch.testing.assert_close(x[0, :, 0, 0], expected, rtol=0, atol=1e-6)


def test_epoch_seed_mixing() -> None:
    assert epoch_seed(0, 1) != epoch_seed(1, 0)
    assert epoch_seed(5, 7) == epoch_seed(5, 7)
    assert 0 <= epoch_seed(-3, 2) < 2**63


# ----------------------------------------------------------------------------- tensor loader


def _indexed_dataset(n: int = 50) -> ArrayDataset:
    rng = np.random.default_rng(1)
    return ArrayDataset(_rng_images(rng, n), np.arange(n, dtype=np.int64) % 5, [f"c{i}" for i in range(5)])


def _reference_norm(u8_nchw: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (u8_nchw.float() / 255.0 - m) / s


def test_tensor_loader_train_matches_reference() -> None:
    ds = _indexed_dataset(50)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    loader = TensorLoader(ds, 16, CPU, mean, std, train=True, seed=7)
    loader.set_epoch(3)
    batches = list(loader)
    assert len(loader) == 4 == len(batches)
    assert [b[0].shape[0] for b in batches] == [16, 16, 16, 2]  # last partial batch kept
    gen = epoch_generator(7, 3)
    perm = torch.randperm(50, generator=gen)
    dy, dx, flip = draw_crop_flip(50, 4, gen)
    nchw = torch.from_numpy(ds.images).permute(0, 3, 1, 2)
    xs = torch.cat([b[0] for b in batches])
    ys = torch.cat([b[1] for b in batches])
    assert torch.equal(ys, torch.from_numpy(ds.labels)[perm])
    for j in range(50):
        i = int(perm[j])
        ref_u8 = _reference_crop_flip(nchw[i].numpy(), int(dy[j]), int(dx[j]), bool(flip[j]), 4)
        ref = _reference_norm(torch.from_numpy(ref_u8.copy())[None], mean, std)[0]
        torch.testing.assert_close(xs[j], ref, rtol=0, atol=1e-6)


def test_tensor_loader_determinism_and_epochs() -> None:
    ds = _indexed_dataset(40)
    stats = dataset_info("cifar10")

    def epoch(loader: TensorLoader, e: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader.set_epoch(e)
        return list(loader)

    a = TensorLoader(ds, 8, CPU, stats.mean, stats.std, train=True, seed=1)
    b = TensorLoader(ds, 8, CPU, stats.mean, stats.std, train=True, seed=1)
    torch.manual_seed(123)
    ea = epoch(a, 2)
    torch.manual_seed(999)  # the global RNG must not matter
    eb = epoch(b, 2)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(ea, eb))
    again = epoch(a, 2)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(ea, again))
    other = epoch(a, 3)
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(ea, other))
    # without set_epoch each pass moves on to the next epoch
    c = TensorLoader(ds, 8, CPU, stats.mean, stats.std, train=True, seed=1)
    first, second = list(c), list(c)
    assert torch.equal(first[0][0], epoch(a, 0)[0][0]) and torch.equal(second[0][0], epoch(a, 1)[0][0])
    other_seed = TensorLoader(ds, 8, CPU, stats.mean, stats.std, train=True, seed=2)
    assert not torch.equal(epoch(other_seed, 2)[0][0], ea[0][0])


def test_tensor_loader_eval_exact_and_channels_last() -> None:
    ds = _indexed_dataset(21)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    loader = TensorLoader(ds, 8, CPU, mean, std, train=False, channels_last=True)
    batches = list(loader)
    assert len(loader) == 3 and [x.shape[0] for x, _ in batches] == [8, 8, 5]
    x = torch.cat([b[0] for b in batches])
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.from_numpy(ds.labels))
    ref = _reference_norm(torch.from_numpy(ds.images).permute(0, 3, 1, 2), mean, std)
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-6)
    assert loader.num_samples == 21


def test_train_without_augment_only_shuffles() -> None:
    ds = _indexed_dataset(30)
    loader = TensorLoader(ds, 30, CPU, (0.0,) * 3, (1.0,) * 3, train=True, augment=False, seed=0)
    (x, y), = list(loader)
    perm = torch.randperm(30, generator=epoch_generator(0, 0))
    ref = torch.from_numpy(ds.images).permute(0, 3, 1, 2)[perm].float() / 255
    torch.testing.assert_close(x, ref, rtol=0, atol=0)


def test_memory_and_torch_loaders_agree() -> None:
    base = dict(dataset="synthetic", data_dir=None, batch_size=64, synthetic_train_samples=200,
                synthetic_test_samples=50, seed=3)
    mem = build_data(DataConfig(**base), CPU)  # type: ignore[arg-type]
    host = build_data(DataConfig(**base, loader="torch"), CPU)  # type: ignore[arg-type]
    for (x1, y1), (x2, y2) in zip(mem.train, host.train):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert mem.input_size == 32 and mem.num_classes == 10 and len(mem.train) == math.ceil(200 / 64)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_balanced() -> None:
    a = make_synthetic(seed=4, n_train=300, n_test=60)
    b = make_synthetic(seed=4, n_train=300, n_test=60)
    assert a.train.images.tobytes() == b.train.images.tobytes()
    assert a.test.labels.tobytes() == b.test.labels.tobytes()
    c = make_synthetic(seed=5, n_train=300, n_test=60)
    assert a.train.images.tobytes() != c.train.images.tobytes()
    assert a.train.images.shape == (300, 32, 32, 3) and a.train.images.dtype == np.uint8
    assert np.bincount(a.train.labels).tolist() == [30] * 10
    assert np.bincount(a.test.labels).tolist() == [6] * 10
    px = a.train.images.reshape(-1, 3) / 255.0
    assert np.all(np.abs(px.mean(0) - 0.5) < 0.1) and np.all(np.abs(px.std(0) - 0.25) < 0.1)
    s = load_splits(DataConfig("synthetic", None, batch_size=1, synthetic_num_classes=3,
                               synthetic_train_samples=9, synthetic_test_samples=3))
    assert s.train.classes == ["class_0", "class_1", "class_2"]
    with pytest.raises(ConfigError):
        make_synthetic(num_classes=1)


# ----------------------------------------------------------------------------- imagefolder stream


def test_imagefolder_streaming(tmp_path: Path) -> None:
    write_tree(tmp_path / "inet", ["n01", "n02", "n03"], {"train": 4, "val": 2}, size=(40, 56),
               test_name="val")
    # val lacks a class: labels must follow train's numbering
    for f in (tmp_path / "inet" / "val" / "n02").iterdir():
        f.unlink()
    (tmp_path / "inet" / "val" / "n02").rmdir()
    cfg = DataConfig("imagefolder", str(tmp_path / "inet"), batch_size=5, eval_batch_size=3,
                     num_workers=0, max_train_samples=9)
    b = build_data(cfg, CPU)
    assert b.num_classes == 3 and b.input_size == 224 and b.num_train_samples == 9
    xs, ys = zip(*list(b.train))
    assert [x.shape for x in xs] == [(5, 3, 224, 224), (4, 3, 224, 224)]
    assert torch.bincount(torch.cat(ys)).tolist() == [3, 3, 3]
    test_y = torch.cat([y for _, y in b.test])
    assert test_y.tolist() == [0, 0, 2, 2] and len(b.test) == 2


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs data_dir"):
        build_data(DataConfig("imagefolder", None, batch_size=2), CPU)
    (tmp_path / "x" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=str(tmp_path / "x")):
        build_data(DataConfig("imagefolder", str(tmp_path / "x"), batch_size=2), CPU)
    (tmp_path / "x" / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=str(tmp_path / "x" / "train")):
        build_data(DataConfig("imagefolder", str(tmp_path / "x"), batch_size=2), CPU)


def test_imagefolder_corrupt_image_one_line(tmp_path: Path) -> None:
    write_tree(tmp_path / "inet", ["a", "b"], {"train": 1, "val": 1}, test_name="val")
    (tmp_path / "inet" / "train" / "b" / "0000.png").write_bytes(b"junk")
    b = build_data(DataConfig("imagefolder", str(tmp_path / "inet"), batch_size=2, num_workers=1), CPU)
    with pytest.raises(DataError) as err:
        list(b.train)
    msg = str(err.value)
    assert "\n" not in msg and "0000.png" in msg and msg.startswith("cannot decode image")

