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


def test_the_same_data_under_another_path_gets_an_alias_not_a_second_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An archive and its extracted folder decode to the same arrays: one full cache, one small alias;
    both load; an alias whose full cache is gone is rebuilt (decoded again), never trusted."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    archive, folder = tmp_path / "toy.tar.gz", tmp_path / "toy"
    archive.write_bytes(b"stand-in")
    folder.mkdir()
    builds: list[int] = []
    _load(archive, builds)
    (full,) = (tmp_path / "cache").glob("toy-*.npz")
    capsys.readouterr()
    second = _load(folder, builds)
    assert builds == [1, 1]  # only decoding can show it is the same data
    files = {p.name: p.stat().st_size for p in (tmp_path / "cache").glob("toy-*.npz")}
    (alias,) = [tmp_path / "cache" / name for name in files if tmp_path / "cache" / name != full]
    assert f"is cached in {full}: {alias} points there instead of a second copy" in capsys.readouterr().out
    with np.load(alias) as npz:
        assert sorted(npz.files) == ["alias_of", "content", "signature"] and str(npz["alias_of"]) == str(full)
    again = _load(folder, builds)
    assert builds == [1, 1]  # the alias is read, silently
    for got in (second, again):
        np.testing.assert_array_equal(got.train.images, _splits().train.images)
        assert got.train.classes == ["a", "b"]
    full.unlink()
    _load(folder, builds)
    assert builds == [1, 1, 1]
    with np.load(alias) as npz:  # rebuilt as a full cache, since no other full cache exists now
        assert "train_images" in npz.files and "alias_of" not in npz.files
