"""Run folders that prove their own integrity, and the one reader every command uses for run files.

A benchmark whose numbers can be silently wrong cannot be trusted for any of them, so every file a run
leaves behind can be checked before it is believed:

* **Zip files** (``checkpoint.pt`` from ``torch.save`` and ``masks/*.npz`` from ``np.savez``) are
  *sealed*: the SHA-256 of the file as written goes into the zip's own comment field
  (``dstbench-sha256:<hex>``), in the same atomic write. ``torch.load`` and ``np.load`` still read the
  file unchanged; :func:`unseal` recomputes the hash and refuses a file that does not match.
* **Text files** (``config.json``, ``plan.json``, ``metrics.jsonl``, ``topology.jsonl``,
  ``summary.json``) are listed with their SHA-256 in ``integrity.json`` (the *manifest*), which also
  seals itself. A file is rewritten in two manifest steps (first both old and new hashes are accepted,
  then only the new one), so a kill between any two renames never makes a good file look damaged.
* **Every read** goes through :func:`read_json`, :func:`read_jsonl` and :func:`read_sealed_zip` (via
  ``RunDir`` and ``load_mask_snapshot``): truncation, garbled or non-UTF-8 bytes, bad zips, bad CRCs, ``NaN`` in
  JSON and hash mismatches all become one :class:`RunFileError` line naming the file.

Folders written before sealing existed (no manifest, unsealed zips) are read as *legacy*: one warning
that they are unverified, then the same parse checks, never a refusal.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import struct
import subprocess
import zipfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from dstbench.core.errors import DstbenchError

__all__ = [
    "RunFileError",
    "MANIFEST",
    "seal",
    "unseal",
    "is_sealed",
    "sha256",
    "read_text",
    "read_json",
    "read_jsonl",
    "parse_json",
    "read_sealed_zip",
    "Manifest",
    "clean_orphans",
    "code_version",
    "warn_legacy",
]
log = logging.getLogger(__name__)

MANIFEST = "integrity.json"
"""The text-file manifest of a run folder."""

ABSENT = "absent"
"""Accepted while a file's first version is being written: it may not exist yet."""
_TAG = b"dstbench-sha256:"
_COMMENT_LEN = len(_TAG) + 64
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22


class RunFileError(DstbenchError):
    """A run file is damaged (or not a run file): always one line that names the file."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- sealed zips ---------------------------------------------------------------------------------------
def seal(data: bytes) -> bytes:
    """``data`` (a zip without a comment) with its SHA-256 in the zip comment.

    The hash covers the bytes exactly as ``torch.save``/``np.savez`` produced them (comment length 0),
    so sealing is a pure append and unsealing reconstructs the hashed bytes exactly.
    """
    if len(data) < _EOCD_SIZE or data[-_EOCD_SIZE:-_EOCD_SIZE + 4] != _EOCD or data[-2:] != b"\0\0":
        raise ValueError("seal() expects a zip archive without a comment")
    comment = _TAG + sha256(data).encode()
    return data[:-2] + struct.pack("<H", len(comment)) + comment


def is_sealed(data: bytes) -> bool:
    tail = data[-_COMMENT_LEN - 2:]
    return len(tail) == _COMMENT_LEN + 2 and tail[:2] == struct.pack("<H", _COMMENT_LEN) and tail[2:].startswith(_TAG)


def _is_plain_zip(data: bytes) -> bool:
    """An unsealed zip as torch/numpy write it (how folders from before sealing look)."""
    return len(data) >= _EOCD_SIZE and data[-_EOCD_SIZE:-_EOCD_SIZE + 4] == _EOCD and data[-2:] == b"\0\0"


def unseal(data: bytes, path: Path) -> tuple[bytes, bool]:
    """(the verified zip bytes, whether they were sealed); :class:`RunFileError` if damaged.

    A file that is neither sealed nor an intact-looking plain zip is damaged: a garbled seal can
    never pass for an unsealed (legacy) file, because a plain zip ends in an empty-comment record.
    """
    if is_sealed(data):
        body = data[: -_COMMENT_LEN - 2] + b"\0\0"
        expected = data[-64:].decode("ascii", "replace")
        if sha256(body) != expected:
            raise RunFileError(f"{path} is damaged: its content does not match its SHA-256 seal")
        return body, True
    if _is_plain_zip(data):
        return data, False
    if not data:
        raise RunFileError(f"{path} is damaged: the file is empty")
    raise RunFileError(f"{path} is damaged: truncated or not a zip archive (no valid end record or seal)")


def read_sealed_zip(path: Path) -> tuple[bytes, bool]:
    """The verified bytes of a sealed zip run file (checkpoint or mask snapshot), and whether sealed."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing") from None
    except OSError as exc:
        raise RunFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    body, sealed = unseal(data, path)
    if not sealed:
        warn_legacy(path.parent.parent if path.parent.name == "masks" else path.parent)
        # A plain zip still has per-member CRCs: check them so legacy files fail loudly too.
        try:
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise RunFileError(f"{path} is damaged: {exc}") from None
        if bad is not None:
            raise RunFileError(f"{path} is damaged: bad CRC-32 for {bad}")
    return body, sealed


# -- text files ------------------------------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"bare {name} is not JSON")


