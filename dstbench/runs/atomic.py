"""Atomic file writes: a crash or a kill never leaves a half-written result or checkpoint.

Every write goes to a temporary file in the target's own directory (so the rename stays on one file
system), is flushed and fsynced, and is then renamed over the target with ``os.replace``. A kill can
leave the temporary file behind (``.NAME.XXXX.tmp``); ``integrity.clean_orphans`` removes those.
A failing file system (full disk, read-only, no permission) is a :class:`StorageError`: one line that
names the file, with the target left as it was.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from dstbench.core.errors import StorageError

__all__ = ["atomic_path", "scratch_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_jsonl", "finite_json", "json_text", "jsonl_text", "storage_message"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path beside ``final``; on success it replaces ``final``, else is removed.

    For writers that want a path (``np.savez``, the FFCV writer). ``mkstemp`` makes files readable
    by their owner only; the final file gets the usual umask permissions so shared data stays usable.
    """
    dest = Path(final)
    tmp = ""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except OSError as exc:
        raise StorageError(storage_message(dest, exc)) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def storage_message(dest: Path, exc: OSError) -> str:
    """``cannot write PATH: No space left on device (errno 28); PATH is unchanged``."""
    reason = exc.strerror or str(exc)
    code = f" (errno {exc.errno})" if exc.errno else ""
    return f"cannot write {dest}: {reason}{code}; {dest.name} is unchanged"


@contextlib.contextmanager
def scratch_path(beside: str | os.PathLike[str], suffix: str) -> Iterator[str]:
    """Yield an empty temporary file next to ``beside``; it is always removed afterwards."""
    dest = Path(beside)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    try:
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``: JSON has no NaN, so write null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def json_text(data: Any) -> str:
    """Pretty JSON; non-finite floats become null, since bare NaN is not JSON."""
    return json.dumps(finite_json(data), indent=2, sort_keys=True, allow_nan=False) + "\n"


def jsonl_text(rows: Iterable[Any]) -> str:
    return "".join(json.dumps(finite_json(row), sort_keys=True, allow_nan=False) + "\n" for row in rows)


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    atomic_write_text(path, json_text(data))


def atomic_write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> None:
    atomic_write_text(path, jsonl_text(rows))
