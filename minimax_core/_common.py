"""What every solver of the package shares: the status codes, the counted oracle, and the
check of the problem's first outputs (:mod:`minimax_core.solvers`, :mod:`minimax_core.exact`,
:mod:`minimax_core.reference`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BUDGET",
    "CALLBACK",
    "CONVERGED",
    "NON_FINITE",
    "NOT_OPTIMAL",
    "NO_CERTIFICATE",
    "STALLED",
    "Oracle",
    "all_finite",
    "check_first_outputs",
]

Float = NDArray[np.float64]

#: Status codes of :class:`minimax_core.solvers.Result` (documented there).
CONVERGED, BUDGET, CALLBACK, NON_FINITE, STALLED, NO_CERTIFICATE, NOT_OPTIMAL = range(7)


class Oracle:
    """``(L(x), J(x))`` as float64 arrays, counting evaluations (one call of the problem's
    ``value_and_jacobian`` when it has one, else ``losses`` and ``jacobian``)."""

    def __init__(self, problem: Any) -> None:
        self.problem = problem
        self.nfev = 0
        self._vj = getattr(problem, "value_and_jacobian", None)

    def __call__(self, x: Float) -> tuple[Float, Float]:
        self.nfev += 1
        if self._vj is not None:
            v, g = self._vj(x)
        else:
            v, g = self.problem.losses(x), self.problem.jacobian(x)
        return np.asarray(v, dtype=np.float64), np.asarray(g, dtype=np.float64)

    def sample(self, x: Float, batch_size: int, rng: np.random.Generator) -> tuple[Float, Float]:
        """The problem's minibatch estimate of ``(L(x), J(x))`` (counted as an evaluation)."""
        self.nfev += 1
        v, g = self.problem.sample(x, batch_size, rng)
        return np.asarray(v, dtype=np.float64), np.asarray(g, dtype=np.float64)


def all_finite(*arrays: Float) -> bool:
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def check_first_outputs(problem: Any, values: Float, jac: Float) -> None:
    """Shapes and finiteness of the first evaluation, with errors that name the method."""
    m, d = problem.num_tasks, problem.dim
    if values.shape != (m,):
        raise ValueError(
            f"problem.losses(x) must return shape (num_tasks,) = ({m},), got {values.shape}"
        )
    if jac.shape != (m, d):
        raise ValueError(
            f"problem.jacobian(x) must return shape (num_tasks, dim) = ({m}, {d}), got {jac.shape}"
        )
    if not all_finite(values, jac):
        raise ValueError("problem.losses/jacobian returned NaN or Inf at x0")
