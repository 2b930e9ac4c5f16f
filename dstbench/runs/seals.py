"""Seals: the SHA-256 of a zip run file, and the identity of the run it belongs to, in its zip comment.

``torch.save`` and ``np.savez`` write zip archives; the comment field at the end of a zip is free, so a
seal is appended there in the same atomic write and ``torch.load``/``np.load`` read the file unchanged.

* A **version 2 seal** (``dstbench-seal2:<run id>:<config sha256>:<digest>``) binds the file to its
  run: the run id is drawn at random when the run folder is created, the config hash is the SHA-256
  of the run's config (without ``out``), and the digest covers the zip *and* both of them. A valid
  checkpoint or mask snapshot of another run (another seed, method, or compare folder) is intact but
  carries another identity, so a reader that knows the folder's identity (from ``integrity.json``)
  refuses it.
* A **version 1 seal** (``dstbench-sha256:<digest of the zip>``) is what folders sealed before run
  identities existed carry; they are read and resumed as before.
* A zip without a seal is a folder from before sealing (legacy): parsed, per-member CRCs checked.

A seal is a keyless hash: it catches accidents, mix-ups and partial copies, not someone who rewrites a
file and recomputes the seal with this module (see the README's integrity section).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import stat
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dstbench.runs.safe_read import RunFileError, read_regular

__all__ = ["RunIdentity", "Seal", "config_digest", "seal", "unseal", "is_sealed", "read_sealed_zip", "read_seal_tail", "sha256"]

_TAG1 = b"dstbench-sha256:"
_LEN1 = len(_TAG1) + 64
_TAG2 = b"dstbench-seal2:"
_LEN2 = len(_TAG2) + 32 + 1 + 64 + 1 + 64
_SEAL2 = re.compile(rb"dstbench-seal2:([0-9a-f]{32}):([0-9a-f]{64}):([0-9a-f]{64})\Z")
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of a run's config without ``out`` (moving a folder does not make it another run)."""
    kept = {k: ({kk: vv for kk, vv in v.items() if kk != "out"} if isinstance(v, Mapping) else v)
            for k, v in config.items() if k != "out"}  # fmt: skip
    return sha256(json.dumps(kept, sort_keys=True).encode())


@dataclass(frozen=True)
class RunIdentity:
    """Which run a file belongs to: a random id drawn when the folder was created, and its config hash."""

    run_id: str
    config_sha256: str

    @classmethod
    def new(cls, config: Mapping[str, Any]) -> RunIdentity:
        return cls(secrets.token_hex(16), config_digest(config))

    @classmethod
    def from_json(cls, data: Any) -> RunIdentity | None:
        """The identity recorded in a manifest, or None if ``data`` is not a well-formed one."""
        if not isinstance(data, dict):
            return None
        run_id, digest = data.get("id"), data.get("config_sha256")
        if not (isinstance(run_id, str) and re.fullmatch("[0-9a-f]{32}", run_id)):
            return None
        if not (isinstance(digest, str) and re.fullmatch("[0-9a-f]{64}", digest)):
            return None
        return cls(run_id, digest)

    def to_json(self) -> dict[str, str]:
        return {"id": self.run_id, "config_sha256": self.config_sha256}

    def __str__(self) -> str:
        return f"run {self.run_id[:8]}, config {self.config_sha256[:8]}"


@dataclass(frozen=True)
class Seal:
    """A verified zip run file: its bytes as torch/numpy wrote them, and what its seal said."""

    body: bytes
    sealed: bool
    digest: str  # what the manifest lists for the file: v2 covers body + identity, v1/plain the body
    identity: RunIdentity | None


def _digest2(data: bytes, identity: RunIdentity) -> str:
    return sha256(data + f"\n{identity.run_id}:{identity.config_sha256}".encode())


