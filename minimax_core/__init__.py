"""Framework-agnostic minimax solvers and theory for task-robust pre-training.

``min_x max_i L_i(x)`` over ``M`` tasks: weight rules (:mod:`~minimax_core.weights`), task
families with known constants (:mod:`~minimax_core.problems`), downstream fine-tuning from
a start (:mod:`~minimax_core.finetune`), solvers (:func:`minimize_max`,
:mod:`~minimax_core.solvers`) and what they return (:mod:`~minimax_core.result`), closed-form
bounds (:mod:`~minimax_core.bounds`), the exact solver behind ``method="auto"``
(:mod:`~minimax_core.exact`) and a CVXPY reference (:mod:`~minimax_core.reference`); the
last two are imported on demand.

Importing this package imports numpy and array-api-compat only (no scipy, torch, cvxpy or
matplotlib): scipy is imported by :mod:`~minimax_core.exact` and
:mod:`~minimax_core.reference` when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import bounds, finetune, problems, result, solvers, weights
from .result import Iterate, Result, Status
from .solvers import minimize_max

__all__ = [
    "Iterate",
    "Result",
    "Status",
    "bounds",
    "exact",
    "finetune",
    "minimize_max",
    "problems",
    "reference",
    "result",
    "solvers",
    "weights",
]

__version__ = "0.1.0"

_LAZY = ("exact", "reference")  # they import scipy (and cvxpy): off the import path


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
