"""Run folders that prove their own integrity and their own identity, and the one reader every
command uses for run files.

A benchmark whose numbers can be silently wrong cannot be trusted for any of them, so every file a run
leaves behind can be checked before it is believed:

* **Zip files** (``checkpoint.pt``, ``rewind.pt`` from ``torch.save`` and ``masks/*.npz`` from
  ``np.savez``) are *sealed* (:mod:`dstbench.runs.seals`): their SHA-256, and the identity of the run
  they belong to (a run id drawn when the folder was created, and the config hash), go into the zip's
  comment in the same atomic write.
* **The manifest** ``integrity.json`` records the run's identity and the SHA-256 of every file of the
  run (text files by their bytes, zips by their seal), and seals itself. A file is rewritten in two
  manifest steps (first both old and new hashes are accepted, then only the new one), so a kill
  between any two renames never makes a good file look damaged.
* **Every read** goes through :func:`read_json`, :func:`read_jsonl` and
  :func:`~dstbench.runs.seals.read_sealed_zip` + :func:`check_member` (via ``RunDir`` and
  ``load_mask_snapshot``), on regular files only (:mod:`dstbench.runs.safe_read`): truncation, garbled
  or non-UTF-8 bytes, bad zips, bad CRCs, ``NaN`` in JSON, hash mismatches, a file of another run, a
  symbolic link or a special file all become one :class:`RunFileError` line naming the file.

Folders written before sealing existed (no manifest, unsealed zips) are read as *legacy*: one warning
that they are unverified, then the same parse checks, never a refusal. Folders sealed before run
identities existed (a manifest without ``run``, version 1 seals) are verified as before.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from dstbench.runs.safe_read import RunFileError, read_regular
from dstbench.runs.seals import RunIdentity, Seal, is_sealed, read_sealed_zip, seal, sha256, unseal

__all__ = [
    "RunFileError",
    "RunIdentity",
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
    "check_member",
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


# -- text files ------------------------------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"bare {name} is not JSON")


def parse_json(text: str, path: Path) -> Any:
    """Strict JSON: ``NaN``/``Infinity`` are errors, not numbers."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise RunFileError(f"{path} is damaged: {str(exc).splitlines()[0]}") from None


def read_bytes(path: Path, root: Path | None = None) -> bytes:
    """A regular file's bytes, bounded (:func:`~dstbench.runs.safe_read.read_regular`)."""
    return read_regular(path, root)


def read_text(path: Path, data: bytes | None = None, root: Path | None = None) -> str:
    raw = read_bytes(path, root) if data is None else data
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path} is damaged: not UTF-8 text (byte {exc.start})") from None


def read_json(path: Path, manifest: Manifest | None = None, root: Path | None = None) -> Any:
    """One JSON file, checked against ``manifest`` when the run has one."""
    data = read_bytes(path, manifest.root if manifest is not None else root)
    if manifest is not None:
        manifest.verify(path, data)
    return parse_json(read_text(path, data), path)


def read_jsonl(path: Path, manifest: Manifest | None = None, root: Path | None = None) -> list[Any]:
    data = read_bytes(path, manifest.root if manifest is not None else root)
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
    """``integrity.json``: the run's identity and the accepted SHA-256s of its files, sealed by its own hash.

    ``files`` maps a path relative to the run folder to the list of hashes accepted for it (two while
    a rewrite is in flight, one otherwise). ``run`` is None in folders sealed before run identities
    (format 1). ``Manifest.load`` returns None for a legacy folder (no manifest).
    """

    def __init__(self, root: Path, files: dict[str, list[str]] | None = None, run: RunIdentity | None = None) -> None:
        self.root = root
        self.files: dict[str, list[str]] = files or {}
        self.run = run

    @property
    def path(self) -> Path:
        return self.root / MANIFEST

    @staticmethod
    def _digest(files: Mapping[str, list[str]], run: RunIdentity | None) -> str:
        content: Any = files if run is None else {"files": files, "run": run.to_json()}
        return sha256(json.dumps(content, sort_keys=True).encode())

    @classmethod
    def load(cls, root: Path) -> Manifest | None:
        path = root / MANIFEST
        if not os.path.lexists(path):
            return None
        data = parse_json(read_text(path, root=root), path)
        files = data.get("files") if isinstance(data, dict) else None
        run = RunIdentity.from_json(data.get("run")) if isinstance(data, dict) else None
        if (
            not isinstance(files, dict)
            or not all(isinstance(v, list) and all(isinstance(h, str) for h in v) for v in files.values())
            or (run is None and data.get("run") is not None)
            or data.get("sha256") != cls._digest(files, run)
        ):
            raise RunFileError(f"{path} is damaged: its content does not match its own SHA-256")
        return cls(root, files, run)

    def key(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name

    def verify(self, path: Path, data: bytes) -> None:
        self.verify_digest(path, sha256(data))

    def verify_digest(self, path: Path, digest: str) -> None:
        accepted = self.files.get(self.key(path))
        if accepted is None:
            raise RunFileError(f"{path} is not listed in {self.path.name}: written by something else, or damaged")
        if digest not in accepted:
            raise RunFileError(f"{path} is damaged: its content does not match its SHA-256 in {self.path.name}")

    def save(self) -> None:
        from dstbench.runs.atomic import atomic_write_json

        content: dict[str, Any] = {"files": self.files, "sha256": self._digest(self.files, self.run)}
        content.update({"format": 1} if self.run is None else {"format": 2, "run": self.run.to_json()})
        atomic_write_json(self.path, content)

    def write(self, path: Path, data: bytes, digest: str | None = None) -> None:
        """Write ``data`` to ``path`` so that the file is always either the old or the new version and
        the manifest always accepts whichever one is on disk (``digest``: a zip's seal digest)."""
        from dstbench.runs.atomic import atomic_write_bytes

        key = self.key(path)
        digest = sha256(data) if digest is None else digest
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
        accepted = self.files.get(self.key(path))
        return accepted is not None and ABSENT not in accepted


def check_member(path: Path, found: Seal, manifest: Manifest | None, identity: RunIdentity | None = None) -> None:
    """Refuse a sealed file that does not belong to the folder it is read from.

    ``manifest`` is the folder's (None: legacy or being repaired); ``identity`` the run the caller knows
    the folder to be (the checkpoint's, while ``--resume`` repairs a lost manifest). A file sealed with
    another run's identity, an unsealed or version-1 file in a folder with an identity, and a file whose
    seal digest the manifest does not list are each one line."""
    expected = manifest.run if manifest is not None and manifest.run is not None else identity
    if expected is not None and found.identity != expected:
        if found.identity is None:
            raise RunFileError(f"{path} carries no run identity, but its folder is {expected}: not this run's file")
        raise RunFileError(f"{path} belongs to another run ({found.identity}), not to this folder ({expected})")
    if expected is None and found.identity is not None and manifest is not None:
        raise RunFileError(f"{path} belongs to {found.identity}, but its folder records no run identity: not this run's file")
    if manifest is not None and (manifest.run is not None or manifest.key(path) in manifest.files):
        manifest.verify_digest(path, found.digest)
    if not found.sealed:
        warn_legacy(path.parent.parent if path.parent.name == "masks" else path.parent)


# -- housekeeping ----------------------------------------------------------------------------------------
def clean_orphans(folder: Path) -> list[Path]:
    """Remove temporary files a kill left behind mid-write (``.NAME.XXXX.tmp``, from ``atomic``)."""
    removed = []
    for directory in (folder, folder / "masks"):
        if directory.is_symlink() or not directory.is_dir():  # never into another folder through a link
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