def seal(data: bytes, identity: RunIdentity | None = None) -> bytes:
    """``data`` (a zip without a comment) with its seal (version 2 with ``identity``, else version 1).

    The digest covers the bytes exactly as ``torch.save``/``np.savez`` produced them (comment length
    0), so sealing is a pure append and unsealing reconstructs the hashed bytes exactly."""
    if len(data) < _EOCD_SIZE or data[-_EOCD_SIZE:-_EOCD_SIZE + 4] != _EOCD or data[-2:] != b"\0\0":
        raise ValueError("seal() expects a zip archive without a comment")
    if identity is None:
        comment = _TAG1 + sha256(data).encode()
    else:
        comment = _TAG2 + f"{identity.run_id}:{identity.config_sha256}:{_digest2(data, identity)}".encode()
    return data[:-2] + struct.pack("<H", len(comment)) + comment


def _version(data: bytes) -> int:
    for version, tag, length in ((2, _TAG2, _LEN2), (1, _TAG1, _LEN1)):
        tail = data[-length - 2:]
        if len(tail) == length + 2 and tail[:2] == struct.pack("<H", length) and tail[2:].startswith(tag):
            return version
    return 0


def is_sealed(data: bytes) -> bool:
    return _version(data) > 0


def _is_plain_zip(data: bytes) -> bool:
    """An unsealed zip as torch/numpy write it (how folders from before sealing look)."""
    return len(data) >= _EOCD_SIZE and data[-_EOCD_SIZE:-_EOCD_SIZE + 4] == _EOCD and data[-2:] == b"\0\0"


def unseal(data: bytes, path: Path) -> Seal:
    """The verified zip and its seal; :class:`RunFileError` if damaged.

    A file that is neither sealed nor an intact-looking plain zip is damaged: a garbled seal can
    never pass for an unsealed (legacy) file, because a plain zip ends in an empty-comment record."""
    version = _version(data)
    if version == 2:
        match = _SEAL2.search(data[-_LEN2:])
        if match is None:
            raise RunFileError(f"{path} is damaged: its seal is garbled")
        body = data[: -_LEN2 - 2] + b"\0\0"
        identity = RunIdentity(match[1].decode(), match[2].decode())
        digest = _digest2(body, identity)
        if digest != match[3].decode():
            raise RunFileError(f"{path} is damaged: its content does not match its SHA-256 seal")
        return Seal(body, True, digest, identity)
    if version == 1:
        body = data[: -_LEN1 - 2] + b"\0\0"
        digest = sha256(body)
        if digest != data[-64:].decode("ascii", "replace"):
            raise RunFileError(f"{path} is damaged: its content does not match its SHA-256 seal")
        return Seal(body, True, digest, None)
    if _is_plain_zip(data):
        return Seal(data, False, sha256(data), None)
    if not data:
        raise RunFileError(f"{path} is damaged: the file is empty")
    raise RunFileError(f"{path} is damaged: truncated or not a zip archive (no valid end record or seal)")


def read_sealed_zip(path: Path, root: Path | None = None) -> Seal:
    """The verified bytes and seal of a zip run file (checkpoint, rewind or mask snapshot).

    Whether the file belongs to the folder it is read from is :func:`dstbench.runs.integrity.check_member`'s
    question, asked by every reader that knows the folder."""
    found = unseal(read_regular(path, root), path)
    if not found.sealed:
        # A plain zip still has per-member CRCs: check them so legacy files fail loudly too.
        try:
            with zipfile.ZipFile(io.BytesIO(found.body)) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise RunFileError(f"{path} is damaged: {exc}") from None
        if bad is not None:
            raise RunFileError(f"{path} is damaged: bad CRC-32 for {bad}")
    return found


def read_seal_tail(path: Path) -> Seal | None:
    """The seal at the end of ``path`` without reading (or verifying) the rest: None if unsealed,
    unreadable or not a regular file. Cheap enough to check every file of a folder on opening it;
    the full check happens when the file itself is read."""
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        os.lseek(fd, max(0, info.st_size - _LEN2 - 2), os.SEEK_SET)
        tail = os.read(fd, _LEN2 + 2)
    except OSError:
        return None
    finally:
        os.close(fd)
    version = _version(tail)
    if version == 2 and (match := _SEAL2.search(tail)) is not None:
        return Seal(b"", True, match[3].decode(), RunIdentity(match[1].decode(), match[2].decode()))
    if version == 1:
        return Seal(b"", True, tail[-64:].decode("ascii", "replace"), None)
    return None
