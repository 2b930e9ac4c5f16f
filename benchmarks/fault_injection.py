"""Fault injection at scale: the counts behind "nothing silently wrong" (issue 10).

    python benchmarks/fault_injection.py [--random-kills 30] [--damage 200] [--every-write]
        [--swaps 60] [--specials 30] [--writers 10]

* kills at every file-write event of a tiny run (after fsync / before rename / after rename), or a
  random sample of them, each resumed and compared bit for bit with an uninterrupted run;
* kills at uniformly random times with SIGKILL, SIGTERM and SIGINT, likewise;
* random damage to random files of a finished run, through inspect, report, plot iou and --resume;
* random parts of a finished run swapped for another run's (copies and symbolic links), and random
  files replaced by a FIFO, ``/dev/zero`` or ``/dev/urandom``, through the same four commands;
* two ``train`` processes on one ``--out`` at random delays (0-1.5 s): one finishes, one is refused;
* every bad input of ``tests/test_bad_input.py``'s table through ``dstbench.cli.main``.

Prints one line per failure and the totals. CPU only, single-threaded; about 3 s per kill trial.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tests import fault_attacks as fa  # noqa: E402
from tests import fault_trials as ft  # noqa: E402


def _bad_inputs(work: Path) -> tuple[int, int]:
    import contextlib
    import io

    from dstbench.cli.app import main
    from tests.test_bad_input import BAD_INPUT, _expand, _prepare

    tried = rejected = 0
    for args, message in BAD_INPUT:
        folder = Path(tempfile.mkdtemp(dir=work))
        _prepare(folder)
        err = io.StringIO()
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(_expand(args, folder))
        finally:
            os.chdir(cwd)
        lines = [line for line in err.getvalue().splitlines() if line.startswith("dstbench: error: ")]
        tried += 1
        if code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err.getvalue():
            rejected += 1
        else:
            print(f"bad input not rejected cleanly: {args}: {err.getvalue().strip()!r}")
    return tried, rejected


def _attacks(
    args: argparse.Namespace, reference: Path, work: Path, expected: dict[str, Any], rng: random.Random
) -> tuple[bool, list[str]]:
    """Swapped files, special files and concurrent writers (issue 22): (all handled, count lines)."""
    other = fa.other_run(work)
    swaps = [fa.swap_trial(reference, other, work, expected, rng) for _ in range(args.swaps)]
    specials = [fa.special_trial(reference, work, expected, rng) for _ in range(args.specials)]
    writers = [fa.writer_trial(reference, other, work, rng.uniform(0.0, 1.5)) for _ in range(args.writers)]
    problems = [t.problem for t in [*swaps, *specials] if t.problem] + [t.problem for t in writers if t.problem]
    for problem in problems:
        print("attack:", problem)
    lines = []
    for name, trials in (("files swapped for another run's", swaps), ("special files", specials)):
        outcomes: dict[str, int] = {}
        for attack in trials:
            for outcome in attack.outcomes.values():
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        lines.append(f"{name}: tried {len(trials)}, handled {sum(not t.problem for t in trials)} (command outcomes: {outcomes})")
    lines.append(f"concurrent writers: tried {len(writers)}, one refused and one intact {sum(not t.problem for t in writers)}")
    return not problems, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-kills", type=int, default=30, help="random (write event, stage) kill points")
    parser.add_argument("--every-write", action="store_true", help="kill at every write event and stage instead")
    parser.add_argument("--random-kills", type=int, default=30, help="kills at uniformly random times")
    parser.add_argument("--damage", type=int, default=100, help="damage trials")
    parser.add_argument("--swaps", type=int, default=60, help="files swapped for another run's")
    parser.add_argument("--specials", type=int, default=30, help="files replaced by a FIFO or a device")
    parser.add_argument("--writers", type=int, default=10, help="pairs of concurrent writers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="dstbench-faults-"))
    reference = ft.reference_run(work)
    writes = ft.count_write_events(work)
    print(f"one run makes {writes['after_fsync']} fsyncs and {writes['before_rename']} renames", flush=True)

    points = [(stage, n) for stage in ft.STAGES for n in range(1, writes[stage] + 1)]
    if not args.every_write:
        points = rng.sample(points, min(args.write_kills, len(points)))
    kills = [ft.kill_trial(reference, work, stage=stage, nth=n) for stage, n in points]
    signals = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
    duration = 4.0
    kills += [
        ft.kill_trial(reference, work, after=rng.uniform(0.0, duration), signum=signals[i % 3])
        for i in range(args.random_kills)
    ]
    for trial in kills:
        if trial.problem:
            print("kill:", trial.problem)
    identical = sum(t.identical and not t.problem for t in kills)
    before_end = sum(t.killed for t in kills)

    expected = ft.expected_outputs(reference, work)
    damages = [ft.damage_trial(reference, work, expected, rng) for _ in range(args.damage)]
    for damaged in damages:
        if damaged.problem:
            print("damage:", damaged.problem)
    outcomes: dict[str, int] = {}
    for damaged in damages:
        for outcome in damaged.outcomes.values():
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    attacks = _attacks(args, reference, work, expected, rng)
    tried, rejected = _bad_inputs(work)
    print(f"kills tried {len(kills)} ({before_end} before the run ended), resumed bit-identically {identical}")
    print(f"{ft.summarise_damage(damages)} (command outcomes: {outcomes})")
    print(f"bad inputs tried {tried}, rejected in one line {rejected}")
    for line in attacks[1]:
        print(line)
    ok = identical == len(kills) and all(not t.problem for t in damages) and rejected == tried and attacks[0]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
