"""The tasks as the interior-point method sees them: losses, gradients, weighted Hessians
and the products along a step, each structure computed its cheapest way.

- :class:`QuadraticModel`: ``0.5 (x-c_i)' A_i (x-c_i) + b_i`` from the stack of Hessians;
  one pass over the stack per iteration gives ``A_i dx`` and ``sum_i dlam_i A_i`` (large
  stacks are read chunk by chunk, each chunk once from memory);
- :class:`LeastSquaresModel`: least-squares tasks from their samples (no ``d x d`` matrix
  per task);
- :class:`HessianModel`: any smooth tasks with ``hessians(x)`` (steps are checked by
  evaluating the losses).

:func:`choose_algorithm` picks the interior point when Hessians are available.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from .._common import Oracle
from .certificate import strong_convexity_floor

__all__ = [
    "CHUNK_BYTES",
    "FUSE_BYTES",
    "HessianModel",
    "LeastSquaresModel",
    "QuadraticModel",
    "TaskModel",
    "choose_algorithm",
    "is_quadratic",
    "task_model",
]

Float = NDArray[np.float64]

_GEMV = scipy.linalg.blas.get_blas_funcs("gemv", (np.empty(1),))


class TaskModel(Protocol):
    """What the interior-point method needs from the tasks (calling it evaluates them).

    Losses are returned less the constant ``shift`` (quadratic tasks: the smallest offset,
    so that a large common offset costs no accuracy); ``floor(values, jac)`` is a lower
    bound on ``min_i inf_y L_i(y) - shift`` (``-inf`` if none is known).
    """

    exact_steps: bool
    quadratic: bool
    nfev: int
    passes: int
    shift: float

    def __call__(self, x: Float) -> tuple[Float, Float]: ...

    def weighted_hessian(self, x: Float, weights: Float) -> Float: ...

    def step_products(
        self, direction: Float, weight_change: Float
    ) -> tuple[Float, Float | None]: ...

    def floor(self, values: Float, jac: Float) -> float: ...


CHUNK_BYTES = 8 << 20  # tasks per chunk of the fused pass: about 8 MiB of Hessians (in L3)
FUSE_BYTES = 32 << 20  # stacks larger than this (beyond the caches) are passed over in chunks


class QuadraticModel:
    """Quadratic tasks ``0.5 (x-c_i)' A_i (x-c_i) + b_i`` from the stack of Hessians.

    One pass over the stack per iteration (:meth:`step_products`): ``A_i dx`` for the
    exact steps and ``sum_i dlam_i A_i`` for the next weighted Hessian (linear in the
    multipliers), chunk by chunk so that each chunk of Hessians is read from memory once.
    """

    exact_steps = True
    quadratic = True

    def __init__(self, problem: Any) -> None:
        stack = np.ascontiguousarray(problem.hessian_stack, dtype=np.float64)
        m, d, _ = stack.shape
        self.rows = stack.reshape(m * d, d)  # (A_1; ...; A_M) for all A_i v at once
        self.flat = stack.reshape(m, d * d)  # for sum_i w_i A_i
        self.shape = (m, d)
        self.centers = np.asarray(problem.centers, dtype=np.float64)
        a_c = getattr(problem, "_a_c", None)
        if a_c is None or np.shape(a_c) != (m, d):
            a_c = np.matmul(stack, self.centers[:, :, None])[:, :, 0]
        self.a_c = np.asarray(a_c, dtype=np.float64)
        offsets = np.asarray(problem.offsets, dtype=np.float64)
        self.shift = float(np.min(offsets))
        self.offsets = offsets - self.shift
        per_task = d * d * 8
        step = max(1, CHUNK_BYTES // per_task)
        self.chunks = (
            [(lo, min(lo + step, m)) for lo in range(0, m, step)]
            if stack.nbytes > FUSE_BYTES and m > step
            else None
        )
        self.nfev = 0
        self.passes = 0

    def __call__(self, x: Float) -> tuple[Float, Float]:
        self.nfev += 1
        jac: Float = (self.rows @ x).reshape(self.shape)
        jac -= self.a_c
        values: Float = 0.5 * np.einsum("mi,mi->m", x - self.centers, jac) + self.offsets
        return values, jac

    def weighted_hessian(self, x: Float, weights: Float) -> Float:
        self.passes += 1
        d = self.shape[1]
        out: Float = (weights @ self.flat).reshape(d, d)
        return out

    def step_products(self, direction: Float, weight_change: Float) -> tuple[Float, Float | None]:
        """``A_i dx`` (rows) and ``sum_i dlam_i A_i`` in one pass over the stack."""
        self.passes += 1
        m, d = self.shape
        if self.chunks is None:
            prod: Float = (self.rows @ direction).reshape(m, d)
            return prod, (weight_change @ self.flat).reshape(d, d)
        prod = np.empty((m, d))
        change = np.zeros(d * d)
        for lo, hi in self.chunks:  # the second product reads the chunk from the cache
            np.matmul(self.rows[lo * d : hi * d], direction, out=prod[lo:hi].reshape(-1))
            _GEMV(1.0, self.flat[lo:hi].T, weight_change[lo:hi], beta=1.0, y=change, overwrite_y=1)
        return prod, change.reshape(d, d)

    def floor(self, values: Float, jac: Float) -> float:
        return 0.0  # L_i >= b_i >= min_i b_i = shift (A_i is PSD)


class LeastSquaresModel:
    """Least-squares tasks ``1/(2 n_i) ||X_i x - y_i||^2 + (l2/2) ||x||^2`` from the samples:
    no ``d x d`` matrix per task. ``sum_i w_i H_i = X' diag(w_i / n_i) X + l2 (sum w) I``
    (one product of the stacked samples), ``H_i dx = X_i'(X_i dx)/n_i + l2 dx``."""

    exact_steps = True
    quadratic = True

    def __init__(self, problem: Any) -> None:
        self.designs = np.asarray(problem.designs, dtype=np.float64)  # (M, n_max, d), zero-padded
        m, n, d = self.designs.shape
        self.samples = self.designs.reshape(m * n, d)
        self.targets = np.asarray(problem.targets, dtype=np.float64)
        self.inv_n = 1.0 / np.asarray(problem.counts, dtype=np.float64)
        self.l2 = float(problem.l2)
        self.shape = (m, d)
        self.shift = float(np.min(problem.offsets))
        self.nfev = 0
        self.passes = 0

    def _rows(self, residuals: Float) -> Float:
        """``X_i' r_i / n_i`` for every task: a batched product, ``(M, d)``."""
        out: Float = np.matmul(residuals[:, None, :], self.designs)[:, 0, :]
        out *= self.inv_n[:, None]
        return out

    def __call__(self, x: Float) -> tuple[Float, Float]:
        self.nfev += 1
        m = self.shape[0]
        resid = (self.samples @ x).reshape(m, -1) - self.targets  # padding rows stay 0
        sq = 0.5 * float(x @ x) * self.l2
        values: Float = 0.5 * np.einsum("mn,mn->m", resid, resid) * self.inv_n + (sq - self.shift)
        jac = self._rows(resid)
        if self.l2:
            jac += self.l2 * x
        return values, jac

    def weighted_hessian(self, x: Float, weights: Float) -> Float:
        self.passes += 1
        n = self.targets.shape[1]
        scale = np.repeat(weights * self.inv_n, n)
        out: Float = self.samples.T @ (self.samples * scale[:, None])
        if self.l2:
            out.flat[:: self.shape[1] + 1] += self.l2 * float(weights.sum())
        return out

    def step_products(self, direction: Float, weight_change: Float) -> tuple[Float, Float | None]:
        self.passes += 1
        m = self.shape[0]
        prod = self._rows((self.samples @ direction).reshape(m, -1))
        if self.l2:
            prod += self.l2 * direction
        return prod, None  # the next weighted Hessian is formed afresh

    def floor(self, values: Float, jac: Float) -> float:
        return 0.0  # the offsets b_i = L_i(c_i) are the minima


