"""Attacks on run folders beyond damage (issue 22), shared by ``tests/test_faults.py`` and
``benchmarks/fault_injection.py``: files swapped for another run's, special files and links, and
concurrent writers on one folder.

* A **swap trial** replaces one random part of a finished run (its checkpoint, a snapshot, the masks
  folder, a text file, or every text file with the manifest) by another run's (another seed), as a
  copy or a symbolic link, then runs ``inspect``, ``report``, ``plot iou`` and ``--resume``: each must
  give exactly the untouched output or one line naming the file, with the folder left as it was.
* A **special-file trial** puts a FIFO, ``/dev/zero`` or ``/dev/urandom`` (linked) in place of a
  random run file: the same rule, and no command may hang (a FIFO read blocks forever).
* A **writer trial** starts two ``train`` processes on one ``--out``, ``delay`` seconds apart: exactly
  one must finish (exit 0) and leave a folder that verifies as its own run, the other must be refused
  in one line.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dstbench.runs.integrity import code_version
from tests import fault_trials as ft

OTHER_SEED = "6"
SWAPS = ("copy", "link")
SPECIAL = ("fifo", "/dev/zero", "/dev/urandom")


def other_run(folder: Path) -> Path:
    """The same run as ``ft.reference_run`` with another seed: the source of swapped files."""
    run = folder / "other"
    code, _, err = ft.run_main([*ft.ARGS, "--seed", OTHER_SEED, "--out", str(run)])
    assert code == 0, err
    return run


def swap_trial(reference: Path, other: Path, work: Path, expected: dict[str, Any], rng: random.Random) -> ft.DamageTrial:
    parts = ["checkpoint.pt", "masks", "text files and integrity.json", *sorted(ft._files(reference))]
    target = rng.choice(parts)
    how = rng.choice(SWAPS)

    def mutate(run: Path) -> str:
        sources = [other / p.name for p in [*other.glob("*.json"), *other.glob("*.jsonl")]] if target.startswith(
            "text files") else [other / target]
        for source in sources:
            dest = run / source.relative_to(other)
            if not source.exists():
                continue
            shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink(missing_ok=True)
            if how == "link":
                dest.symlink_to(source)
            elif source.is_dir():
                shutil.copytree(source, dest)
            else:
                shutil.copy(source, dest)
        return f"{target}: {how} of seed {OTHER_SEED}'s"

    # Any file of the folder may be the first a reader finds foreign (e.g. the checkpoint, when every
    # text file and the manifest come from the other run): the error must name a run file.
    names = tuple({Path(p).name for p in ft._files(reference)} | {"masks"})
    return ft.mutation_trial(reference, work, expected, f"{target}: {how}", mutate, names)


def special_trial(reference: Path, work: Path, expected: dict[str, Any], rng: random.Random) -> ft.DamageTrial:
    target = rng.choice(sorted(ft._files(reference)))
    kind = rng.choice(SPECIAL)

    def mutate(run: Path) -> str:
        path = run / target
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to(kind)
        return f"{target}: replaced by {kind}"

    return ft.mutation_trial(reference, work, expected, f"{target}: {kind}", mutate, (Path(target).name,))


@dataclass
class WriterTrial:
    description: str
    problem: str = ""


def writer_trial(reference: Path, other: Path, work: Path, delay: float) -> WriterTrial:
    """Two ``train`` processes (seeds of ``reference`` and ``other``) on one folder, ``delay`` s apart."""
    run = work / "contended"
    shutil.rmtree(run, ignore_errors=True)
    trial = WriterTrial(f"two writers {delay:.2f}s apart")
    argv = [sys.executable, "-m", "dstbench.cli", *ft.ARGS, "--out", str(run)]
    # The writers record the code this process runs, whatever is committed while they train.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DSTBENCH_CODE_VERSION": code_version()["commit"] or ""}
    first = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    time.sleep(delay)
    second = subprocess.Popen([*argv, "--seed", OTHER_SEED], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              text=True, env=env)  # fmt: skip
    results = [(proc.communicate(timeout=300)[1], proc.returncode) for proc in (first, second)]
    codes = sorted(code for _, code in results)
    if codes != [0, 2]:
        trial.problem = f"{trial.description}: exit codes {codes}: {[err[-300:] for err, _ in results]}"
        return trial
    refused = next(err for err, code in results if code == 2)
    lines = [line for line in refused.splitlines() if line.startswith("dstbench: error: ")]
    if len(lines) != 1 or not ("being written by process" in lines[0] or "already holds a run" in lines[0]):
        trial.problem = f"{trial.description}: the second writer said {refused.strip()!r}"
        return trial
    winner = reference if results[0][1] == 0 else other
    if ft.fingerprint(run) != ft.fingerprint(winner):
        trial.problem = f"{trial.description}: the folder is not the finished run's (a lost or mixed run)"
    return trial
