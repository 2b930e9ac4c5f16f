"""Run folders that prove their integrity: seals, the manifest, the one reader, repairs, legacy folders,
reuse only of matching runs, divergence stops and kills before the first checkpoint."""

from __future__ import annotations

import io
import json
import math
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.cli.app import main
from dstbench.runs.atomic import finite_json
from dstbench.runs.integrity import Manifest, RunFileError, RunIdentity, clean_orphans, is_sealed, read_jsonl, seal, unseal
from dstbench.runs.rundir import RunDir
from tests.kill import interrupted

TINY = ["--preset", "quick", "--epochs", "2", "--max-train-samples", "64", "--max-test-samples", "32",
        "--batch-size", "32", "--hp", "delta_t=1", "--quiet"]  # fmt: skip


def _zip(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data", payload)
    return buffer.getvalue()


# -- seals ---------------------------------------------------------------------------------------------
IDENTITY = RunIdentity("0123456789abcdef" * 2, "ab" * 32)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.data(), st.sampled_from([None, IDENTITY]))
def test_a_sealed_zip_round_trips_and_any_changed_byte_is_caught(
    payload: bytes, data: st.DataObject, identity: RunIdentity | None
) -> None:
    plain = _zip(payload)
    sealed = seal(plain, identity)
    found = unseal(sealed, Path("f"))
    assert is_sealed(sealed) and (found.body, found.sealed, found.identity) == (plain, True, identity)
    with zipfile.ZipFile(io.BytesIO(sealed)) as archive:  # still an ordinary zip for torch/numpy
        assert archive.read("data") == payload
    at = data.draw(st.integers(0, len(sealed) - 1))
    flip = data.draw(st.integers(1, 255))
    damaged = bytearray(sealed)
    damaged[at] ^= flip
    with pytest.raises(RunFileError, match=r"^f is damaged: "):
        unseal(bytes(damaged), Path("f"))
    cut = data.draw(st.integers(0, len(sealed) - 1))
    with pytest.raises(RunFileError, match=r"^f is damaged: "):
        unseal(sealed[:cut], Path("f"))


def test_an_unsealed_zip_is_legacy_not_damaged() -> None:
    plain = _zip(b"x" * 10)
    found = unseal(plain, Path("f"))
    assert (found.body, found.sealed, found.identity) == (plain, False, None)


def test_torch_and_numpy_read_sealed_files_unchanged(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(5)}, buffer)
    (tmp_path / "c.pt").write_bytes(seal(buffer.getvalue()))
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], torch.arange(5))
    buffer = io.BytesIO()
    np.savez(buffer, a=np.arange(4))
    (tmp_path / "m.npz").write_bytes(seal(buffer.getvalue()))
    with np.load(tmp_path / "m.npz") as loaded:
        assert loaded["a"].tolist() == [0, 1, 2, 3]


