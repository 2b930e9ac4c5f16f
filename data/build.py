"""The trainer's single entry point: a :class:`DataConfig` in, train/test loaders out.

Everything the rest of dstbench knows about data goes through here, so the choice of source
(pickles, JPEG trees, archives, synthetic, ImageNet folders) and of loader (in-memory tensors, FFCV,
torch DataLoader) stays invisible to training code. ``prepare`` is the offline step that turns any
source into the ``train.beton``/``test.beton`` pair the FFCV loader reads.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dstbench.config import DataOptions
from dstbench.core.errors import ConfigError, DataError

from .arrays import Splits
from .catalog import DATASETS, DatasetInfo, dataset_info
from .cifar import load_cifar
from .errtext import describe
from .loader import Loader
from .subset import balanced_subset
from .synthetic import make_synthetic
from .tensor_loader import TensorLoader

LOADERS: tuple[str, ...] = ("memory", "ffcv", "torch")
BETON_NAMES = ("train.beton", "test.beton")


@dataclass
class DataConfig(DataOptions):
    """What to load and how: the user's data options (:class:`dstbench.config.DataOptions`, declared
    there once) and what the run hands the loaders beside them.

    ``loader``: 'memory' holds the whole dataset as a tensor on the device, 'torch' a host copy (or, for
    imagefolder, a streaming DataLoader), 'ffcv' reads the betons in ``beton_dir``. imagefolder is
    always streamed, so 'memory' (the default) means 'torch' there.
    """

    seed: int = 0
    """The run's seed (``--seed``): shuffling, augmentation, subsets and synthetic data."""
    channels_last: bool = False
    """The run's memory format (``--channels-last``): batches come out in it."""
    synthetic_num_classes: int = 10
    download: bool = False
    """Let torchvision fetch CIFAR into data_dir when it is missing (``data prepare`` only)."""
    shard_rank: int = 0
    """DDP: this process reads piece ``shard_rank`` of ``shard_count`` of every batch."""
    shard_count: int = 1

    @classmethod
    def from_options(
        cls, options: DataOptions, *, seed: int, channels_last: bool = False, shard_rank: int = 0, shard_count: int = 1
    ) -> DataConfig:
        """A run's data group plus what the run decides: its seed, memory format and DDP shard."""
        fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(DataOptions)}
        return cls(**fields, seed=seed, channels_last=channels_last, shard_rank=shard_rank, shard_count=shard_count)


@dataclass
class DataBundle:
    """The loaders plus the facts the model and schedules need."""

    train: Loader
    test: Loader
    num_classes: int
    input_size: int
    num_train_samples: int


