"""pipeline.core.io: atomic files and folders, done markers, hashes."""

from __future__ import annotations

import hashlib

import pytest

from pipeline.core.io import (
    atomic_directory,
    atomic_open,
    file_sha256,
    is_done,
    mark_done,
    read_json,
    write_json,
)


def test_atomic_open_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as stream:
            stream.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    with atomic_open(path) as stream:
        stream.write("new")
    assert path.read_text() == "new"
    assert oct(path.stat().st_mode & 0o777) != "0o600"  # usual permissions, not mkstemp's


def test_atomic_directory_replaces_only_when_complete(tmp_path):
    target = tmp_path / "store"
    with atomic_directory(target) as folder:
        (folder / "x").write_text("1")
    assert (target / "x").read_text() == "1"
    with pytest.raises(ValueError):
        with atomic_directory(target) as folder:
            (folder / "x").write_text("2")
            raise ValueError("failed half way")
    assert (target / "x").read_text() == "1"
    with atomic_directory(target) as folder:
        (folder / "y").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_done_markers_and_fingerprints(tmp_path):
    assert not is_done(tmp_path)
    mark_done(tmp_path, {"config": {"bins": 80}, "sizes": (1, 2)})
    assert is_done(tmp_path) and is_done(tmp_path, {"config": {"bins": 80}, "sizes": [1, 2]})
    assert not is_done(tmp_path, {"config": {"bins": 40}, "sizes": [1, 2]})
    (tmp_path / ".done").write_text("{broken")
    assert not is_done(tmp_path, {"a": 1})


def test_json_and_sha256(tmp_path):
    write_json(tmp_path / "d.json", {"é": [1, 2]})
    assert read_json(tmp_path / "d.json") == {"é": [1, 2]}
    data = bytes(range(256)) * 5000
    (tmp_path / "blob").write_bytes(data)
    assert file_sha256(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
