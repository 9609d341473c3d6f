"""What every solver of the package shares: the counted oracle and the check of the
problem's first outputs (:mod:`minimax_core.solvers`, :mod:`minimax_core.exact`). Status
codes are :class:`minimax_core.result.Status`; validators are :mod:`minimax_core.validation`."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Oracle",
    "all_finite",
    "check_first_outputs",
]

Float = NDArray[np.float64]


class Oracle:
    """``(L(x), J(x))`` as float64 arrays, counting evaluations (one call of the problem's
    ``value_and_jacobian`` when it has one, else ``losses`` and ``jacobian``).

    Every evaluation is checked for the shapes ``(num_tasks,)`` and ``(num_tasks, dim)``
    (a problem whose outputs change shape mid-run is refused, naming the evaluation)."""

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
        return self._checked(v, g, "losses(x)", "jacobian(x)")

    def sample(self, x: Float, batch_size: int, rng: np.random.Generator) -> tuple[Float, Float]:
        """The problem's minibatch estimate of ``(L(x), J(x))`` (counted as an evaluation)."""
        self.nfev += 1
        v, g = self.problem.sample(x, batch_size, rng)
        return self._checked(v, g, "sample(x, ...)[0]", "sample(x, ...)[1]")

    def _checked(self, v: Any, g: Any, value_name: str, jac_name: str) -> tuple[Float, Float]:
        values, jac = _real_array(v, value_name), _real_array(g, jac_name)
        m, d = self.problem.num_tasks, self.problem.dim
        if values.shape != (m,) or jac.shape != (m, d):
            raise ValueError(
                f"problem.{value_name} must return shape (num_tasks,) = ({m},) and "
                f"problem.{jac_name} shape (num_tasks, dim) = ({m}, {d}) at every evaluation; "
                f"evaluation {self.nfev} returned {values.shape} and {jac.shape}"
            )
        return values, jac


def _real_array(value: Any, name: str) -> Float:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"problem.{name} must return real numbers, got an array of dtype {arr.dtype}"
        )
    return np.asarray(arr, dtype=np.float64)


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
