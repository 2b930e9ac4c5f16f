"""CIFAR-10/100 from whichever form the user has, decoded once and cached.

``data_dir`` may be:

* the torchvision pickle folder (``cifar-10-batches-py`` / ``cifar-100-python``) or its parent;
* an ImageFolder tree with ``train/<class>/`` and ``test/<class>/`` (or ``val/``);
* a ``.tar.gz`` / ``.tgz`` / ``.tar`` of either (e.g. the official ``cifar-10-python.tar.gz`` or a
  JPEG tree such as ``cifar10-jpeg.tar.gz``), or a folder holding one such archive.

Accepting all of them means users point at the data they already have instead of converting it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from dstbench.core.errors import DataError

from .arrays import Splits
from .cache import load_or_build
from .catalog import dataset_info
from .cifar_pickle import LAYOUTS, PickleLayout, is_pickle_folder, read_pickle_folder, read_pickle_splits
from .errtext import describe
from .image_tree import (
    TEST_SPLIT_NAMES,
    is_archive,
    is_image_name,
    iter_archive,
    read_archive_tree,
    read_tree,
    tree_signature,
)

log = logging.getLogger(__name__)

# Archive names looked for when data_dir is a folder that holds the archive rather than the data.
KNOWN_ARCHIVES: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar10-jpeg.tar.gz", "cifar10.tar.gz"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar100-jpeg.tar.gz", "cifar100.tar.gz"),
}

_TORCHVISION_CLASS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}


class _Source:
    """A located source: what kind it is, where, and how to decode/fingerprint it."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind  # 'pickle' | 'tree' | 'archive'
        self.path = path


def _locate(name: str, data_dir: Path) -> _Source | None:
    layout = LAYOUTS[name]
    if data_dir.is_file():
        return _Source("archive", data_dir) if is_archive(data_dir) else None
    if not data_dir.is_dir():
        return None
    if is_pickle_folder(data_dir, layout):
        return _Source("pickle", data_dir)
    if is_pickle_folder(data_dir / layout.folder, layout):
        return _Source("pickle", data_dir / layout.folder)
    if (data_dir / "train").is_dir() and any((data_dir / s).is_dir() for s in TEST_SPLIT_NAMES):
        return _Source("tree", data_dir)
    for archive in KNOWN_ARCHIVES[name]:
        if (data_dir / archive).is_file():
            return _Source("archive", data_dir / archive)
    return None


def _signature(src: _Source, layout: PickleLayout) -> str:
    if src.kind == "tree":
        return tree_signature(src.path)
    files = [src.path] if src.kind == "archive" else [src.path / f for f in (*layout.files, layout.meta)]
    parts = []
    for f in files:
        if f.is_file():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return f"{src.kind}:" + hashlib.sha1("\n".join(parts).encode()).hexdigest()


def _read_archive(path: Path, name: str, layout: PickleLayout) -> Splits:
    """An archive holds either pickle batches (official download) or an image tree."""
    pickles: dict[str, bytes] = {}
    wanted = {*layout.files, layout.meta}
    has_images = False
    for member, raw in iter_archive(path):
        base = os.path.basename(member)
        if base in wanted and os.path.basename(os.path.dirname(member)) == layout.folder:
            pickles[base] = raw
        elif is_image_name(member):
            has_images = True
            break
    if pickles and not has_images:
        return read_pickle_splits(pickles.get, layout, f"{path}:{layout.folder}")
    return read_archive_tree(path, dataset_info(name).classes)


def _download(name: str, data_dir: Path) -> None:
    """Fetch the official pickle archive with torchvision (needs internet; only for
    ``load_cifar(..., download=True)``: the CLI never downloads)."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TORCHVISION_CLASS[name])
    log.info("downloading %s into %s", name, data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        cls(root=str(data_dir), train=True, download=True)
        cls(root=str(data_dir), train=False, download=True)
    except Exception as exc:  # network, disk and checksum failures all mean "no data"
        raise DataError(f"downloading {name} into {data_dir} failed: {describe(exc)}") from None


def load_cifar(name: str, data_dir: str | os.PathLike[str] | None, *, download: bool = False) -> Splits:
    """Train and test splits of ``cifar10`` / ``cifar100`` as uint8 arrays (cached after first decode)."""
    if name not in LAYOUTS:
        raise DataError(f"load_cifar handles cifar10 and cifar100, not {name!r}")
    if data_dir is None:
        raise DataError(f"{name} needs data_dir (a {LAYOUTS[name].folder} folder, an ImageFolder "
                        "tree with train/ and test/, or a .tar.gz of either)")
    path = Path(os.path.abspath(os.path.expanduser(str(data_dir))))
    layout = LAYOUTS[name]
    src = _locate(name, path)
    if src is None and download:
        _download(name, path)
        src = _locate(name, path)

    def signature() -> str | None:
        return None if src is None else _signature(src, layout)

    def build() -> Splits:
        if src is None:  # pragma: no cover - load_or_build raises before calling build
            raise DataError(f"{name} data not found at {path}")
        log.info("decoding %s from %s (once; later runs read the cache)", name, src.path)
        if src.kind == "pickle":
            return read_pickle_folder(src.path, layout)
        if src.kind == "tree":
            return read_tree(src.path, dataset_info(name).classes)
        return _read_archive(src.path, name, layout)

    if src is None and not path.exists():
        # Maybe the source was removed after caching: load_or_build accepts any cache then.
        try:
            return load_or_build(path, name, signature, build)
        except DataError:
            raise DataError(f"{name} data_dir does not exist: {path} (point --data-dir at a folder or "
                            ".tar.gz of the data; dstbench never downloads)") from None
    if src is None:
        raise DataError(f"no {name} data found in {path}: expected {layout.folder}/ (pickle batches), "
                        f"train/<class>/ + test/<class>/ image folders, or one of "
                        f"{', '.join(KNOWN_ARCHIVES[name])}")
    return load_or_build(path, name, signature, build)
