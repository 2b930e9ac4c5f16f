"""One writer per run folder: an exclusive ``flock`` on ``.dstbench-lock`` while a process writes it.

Two ``train`` processes on one ``--out`` used to both exit 0, one run silently lost and the folder
verifying as the other. Every writer (``train`` and ``--resume`` for the whole run, ``compare``/``sweep``
reuse that may retrain a folder, ``report --out``) takes the lock first; a second writer is refused in
one line that names the holder's PID.

``flock`` locks belong to the open file, and the kernel drops them when the process dies however it
dies (SIGKILL included), so a lock file left by a killed run never blocks ``--resume``: the file is
only a place to lock and to read the holder's PID from. It is removed on release, which is safe
because an acquirer checks, after locking, that the file it locked is still the one at the path
(otherwise it locked a file a releasing process had just unlinked, and tries again).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from dstbench.core.errors import StorageError

__all__ = ["LOCK_FILE", "RunLocked", "run_lock", "holder"]

LOCK_FILE = ".dstbench-lock"
_held: dict[str, int] = {}  # folders this process holds, and how many nested holds: re-entering is free


class RunLocked(StorageError):
    """Another process is writing the folder."""


def holder(folder: str | Path) -> int | None:
    """The PID recorded by the process that holds (or last held) ``folder``'s lock, if readable."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def _acquire(path: Path, what: str) -> int:
    """An fd holding the exclusive lock on ``path``; :class:`RunLocked` if another process holds it."""
    for _ in range(100):  # each retry means a holder released between our open and our lock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StorageError(f"{path} is a symbolic link: a run folder holds only its own files, refused") from None
            raise StorageError(f"cannot lock {path.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = holder(path.parent)
            who = f"process {pid}" if pid is not None else "another process"
            raise RunLocked(
                f"{path.parent} is being written by {who} (it holds {LOCK_FILE}); {what} refused: wait for it "
                "to finish, or use another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    raise RunLocked(f"cannot lock {path.parent}: its lock file keeps changing")


@contextlib.contextmanager
def run_lock(folder: str | Path, what: str = "writing it", *, enabled: bool = True) -> Iterator[None]:
    """Hold ``folder``'s writer lock for the block (``folder`` must exist); ``enabled=False`` is a no-op
    (the ranks of a DDP run other than 0, which never write)."""
    if not enabled:
        yield
        return
    path = Path(folder) / LOCK_FILE
    key = os.path.realpath(folder)
    if key in _held:  # this process already writes it (compare's reuse check, then its training)
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = _acquire(path, what)
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino:
                os.unlink(path)
        os.close(fd)  # closing drops the flock
