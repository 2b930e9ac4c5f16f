"""Run folders read safely (issue 22, items 1, 2, 3, 5): a file of another run is refused, loading
runs no code, one writer per folder, special files and links are refused, a refused command writes
nothing."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dstbench.cli.app import main
from dstbench.runs import safe_read
from dstbench.runs.integrity import Manifest, seal, sha256, unseal
from dstbench.runs.lock import LOCK_FILE, run_lock
from tests.kill import interrupted

TINY = ["--preset", "quick", "--epochs", "3", "--max-train-samples", "64", "--max-test-samples", "32",
        "--batch-size", "32", "--hp", "delta_t=1", "--quiet"]  # fmt: skip
COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "inspect": lambda run: ["inspect", str(run)],
    "report": lambda run: ["report", str(run), "--out", str(run.parent / "report")],
    "plot": lambda run: ["plot", "iou", str(run), "--out", str(run.parent / "iou.png")],
    "resume": lambda run: ["train", *TINY, "--seed", "0", "--out", str(run), "--resume"],
}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("seeds")
    runs = {seed: root / f"seed{seed}" for seed in (0, 1)}
    for seed, run in runs.items():
        assert main(["train", *TINY, "--seed", str(seed), "--out", str(run)]) == 0
    return runs


def _files(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): (os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
            for p in sorted(run.rglob("*")) if p.is_symlink() or p.is_file()}  # fmt: skip


def _losses(run: Path) -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(row["train_loss"], row["test_acc"]) for row in rows]


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("dstbench: error: ")]


def _swap(run: Path, other: Path, what: str) -> None:
    if what == "checkpoint":
        shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")
    elif what == "checkpoint link":
        (run / "checkpoint.pt").unlink()
        (run / "checkpoint.pt").symlink_to(other / "checkpoint.pt")
    elif what in ("init snapshot", "step snapshot"):
        name = "init.npz" if what == "init snapshot" else sorted(p.name for p in (run / "masks").glob("step_*"))[0]
        shutil.copy(other / "masks" / name, run / "masks" / name)
    elif what == "masks folder":
        shutil.rmtree(run / "masks")
        shutil.copytree(other / "masks", run / "masks")
    elif what == "masks link":
        shutil.rmtree(run / "masks")
        (run / "masks").symlink_to(other / "masks")
    elif what == "text files and manifest":
        for path in [*other.glob("*.json"), *other.glob("*.jsonl")]:
            shutil.copy(path, run / path.name)


SWAPS = ["checkpoint", "checkpoint link", "init snapshot", "step snapshot", "masks folder", "masks link",
         "text files and manifest"]  # fmt: skip
NAMED = {"checkpoint": "checkpoint.pt", "checkpoint link": "checkpoint.pt", "init snapshot": "init.npz",
         "step snapshot": "step_", "masks folder": "init.npz", "masks link": "masks",
         "text files and manifest": "checkpoint.pt"}  # fmt: skip


@pytest.mark.parametrize("what", SWAPS)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_file_of_another_run_is_refused_by_every_reader_and_nothing_is_written(
    seeds: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str, command: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(seeds[0], run, symlinks=True)
    _swap(run, seeds[1], what)
    before = _files(run)
    capsys.readouterr()
    assert main(COMMANDS[command](run)) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and NAMED[what] in errors[0], errors
    assert "another run" in errors[0] or "symbolic link" in errors[0], errors
    assert _files(run) == before


def test_a_partly_finished_run_does_not_resume_from_another_runs_snapshot(
    seeds: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    with interrupted(in_epoch=3):
        assert main(["train", *TINY, "--seed", "0", "--out", str(run)]) == 130
    for name in ("init.npz", "step_00000001.npz"):
        own = (run / "masks" / name).read_bytes()
        shutil.copy(seeds[1] / "masks" / name, run / "masks" / name)
        before = _files(run)
        capsys.readouterr()
        assert main(COMMANDS["resume"](run)) == 2
        assert f"masks/{name} belongs to another run" in _errors(capsys)[0]
        assert _files(run) == before
        (run / "masks" / name).write_bytes(own)


def test_a_config_that_is_not_the_runs_is_refused_even_with_its_hash_listed(
    seeds: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(seeds[0], run)
    shutil.copy(seeds[1] / "config.json", run / "config.json")
    manifest = Manifest.load(run)
    assert manifest is not None
    manifest.files["config.json"] = [sha256((run / "config.json").read_bytes())]  # listed, as if re-hashed
    manifest.save()
    assert main(["report", str(run), "--out", str(tmp_path / "r")]) == 2
    assert "config.json is not the config of run" in _errors(capsys)[0]


# -- loading runs no code ------------------------------------------------------------------------------
class _Touch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_a_malicious_pickle_is_refused_in_one_line_and_runs_nothing(
    seeds: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The checkpoint is properly sealed and listed (as if written by dstbench's own scheme): only
    ``weights_only`` stands between the pickle and the file it would create."""
    run = tmp_path / "run"
    shutil.copytree(seeds[0], run)
    marker = tmp_path / "pwned"
    manifest = Manifest.load(run)
    assert manifest is not None and manifest.run is not None
    buffer = io.BytesIO()
    torch.save({"epoch": 0, "model": {}, "payload": _Touch(marker)}, buffer)
    sealed = seal(buffer.getvalue(), manifest.run)
    (run / "checkpoint.pt").write_bytes(sealed)
    manifest.files["checkpoint.pt"] = [unseal(sealed, run / "checkpoint.pt").digest]
    manifest.save()
    for command in ("inspect", "resume"):
        assert main(COMMANDS[command](run)) == 2
        errors = _errors(capsys)
        assert len(errors) == 1 and "checkpoint.pt holds a pickled object" in errors[0], errors
        assert "refused without running it" in errors[0]
        assert not marker.exists()


