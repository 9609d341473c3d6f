"""``python -m benchmarks`` reports invalid values as argparse does (usage, ``error:``, exit
2, no traceback) and checks that ``--out`` can be written before an experiment runs
(issue 14). :func:`benchmarks.__main__.main` itself raises ``ValueError`` (for programs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import check_writable, cli, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "quickstart", "--steps", "-5"], "--steps must be >= 0, got -5"),
        (["run", "quickstart", "--num-tasks", "0"], "--num-tasks must be an integer >= 1"),
        (["run", "quickstart", "--seed", "-1"], "--seed must be >= 0, got -1"),
        (["run", "temperature", "--eps-fraction", "nan"], "--eps-fraction must be a finite"),
        (["run", "convergence", "--steps", "0"], "steps"),
    ],
)
def test_invalid_values_exit_2_with_an_argparse_error(argv, message, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli([*argv, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m benchmarks run ")
    assert f"python -m benchmarks run {argv[1]}: error: " in err and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder
    with pytest.raises(ValueError, match="must be"):  # main() raises for programs
        main([*argv, "--out", str(tmp_path / "out")])


def test_out_must_be_writable_before_the_run(tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        cli(["run", "quickstart", "--quick", "--out", str(blocker / "results")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: --out" in err and "is not a folder" in err and "Traceback" not in err
    with pytest.raises(ValueError, match=r"--out .* is not a folder"):
        check_writable(blocker)
    if Path("/proc/version").exists():  # a read-only file system
        with pytest.raises(ValueError, match="--out /proc/results is not writable"):
            check_writable(Path("/proc/results"))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="is not writable"):
            check_writable(locked)
    # writable folders, existing or not, pass and are left as they were
    check_writable(tmp_path)
    check_writable(tmp_path / "new" / "deeper")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_the_module_entry_point_uses_the_cli(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "quickstart", "--dim", "-3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert "error: --dim must be >= 0, got -3" in out.stderr
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.iterdir())
