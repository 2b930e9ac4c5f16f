"""Decode an ImageFolder tree (``<split>/<class>/<image>``), on disk or inside a tar archive.

Used for small fixed-size datasets (CIFAR as JPEG/PNG): every image is decoded with Pillow into one
uint8 array. Samples are ordered by (class, file name) so labels and pixel order do not depend on
the order a file system or archive happens to list files in.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dstbench.core.errors import DataError

from .arrays import ArrayDataset, Splits
from .errtext import describe

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
TEST_SPLIT_NAMES = ("test", "val")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    return path.name.endswith(ARCHIVE_SUFFIXES)


def is_image_name(name: str) -> bool:
    base = os.path.basename(name)
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def decode_image(raw: bytes, where: str) -> np.ndarray:
    """Decode one file to uint8 HxWx3 (grey/RGBA/palette images are converted to RGB)."""
    try:
        with Image.open(io.BytesIO(raw)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # Pillow raises many types for broken files
        raise DataError(f"cannot decode image {where}: {describe(exc)}") from None


class _Collector:
    """Gathers (split, class, name) -> encoded bytes, then decodes each split in sorted order."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.files: dict[str, dict[str, list[tuple[str, bytes]]]] = {}

    def add(self, split: str, cls: str, name: str, raw: bytes) -> None:
        self.files.setdefault(split, {}).setdefault(cls, []).append((name, raw))

    def splits(self, canonical: Sequence[str] | None) -> Splits:
        if "train" not in self.files:
            raise DataError(f"no images under train/<class>/ in {self.where}")
        test_name = next((s for s in TEST_SPLIT_NAMES if s in self.files), None)
        if test_name is None:
            raise DataError(f"no images under test/<class>/ or val/<class>/ in {self.where}")
        train_classes = sorted(self.files["train"])
        classes = order_classes(train_classes, canonical, self.where)
        extra = sorted(set(self.files[test_name]) - set(classes))
        if extra:
            raise DataError(f"{self.where}: {test_name}/ has classes missing from train/: {extra}")
        return Splits(self._decode("train", classes), self._decode(test_name, classes))

    def _decode(self, split: str, classes: list[str]) -> ArrayDataset:
        images: list[np.ndarray] = []
        labels: list[int] = []
        for label, cls in enumerate(classes):
            for name, raw in sorted(self.files[split].get(cls, [])):
                images.append(decode_image(raw, f"{self.where}:{name}"))
                labels.append(label)
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise DataError(f"{self.where}: images in {split}/ differ in size ({sorted(shapes)[:4]}); "
                            "in-memory datasets need one size")
        return ArrayDataset(np.stack(images), np.asarray(labels, dtype=np.int64), list(classes))


def order_classes(found: list[str], canonical: Sequence[str] | None, where: str) -> list[str]:
    """Canonical label order when the dataset has one, else sorted folder names.

    A different number of classes than the canonical list means the wrong data was pointed at (e.g.
    a CIFAR-10 tree given as cifar100), which would otherwise train silently with a wrong head.
    """
    if canonical is None:
        return sorted(found)
    if len(found) != len(canonical):
        raise DataError(f"{where}: found {len(found)} class folders, expected {len(canonical)}")
    if set(found) == set(canonical):
        return list(canonical)
    return sorted(found)


def _split_class(parts: Sequence[str]) -> tuple[str, str] | None:
    """(split, class) for a path ending in ``<split>/<class>/<file>``, else None."""
    if len(parts) < 3:
        return None
    split, cls = parts[-3], parts[-2]
    if split not in ("train", *TEST_SPLIT_NAMES):
        return None
    return split, cls


def read_tree(root: Path, canonical: Sequence[str] | None) -> Splits:
    """Decode ``root/train/<class>/*`` and ``root/test|val/<class>/*``."""
    col = _Collector(str(root))
    for split in ("train", *TEST_SPLIT_NAMES):
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        for cls_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for f in cls_dir.iterdir():
                if f.is_file() and is_image_name(f.name):
                    try:
                        col.add(split, cls_dir.name, f.name, f.read_bytes())
                    except OSError as exc:
                        raise DataError(f"cannot read {f}: {describe(exc)}") from None
    return col.splits(canonical)


def tree_signature(root: Path) -> str:
    """Names, sizes and mtimes of every image, so edits to the tree invalidate the cache."""
    entries = []
    for split in ("train", *TEST_SPLIT_NAMES):
        for dirpath, _dirs, files in os.walk(root / split):
            for name in files:
                if is_image_name(name):
                    st = os.stat(os.path.join(dirpath, name))
                    entries.append(f"{os.path.relpath(dirpath, root)}/{name}:{st.st_size}:{st.st_mtime_ns}")
    entries.sort()
    return "tree:" + hashlib.sha1("\n".join(entries).encode()).hexdigest()


def iter_archive(path: Path) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) for every regular file, streaming (no extraction to disk)."""
    try:
        with tarfile.open(path, "r:*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                fh = tf.extractfile(member)
                if fh is None:
                    continue
                yield member.name, fh.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"corrupt or unreadable archive {path}: {describe(exc)}") from None


def read_archive_tree(path: Path, canonical: Sequence[str] | None) -> Splits:
    """Decode an archived ImageFolder tree; any leading folders before ``<split>/`` are ignored."""
    col = _Collector(str(path))
    for name, raw in iter_archive(path):
        if not is_image_name(name):
            continue
        sc = _split_class(name.strip("/").split("/"))
        if sc is not None:
            col.add(sc[0], sc[1], os.path.basename(name), raw)
    if not col.files:
        raise DataError(f"archive {path} holds no images under train/<class>/ and test/<class>/")
    return col.splits(canonical)
