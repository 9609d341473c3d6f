"""The deep-overhead benchmark runs and writes its ratios (their values are measured, not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import main


@pytest.mark.slow
def test_deep_overhead_writes_its_ratios(tmp_path: Path) -> None:
    argv = ["run", "deep-overhead", "--steps", "2", "--rounds", "1", "--batch-size", "2"]
    argv += ["--seq-len", "16", "--out", str(tmp_path)]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "deep-overhead.json").read_text())
    assert set(payload["ratios"]) == {"uniform_vs_plain", "softmax_vs_plain"}
    assert all(value > 0 for value in payload["ratios"].values())
    assert set(payload["steps_per_second"]) == {"plain", "uniform", "softmax"}
    assert (tmp_path / "deep-overhead.png").read_bytes()[:4] == b"\x89PNG"