def _check_config(cfg: DataConfig) -> DatasetInfo:
    info = dataset_info(cfg.dataset)
    if cfg.loader not in LOADERS:
        raise ConfigError(f"unknown loader {cfg.loader!r}; valid choices: {', '.join(LOADERS)}")
    for name in ("batch_size", "eval_batch_size"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("max_train_samples", "max_test_samples"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1 or unset, got {value}")
    if cfg.auto_augment != "none" and not cfg.augment:
        raise ConfigError(f"--auto-augment {cfg.auto_augment} follows the crop and flip: it needs --augment")
    if cfg.num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {cfg.num_workers}")
    return info


def _subset_splits(splits: Splits, max_train: int | None, max_test: int | None, seed: int) -> Splits:
    train, test = splits.train, splits.test
    if max_train is not None and max_train < len(train):
        train = train.select(balanced_subset(train.labels, train.num_classes, max_train, seed))
    if max_test is not None and max_test < len(test):
        test = test.select(balanced_subset(test.labels, test.num_classes, max_test, seed))
    return Splits(train, test)


def load_splits(cfg: DataConfig) -> Splits:
    """Decoded (cached) train/test arrays of an in-memory dataset, subset as configured."""
    info = _check_config(cfg)
    if not info.in_memory:
        raise ConfigError(f"{cfg.dataset} is streamed from disk and cannot be loaded into memory")
    if cfg.dataset == "synthetic":
        splits = make_synthetic(cfg.seed, cfg.synthetic_num_classes, info.input_size,
                                cfg.synthetic_train_samples, cfg.synthetic_test_samples)
    else:
        splits = load_cifar(cfg.dataset, cfg.data_dir, download=cfg.download)
    return _subset_splits(splits, cfg.max_train_samples, cfg.max_test_samples, cfg.seed)


def _memory_bundle(cfg: DataConfig, info: DatasetInfo, device: torch.device) -> DataBundle:
    splits = load_splits(cfg)
    storage = device if cfg.loader == "memory" else torch.device("cpu")
    common: dict[str, Any] = dict(device=device, mean=info.mean, std=info.std, seed=cfg.seed,
                                  channels_last=cfg.channels_last, storage_device=storage,
                                  shard=(cfg.shard_rank, cfg.shard_count))
    train = TensorLoader(splits.train, cfg.batch_size, train=True, augment=cfg.augment, auto_augment=cfg.auto_augment,
                         **common)
    test = TensorLoader(splits.test, cfg.eval_batch_size, train=False, **common)
    return DataBundle(train, test, splits.train.num_classes, info.input_size, train.num_samples)


def _streaming_bundle(cfg: DataConfig, info: DatasetInfo, device: torch.device) -> DataBundle:
    from .streaming import StreamingLoader, aligned_folders, subset

    if cfg.shard_count > 1:
        raise ConfigError("DDP reads imagefolder data through FFCV: prepare betons and pass --loader ffcv")
    train_ds, test_ds = aligned_folders(cfg.data_dir, augment=cfg.augment, size=info.input_size,
                                        auto_augment=cfg.auto_augment)
    num_classes = len(train_ds.classes)
    train_sub = subset(train_ds, cfg.max_train_samples, cfg.seed)
    test_sub = subset(test_ds, cfg.max_test_samples, cfg.seed)
    common: dict[str, Any] = dict(device=device, seed=cfg.seed, num_workers=cfg.num_workers,
                                  channels_last=cfg.channels_last)
    train = StreamingLoader(train_sub, cfg.batch_size, train=True, **common)
    test = StreamingLoader(test_sub, cfg.eval_batch_size, train=False, **common)
    return DataBundle(train, test, num_classes, info.input_size, train.num_samples)


def _ffcv_bundle(cfg: DataConfig, info: DatasetInfo, device: torch.device) -> DataBundle:
    from .ffcv_io import FFCVLoader, check_beton, read_meta

    if cfg.auto_augment != "none":
        raise ConfigError(f"--auto-augment {cfg.auto_augment} is not implemented on --loader ffcv; use --loader memory "
                          "or torch")
    if cfg.beton_dir is None:
        raise ConfigError("loader='ffcv' needs beton_dir, a folder with train.beton and test.beton "
                          "(write them with `dstbench data prepare`)")
    beton_dir = Path(os.path.abspath(os.path.expanduser(cfg.beton_dir)))
    paths = [beton_dir / name for name in BETON_NAMES]
    labels = [check_beton(p) for p in paths]
    meta = read_meta(beton_dir)
    if meta is not None and meta.get("dataset") != cfg.dataset:
        raise ConfigError(f"{beton_dir} holds {meta.get('dataset')!r} betons but dataset is "
                          f"{cfg.dataset!r}")
    if meta is not None and isinstance(meta.get("classes"), list):
        num_classes = len(meta["classes"])
    elif info.classes is not None:
        num_classes = len(info.classes)
    elif cfg.dataset == "synthetic":
        num_classes = cfg.synthetic_num_classes
    else:
        num_classes = int(max(lab.max() for lab in labels)) + 1
    for path, lab in zip(paths, labels):
        if int(lab.min()) < 0 or int(lab.max()) >= num_classes:
            raise DataError(f"beton {path} has labels in [{int(lab.min())}, {int(lab.max())}] "
                            f"but {cfg.dataset} has {num_classes} classes")
    subsets: list[np.ndarray | None] = []
    for lab, limit in zip(labels, (cfg.max_train_samples, cfg.max_test_samples)):
        subsets.append(None if limit is None or limit >= lab.shape[0]
                       else balanced_subset(lab, num_classes, limit, cfg.seed))
    crop = None if info.in_memory else info.input_size
    common: dict[str, Any] = dict(device=device, mean=info.mean, std=info.std, seed=cfg.seed,
                                  num_workers=max(1, cfg.num_workers), channels_last=cfg.channels_last,
                                  crop_size=crop, distributed=cfg.shard_count > 1)
    if cfg.batch_size % cfg.shard_count:
        raise ConfigError(f"--batch-size {cfg.batch_size} must be divisible by the {cfg.shard_count} ranks")
    train = FFCVLoader(paths[0], cfg.batch_size // cfg.shard_count, train=True, augment=cfg.augment, indices=subsets[0],
                       labels=labels[0], **common)
    test = FFCVLoader(paths[1], cfg.eval_batch_size, train=False, indices=subsets[1],
                      labels=labels[1], **common)
    return DataBundle(train, test, num_classes, info.input_size, train.num_samples)


def build_data(cfg: DataConfig, device: torch.device) -> DataBundle:
    """Loaders for ``cfg`` that yield float NCHW batches and int64 labels on ``device``."""
    info = _check_config(cfg)
    if cfg.loader == "ffcv":
        return _ffcv_bundle(cfg, info, device)
    if not info.in_memory:
        return _streaming_bundle(cfg, info, device)
    return _memory_bundle(cfg, info, device)


def prepare(
    dataset: str,
    data_dir: str | None,
    out_dir: str,
    *,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    seed: int = 0,
    write_mode: str | None = None,
    jpeg_quality: int = 90,
    max_resolution: int | None = None,
    num_workers: int = 2,
    download: bool = False,
    synthetic_train_samples: int = 2000,
    synthetic_test_samples: int = 500,
    synthetic_num_classes: int = 10,
) -> list[str]:
    """Write ``out_dir/train.beton`` and ``out_dir/test.beton`` (plus ``meta.json``); return the
    beton paths.

    Small datasets are written from the decoded arrays with raw pixels by default (exact, and
    decoding 32x32 JPEGs would cost more than reading them); imagefolder defaults to JPEG. Each file is
    renamed into place only when complete.
    """
    from .ffcv_io import write_beton, write_meta

    cfg = DataConfig(dataset=dataset, data_dir=data_dir, batch_size=1,
                     max_train_samples=max_train_samples, max_test_samples=max_test_samples,
                     seed=seed, download=download, synthetic_train_samples=synthetic_train_samples,
                     synthetic_test_samples=synthetic_test_samples,
                     synthetic_num_classes=synthetic_num_classes)
    info = _check_config(cfg)
    out = Path(os.path.abspath(os.path.expanduser(out_dir)))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create beton folder {out}: {describe(exc)}") from None
    paths = [str(out / name) for name in BETON_NAMES]
    meta: dict[str, Any] = {"dataset": dataset, "seed": seed, "max_train_samples": max_train_samples,
                            "max_test_samples": max_test_samples}
    if info.in_memory:
        splits = load_splits(cfg)
        for split, path in zip((splits.train, splits.test), paths):
            write_beton(split, path, write_mode=write_mode or "raw", jpeg_quality=jpeg_quality,
                        num_workers=num_workers)
        meta.update(classes=splits.train.classes, num_train=len(splits.train), num_test=len(splits.test))
    else:
        meta.update(_write_folder_betons(cfg, paths, write_mode=write_mode or "jpg", jpeg_quality=jpeg_quality,
                                         max_resolution=max_resolution, num_workers=num_workers))
    try:
        write_meta(out, meta)
    except OSError as exc:
        raise DataError(f"cannot write {out}/meta.json: {describe(exc)}") from None
    return paths


def _write_folder_betons(
    cfg: DataConfig, paths: list[str], *, write_mode: str, jpeg_quality: int, max_resolution: int | None, num_workers: int
) -> dict[str, Any]:
    """Betons of an ImageFolder tree streamed file by file (too large to decode into memory first);
    returns what ``meta.json`` records of them."""
    from .ffcv_io import write_samples
    from .streaming import FolderRows, aligned_folders, subset

    train_ds, test_ds = aligned_folders(cfg.data_dir, augment=False, size=None)
    sizes = []
    for ds, limit, path in ((train_ds, cfg.max_train_samples, paths[0]), (test_ds, cfg.max_test_samples, paths[1])):
        part = subset(ds, limit, cfg.seed)
        write_samples(len(part), FolderRows(part), path, write_mode=write_mode, jpeg_quality=jpeg_quality,
                      max_resolution=max_resolution, num_workers=num_workers)
        sizes.append(len(part))
    return {"classes": list(train_ds.classes), "num_train": sizes[0], "num_test": sizes[1]}


__all__ = ["DATASETS", "LOADERS", "DataBundle", "DataConfig", "build_data", "load_splits", "prepare"]
