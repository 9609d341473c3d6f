"""What importing the engine costs: ``import deep`` loads no heavy dependency (PEP 562 lazy
names), the file helpers load no torch, and the engine itself never needs matplotlib, cvxpy,
spaCy or scipy. Each check runs in a fresh interpreter, so that other tests' imports do not
hide an import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("scipy", "cvxpy", "matplotlib", "spacy")
ENGINE = (
    "deep.pretrain",
    "deep.config",
    "deep.optim",
    "deep.faults",
    "deep.run_state",
    "deep.checkpoint",
    "deep.data",
    "deep.distributed",
    "deep.objective",
    "deep.logs",
)


def _loaded_after(code: str, watch: tuple[str, ...]) -> list[str]:
    """The modules of ``watch`` in ``sys.modules`` after running ``code`` in a fresh Python."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {watch!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_deep_loads_nothing_heavy() -> None:
    """The issue's check, verbatim: ``import deep`` imports none of scipy, cvxpy, matplotlib,
    spaCy (nor torch: every name loads on first use)."""
    assert _loaded_after("import deep", (*HEAVY, "torch")) == []


def test_file_helpers_import_no_torch() -> None:
    assert _loaded_after("import deep.io, deep.plotting, deep.logs", ("torch", *HEAVY)) == []


def test_deep_pretrain_is_the_function_whichever_import_comes_first() -> None:
    """Importing the submodule ``deep.pretrain`` first (as an application does with
    ``from deep.pretrain import ...``) must not turn ``deep.pretrain`` into the module."""
    code = (
        "import types\nimport deep.pretrain\nimport deep\n"
        "assert not isinstance(deep.pretrain, types.ModuleType), deep.pretrain\n"
        "assert deep.pretrain.__name__ == 'pretrain' and callable(deep.pretrain)\n"
        "from deep.pretrain import PretrainResult\n"
        "assert deep.PretrainResult is PretrainResult"
    )
    assert _loaded_after(code, ()) == []


def test_lazy_names_resolve_to_their_modules() -> None:
    import deep
    import deep.checkpoint
    import deep.objective
    import deep.optim

    assert deep.lr_factor is deep.optim.lr_factor
    assert deep.task_means is deep.objective.task_means
    assert deep.CheckpointError is deep.checkpoint.CheckpointError
    assert set(deep.__all__) == set(deep._NAMES) | set(deep._SUBMODULES)
    assert set(deep.__all__) <= set(dir(deep))
    for name in deep.__all__:
        assert getattr(deep, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        _ = deep.no_such_name


def test_the_engine_needs_no_matplotlib_cvxpy_or_spacy() -> None:
    code = "import " + ", ".join(ENGINE)
    assert _loaded_after(code, ("cvxpy", "matplotlib", "spacy")) == []


def test_the_engine_needs_no_scipy() -> None:
    """Passes once ``minimax_core`` imports scipy lazily (only where a solver needs it): the
    engine uses ``minimax_core.weights`` alone, and the ``gpu/`` scripts rely on this."""
    code = "import " + ", ".join(ENGINE)
    assert _loaded_after(code, ("scipy",)) == []
