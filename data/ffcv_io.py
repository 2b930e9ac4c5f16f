"""FFCV ``.beton`` files: writing them atomically and reading them behind the Loader interface.

FFCV decodes and augments in JIT-compiled (numba) code on background threads, which keeps fast GPUs
fed where a Python DataLoader cannot. It is optional: every ffcv import happens inside a function, so
``dstbench.data`` imports without it and a missing install becomes a ConfigError naming the extra.

Things about ffcv 1.0.2 this module works around:

* importing ffcv, building a ``Loader`` and starting an epoch call ``torch.set_num_threads`` (import
  sets 1 thread); the previous value is restored after each of these calls;
* the writer spins forever if a worker process dies while encoding, so samples that fail to load are
  replaced by a placeholder, recorded, and reported as a DataError after writing;
* the reader trusts the file: a truncated beton can make the compiled reader read past the mapped
  file, so the allocation table is checked against the file size before a Loader is built;
* the first epoch of each distinct pipeline JIT-compiles for several seconds (numba, no disk cache).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dstbench.core.errors import ConfigError, DataError

from .arrays import ArrayDataset
from dstbench.runs.atomic import atomic_path, scratch_path
from .errtext import describe

INSTALL_HINT = "install with pip install 'dstbench[ffcv]' (or pip install ffcv)"
WRITE_MODES = ("raw", "jpg", "smart", "proportion")
# ffcv stores samples in pages; each sample must fit in one. 8 MiB (ffcv's default) holds a raw
# 1600x1600 RGB image. Note every beton is at least about two pages long, however small the data.
PAGE_SIZE = 1 << 23
META_NAME = "meta.json"


@contextlib.contextmanager
def _keep_torch_threads() -> Iterator[None]:
    """Undo ffcv's ``torch.set_num_threads`` side effect for the duration of a call."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


@contextlib.contextmanager
def _bar_only_on_a_terminal() -> Iterator[None]:
    """ffcv's writer always draws a tqdm bar; in a redirected log that is thousands of ``\r`` lines.
    Draw it only when stderr is a terminal, as the training loop does."""
    import ffcv.writer

    drawn = ffcv.writer.tqdm
    ffcv.writer.tqdm = functools.partial(drawn, disable=not sys.stderr.isatty())
    try:
        yield
    finally:
        ffcv.writer.tqdm = drawn


def require_ffcv() -> None:
    """Import ffcv (restoring torch's thread count), or raise a ConfigError saying how to get it."""
    with _keep_torch_threads():
        try:
            import ffcv  # noqa: F401
            import ffcv.loader  # noqa: F401
            import ffcv.writer  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"loader='ffcv' needs the ffcv package ({describe(exc)}); {INSTALL_HINT}") from None


# --------------------------------------------------------------------------------------- writing


class _Samples:
    """Indexable ``(HxWx3 uint8, label)`` view that ffcv's writer workers read from.

    ``load(i)`` may fail (a broken file in an image folder); the failure is appended to
    ``error_log`` and a 1x1 placeholder is written instead, because an exception inside an ffcv
    writer worker would leave the parent waiting forever.
    """

    def __init__(self, n: int, load: Callable[[int], tuple[np.ndarray, int]], error_log: str,
                 max_raw_bytes: int | None, max_resolution: int | None) -> None:
        self.n = n
        self.load = load
        self.error_log = error_log
        self.max_raw_bytes = max_raw_bytes
        self.max_resolution = max_resolution

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        try:
            image, label = self.load(int(i))
            image = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image shape {image.shape} is not HxWx3")
            if self.max_raw_bytes is not None:
                h, w = image.shape[:2]
                scale = 1.0 if self.max_resolution is None else min(1.0, self.max_resolution / max(h, w))
                raw = int(h * scale) * int(w * scale) * 3
                if raw > self.max_raw_bytes:  # ffcv would fail inside its worker and hang
                    raise ValueError(f"{w}x{h} image needs {raw} bytes raw, more than a "
                                     f"{self.max_raw_bytes}-byte page; use write_mode='jpg' or max_resolution")
            return image, int(label)
        except Exception as exc:  # reported by the parent after the writer finishes
            with open(self.error_log, "a") as fh:
                fh.write(f"sample {i}: {describe(exc)}" + "\n")
            return np.zeros((1, 1, 3), dtype=np.uint8), 0


def write_samples(
    n: int,
    load: Callable[[int], tuple[np.ndarray, int]],
    path: str | os.PathLike[str],
    *,
    write_mode: str = "raw",
    jpeg_quality: int = 90,
    max_resolution: int | None = None,
    num_workers: int = 2,
) -> str:
    """Write ``n`` samples ``load(i) -> (image, label)`` to ``path`` atomically; returns the path.

    The beton is written to a temporary file in the destination folder and renamed over ``path``
    only when complete, so a crash never leaves a truncated beton that looks valid.
    """
    if write_mode not in WRITE_MODES:
        raise ConfigError(f"unknown beton write_mode {write_mode!r}; valid choices: {', '.join(WRITE_MODES)}")
    if n < 1:
        raise DataError(f"refusing to write an empty beton {path}")
    require_ffcv()
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    final = Path(os.path.abspath(path))
    try:
        with atomic_path(final) as tmp, scratch_path(final, ".errors") as errors:
            fields = {
                "image": RGBImageField(write_mode=write_mode, max_resolution=max_resolution,
                                       jpeg_quality=jpeg_quality),
                "label": IntField(),
            }
            samples = _Samples(n, load, errors, None if write_mode == "jpg" else PAGE_SIZE, max_resolution)
            with _keep_torch_threads(), _bar_only_on_a_terminal():
                writer = DatasetWriter(tmp, fields, page_size=PAGE_SIZE, num_workers=max(1, num_workers))
                writer.from_indexed_dataset(samples)
            with open(errors) as fh:
                failures = fh.read().splitlines()
            if failures:
                raise DataError(f"{len(failures)} samples could not be written to {final}, "
                                f"first: {failures[0]}")
    except OSError as exc:
        raise DataError(f"cannot write beton {final}: {describe(exc)}") from None
    return str(final)


class _ArrayRows:
    """``i -> (images[i], labels[i])``; a class rather than a lambda so it pickles if the writer's
    worker processes are spawned instead of forked."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images
        self.labels = labels

    def __call__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])


def write_beton(
    dataset: ArrayDataset,
    path: str | os.PathLike[str],
    *,
    write_mode: str = "raw",
    jpeg_quality: int = 90,
    num_workers: int = 2,
) -> str:
    """Write an in-memory dataset (``image`` RGBImageField, ``label`` IntField) atomically.

    ``write_mode='raw'`` stores pixels exactly (best for 32x32 images: decoding is a memcpy);
    ``'jpg'`` trades exactness for size.
    """
    dataset.validate(f"dataset for {path}")
    return write_samples(
        len(dataset),
        _ArrayRows(dataset.images, dataset.labels),
        path,
        write_mode=write_mode,
        jpeg_quality=jpeg_quality,
        num_workers=num_workers,
    )


def write_meta(out_dir: str | os.PathLike[str], meta: dict[str, Any]) -> str:
    """``meta.json`` beside the betons: dataset name, classes, sizes (atomic like the betons)."""
    final = Path(out_dir) / META_NAME
    with atomic_path(final) as tmp, open(tmp, "w") as fh:
        json.dump(meta, fh, indent=1)
    return str(final)


def read_meta(beton_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``meta.json`` written by ``prepare``, or None if there is none (betons from elsewhere)."""
    path = Path(beton_dir) / META_NAME
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"corrupt beton metadata {path}: {describe(exc)}") from None
    if not isinstance(meta, dict):
        raise DataError(f"corrupt beton metadata {path}: expected a JSON object")
    return meta


# --------------------------------------------------------------------------------------- reading


def check_beton(path: str | os.PathLike[str]) -> np.ndarray:
    """Validate a beton's structure and return its labels (int64), or raise DataError.

    The checks (header, ``image``/``label`` fields, allocation table inside the file) are what the
    compiled reader relies on without checking; the labels give subsets and class counts without
    decoding any image.
    """
    require_ffcv()
    from ffcv.reader import Reader

    p = Path(path)
    if not p.is_file():
        raise DataError(f"beton not found: {p} (write it with `dstbench data prepare`)")
    try:
        with _keep_torch_threads():
            reader = Reader(str(p))
    except Exception as exc:  # ffcv's reader has no error contract: any failure means a bad file
        raise DataError(f"corrupt or unreadable beton {p}: {describe(exc)}") from None
    names = list(reader.handlers)
    if "image" not in names or "label" not in names:
        raise DataError(f"beton {p} has fields {names}; expected 'image' and 'label'")
    n = int(reader.num_samples)
    size = p.stat().st_size
    table = reader.alloc_table
    if n < 1 or reader.metadata.shape[0] != n:
        raise DataError(f"corrupt beton {p}: header says {n} samples, metadata holds {reader.metadata.shape[0]}")
    if table.shape[0] < n or int((table["ptr"] + table["size"]).max()) > size:
        raise DataError(f"corrupt or truncated beton {p}: image data lies outside the {size}-byte file")
    labels = np.asarray(reader.metadata[f"f{names.index('label')}"], dtype=np.int64).reshape(-1)
    return labels


