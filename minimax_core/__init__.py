"""Framework-agnostic minimax solvers and theory for task-robust pre-training.

``min_x max_i L_i(x)`` over ``M`` tasks: weight rules (:mod:`~minimax_core.weights`), task
families with known constants (:mod:`~minimax_core.problems`), downstream fine-tuning from
a start (:mod:`~minimax_core.finetune`), solvers
(:func:`minimize_max`), closed-form bounds (:mod:`~minimax_core.bounds`) and a CVXPY
reference (:mod:`~minimax_core.reference`, imported on demand).

Importing this package imports numpy, scipy and array-api-compat only (no torch, no cvxpy).
"""

from __future__ import annotations

import importlib
from typing import Any

from . import bounds, finetune, problems, solvers, weights
from .result import Iterate, Result, Status
from .solvers import minimize_max

__all__ = [
    "Iterate",
    "Result",
    "Status",
    "bounds",
    "finetune",
    "minimize_max",
    "problems",
    "reference",
    "solvers",
    "weights",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "reference":  # lazy: keeps cvxpy-related code off the import path
        return importlib.import_module(".reference", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
