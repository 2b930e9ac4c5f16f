"""ImageNet-style folders streamed from disk with torchvision ``ImageFolder`` + ``DataLoader``.

ImageNet does not fit in memory, so images are decoded per batch by worker processes with the
standard recipe: RandomResizedCrop(224) + horizontal flip for training, Resize(256) + CenterCrop(224)
for evaluation, ImageNet normalisation. The DataLoader's generator is reseeded from (seed, epoch)
before each epoch; it drives both the shuffle and the worker seeds, so with ``num_workers > 0`` an
epoch is reproducible too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from dstbench.core.errors import DataError

from .augment import epoch_seed
from .catalog import IMAGENET_MEAN, IMAGENET_STD
from .errtext import describe
from .image_tree import TEST_SPLIT_NAMES
from .subset import balanced_subset


def load_rgb(path: str) -> Image.Image:
    """Pillow loader that names the file when it is broken (runs inside DataLoader workers)."""
    try:
        with open(path, "rb") as fh:
            img = Image.open(fh)
            return img.convert("RGB")
    except Exception as exc:  # Pillow raises many types for broken files
        raise DataError(f"cannot decode image {path}: {describe(exc)}") from None


def imagenet_transform(train: bool, size: int = 224, auto_augment: str = "none") -> Any:
    """torchvision's ImageNet pipeline; ``auto_augment`` adds that v2 policy after the flip (PIL)."""
    import torchvision.transforms as T

    from .auto_augment import policy_transform

    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        policy = [] if auto_augment == "none" else [policy_transform(auto_augment)]
        return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *policy, T.ToTensor(), norm])
    return T.Compose([T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size), T.ToTensor(), norm])


def split_dirs(data_dir: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """``(train/, val/ or test/)`` under ``data_dir``, with a clear error when either is missing."""
    if data_dir is None:
        raise DataError("imagefolder needs data_dir: a folder with train/<class>/ and val/<class>/")
    root = Path(os.path.abspath(os.path.expanduser(str(data_dir))))
    if not root.is_dir():
        raise DataError(f"imagefolder data_dir does not exist: {root}")
    train = root / "train"
    test = next((root / s for s in ("val", *TEST_SPLIT_NAMES) if (root / s).is_dir()), None)
    if not train.is_dir() or test is None:
        raise DataError(f"imagefolder data_dir {root} needs train/<class>/ and val/<class>/ (or test/)")
    return train, test


def image_folder(path: Path, transform: Any) -> Any:
    """torchvision ImageFolder with its FileNotFoundError turned into a DataError naming ``path``."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path), transform=transform, loader=load_rgb)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"bad image folder {path}: {describe(exc)}") from None


def aligned_folders(data_dir: str | os.PathLike[str] | None, *, augment: bool,
                    size: int | None, auto_augment: str = "none") -> tuple[Any, Any]:
    """Train and val ImageFolders whose labels agree.

    ImageFolder numbers the classes it finds in each folder separately, so a val/ with a class
    missing would shift every later label. Val targets are remapped to train's numbering, and a val
    class that train lacks is an error. ``size=None`` means no transform (PIL images, for ``prepare``).
    """
    train_dir, test_dir = split_dirs(data_dir)
    train_tf = None if size is None else imagenet_transform(augment, size, auto_augment)
    test_tf = None if size is None else imagenet_transform(False, size)
    train = image_folder(train_dir, train_tf)
    test = image_folder(test_dir, test_tf)
    if test.classes != train.classes:
        unknown = sorted(set(test.classes) - set(train.classes))
        if unknown:
            raise DataError(f"{test_dir} has classes missing from {train_dir}: {unknown[:5]}")
        remap = [train.class_to_idx[c] for c in test.classes]
        test.samples = [(p, remap[t]) for p, t in test.samples]
        test.imgs = test.samples
        test.targets = [t for _, t in test.samples]
        test.classes, test.class_to_idx = list(train.classes), dict(train.class_to_idx)
    return train, test


class FolderRows:
    """``i -> (HxWx3 uint8, label)`` over an untransformed ImageFolder (or Subset), for the writer."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __call__(self, i: int) -> tuple[np.ndarray, int]:
        image, label = self.dataset[i]
        return np.asarray(image, dtype=np.uint8), int(label)


def subset(ds: Any, n: int | None, seed: int) -> Any:
    """Class-balanced subset of an ImageFolder (targets are known without decoding)."""
    if n is None or n >= len(ds):
        return ds
    idx = balanced_subset(np.asarray(ds.targets, dtype=np.int64), len(ds.classes), n, seed)
    return Subset(ds, idx.tolist())


class StreamingLoader:
    """A torch ``DataLoader`` behind the :class:`~.loader.Loader` interface."""

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        device: torch.device,
        *,
        train: bool,
        seed: int = 0,
        num_workers: int = 2,
        channels_last: bool = False,
    ) -> None:
        self.device = device
        self.batch_size = batch_size
        self.num_samples = len(dataset)  # type: ignore[arg-type]
        self.seed = seed
        self.channels_last = channels_last
        self._epoch = 0
        self._gen = torch.Generator()
        self._loader: DataLoader[Any] = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=False,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            generator=self._gen,
            persistent_workers=False,
        )

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._gen.manual_seed(epoch_seed(self.seed, self._epoch))
        self._epoch += 1
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        batches = iter(self._loader)
        while True:
            try:
                x, y = next(batches)
            except StopIteration:
                return
            except DataError as exc:
                # A worker's error arrives with its whole traceback in the message; keep the
                # original one-line message.
                lines = [ln for ln in str(exc).splitlines() if ln.strip()]
                raise DataError(lines[-1].split("DataError: ", 1)[-1] if lines else str(exc)) from None
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=fmt)
            yield x, y.to(self.device, non_blocking=True)
