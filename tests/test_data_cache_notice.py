"""The decode cache is announced once, with the place it is written to, and moves with DSTBENCH_CACHE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dstbench.data import ArrayDataset, Splits
from dstbench.data.cache import CACHE_ENV, load_or_build


def _splits() -> Splits:
    images = np.zeros((2, 4, 4, 3), np.uint8)
    labels = np.array([0, 1], np.int64)
    return Splits(ArrayDataset(images, labels, ["a", "b"]), ArrayDataset(images, labels, ["a", "b"]))


def _load(data: Path, builds: list[int]) -> Splits:
    def build() -> Splits:
        builds.append(1)
        return _splits()

    return load_or_build(data, "toy", lambda: "sig", build)


def test_decoding_is_announced_once_with_the_cache_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    archive = tmp_path / "toy.tar.gz"
    archive.write_bytes(b"stand-in")
    builds: list[int] = []
    _load(archive, builds)
    out = capsys.readouterr().out
    beside = tmp_path / "toy.tar.gz.dstbench-toy.npz"
    assert out.splitlines() == [
        f"decoding toy from {archive} into {beside} (once; later runs read it; "
        f"set {CACHE_ENV}=DIR to keep caches in DIR instead)"
    ]
    assert beside.is_file()
    _load(archive, builds)
    assert capsys.readouterr().out == "" and builds == [1]  # read from the cache, silently


def test_the_env_var_moves_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    archive = tmp_path / "toy.tar.gz"
    archive.write_bytes(b"stand-in")
    _load(archive, [])
    (written,) = (tmp_path / "elsewhere").glob("toy-*.npz")
    assert f"into {written} " in capsys.readouterr().out
    assert not (tmp_path / "toy.tar.gz.dstbench-toy.npz").exists()
