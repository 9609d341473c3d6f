"""Library figures return a Figure and leave the user's matplotlib backend alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE = """
import matplotlib
matplotlib.use("pdf")  # a user's choice (a notebook would have its inline backend)
import numpy as np
from matplotlib.figure import Figure
import deep
from deep.plotting import history_figure
history = {"step": np.arange(1, 6), "task_losses": np.random.rand(5, 3),
           "weights": np.full((5, 3), 1 / 3)}
fig = history_figure(history, task_names=["a", "b", "c"])
assert isinstance(fig, Figure), type(fig)
path = deep.plot_history(history, OUT / "h.png")
assert path.read_bytes()[:4] == b"\\x89PNG"
import matplotlib.pyplot as plt
assert plt.get_fignums() == [], plt.get_fignums()  # nothing left open in pyplot
assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
print("ok")
"""


def test_library_figures_keep_the_users_backend(tmp_path: Path) -> None:
    code = f"from pathlib import Path\nOUT = Path({str(tmp_path)!r})\n" + CODE
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_no_library_module_selects_a_backend() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "deep").rglob("*.py")
        if "matplotlib.use(" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []
