"""Fault trials shared by ``tests/test_faults.py`` (a few seeded cases) and ``benchmarks/fault_injection.py``
(hundreds): kills at random times and at every file write, and random damage to random run files.

A kill trial trains a tiny run in a forked child that dies (SIGKILL, or SIGTERM/SIGINT, which must end
with one line) at a random time or exactly at the Nth file write (after the fsync, before the rename,
or after the rename); ``--resume`` must then reach numbers bit-identical to an uninterrupted run.

A damage trial garbles one random file of a finished run (flipped bytes, truncation, non-UTF-8 bytes,
a bare NaN, an empty or deleted file) and runs ``inspect``, ``report``, ``plot iou`` and ``--resume``
on copies: each must either succeed with exactly the undamaged output (the file was not needed, or
``--resume`` repaired it) or fail with one ``dstbench: error:`` line naming the file, leaving the folder
byte-for-byte as it was, and never with a traceback.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dstbench.cli.app import main
from dstbench.runs.configs import read_config
from dstbench.runs.rundir import RunDir
from dstbench.runs.snapshots import load_mask_snapshot

ARGS = [
    "train", "--preset", "quick", "--method", "rigl", "--epochs", "3", "--seed", "5", "--max-train-samples", "96",
    "--max-test-samples", "32", "--batch-size", "32", "--hp", "delta_t=2", "--quiet",
]  # fmt: skip
TIMING = {
    "epoch_seconds", "update_seconds", "seconds", "train_seconds", "update_time_fraction", "update_share", "step_hook_share",
    "seconds_per_step", "recompress_seconds",
}  # fmt: skip
STAGES = ("after_fsync", "before_rename", "after_rename")


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit code, stdout, stderr). Any exception escaping is a bug."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def fingerprint(run: Path) -> dict[str, Any]:
    """Everything a run computed, minus wall-clock times: compared with ``==`` for bit-identity."""
    folder = RunDir(run)
    state = folder.load_checkpoint()
    summary = folder.optional_json(folder.summary)
    return {
        "metrics": _strip(folder.read_jsonl(folder.metrics)),
        "topology": _strip(folder.read_jsonl(folder.topology)),
        "summary": _strip(summary),
        "config": {k: v for k, v in read_config(folder).items() if k != "out"},
        "plan": folder.read_json(folder.plan),
        "model": {k: v.numpy().tobytes() for k, v in state["model"].items()},
        "masks": {p.name: {k: v.tobytes() for k, v in load_mask_snapshot(p).items()} for p in folder.snapshot_files()},
    }


def reference_run(folder: Path) -> Path:
    run = folder / "reference"
    code, _, err = run_main([*ARGS, "--out", str(run)])
    assert code == 0, err
    return run


# -- kills ----------------------------------------------------------------------------------------------
@dataclass
class KillTrial:
    description: str
    killed: bool = False
    identical: bool = False
    problem: str = ""


def _child(run: Path, stage: str | None, nth: int, stderr_path: Path) -> None:
    """In the forked child: train, dying at the ``nth`` file-write event ``stage`` (if given)."""
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    code = 99
    try:
        import sys

        sys.stderr = os.fdopen(2, "w", buffering=1)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        count = {"n": 0}
        real_fsync, real_replace = os.fsync, os.replace

        def event(name: str) -> None:
            if name == stage:
                count["n"] += 1
                if count["n"] == nth:
                    os.kill(os.getpid(), signal.SIGKILL)

        def fsync(fd_: int) -> None:
            real_fsync(fd_)
            event("after_fsync")

        def replace(src: Any, dst: Any) -> None:
            event("before_rename")
            real_replace(src, dst)
            event("after_rename")

        os.fsync, os.replace = fsync, replace  # type: ignore[assignment]
        code = main([*ARGS, "--out", str(run)])
    except BaseException as exc:  # noqa: BLE001  (reported through the exit code and stderr file)
        import traceback

        traceback.print_exc()
        code = 98 if not isinstance(exc, SystemExit) else 97
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def kill_trial(reference: Path, work: Path, *, stage: str | None = None, nth: int = 0,
               after: float = 0.0, signum: int = signal.SIGKILL) -> KillTrial:  # fmt: skip
    """Kill a fresh run (at a write, or ``after`` seconds with ``signum``), resume it, compare."""
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    stderr_path = work / "child.stderr"
    what = f"{stage} #{nth}" if stage else f"{signal.Signals(signum).name} after {after:.2f}s"
    trial = KillTrial(what)
    pid = os.fork()
    if pid == 0:
        _child(run, stage, nth, stderr_path)
    if stage is None:
        time.sleep(after)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    _, status = os.waitpid(pid, 0)
    err = stderr_path.read_text(errors="replace")
    if "Traceback" in err:
        trial.problem = f"traceback in the killed run: {err[-400:]}"
        return trial
    trial.killed = os.WIFSIGNALED(status) or (os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) not in (0, 128 + signal.SIGINT, 128 + signal.SIGTERM):
        trial.problem = f"killed run exited {os.WEXITSTATUS(status)}: {err[-400:]}"
        return trial
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
        lines = [line for line in err.splitlines() if line.startswith("dstbench:")]
        if len(lines) != 1 or "interrupted by" not in lines[0] or "--resume" not in lines[0]:
            trial.problem = f"{what}: expected one 'interrupted' line, got {err!r}"
            return trial
    code, _, err = run_main(["inspect", str(run)])  # a kill never makes a good file look damaged
    if code != 0 and ("damaged" in err or "Traceback" in err or "missing" in err):
        trial.problem = f"{what}: after the kill, inspect says {err.strip()!r}"
        return trial
    code, _, err = run_main([*ARGS, "--out", str(run), "--resume"])
    if code != 0:
        trial.problem = f"{what}: --resume exited {code}: {err.strip()}"
        return trial
    leftovers = [p.name for p in (*run.glob(".*.tmp"), *run.glob("masks/.*.tmp"))]
    if leftovers:
        trial.problem = f"{what}: temporary files left after --resume: {leftovers}"
        return trial
    trial.identical = fingerprint(run) == fingerprint(reference)
    if not trial.identical:
        trial.problem = f"{what}: resumed run differs from the uninterrupted one"
    return trial


def count_write_events(work: Path) -> dict[str, int]:
    """How many fsyncs and renames one uninterrupted run makes (the kill points to choose from)."""
    counts = dict.fromkeys(STAGES, 10**9)
    run = work / "count"
    shutil.rmtree(run, ignore_errors=True)
    events = {"fsync": 0, "replace": 0}
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events["fsync"] += 1
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events["replace"] += 1
        real_replace(src, dst)

    os.fsync, os.replace = fsync, replace  # type: ignore[assignment]
    try:
        code, _, err = run_main([*ARGS, "--out", str(run)])
    finally:
        os.fsync, os.replace = real_fsync, real_replace  # type: ignore[assignment]
    assert code == 0, err
    counts.update(after_fsync=events["fsync"], before_rename=events["replace"], after_rename=events["replace"])
    return counts


# -- damage ---------------------------------------------------------------------------------------------
MODES = ("flip", "truncate", "non_utf8", "nan", "empty", "delete")
COMMANDS = ("inspect", "report", "plot", "resume")


@dataclass
class DamageTrial:
    description: str
    outcomes: dict[str, str] = field(default_factory=dict)
    problem: str = ""


def damage(path: Path, mode: str, rng: random.Random) -> str:
    """Apply ``mode`` to ``path``; return what was done."""
    data = bytearray(path.read_bytes())
    if mode == "delete":
        path.unlink()
        return "deleted"
    if mode == "empty" or not data:
        path.write_bytes(b"")
        return "emptied"
    if mode == "truncate":
        cut = rng.randrange(len(data))
        path.write_bytes(bytes(data[:cut]))
        return f"truncated to {cut} bytes"
    if mode == "non_utf8":
        at = rng.randrange(len(data))
        data[at:at] = b"\xff\xfe\xc3"
        path.write_bytes(bytes(data))
        return f"3 non-UTF-8 bytes inserted at {at}"
    if mode == "nan":
        text = data.decode("utf-8", "replace")
        numbers = list(re.finditer(r"(?<=[:\[, ])-?\d+(\.\d+)?(e-?\d+)?", text))
        if numbers and path.suffix in (".json", ".jsonl"):
            match = rng.choice(numbers)
            path.write_bytes((text[: match.start()] + "NaN" + text[match.end():]).encode())
            return f"a number replaced by NaN at {match.start()}"
    count = rng.randint(1, 64)
    for at in rng.sample(range(len(data)), min(count, len(data))):
        data[at] ^= rng.randrange(1, 256)
    path.write_bytes(bytes(data))
    return f"{min(count, len(data))} bytes garbled"


def _files(run: Path) -> dict[str, bytes]:
    """Every entry's bytes (a link's target, a special file's type): what a refused command must keep."""
    found = {}
    for p in sorted(run.rglob("*")):
        key = p.relative_to(run).as_posix()
        if p.is_symlink():
            found[key] = b"-> " + os.readlink(p).encode()
        elif p.is_fifo():
            found[key] = b"fifo"
        elif p.is_file():
            found[key] = p.read_bytes()
    return found


def _command(name: str, run: Path) -> list[str]:
    return {
        "inspect": ["inspect", str(run)],
        "report": ["report", str(run)],
        "plot": ["plot", "iou", str(run), "--out", str(run.parent / f"{run.name}-iou.png")],
        "resume": [*ARGS, "--out", str(run), "--resume"],
    }[name]


def expected_outputs(reference: Path, work: Path) -> dict[str, Any]:
    """What each command gives on an undamaged copy (the answer a damaged run may give, or none)."""
    outputs: dict[str, Any] = {}
    for name in COMMANDS:
        run = work / f"expected-{name}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(reference, run)
        code, out, err = run_main(_command(name, run))
        assert code == 0, (name, err)
        outputs[name] = _observed(name, run, out)
    return outputs


def _observed(name: str, run: Path, out: str) -> Any:
    if name == "plot":
        return (run.parent / f"{run.name}-iou.png").read_bytes()
    if name == "resume":
        return fingerprint(run)
    return out.replace(str(run), "<run>")


def damage_trial(reference: Path, work: Path, expected: dict[str, Any], rng: random.Random) -> DamageTrial:
    files = sorted(_files(reference))
    target = rng.choice(files)
    mode = rng.choice(MODES)
    seed = rng.random()
    done: list[str] = []

    def mutate(run: Path) -> str:
        done.append(damage(run / target, mode, random.Random(seed)))
        return f"{target}: {done[-1]}"

    return mutation_trial(reference, work, expected, f"{target}: {mode}", mutate, (Path(target).name,))