def parse_json(text: str, path: Path) -> Any:
    """Strict JSON: ``NaN``/``Infinity`` are errors, not numbers."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise RunFileError(f"{path} is damaged: {str(exc).splitlines()[0]}") from None


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing") from None
    except IsADirectoryError:
        raise RunFileError(f"{path} is a directory, not a file") from None
    except OSError as exc:
        raise RunFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_text(path: Path, data: bytes | None = None) -> str:
    raw = read_bytes(path) if data is None else data
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path} is damaged: not UTF-8 text (byte {exc.start})") from None


def read_json(path: Path, manifest: Manifest | None = None) -> Any:
    """One JSON file, checked against ``manifest`` when the run has one."""
    data = read_bytes(path)
    if manifest is not None:
        manifest.verify(path, data)
    return parse_json(read_text(path, data), path)


def read_jsonl(path: Path, manifest: Manifest | None = None) -> list[Any]:
    data = read_bytes(path)
    if manifest is not None:
        manifest.verify(path, data)
    rows = []
    for number, line in enumerate(read_text(path, data).splitlines(), 1):
        if line.strip():
            row = parse_json(line, Path(f"{path}:{number}"))
            if not isinstance(row, dict):
                raise RunFileError(f"{path} is damaged: line {number} is not a JSON object")
            rows.append(row)
    return rows


# -- the manifest ----------------------------------------------------------------------------------------
class Manifest:
    """``integrity.json``: accepted SHA-256s of the run's text files, sealed by its own hash.

    ``files`` maps a path relative to the run folder to the list of hashes accepted for it (two while
    a rewrite is in flight, one otherwise). ``Manifest.load`` returns None for a legacy folder.
    """

    def __init__(self, root: Path, files: dict[str, list[str]] | None = None) -> None:
        self.root = root
        self.files: dict[str, list[str]] = files or {}

    @property
    def path(self) -> Path:
        return self.root / MANIFEST

    @staticmethod
    def _digest(files: Mapping[str, list[str]]) -> str:
        return sha256(json.dumps(files, sort_keys=True).encode())

    @classmethod
    def load(cls, root: Path) -> Manifest | None:
        path = root / MANIFEST
        if not path.exists():
            return None
        data = parse_json(read_text(path), path)
        files = data.get("files") if isinstance(data, dict) else None
        if (
            not isinstance(files, dict)
            or not all(isinstance(v, list) and all(isinstance(h, str) for h in v) for v in files.values())
            or data.get("sha256") != cls._digest(files)
        ):
            raise RunFileError(f"{path} is damaged: its content does not match its own SHA-256")
        return cls(root, files)

    def _key(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name

    def verify(self, path: Path, data: bytes) -> None:
        key = self._key(path)
        accepted = self.files.get(key)
        if accepted is None:
            raise RunFileError(f"{path} is not listed in {self.path.name}: written by something else, or damaged")
        if sha256(data) not in accepted:
            raise RunFileError(f"{path} is damaged: its content does not match its SHA-256 in {self.path.name}")

    def save(self) -> None:
        from dstbench.runs.atomic import atomic_write_json

        atomic_write_json(self.path, {"files": self.files, "sha256": self._digest(self.files), "format": 1})

    def write(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` so that the file is always either the old or the new version and
        the manifest always accepts whichever one is on disk."""
        from dstbench.runs.atomic import atomic_write_bytes

        key = self._key(path)
        digest = sha256(data)
        old = self.files.get(key) or ([] if path.exists() else [ABSENT])
        if old != [digest]:
            self.files[key] = sorted({*old, digest})
            self.save()
        atomic_write_bytes(path, data)
        if self.files[key] != [digest]:
            self.files[key] = [digest]
            self.save()

    def lists_as_present(self, path: Path) -> bool:
        """Listed, and not possibly still unwritten (a kill between the manifest and the first write)."""
        accepted = self.files.get(self._key(path))
        return accepted is not None and ABSENT not in accepted


# -- housekeeping ----------------------------------------------------------------------------------------
def clean_orphans(folder: Path) -> list[Path]:
    """Remove temporary files a kill left behind mid-write (``.NAME.XXXX.tmp``, from ``atomic``)."""
    removed = []
    for directory in (folder, folder / "masks"):
        if not directory.is_dir():
            continue
        for path in directory.glob(".*.tmp"):
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    if removed:
        log.warning("removed %d temporary file(s) left by an interrupted write in %s", len(removed), folder)
    return removed


_warned_legacy: set[str] = set()


def warn_legacy(folder: Path) -> None:
    """Say once per folder that it predates sealing, so its files are parsed but not verified."""
    key = str(folder)
    if key not in _warned_legacy:
        _warned_legacy.add(key)
        log.warning("%s was written before integrity checks (no %s): its files are read unverified", folder, MANIFEST)


@lru_cache(maxsize=1)
def code_version() -> dict[str, str | None]:
    """The package version and, when dstbench runs from a git checkout, its commit.

    Uncommitted edits deliberately do not count: a run is tied to the code it was committed with.
    Cached per process, and first asked when training starts (``trainer.train``), so a commit made
    while a run trains is not recorded as its code.
    """
    from dstbench import __version__

    commit: str | None = None
    here = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        if result.returncode == 0 and len(result.stdout.strip()) == 40:
            commit = result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    env = os.environ.get("DSTBENCH_CODE_VERSION")  # pin for tests and for deliberate reuse across commits
    if env is not None:
        commit = env or None
    return {"package": __version__, "commit": commit}
