"""Every experiment of the project behind one CLI: ``python -m benchmarks``.

``python -m benchmarks`` runs the quickstart (the ``--quick`` version of every experiment
that has a place in it) and writes ``results/REPORT.md``; ``python -m benchmarks list``
names every experiment; ``python -m benchmarks run NAME [--quick] [--out DIR]`` writes
``DIR/NAME.json`` and ``DIR/NAME.png``.

Experiments live in :mod:`benchmarks.experiments`, one module each, registered by defining
``EXPERIMENT = Experiment(...)`` (see :class:`benchmarks.common.Experiment`).
"""

from __future__ import annotations

import importlib
import pkgutil

from .common import Experiment, Report

__all__ = ["Experiment", "Report", "all_experiments"]


def all_experiments() -> dict[str, Experiment]:
    """All experiments, by name, discovered in :mod:`benchmarks.experiments`."""
    import benchmarks.experiments as package

    found: dict[str, Experiment] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        exp = getattr(module, "EXPERIMENT", None)
        if isinstance(exp, Experiment):
            if exp.name in found:
                raise RuntimeError(f"two experiments are named {exp.name!r}")
            found[exp.name] = exp
    return found