def mutation_trial(
    reference: Path, work: Path, expected: dict[str, Any], what: str, mutate: Any, names: tuple[str, ...]
) -> DamageTrial:
    """Each command on a fresh copy of ``reference`` changed by ``mutate``: the undamaged output, or
    one error line naming one of ``names`` with the folder left as it was; never a traceback or a hang."""
    trial = DamageTrial(what)
    for name in COMMANDS:
        run = work / f"damaged-{name}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(reference, run)
        trial.description = mutate(run)
        before = _files(run)
        signal.alarm(120)  # a read that blocks (a FIFO) fails the trial instead of hanging it
        try:
            code, out, err = run_main(_command(name, run))
        except Exception as exc:  # noqa: BLE001  (the finding: a traceback)
            trial.problem = f"{trial.description}: `{name}` raised {type(exc).__name__}: {exc}"
            return trial
        finally:
            signal.alarm(0)
        problem = _judge(trial, name, run, out, err, code, expected, before, names)
        if problem:
            trial.problem = f"{trial.description}: `{name}` {problem}"
            return trial
    return trial


def _judge(trial: DamageTrial, name: str, run: Path, out: str, err: str, code: int, expected: dict[str, Any],
           before: dict[str, bytes], names: tuple[str, ...]) -> str:  # fmt: skip
    errors = [line for line in err.splitlines() if line.startswith("dstbench: error: ")]
    if code == 0:
        if _observed(name, run, out) != expected[name]:
            return "exited 0 with different output (silently wrong)"
        trial.outcomes[name] = "repaired" if name == "resume" and _files(run) != before else "unaffected"
        return ""
    if code != 2 or len(errors) != 1:
        return f"exited {code} with {err.strip()!r}"
    if not any(n in errors[0] for n in names):
        return f"error does not name the file: {errors[0]}"
    after = {k: v for k, v in _files(run).items() if not k.startswith("report.")}
    if after != {k: v for k, v in before.items() if not k.startswith("report.")}:
        return "failed but changed the folder"
    trial.outcomes[name] = "refused"
    return ""


def summarise_damage(trials: list[DamageTrial]) -> str:
    handled = sum(not t.problem for t in trials)
    return f"corruptions tried {len(trials)}, handled {handled}"


