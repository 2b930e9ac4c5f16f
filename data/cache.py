"""The decoded-uint8 cache: decode a source once, then read one ``.npz`` on every later run.

Decoding 60k JPEGs or unpickling five batch files costs seconds every time a run starts; a flat
uint8 ``.npz`` loads in a fraction of that. Where it lives:

* ``$DSTBENCH_CACHE`` when set (an explicit choice wins, and tests use it to stay out of shared data);
* otherwise beside the data (``<archive>.dstbench-<tag>.npz`` or ``<dir>/dstbench-<tag>-cache.npz``)
  when that location is writable, so the cache travels with the data;
* otherwise ``~/.cache/dstbench/<tag>-<hash of the data path>.npz``.

Each cache records a signature of its source (sizes and modification times). A stale cache (the source
changed) is rebuilt; when the source has disappeared the cache is still used, since it is the data.
Writes go to a temporary file that is renamed into place, so an interrupted run never leaves a
half-written cache that a later run would trust.

The same data under another path (the extracted folder of an archive already cached) is decoded once
more, since only decoding shows it is the same; but instead of a second full copy (185 MB for
CIFAR-10) it gets an *alias*: a small file naming the full cache, found through a digest of the
decoded arrays kept in ``<cache dir>/index/``. An alias whose full cache has gone is rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dstbench.core.errors import DataError, StorageError

from .arrays import ArrayDataset, Splits
from dstbench.runs.atomic import atomic_path

log = logging.getLogger(__name__)

CACHE_ENV = "DSTBENCH_CACHE"
# Bumped whenever the decoding changes, so old caches are rebuilt instead of silently reused.
CACHE_VERSION = "1"

_KEYS = ("train_images", "train_labels", "test_images", "test_labels", "classes", "signature")
_ALIAS_KEYS = ("alias_of", "content", "signature")


def user_cache_dir() -> Path:
    """``$DSTBENCH_CACHE`` if set, else ``~/.cache/dstbench``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "dstbench"


def cache_candidates(data_path: Path, tag: str) -> list[Path]:
    """Cache files to try for ``data_path``, preferred first (see the module docstring)."""
    data_path = Path(os.path.abspath(data_path))
    digest = hashlib.sha1(str(data_path).encode()).hexdigest()[:16]
    in_user_dir = user_cache_dir() / f"{tag}-{digest}.npz"
    if os.environ.get(CACHE_ENV):
        return [in_user_dir]
    if data_path.is_dir():
        beside = data_path / f"dstbench-{tag}-cache.npz"
    else:  # an archive, or a path that no longer exists (then only an archive cache can survive)
        beside = data_path.with_name(f"{data_path.name}.dstbench-{tag}.npz")
    return [beside, in_user_dir]


def _writable(path: Path) -> bool:
    """Whether a cache file can probably be created at ``path`` (its nearest existing folder is writable)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK)


def announce_decoding(tag: str, data_path: Path, candidates: list[Path]) -> None:
    """Say once that the source is being decoded and where the (large) cache will go.

    The line goes to stdout with the other progress lines; stderr is kept for the one-line error.

    Decoding is the one slow, silent step of a first run, and the cache is several times the size of a
    JPEG archive (185 MB for CIFAR-10 beside a 19 MB ``.tar.gz``): the user should see where it lands
    and how to put it elsewhere. Later runs read the cache and print nothing.
    """
    target = next((path for path in candidates if _writable(path)), candidates[-1])
    print(
        f"decoding {tag} from {data_path} into {target} (once; later runs read it; "
        f"set {CACHE_ENV}=DIR to keep caches in DIR instead)",
        flush=True,
    )


def atomic_write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` via a temporary file and a rename (see :mod:`.atomic`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def content_digest(splits: Splits) -> str:
    """A digest of the decoded arrays: equal exactly when two sources decode to the same data."""
    digest = hashlib.sha1()
    for part in (splits.train, splits.test):
        for array in (part.images, part.labels):
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    digest.update("\n".join(splits.train.classes).encode())
    return digest.hexdigest()


def _index_entry(tag: str, content: str) -> Path:
    return user_cache_dir() / "index" / f"{tag}-{content}.path"


def _holds(path: Path, content: str) -> bool:
    """Whether ``path`` is a full cache of exactly ``content`` (reads one small key, not the images)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return "alias_of" not in npz.files and "content" in npz.files and str(npz["content"]) == content
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def _full_cache_of(tag: str, content: str) -> Path | None:
    """An existing full cache holding exactly ``content`` (found through the index), or None."""
    try:
        path = Path(_index_entry(tag, content).read_text().strip())
    except OSError:
        return None
    return path if _holds(path, content) else None


