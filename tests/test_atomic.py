"""Atomic result writes (shared by benchmarks and deep)."""

from __future__ import annotations

import pytest

from deep.io import atomic_write_text


def test_atomic_writes_get_the_usual_file_mode(tmp_path) -> None:
    """Results written atomically are readable like files written with open()."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    from deep.io import atomic_path

    target = atomic_write_text(tmp_path / "result.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