# -- one writer per folder -----------------------------------------------------------------------------
def _holder(folder: Path) -> subprocess.Popen[str]:
    code = ("import sys, time; from dstbench.runs.lock import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_does_not_block(
    seeds: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    with interrupted(in_epoch=3):
        assert main(["train", *TINY, "--seed", "0", "--out", str(run)]) == 130
    holder = _holder(run)
    try:
        before = _files(run)
        for argv in (COMMANDS["resume"](run), ["report", str(run)]):
            capsys.readouterr()
            assert main(argv) == 2
            errors = _errors(capsys)
            assert len(errors) == 1 and f"being written by process {holder.pid}" in errors[0], errors
        assert _files(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / LOCK_FILE).exists()  # the killed holder's file stays; its lock went with the process
    assert main(COMMANDS["resume"](run)) == 0
    assert not (run / LOCK_FILE).exists()
    assert _losses(run) == _losses(seeds[0])


def test_two_train_processes_on_one_folder_one_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "dstbench.cli", "train", *TINY, "--epochs", "6"]
    first = subprocess.Popen([*argv, "--seed", "0", "--out", str(run)], stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = subprocess.Popen([*argv, "--seed", "1", "--out", str(run)], stderr=subprocess.PIPE, text=True)
    outcomes = sorted([(first.wait(120), first.pid, first.communicate()[1]), (second.wait(120), second.pid, second.communicate()[1])])
    (ok, _, _), (refused, _, err) = outcomes
    other = outcomes[0][1]
    assert (ok, refused) == (0, 2), outcomes
    assert err.strip().splitlines()[-1].startswith("dstbench: error: ")
    assert f"being written by process {other}" in err or "already holds a run" in err


def test_the_lock_is_reentrant_in_one_process_and_released(tmp_path: Path) -> None:
    with run_lock(tmp_path), run_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert not (tmp_path / LOCK_FILE).exists()


# -- special files, links, sizes -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, make, fragment",
    [
        ("config.json", lambda p: os.mkfifo(p), "is a FIFO (named pipe), not a regular file"),
        ("plan.json", lambda p: os.mkfifo(p), "is a FIFO (named pipe), not a regular file"),
        ("checkpoint.pt", lambda p: p.symlink_to("/dev/zero"), "is a symbolic link to /dev/zero"),
        ("summary.json", lambda p: p.symlink_to("/dev/urandom"), "is a symbolic link to /dev/urandom"),
        ("metrics.jsonl", lambda p: os.mkfifo(p), "is a FIFO (named pipe), not a regular file"),
    ],
)
def test_special_files_are_refused_in_one_line_without_hanging(
    seeds: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
    make: Callable[[Path], None], fragment: str,
) -> None:  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(seeds[0], run)
    (run / name).unlink()
    make(run / name)
    signal.alarm(60)  # a hang fails the test instead of the suite
    refused = 0
    try:
        for command in ("inspect", "report", "plot", "resume"):
            code = main(COMMANDS[command](run))
            errors = _errors(capsys)
            if code == 0:  # the command does not read that file, or --resume rebuilt it from the checkpoint
                continue
            assert code == 2 and len(errors) == 1 and name in errors[0] and fragment in errors[0], errors
            refused += 1
    finally:
        signal.alarm(0)
    assert refused >= 1


def test_a_file_larger_than_its_kind_may_be_is_refused_before_it_is_read(
    seeds: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(safe_read.LIMITS, ".pt", 1000)
    assert main(["inspect", str(seeds[0])]) == 2
    assert f"checkpoint.pt is {(seeds[0] / 'checkpoint.pt').stat().st_size:,} bytes, more than a run's .pt may be (1,000)" in _errors(capsys)[0]


def test_a_refused_resume_writes_nothing(seeds: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(seeds[0], run)
    (run / ".metrics.jsonl.abc.tmp").write_bytes(b"left by a kill")  # removed only by an accepted run
    before = _files(run)
    assert main(["train", *TINY, "--seed", "1", "--out", str(run), "--resume"]) == 2
    assert "seed was 0, now 1" in _errors(capsys)[0]
    assert _files(run) == before


def test_a_manifest_rebuilt_by_resume_lists_the_checkpoint_it_kept(
    seeds: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(seeds[0], run)
    (run / "integrity.json").unlink()
    assert main(COMMANDS["resume"](run)) == 0
    manifest = Manifest.load(run)
    assert manifest is not None and manifest.run is not None and "checkpoint.pt" in manifest.files
    assert main(COMMANDS["inspect"](run)) == 0, capsys.readouterr().err
