"""gpu/bert_mfu.py: its --smoke run on CPU (the GPU run is the coordinator's) and its peaks."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "gpu" / "bert_mfu.py"


def _module():
    spec = importlib.util.spec_from_file_location("bert_mfu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_flops_from_the_device_name() -> None:
    peak = _module().peak_flops
    assert peak("NVIDIA H100 80GB HBM3") == 989e12
    assert peak("NVIDIA H200") == 989e12
    assert peak("NVIDIA H100 PCIe") == 756e12
    assert peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak("Some Future GPU") is None


@pytest.mark.slow
def test_smoke_run_on_cpu_without_scipy(tmp_path: Path) -> None:
    """The GPU machine may lack scipy: deep must still import (only minimax_core.weights).
    The phase budget is lifted: on a loaded machine the eager phase alone can use the default
    140 s budget's share, and the compiled phase this test checks would be skipped."""
    code = (
        "import sys, runpy; sys.modules['scipy'] = None; "
        f"sys.argv = ['bert_mfu.py', '--smoke', '--compile', 'yes', '--compile-backend', 'eager', "
        f"'--budget-s', '100000', '--out', {str(tmp_path)!r}]; "
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    payload = json.loads((tmp_path / "bert_mfu.json").read_text())
    variants = {(r["variant"], r["compiled"]) for r in payload["rows"]}
    assert variants == {
        (v, c) for v in ("plain", "deep softmax", "deep uniform") for c in (False, True)
    }
    assert all(r["tokens_per_second"] > 0 and r["mfu"] is None for r in payload["rows"])
    assert set(payload["ratios"]) == {
        "softmax_vs_plain_eager",
        "uniform_vs_plain_eager",
        "softmax_vs_plain_compiled",
        "uniform_vs_plain_compiled",
    }
    tail = done.stdout.strip().splitlines()
    assert tail[-1].startswith("wrote ") and any(line.startswith("variant") for line in tail[-20:])
