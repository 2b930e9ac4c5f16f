"""Reading a run file without trusting it: only regular files, no symbolic links, bounded sizes.

Run folders are shared (results, reproductions, copies between machines), so reading one must neither
hang nor exhaust memory nor follow a link out of the folder:

* a FIFO in place of ``config.json`` blocks an ordinary ``open`` forever, so the type is checked with
  ``os.lstat`` *before* opening, and the file is opened with ``O_NONBLOCK | O_NOFOLLOW`` (a file swapped
  for a FIFO or a link between the check and the open is then refused, not waited on);
* a symbolic link anywhere inside the run folder (``checkpoint.pt -> ../seed1/checkpoint.pt``,
  ``masks -> /elsewhere``, ``summary.json -> /dev/urandom``) is refused: a run folder holds only its
  own files, and a link makes another run's file (or a device) look like this run's;
* every file kind has a size limit, checked on the size the file system reports before anything is
  read and again while reading, so a huge or growing file is one line instead of a ``MemoryError``.

The limits are far above what any run writes (a ``plan.json`` of a 1,000-layer model is ~300 kB;
a checkpoint holds the model and two optimizer moments) and only stop what is not a run file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dstbench.core.errors import DstbenchError

__all__ = ["LIMITS", "read_regular", "refuse_links", "RunFileError"]

_MiB = 1 << 20
LIMITS: dict[str, int] = {
    ".json": 256 * _MiB,  # config, plan, summary, integrity: kB in practice
    ".jsonl": 4096 * _MiB,  # metrics (one line per epoch), topology (one line per update)
    ".npz": 16384 * _MiB,  # one bit-packed mask snapshot: 1/8 byte per weight
    ".pt": 1 << 40,  # checkpoint / rewind: model + optimizer state
}
"""The largest file of each kind that is read; anything else gets :data:`DEFAULT_LIMIT`."""
DEFAULT_LIMIT = 256 * _MiB
_CHUNK = 16 * _MiB


class RunFileError(DstbenchError):
    """A run file is damaged (or not a run file): always one line that names the file."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def refuse_links(path: Path, root: Path | None) -> None:
    """Refuse ``path`` if it, or any folder between ``root`` (exclusive) and it, is a symbolic link.

    ``root`` itself may be a link (``runs/latest -> runs/rigl_s0.9``): the folder is what the user named."""
    parts = [path]
    if root is not None:
        try:
            inner = path.relative_to(root).parts[:-1]
        except ValueError:
            inner = ()
        parts = [root.joinpath(*inner[: i + 1]) for i in range(len(inner))] + [path]
    for part in parts:
        try:
            mode = os.lstat(part).st_mode
        except FileNotFoundError:
            return  # the caller's read names the missing file
        except OSError as exc:
            raise RunFileError(f"cannot read {path}: {exc.strerror or exc}") from None
        if stat.S_ISLNK(mode):
            target = os.readlink(part)
            where = "" if part == path else f" (through {part})"
            raise RunFileError(
                f"{path} is a symbolic link{where} to {target}: a run folder holds only its own files, refused"
            )


def read_regular(path: Path, root: Path | None = None, limit: int | None = None) -> bytes:
    """The bytes of a run file that is a regular file of at most ``limit`` bytes; else one line."""
    limit = LIMITS.get(path.suffix, DEFAULT_LIMIT) if limit is None else limit
    refuse_links(path, root)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing") from None
    except OSError as exc:
        raise RunFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    _check(path, info, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing") from None
    except OSError as exc:
        raise RunFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise RunFileError(f"{path} was replaced while it was being opened; refused")
        _check(path, opened, limit)
        return _read_bounded(fd, path, limit)
    finally:
        os.close(fd)


def _check(path: Path, info: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        if stat.S_ISDIR(info.st_mode):
            raise RunFileError(f"{path} is a directory, not a file")
        raise RunFileError(f"{path} is {_kind(info.st_mode)}, not a regular file: refused without reading it")
    if info.st_size > limit:
        raise RunFileError(
            f"{path} is {info.st_size:,} bytes, more than a run's {path.suffix or 'file'} may be ({limit:,}): refused"
        )


def _read_bounded(fd: int, path: Path, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        except OSError as exc:
            raise RunFileError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise RunFileError(f"{path} grew past {limit:,} bytes while it was read: refused")