# -- the reader and the manifest ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, fragment",
    [
        (b'{"a": NaN}\n', "bare NaN is not JSON"),
        (b'{"a": Infinity}\n', "bare Infinity is not JSON"),
        (b'{"a": 1}\n\xff\xfe\n', "not UTF-8 text (byte 9)"),
        (b'{"a": 1}\n{"b": \n', "Expecting value"),
        (b"[1, 2]\n", "line 1 is not a JSON object"),
    ],
)
def test_the_reader_turns_damage_into_one_line_naming_the_file(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(content)
    with pytest.raises(RunFileError) as error:
        read_jsonl(path)
    assert str(path) in str(error.value) and fragment in str(error.value) and "\n" not in str(error.value)


def test_manifest_accepts_old_or_new_content_during_a_rewrite(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path)
    target = tmp_path / "metrics.jsonl"
    manifest.write(target, b"old\n")
    saved: list[list[str]] = []
    real_save = manifest.save

    def spy() -> None:
        real_save()
        saved.append(list(json.loads((tmp_path / "integrity.json").read_text())["files"]["metrics.jsonl"]))

    manifest.save = spy  # type: ignore[method-assign]
    manifest.write(target, b"new\n")
    assert [len(hashes) for hashes in saved] == [2, 1]  # both accepted while the file is replaced
    reloaded = Manifest.load(tmp_path)
    assert reloaded is not None
    reloaded.verify(target, b"new\n")
    with pytest.raises(RunFileError, match="does not match its SHA-256 in integrity.json"):
        reloaded.verify(target, b"old\n")


def test_a_garbled_manifest_is_named(tmp_path: Path) -> None:
    Manifest(tmp_path, {"a.json": ["0" * 64]}).save()
    text = (tmp_path / "integrity.json").read_text().replace("0" * 64, "1" * 64)
    (tmp_path / "integrity.json").write_text(text)
    with pytest.raises(RunFileError, match=r"integrity.json is damaged: its content does not match its own SHA-256"):
        Manifest.load(tmp_path)


def test_finite_json_writes_null_for_non_finite() -> None:
    assert finite_json({"a": [1.0, float("nan")], "b": float("inf"), "c": 2}) == {"a": [1.0, None], "b": None, "c": 2}


def test_orphaned_temporary_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / "masks").mkdir()
    orphans = [tmp_path / ".checkpoint.pt.abc123.tmp", tmp_path / "masks" / ".step_00000004.npz.x.tmp"]
    for path in orphans:
        path.write_bytes(b"partial")
    (tmp_path / "keep.tmp").write_bytes(b"not ours")
    assert sorted(clean_orphans(tmp_path)) == sorted(orphans)
    assert (tmp_path / "keep.tmp").exists()


# -- whole runs ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("integrity") / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    return run


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


def _err(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("dstbench: error: ")]


