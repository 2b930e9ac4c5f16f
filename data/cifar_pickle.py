"""Read the official "python version" CIFAR batches (the folders torchvision downloads).

Layout: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``cifar-100-python/{train, test, meta}``. Each file is a pickled dict with ``data`` (N x 3072 uint8,
channel-major 32x32) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100).

Unpickling runs arbitrary code, so a restricted unpickler only lets through what these files
contain (numpy arrays and the codecs helper Python 3 uses for latin-1 bytes); anything else is
reported as a corrupt file instead of being executed.
"""

from __future__ import annotations

import importlib
import io
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dstbench.core.errors import DataError

from .arrays import ArrayDataset, Splits
from .catalog import CIFAR10_CLASSES, CIFAR100_CLASSES
from .errtext import describe


class PickleLayout:
    """File names and keys of one CIFAR variant."""

    def __init__(self, folder: str, train: tuple[str, ...], test: str, meta: str,
                 label_key: str, names_key: str, classes: tuple[str, ...]) -> None:
        self.folder = folder
        self.train = train
        self.test = test
        self.meta = meta
        self.label_key = label_key
        self.names_key = names_key
        self.classes = classes

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test)


LAYOUTS: dict[str, PickleLayout] = {
    "cifar10": PickleLayout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
        "batches.meta", "labels", "label_names", CIFAR10_CLASSES,
    ),
    "cifar100": PickleLayout(
        "cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names",
        CIFAR100_CLASSES,
    ),
}

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core" + module[len("numpy.core"):]  # avoid the deprecated alias
        return getattr(importlib.import_module(module), name)


def _load_dict(raw: bytes, where: str) -> dict[str, Any]:
    """Unpickle one batch file; keys come back as ``str`` whether the file stored bytes or str."""
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # any unpickling failure means a corrupt/foreign file
        raise DataError(f"corrupt CIFAR batch file {where}: {describe(exc)}") from None
    if not isinstance(obj, Mapping):
        raise DataError(f"corrupt CIFAR batch file {where}: expected a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _batch_arrays(raw: bytes, where: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _load_dict(raw, where)
    if "data" not in d or label_key not in d:
        raise DataError(f"corrupt CIFAR batch file {where}: needs keys 'data' and '{label_key}', "
                        f"has {sorted(d)}")
    try:
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (ValueError, TypeError) as exc:
        raise DataError(f"corrupt CIFAR batch file {where}: {describe(exc)}") from None
    if labels.shape != (images.shape[0],):
        raise DataError(f"corrupt CIFAR batch file {where}: {labels.size} labels for "
                        f"{images.shape[0]} images")
    return np.ascontiguousarray(images), labels


def _class_names(read: Callable[[str], bytes | None], layout: PickleLayout, where: str) -> list[str]:
    """Names from the meta file when present, else the canonical list (the meta is optional)."""
    raw = read(layout.meta)
    if raw is None:
        return list(layout.classes)
    d = _load_dict(raw, f"{where}/{layout.meta}")
    names = d.get(layout.names_key)
    if not isinstance(names, list) or len(names) != len(layout.classes):
        raise DataError(f"corrupt CIFAR meta file {where}/{layout.meta}: no {len(layout.classes)} "
                        f"'{layout.names_key}'")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def read_pickle_splits(read: Callable[[str], bytes | None], layout: PickleLayout, where: str) -> Splits:
    """Build both splits from a file reader (folder or archive), ``read(name)`` -> bytes or None."""
    classes = _class_names(read, layout, where)
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in layout.files:
        raw = read(name)
        if raw is None:
            raise DataError(f"CIFAR batch file missing: {where}/{name} (expected {', '.join(layout.files)})")
        parts[name] = _batch_arrays(raw, f"{where}/{name}", layout.label_key)
    train_x = np.concatenate([parts[n][0] for n in layout.train])
    train_y = np.concatenate([parts[n][1] for n in layout.train])
    test_x, test_y = parts[layout.test]
    return Splits(
        ArrayDataset(train_x, train_y, classes).validate(f"{where} (train)"),
        ArrayDataset(test_x, test_y, list(classes)).validate(f"{where} (test)"),
    )


def read_pickle_folder(folder: Path, layout: PickleLayout) -> Splits:
    """Both splits from a ``cifar-10-batches-py`` / ``cifar-100-python`` folder."""

    def read(name: str) -> bytes | None:
        path = folder / name
        if not path.is_file():
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {describe(exc)}") from None

    return read_pickle_splits(read, layout, str(folder))


def is_pickle_folder(folder: Path, layout: PickleLayout) -> bool:
    """True if ``folder`` holds this layout's first batch file (enough to pick this reader)."""
    return (folder / layout.train[0]).is_file()