class HessianModel(Oracle):
    """Smooth tasks with ``hessians(x)``: steps are checked by evaluating the losses."""

    exact_steps = False
    quadratic = False
    shift = 0.0

    def __init__(self, problem: Any, mu: float) -> None:
        super().__init__(problem)
        self.passes = 0
        self.mu = mu

    def weighted_hessian(self, x: Float, weights: Float) -> Float:
        self.passes += 1
        hess = np.asarray(self.problem.hessians(x), dtype=np.float64)
        m, d = self.problem.num_tasks, self.problem.dim
        if hess.shape != (m, d, d):
            raise ValueError(
                f"problem.hessians(x) must return shape (num_tasks, dim, dim) = ({m}, {d}, {d}),"
                f" got {hess.shape}"
            )
        out: Float = np.einsum("m,mij->ij", weights, hess)
        return 0.5 * (out + out.T)

    def step_products(  # pragma: no cover - never called
        self, direction: Float, weight_change: Float
    ) -> tuple[Float, Float | None]:
        raise NotImplementedError("steps of non-quadratic tasks are checked by evaluation")

    def floor(self, values: Float, jac: Float) -> float:
        return strong_convexity_floor(values, jac, self.mu)


def task_model(problem: Any, mu: float) -> TaskModel:
    from ..problems import LeastSquaresTasks

    if isinstance(problem, LeastSquaresTasks) and hasattr(problem, "designs"):
        return LeastSquaresModel(problem)
    if is_quadratic(problem):
        return QuadraticModel(problem)
    return HessianModel(problem, mu)


def is_quadratic(problem: Any) -> bool:
    from ..problems import QuadraticTasks

    return isinstance(problem, QuadraticTasks)


def choose_algorithm(problem: Any) -> str:
    """``"interior_point"`` when Hessians are available (quadratic tasks or a
    ``hessians(x)`` method), else ``"gradient_mapping"``."""
    if is_quadratic(problem) or callable(getattr(problem, "hessians", None)):
        return "interior_point"
    return "gradient_mapping"