def _metrics(run: Path) -> list[dict[str, float]]:
    drop = {"epoch_seconds", "update_seconds"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def test_every_run_file_is_sealed_or_listed(finished: Path) -> None:
    manifest = json.loads((finished / "integrity.json").read_text())["files"]
    assert {"config.json", "plan.json", "metrics.jsonl", "topology.jsonl", "summary.json", "masks/init.npz"} <= set(manifest)
    assert all(len(hashes) == 1 for hashes in manifest.values())
    for path in [finished / "checkpoint.pt", *finished.glob("masks/*.npz")]:
        assert is_sealed(path.read_bytes()), path
        assert f"masks/{path.name}" in manifest or path.name == "checkpoint.pt"


def test_damaged_checkpoint_is_one_line_and_nothing_is_overwritten(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(finished, tmp_path)
    data = bytearray((run / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0x40  # one bit in the middle of the weights: torch.load alone would not notice
    (run / "checkpoint.pt").write_bytes(bytes(data))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for argv in (["inspect", str(run)], ["train", *TINY, "--out", str(run), "--resume"]):
        assert main(argv) == 2
        assert _err(capsys) == [
            f"dstbench: error: {run / 'checkpoint.pt'} is damaged: its content does not match its SHA-256 seal"
        ]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_of_a_finished_run_repairs_derived_files(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run = _copy(finished, tmp_path)
    (run / "metrics.jsonl").write_bytes(b'{"epoch": 1, "test_acc": NaN}\n')
    (run / "plan.json").write_bytes(b"\xff\xfe garbage")
    (run / "topology.jsonl").unlink()
    assert main(["inspect", str(run)]) == 2
    assert "plan.json is damaged: its content does not match its SHA-256 in integrity.json" in _err(capsys)[0]
    assert main(["train", *TINY, "--out", str(run), "--resume"]) == 0
    assert "repairing metrics.jsonl from the checkpoint" in caplog.text
    assert "repairing plan.json from the checkpoint" in caplog.text
    for name in ("metrics.jsonl", "plan.json", "topology.jsonl"):
        assert (run / name).read_bytes() == (finished / name).read_bytes(), name
    assert main(["inspect", str(run)]) == 0


def test_damaged_snapshot_is_named_by_plot_and_resume(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(finished, tmp_path)
    snapshot = sorted(run.glob("masks/step_*.npz"))[0]
    snapshot.write_bytes(snapshot.read_bytes()[:-300])
    assert main(["plot", "iou", str(run), "--out", str(tmp_path / "iou.png")]) == 2
    assert _err(capsys) == [f"dstbench: error: {snapshot} is damaged: truncated or not a zip archive (no valid end record or seal)"]
    assert main(["train", *TINY, "--out", str(run), "--resume"]) == 2
    assert str(snapshot) in _err(capsys)[0]


def _legacy(run: Path) -> None:
    """Make ``run`` look as the code before sealing wrote it: no manifest, zips without a seal."""
    (run / "integrity.json").unlink()
    for path in [*run.glob("masks/*.npz")]:
        path.write_bytes(unseal(path.read_bytes(), path).body)
    state = RunDir(run).load_checkpoint()
    for key in ("config", "code_version"):
        state.pop(key)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (run / "checkpoint.pt").write_bytes(buffer.getvalue())


def test_a_legacy_folder_is_read_and_resumed_with_one_warning(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    run = tmp_path / "run"
    with interrupted(in_epoch=2):
        assert main(["train", *TINY, "--out", str(run)]) == 130
    _legacy(run)
    complete = _copy(finished, tmp_path, "complete")
    _legacy(complete)
    caplog.clear()
    for argv in (["inspect", str(run)], ["inspect", str(complete)], ["report", str(complete)],
                 ["plot", "iou", str(complete), "--out", str(tmp_path / "iou.png")]):  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
    assert caplog.text.count("written before integrity checks") == 2  # once per folder
    assert main(["train", *TINY, "--out", str(run), "--resume"]) == 0
    assert (run / "integrity.json").exists() and is_sealed((run / "checkpoint.pt").read_bytes())
    assert _metrics(run) == _metrics(finished)
    assert main(["inspect", str(run)]) == 0


def test_resume_before_the_first_checkpoint_starts_from_scratch(
    finished: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(finished / "config.json", run / "config.json")  # what a kill during epoch 1 leaves
    (run / ".plan.json.k3j2.tmp").write_bytes(b"{")
    assert main(["train", *TINY, "--out", str(run), "--resume"]) == 0
    assert "starting it from scratch" in caplog.text
    assert _metrics(run) == _metrics(finished)
    assert not list(run.glob(".*.tmp"))
    empty = tmp_path / "empty"  # killed before even config.json was written
    assert main(["train", *TINY, "--out", str(empty), "--resume"]) == 0
    assert _metrics(empty) == _metrics(finished)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["train", *TINY, "--hp", "delta_t=50", "--lr", "1e30", "--out", str(run)]  # no update steps: SGD blows up
    assert main(args) == 2
    (line,) = _err(capsys)
    assert line.startswith("dstbench: error: training diverged: loss is nan at epoch 2, step 2 (last finite loss ")
    assert line.endswith(f"); the checkpoint of epoch 1 in {run} is intact; train again with a lower --lr into a new --out "
                              "(--resume continues only the same config, so it cannot change the lr)")
    assert RunDir(run).load_checkpoint()["epoch"] == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (run / "summary.json").exists()


def test_the_divergence_record_names_the_first_bad_step_however_rarely_it_is_read(tmp_path: Path) -> None:
    from dstbench.core.errors import TrainingDiverged
    from dstbench.train.guard import DivergenceGuard

    losses = [2.0, 1.5, math.nan, 3.0, math.inf, 1.0]
    rare = DivergenceGuard(RunDir(tmp_path), torch.device("cpu"), every=50)
    for step, loss in enumerate(losses):
        rare.record(torch.tensor(loss), 0, step)  # never read inside the window: no error yet
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 1, step 2 \(last finite loss 1\.5\); no checkpoint"):
        rare.check(0)
    every_step = DivergenceGuard(RunDir(tmp_path), torch.device("cpu"), every=1)
    every_step.record(torch.tensor(1.25), 3, 40)
    with pytest.raises(TrainingDiverged, match=r"loss is inf at epoch 4, step 41 \(last finite loss 1\.25\); the checkpoint of epoch 3"):
        every_step.record(torch.tensor(math.inf), 3, 41)
    first = DivergenceGuard(RunDir(tmp_path), torch.device("cpu"), every=1)
    with pytest.raises(TrainingDiverged, match=r"step 0 \(last finite loss none yet\)"):
        first.record(torch.tensor(-math.inf), 0, 0)


def test_sigterm_ends_with_one_line_and_a_resumable_folder(finished: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [sys.executable, "-m", "dstbench.cli", "train", *TINY, "--epochs", "30", "--out", str(run)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert err.strip().splitlines() == [
        "dstbench: interrupted by SIGTERM; every finished epoch is saved: run the same command with --resume to continue"
    ]
    assert RunDir(run).load_checkpoint()["epoch"] >= 0


# -- reuse -----------------------------------------------------------------------------------------------
COMPARE = ["compare", "--methods", "set", "--seeds", "0", "--preset", "quick", "--epochs", "1", "--max-train-samples", "64",
           "--max-test-samples", "32", "--quiet"]  # fmt: skip


def test_compare_reuses_only_matching_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main([*COMPARE, "--out", str(out)]) == 0
    run = out / "set_s0.9_seed0"
    summary = (run / "summary.json").read_bytes()
    capsys.readouterr()
    assert main([*COMPARE, "--out", str(out)]) == 0  # same request: reused, not retrained
    assert (run / "summary.json").read_bytes() == summary
    assert main([*COMPARE, "--out", str(out), "--epochs", "2", "--lr", "0.2"]) == 2
    assert _err(capsys) == [
        f"dstbench: error: {run} was made with a different config: epochs was 1, now 2; "
        "use another --out, or --rerun-mismatched to retrain it"
    ]
    assert main([*COMPARE, "--out", str(out), "--hp", "zeta=0.5"]) == 2
    # Hyper-parameters are compared typed (the quick preset sets SET's cadence field too).
    assert "hp was {'update_frequency': 1}, now {'update_frequency': 1, 'zeta': 0.5}" in _err(capsys)[0]
    assert main([*COMPARE, "--out", str(out), "--epochs", "2", "--rerun-mismatched"]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_compare_refuses_runs_from_other_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dstbench.runs import integrity

    out = tmp_path / "cmp"
    assert main([*COMPARE, "--out", str(out)]) == 0
    integrity.code_version.cache_clear()
    monkeypatch.setenv("DSTBENCH_CODE_VERSION", "f" * 40)
    try:
        assert main([*COMPARE, "--out", str(out)]) == 2
        (line,) = _err(capsys)
        assert "was made with a different code version: code version (commit) was " in line
        assert f"now '{'f' * 40}'" in line and "--rerun-mismatched" in line
    finally:
        integrity.code_version.cache_clear()


def test_code_version_is_the_package_and_the_git_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    from dstbench import __version__
    from dstbench.runs import integrity

    monkeypatch.delenv("DSTBENCH_CODE_VERSION", raising=False)
    integrity.code_version.cache_clear()
    try:
        version = integrity.code_version()
        assert version["package"] == __version__
        commit = version["commit"]
        assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)
        head = subprocess.run(["git", "-C", str(Path(integrity.__file__).parent), "rev-parse", "HEAD"],
                              capture_output=True, text=True)  # fmt: skip
        if head.returncode == 0:
            assert commit == head.stdout.strip()
    finally:
        integrity.code_version.cache_clear()


def test_a_run_records_the_code_it_started_with_not_a_commit_made_while_it_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dstbench.runs import integrity
    from dstbench.train import loop as trainer

    started, committed_meanwhile = "a" * 40, "b" * 40
    evaluate = trainer.evaluate

    def evaluate_then_commit(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setenv("DSTBENCH_CODE_VERSION", committed_meanwhile)  # HEAD moves during epoch 1
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", evaluate_then_commit)
    monkeypatch.setenv("DSTBENCH_CODE_VERSION", started)
    integrity.code_version.cache_clear()
    try:
        assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 0
        assert RunDir(tmp_path / "run").load_checkpoint()["code_version"]["commit"] == started
        assert json.loads((tmp_path / "run" / "summary.json").read_text())["code_version"]["commit"] == started
    finally:
        integrity.code_version.cache_clear()


def test_a_field_newer_than_the_run_counts_as_its_default() -> None:
    from dstbench.config import TrainConfig
    from dstbench.runs.configs import to_legacy_json
    from dstbench.runs.reuse import find_mismatch

    cfg = TrainConfig(out="x")
    nested = cfg.to_json()
    del nested["optim"]["label_smoothing"]  # a run from before the field existed
    flat = to_legacy_json(cfg)
    del flat["label_smoothing"]
    for saved in (nested, flat):
        assert find_mismatch(saved, None, cfg) is None
        assert find_mismatch(saved, None, TrainConfig(out="x", label_smoothing=0.1)) == ("label_smoothing", 0.0, 0.1)
    resumed_elsewhere = {**cfg.to_json(), "run": {**cfg.to_json()["run"], "device": "cuda", "out": "y"}}
    assert find_mismatch(resumed_elsewhere, None, cfg) is None


# -- config.json of 0.1/0.2: flat, no schema, hyper-parameters as strings ---------------------------------
def _without_identity(run: Path) -> None:
    """Make ``run`` look as dstbench sealed it before run identities: version-1 seals, a manifest without ``run``."""
    manifest = Manifest.load(run)
    assert manifest is not None
    for key in list(manifest.files):
        path = run / key
        if key.endswith((".pt", ".npz")) and path.exists():
            resealed = seal(unseal(path.read_bytes(), path).body)
            path.write_bytes(resealed)
            manifest.files[key] = [unseal(resealed, path).digest]
    manifest.run = None
    manifest.save()


def _old_format(run: Path) -> None:
    """Write ``run``'s config (config.json and the checkpoint's copy) the way 0.1/0.2 did."""
    from dstbench.runs.configs import read_config

    _without_identity(run)
    folder = RunDir(run)
    flat = read_config(folder)
    flat["hp"] = {name: str(value) for name, value in flat["hp"].items()}  # as given on the command line
    folder.write_config(flat)
    state = folder.load_checkpoint()
    state["config"] = flat
    folder.save_checkpoint(state)


def test_a_config_is_written_nested_by_group_with_typed_hyperparameters(finished: Path) -> None:
    from dstbench.config import GROUPS, SCHEMA_VERSION

    config = json.loads((finished / "config.json").read_text())
    assert config["schema"] == SCHEMA_VERSION and set(GROUPS) <= set(config)
    assert config["hp"] == {"delta_t": 1}  # typed by RigL's field, not the string "1"
    assert config["sparsity"]["sparsity"] == 0.9 and config["run"]["model"] == "tiny_cnn"
    assert RunDir(finished).load_checkpoint()["config"] == config


def test_an_old_format_folder_is_read_reused_and_resumed(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dstbench.config import resolve_config
    from dstbench.runs.configs import read_config
    from dstbench.runs.reuse import reusable_summary

    complete = _copy(finished, tmp_path, "complete")
    _old_format(complete)
    assert "schema" not in json.loads((complete / "config.json").read_text())
    assert read_config(RunDir(complete))["hp"] == {"delta_t": "1"}
    request = resolve_config("quick", None, {"epochs": 2, "max_train_samples": 64, "max_test_samples": 32,
                                             "batch_size": 32, "out": str(complete)}, {"delta_t": "1"})  # fmt: skip
    assert reusable_summary(request) == json.loads((complete / "summary.json").read_text())
    for argv in (["inspect", str(complete)], ["report", str(complete)]):
        assert main(argv) == 0, capsys.readouterr().err

    run = tmp_path / "run"
    with interrupted(in_epoch=2):
        assert main(["train", *TINY, "--out", str(run)]) == 130
    _old_format(run)
    assert main(["train", *TINY, "--out", str(run), "--resume"]) == 0, capsys.readouterr().err
    assert _metrics(run) == _metrics(finished)
    assert main(["train", *TINY, "--hp", "delta_t=2", "--out", str(run), "--resume"]) == 2
    assert "--resume with a different config: hp was {'delta_t': 1}, now {'delta_t': 2}" in _err(capsys)[0]


def test_a_finished_run_without_its_checkpoint_is_not_retrained(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(finished, tmp_path)
    (run / "checkpoint.pt").unlink()
    summary = (run / "summary.json").read_bytes()
    assert main(["train", *TINY, "--out", str(run), "--resume"]) == 2
    assert "checkpoint.pt is missing from a finished run" in _err(capsys)[0]
    assert (run / "summary.json").read_bytes() == summary