def _register(tag: str, content: str, path: Path) -> None:
    """Name ``path`` as the full cache of ``content`` (best effort: without it, no alias is made)."""
    entry = _index_entry(tag, content)
    try:
        with atomic_path(entry) as tmp:
            Path(tmp).write_text(f"{path}\n")
    except (OSError, StorageError) as exc:
        log.info("could not index cache %s: %s", path, exc)


def _read(path: Path) -> tuple[Splits, str] | None:
    """Read a cache (following an alias); None (with a warning) if it is unreadable, so the caller
    can rebuild it."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "alias_of" in npz.files:
                alias = {k: str(npz[k]) for k in _ALIAS_KEYS}
                target = Path(alias["alias_of"])
                found = _read(target) if _holds(target, alias["content"]) else None
                if found is None:
                    raise ValueError(f"its full cache {alias['alias_of']} is gone or holds other data")
                return found[0], alias["signature"]
            if not all(k in npz.files for k in _KEYS):
                raise ValueError(f"missing keys, has {sorted(npz.files)}")
            arrays = {k: npz[k] for k in _KEYS}
        classes = [str(c) for c in arrays["classes"].tolist()]
        splits = Splits(
            ArrayDataset(arrays["train_images"], arrays["train_labels"], classes),
            ArrayDataset(arrays["test_images"], arrays["test_labels"], classes),
        )
        splits.train.validate(f"cache {path} (train)")
        splits.test.validate(f"cache {path} (test)")
        return splits, str(arrays["signature"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, DataError) as exc:
        log.warning("ignoring unreadable cache %s: %s", path, exc)
        return None


def load_or_build(
    data_path: Path,
    tag: str,
    signature: Callable[[], str | None],
    build: Callable[[], Splits],
) -> Splits:
    """Return the cached splits for ``data_path`` or build, cache and return them.

    ``signature()`` describes the current source, or returns None when the source is gone (then any
    readable cache is accepted). ``build()`` decodes the source; it raises DataError itself when the
    source is missing or broken.
    """
    candidates = cache_candidates(data_path, tag)
    current = signature()
    expected = None if current is None else f"v{CACHE_VERSION}:{current}"
    for path in candidates:
        if not path.is_file():
            continue
        found = _read(path)
        if found is None:
            continue
        splits, stored = found
        if expected is None or stored == expected:
            log.info("loaded %s from cache %s", tag, path)
            return splits
        log.info("cache %s is stale (source changed); rebuilding", path)

    if expected is None:
        raise DataError(f"{tag} data not found at {data_path} and no usable cache in "
                        f"{', '.join(str(p) for p in candidates)}")
    announce_decoding(tag, data_path, candidates)
    splits = build()
    _write(tag, candidates, splits, expected)
    return splits


def _write(tag: str, candidates: list[Path], splits: Splits, signature: str) -> None:
    """Write the cache of these splits to the first writable candidate: an alias when a full cache of
    the same data exists elsewhere, else a full cache (then indexed by its content)."""
    content = content_digest(splits)
    full = _full_cache_of(tag, content)
    if full is not None and full not in candidates:
        payload = {"alias_of": np.array(str(full)), "content": np.array(content), "signature": np.array(signature)}
    else:
        full = None
        payload = {
            "train_images": splits.train.images,
            "train_labels": splits.train.labels,
            "test_images": splits.test.images,
            "test_labels": splits.test.labels,
            "classes": np.array(splits.train.classes, dtype=str),
            "signature": np.array(signature),
            "content": np.array(content),
        }
    errors = []
    for path in candidates:
        try:
            atomic_write_npz(path, payload)
        except (OSError, StorageError) as exc:  # read-only data folder: fall through to the user cache
            errors.append(f"{path}: {exc}")
            continue
        if full is None:
            _register(tag, content, path)
            log.info("wrote %s cache %s", tag, path)
        else:
            print(f"the same {tag} data is cached in {full}: {path} points there instead of a second copy", flush=True)
        return
    log.warning("could not write a %s cache (%s); the data will be decoded again next time", tag, "; ".join(errors))