class FFCVLoader:
    """An ``ffcv.loader.Loader`` behind the :class:`~.loader.Loader` interface.

    Shuffling follows ffcv's own (seed + epoch) order; ``set_epoch`` sets ffcv's epoch counter, so a
    resumed run sees the same order. ffcv's random flips/translations use numba's per-thread RNG and
    are not reproducible.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        batch_size: int,
        device: torch.device,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        train: bool,
        augment: bool = True,
        seed: int = 0,
        num_workers: int = 2,
        channels_last: bool = False,
        indices: np.ndarray | None = None,
        crop_size: int | None = None,
        labels: np.ndarray | None = None,
        distributed: bool = False,
    ) -> None:
        """``distributed``: ffcv's own per-rank sampling (DDP; ``batch_size`` is then per rank).
        ``crop_size`` set means variable-size (ImageNet-style) images: random-resized crops for
        training, centre crops (ratio 224/256) for evaluation. ``labels`` are the beton's labels if
        the caller already ran :func:`check_beton`."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if labels is None:
            labels = check_beton(path)
        require_ffcv()
        from ffcv.fields.decoders import IntDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import ToDevice, ToTensor

        self.path = str(path)
        self.batch_size = batch_size
        self.device = device
        self.num_samples = int(labels.shape[0] if indices is None else len(indices))
        image_ops = _image_pipeline(device, mean, std, train=train, augment=augment, channels_last=channels_last, crop_size=crop_size)
        label_ops: list[Any] = [IntDecoder(), ToTensor(), ToDevice(device, non_blocking=True)]
        try:
            with _keep_torch_threads():
                self._loader = Loader(
                    self.path,
                    batch_size=batch_size,
                    num_workers=max(1, num_workers),
                    order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
                    seed=seed,
                    os_cache=True,
                    drop_last=False,
                    indices=None if indices is None else np.asarray(indices, dtype=np.uint64),
                    distributed=distributed,
                    pipelines={"image": image_ops, "label": label_ops},
                )
        except DataError:
            raise
        except Exception as exc:  # see check_beton: any failure here is a bad file
            raise DataError(f"cannot open beton {self.path}: {describe(exc)}") from None

    def __len__(self) -> int:
        return len(self._loader)  # ffcv's count; per rank when distributed

    def set_epoch(self, epoch: int) -> None:
        self._loader.next_epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        with _keep_torch_threads():
            it = iter(self._loader)
        try:
            for x, y in it:
                # ffcv reuses its label buffers a few batches later; a copy is cheap and safe.
                yield x, y.reshape(-1).clone()
        finally:
            it.close()  # stops ffcv's prefetch thread when the trainer leaves an epoch early


def _image_pipeline(
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    train: bool,
    augment: bool,
    channels_last: bool,
    crop_size: int | None,
) -> list[Any]:
    """ffcv's image operations: decode (fixed size, or random-resized / centre crops for
    ImageNet-style images), flips and translations when augmenting, then a normalised float tensor on
    ``device``."""
    import torchvision.transforms as T
    from ffcv.fields.decoders import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder, SimpleRGBImageDecoder
    from ffcv.transforms import Convert, RandomHorizontalFlip, RandomTranslate, ToDevice, ToTensor, ToTorchImage

    decoder: Any
    if crop_size is None:
        decoder = SimpleRGBImageDecoder()
    elif train:
        decoder = RandomResizedCropRGBImageDecoder((crop_size, crop_size))
    else:
        decoder = CenterCropRGBImageDecoder((crop_size, crop_size), ratio=224 / 256)
    image_ops: list[Any] = [decoder]
    if train and augment:
        image_ops.append(RandomHorizontalFlip())
        if crop_size is None:
            image_ops.append(RandomTranslate(padding=4))
    return image_ops + [
        ToTensor(),
        ToDevice(device, non_blocking=True),
        ToTorchImage(channels_last=channels_last),
        Convert(torch.float32),
        # Convert keeps the 0..255 range, so the constants are scaled instead of the pixels.
        T.Normalize([255.0 * m for m in mean], [255.0 * s for s in std]),
    ]
