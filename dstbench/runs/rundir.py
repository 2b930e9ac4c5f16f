"""A run directory: everything a run leaves behind, in files that analysis reads without the model.

Layout::

    config.json        resolved TrainConfig
    plan.json          per-layer targets (shape, target count, sparsified or dense)
    metrics.jsonl      one line per epoch
    topology.jsonl     one line per topology update (step, epoch, seconds, IoU, grown/dropped per layer)
    masks/init.npz     bit-packed masks before training; masks/step_XXXXXXXX.npz after each update
    checkpoint.pt      model, optimizer, engine and method state after the last finished epoch
    rewind.pt          the model after ``--save-rewind-step`` steps, for lottery-ticket rewinding (optional)
    summary.json       final numbers (written once the run is complete)
    integrity.json     the run's identity and the SHA-256 of every file above (:mod:`dstbench.runs.integrity`)
    .dstbench-lock     present while a process writes the folder (:mod:`dstbench.runs.lock`)

Every file is written atomically; ``checkpoint.pt``, ``rewind.pt`` and the mask snapshots carry a seal
with their SHA-256 and the identity of their run, every file is listed in ``integrity.json``, and every
read is verified, including that the file belongs to this folder. Symbolic links inside a run folder
are refused. The jsonl files are
rewritten whole from state that is also in the checkpoint, and always *after* it, so they are never
ahead of it and a resumed run leaves exactly the files an uninterrupted one would.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import torch

from dstbench.runs.atomic import atomic_write_bytes, json_text, jsonl_text, storage_message
from dstbench.core.distributions import SparsityPlan
from dstbench.core.errors import CheckpointError, DstbenchError, StorageError
from dstbench.runs.integrity import Manifest, RunFileError, RunIdentity, check_member, clean_orphans, warn_legacy
from dstbench.runs.integrity import read_json as _read_json
from dstbench.runs.integrity import read_jsonl as _read_jsonl
from dstbench.engine.topology import TopologyRecord
from dstbench.runs.loading import load_state
from dstbench.runs.safe_read import refuse_links
from dstbench.runs.seals import config_digest, read_seal_tail, read_sealed_zip, seal, unseal
from dstbench.runs.snapshots import load_mask_snapshot, save_mask_snapshot

__all__ = ["RunDir", "check_output_dir", "snapshot_name"]
log = logging.getLogger(__name__)

_MISSING = object()


def snapshot_name(step: int, initial: bool = False) -> str:
    return "init.npz" if initial else f"step_{step:08d}.npz"


def check_output_dir(out: str | Path, what: str = "--out") -> None:
    """Fail early, in one line, on an output folder that cannot hold a run (before hours of training)."""
    if not str(out).strip():  # (Path("") is ".", so check the text the user gave)
        raise StorageError(f"{what} is empty; give a folder for the output")
    path = Path(out)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            if parent == path:
                raise StorageError(f"{what} {path} is a file, not a folder")
            raise StorageError(f"{what} {path} is under {parent}, which is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(storage_message(path, exc).rsplit(";", 1)[0]) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StorageError(f"cannot write {path}: permission denied")


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._manifest: Any = _MISSING
        self.seen_identity: RunIdentity | None = None  # the checkpoint's, for a manifest --resume rebuilds

    config = property(lambda self: self.path / "config.json")
    plan = property(lambda self: self.path / "plan.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    topology = property(lambda self: self.path / "topology.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    checkpoint = property(lambda self: self.path / "checkpoint.pt")
    masks_dir = property(lambda self: self.path / "masks")
    rewind = property(lambda self: self.path / "rewind.pt")

    def is_complete(self) -> bool:
        return os.path.lexists(self.summary)  # a link in its place is refused when read, not skipped

    def refuse_links(self) -> None:
        """Refuse a folder with a symbolic link among its entries (or in ``masks/``), before writing:
        a linked ``masks/`` or checkpoint would make this run read, or overwrite, another run's files."""
        for directory in (self.path, self.masks_dir):
            if directory.is_symlink() or not directory.is_dir():
                if directory.is_symlink():
                    raise RunFileError(f"{directory} is a symbolic link to {os.readlink(directory)}: a run "
                                       "folder holds only its own files, refused")
                continue
            for entry in os.scandir(directory):
                if entry.is_symlink():
                    raise RunFileError(f"{entry.path} is a symbolic link to {os.readlink(entry.path)}: a run "
                                       "folder holds only its own files, refused")

    # -- integrity ---------------------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest | None:
        """The folder's manifest, or None for a folder written before integrity checks (legacy).

        A manifest with a run identity is checked against the seals of the zips it lists (their tails
        only), so a folder whose text files and manifest come from one run and checkpoint or masks
        from another is refused by every reader, including those that never open the checkpoint."""
        if self._manifest is _MISSING:
            manifest = Manifest.load(self.path)
            if manifest is not None and manifest.run is not None:
                _check_listed_seals(manifest)
            self._manifest = manifest
        loaded: Manifest | None = self._manifest
        return loaded

    def _intact_manifest(self) -> Manifest | None:
        """The manifest if it can be read (whatever the files it lists say); None if missing or damaged,
        for the readers ``--resume`` repairs from: the checkpoint and the snapshots it points to. An
        intact manifest of another run still binds them, so a mix-up is refused, not "repaired"."""
        try:
            return Manifest.load(self.path)
        except RunFileError:
            return None

    @property
    def identity(self) -> RunIdentity | None:
        """The run this folder holds (None: written before run identities, or legacy)."""
        if self._manifest is _MISSING or self._manifest is None:
            return self.seen_identity
        run: RunIdentity | None = self._manifest.run
        return run

    @property
    def legacy(self) -> bool:
        return self.manifest is None

    def clean_orphans(self) -> list[Path]:
        return clean_orphans(self.path)

    def start_manifest(self, identity: RunIdentity | None = None) -> None:
        """A new, empty manifest: the folder is (re)written from now on under integrity checks, as the
        run ``identity`` (a new run draws one; None keeps a folder from before identities as it was)."""
        self._manifest = Manifest(self.path, run=identity)
        self._manifest.save()

    def start_run(self, config: dict[str, Any]) -> None:
        """A new run in this folder: a new identity (random run id + config hash) and an empty manifest."""
        self.start_manifest(RunIdentity.new(config))

    def _write_text(self, path: Path, text: str) -> None:
        if self._manifest is _MISSING or self._manifest is None:
            self.keep_or_start_manifest()
        self._manifest.write(path, text.encode("utf-8"))

    # -- writing -----------------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        self._write_text(self.config, json_text(config))

    @staticmethod
    def plan_json(plan: SparsityPlan) -> dict[str, Any]:
        return {
            "sparsity": plan.sparsity,
            "distribution": plan.distribution,
            "dense_layers": plan.dense_layers,
            "structure": plan.structure,
            "layers": [
                {
                    "name": t.name,
                    "shape": list(t.layer.shape),
                    "kind": t.layer.kind,
                    "numel": t.numel,
                    "density": t.density,
                    "target_active": t.active,
                    "sparsified": t.sparsified,
                }
                for t in plan.targets
            ],
        }

    def write_plan(self, plan: SparsityPlan) -> None:
        self._write_text(self.plan, json_text(self.plan_json(plan)))

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        self._write_text(self.metrics, jsonl_text(rows))

    def write_topology(self, records: list[TopologyRecord]) -> None:
        self._write_text(self.topology, jsonl_text([r.to_json() for r in records]))

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._write_text(self.summary, json_text(summary))

    def save_masks(self, step: int, epoch: int, masks: dict[str, torch.Tensor], record: object) -> None:
        """A sealed snapshot, then its manifest entry: a kill in between leaves an unlisted file, which
        readers ignore and ``--resume`` removes (it belongs to an epoch after the last checkpoint)."""
        path = self.masks_dir / snapshot_name(step, record is None)
        if self._manifest is _MISSING or self._manifest is None:
            self.keep_or_start_manifest()
        digest = save_mask_snapshot(path, masks, self.identity, step=step, epoch=epoch)
        self._manifest.files[f"masks/{path.name}"] = [digest]
        self._manifest.save()

    def save_rewind(self, step: int, model: dict[str, torch.Tensor]) -> None:
        """The weights a lottery ticket rewinds to (``dstbench.grid.lottery``): the model after ``step`` steps,
        sealed like the checkpoint."""
        self._save_sealed(self.rewind, {"step": step, "model": {k: v.detach().cpu().clone() for k, v in model.items()}})

    def load_rewind(self) -> dict[str, Any]:
        """``rewind.pt`` after its seal is verified."""
        state = self._load_sealed(self.rewind)
        if not isinstance(state, dict) or "model" not in state or "step" not in state:
            raise CheckpointError(f"{self.rewind} is not a dstbench rewind file")
        return state

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self._save_sealed(self.checkpoint, state)

    def _save_sealed(self, path: Path, state: dict[str, Any]) -> None:
        """Sealed with the run's identity and listed in the manifest (two steps, like a text file)."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        if self._manifest is _MISSING or self._manifest is None:
            self.keep_or_start_manifest()
        sealed = seal(buffer.getvalue(), self.identity)
        self._manifest.write(path, sealed, unseal(sealed, path).digest)

    def _load_sealed(self, path: Path, map_location: str | torch.device = "cpu") -> Any:
        """A ``.pt`` of this run, verified, loaded without running code (``weights_only``).

        A manifest that cannot be read does not stop the checkpoint from being read on its own seal
        (``--resume`` rebuilds the manifest from it, with the identity seen here)."""
        manifest = self._intact_manifest()
        try:
            found = read_sealed_zip(path, self.path)
            check_member(path, found, manifest)
        except RunFileError as exc:
            raise CheckpointError(str(exc)) from None
        if path == self.checkpoint:
            self.seen_identity = found.identity
        return load_state(found.body, path, map_location)

    def remove(self, paths: list[Path]) -> None:
        """Delete files the next write would not replace (e.g. snapshots of an epoch lost to a kill)."""
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise StorageError(storage_message(path, exc).rsplit(";", 1)[0]) from None

    def keep_or_start_manifest(self) -> None:
        """Go on with an intact manifest (its two-step updates keep every file readable); replace a
        missing (legacy) or damaged one, keeping the identity the checkpoint was sealed with."""
        try:
            if self.manifest is not None:
                return
        except RunFileError:
            pass
        self.start_manifest(self.seen_identity)
        for path in (self.checkpoint, self.rewind):  # not rewritten by --resume: list them as they are
            if os.path.lexists(path):
                found = read_sealed_zip(path, self.path)
                check_member(path, found, None, self.seen_identity)
                self._manifest.files[path.name] = [found.digest]
        self._manifest.save()

    # -- reading -----------------------------------------------------------------------------------
    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The checkpoint after its seal is verified; nothing is written, whatever the outcome."""
        if not os.path.lexists(self.checkpoint):
            raise CheckpointError(f"no checkpoint to resume in {self.path} (expected {self.checkpoint.name})")
        state = self._load_sealed(self.checkpoint, map_location)
        if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
            raise CheckpointError(f"{self.checkpoint} is not a dstbench checkpoint")
        return state

    def _checked_manifest(self) -> Manifest | None:
        manifest = self.manifest
        if manifest is None:
            if self.config.exists():
                warn_legacy(self.path)
            if read_seal_tail(self.checkpoint) is not None:
                raise RunFileError(f"{self.path / 'integrity.json'} is missing, but the checkpoint is sealed: "
                                   "the folder is damaged (`--resume` rewrites it)")
        return manifest

    def read_json(self, path: Path) -> Any:
        if not os.path.lexists(path) and path.parent == self.path and path.name in ("config.json", "plan.json"):
            raise DstbenchError(f"{self.path} is not a dstbench run directory (no {path.name})")
        manifest = self._checked_manifest()
        data = _read_json(path, manifest, self.path)
        if not isinstance(data, dict):
            raise RunFileError(f"{path} is damaged: expected a JSON object, got {type(data).__name__}")
        if path == self.config and manifest is not None and manifest.run is not None:
            if config_digest(data) != manifest.run.config_sha256:
                raise RunFileError(f"{path} is not the config of {manifest.run} (its hash differs): another run's file")
        return data

    def read_jsonl(self, path: Path) -> list[Any]:
        manifest = self._checked_manifest()
        if not os.path.lexists(path):
            if manifest is not None and manifest.lists_as_present(path):
                raise RunFileError(f"{path} is missing (listed in {manifest.path.name})")
            return []
        return _read_jsonl(path, manifest, self.path)

    def optional_json(self, path: Path) -> dict[str, Any] | None:
        """A JSON file that may legitimately be absent (``summary.json`` of an unfinished run); absent
        but listed in the manifest is damage."""
        if os.path.lexists(path):
            data: dict[str, Any] = self.read_json(path)
            return data
        manifest = self._checked_manifest()
        if manifest is not None and manifest.lists_as_present(path):
            raise RunFileError(f"{path} is missing (listed in {manifest.path.name})")
        return None

    def snapshot_files(self) -> list[Path]:
        """The mask snapshots of the run, in time order: those in the manifest (a listed one that is
        missing is an error), or for a legacy folder every ``masks/*.npz``."""
        manifest = self._checked_manifest()
        if manifest is None:
            if self.masks_dir.is_symlink():
                raise RunFileError(f"{self.masks_dir} is a symbolic link: a run folder holds only its own files, refused")
            return sorted(self.masks_dir.glob("*.npz"), key=lambda p: (p.name != "init.npz", p.name))
        listed = sorted((k for k in manifest.files if k.startswith("masks/")), key=lambda k: (k != "masks/init.npz", k))
        paths = [self.path / key for key in listed]
        for path in paths:
            if not os.path.lexists(path):
                raise RunFileError(f"{path} is missing (listed in {manifest.path.name})")
        return paths

    def snapshot_paths(self, steps: list[int]) -> list[Path]:
        return [self.masks_dir / snapshot_name(0, True)] + [self.masks_dir / snapshot_name(s) for s in steps]

    def verify_snapshots(self, steps: list[int]) -> dict[str, str]:
        """Every snapshot the checkpoint's records point to exists, matches its seal and belongs to this
        run (the manifest's, or the checkpoint's identity while the manifest is rebuilt); their manifest
        keys and seal digests."""
        manifest = self._intact_manifest()
        found = {}
        for path in self.snapshot_paths(steps):
            load_mask_snapshot(path, manifest, self.seen_identity)
            found[f"masks/{path.name}"] = read_sealed_zip(path, self.path).digest
        return found

    def list_snapshots(self, hashes: dict[str, str]) -> None:
        """Make the manifest list exactly these snapshots (after ``--resume`` removed later ones)."""
        if self._manifest is _MISSING or self._manifest is None:
            self.keep_or_start_manifest()
        for key in [k for k in self._manifest.files if k.startswith("masks/")]:
            del self._manifest.files[key]
        self._manifest.files.update({key: [digest] for key, digest in hashes.items()})
        self._manifest.save()


def _check_listed_seals(manifest: Manifest) -> None:
    """Every zip the manifest lists is sealed with the manifest's identity and a listed digest (tails
    only: a damaged body is found when the file is read)."""
    for key in sorted(manifest.files):
        path = manifest.root / key
        if not key.endswith((".pt", ".npz")) or not os.path.lexists(path):
            continue
        refuse_links(path, manifest.root)
        found = read_seal_tail(path)
        if found is None:  # garbled or unsealed: the full read says which, in its own words
            check_member(path, read_sealed_zip(path, manifest.root), manifest)
        elif found.identity != manifest.run:
            check_member(path, found, manifest)
        elif found.digest not in manifest.files[key]:
            raise RunFileError(f"{path} is damaged: its content does not match its SHA-256 in {manifest.path.name}")
