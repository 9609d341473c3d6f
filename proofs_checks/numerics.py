"""Shared numerics of the checks: the derivatives of the log-sum-exp smoothing, its exact
minimiser (Newton), and a certified bracket on ``F* = min_x max_i L_i(x)``.

The smoothing itself is the library's (:func:`minimax_core.weights.smoothed_max`), as are
the softmax weights, the validators (:mod:`minimax_core.validation`) and the Lipschitz bound
(:func:`minimax_core.problems.lipschitz_bound`): a check measures the code it checks.
Every function is pure and works on any problem with ``losses``/``jacobian`` (plus
``hessians`` for the second-order pieces and ``cvxpy_losses`` for the bracket).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

import minimax_core as mc
from minimax_core.validation import check_int, check_real
from minimax_core.weights import smoothed_max

__all__ = [
    "EPS",
    "OptimumBracket",
    "SmoothedMinimum",
    "minimize_smoothed",
    "optimum_bracket",
    "smoothed_hessian",
    "smoothed_value_and_grad",
    "softmax_weights",
    "value_tolerance",
]

Float = NDArray[np.float64]

#: float64 unit roundoff
EPS = float(np.finfo(np.float64).eps)


def softmax_weights(values: Float, temperature: float) -> Float:
    """``w = softmax(L / tau)`` (the library's stable implementation)."""
    out: Float = mc.weights.softmax_weights(np.asarray(values, dtype=np.float64), temperature)
    return out


def smoothed_value_and_grad(problem: Any, x: Float, temperature: float) -> tuple[float, Float]:
    """``F_tau(x)`` and ``grad F_tau(x) = sum_i w_i grad L_i(x)`` with ``w = softmax(L/tau)``."""
    v = np.asarray(problem.losses(x), dtype=np.float64)
    g = np.asarray(problem.jacobian(x), dtype=np.float64)
    return smoothed_max(v, temperature), softmax_weights(v, temperature) @ g


def smoothed_hessian(problem: Any, x: Float, temperature: float) -> Float:
    """``hess F_tau = sum_i w_i hess L_i + (1/tau) (sum_i w_i g_i g_i' - gbar gbar')``.

    Differentiate ``grad F_tau = sum_i w_i g_i``: ``d w_i = w_i (d L_i - sum_k w_k d L_k)
    / tau``, so the second term is ``1/tau`` times the ``w``-weighted covariance of the
    task gradients.
    """
    v = np.asarray(problem.losses(x), dtype=np.float64)
    g = np.asarray(problem.jacobian(x), dtype=np.float64)
    w = softmax_weights(v, temperature)
    h = np.asarray(problem.hessians(x), dtype=np.float64)
    centred = g - w @ g
    cov = np.einsum("m,mi,mj->ij", w, centred, centred)
    out: Float = np.einsum("m,mij->ij", w, h) + cov / temperature
    return 0.5 * (out + out.T)


@dataclass(frozen=True)
class SmoothedMinimum:
    """``x_tau = argmin F_tau`` and ``F_tau(x_tau)``; ``decrement`` is the final Newton
    decrement ``sqrt(g' H^{-1} g)`` (``F_tau(x) - min F_tau <= decrement^2`` near the
    optimum for self-concordant-like behaviour; we only use it as a stopping test)."""

    x: Float
    value: float
    decrement: float
    iterations: int


def minimize_smoothed(
    problem: Any,
    temperature: float,
    x0: Float | None = None,
    *,
    steps: int = 200,
) -> SmoothedMinimum:
    """Minimise ``F_tau`` by damped Newton (backtracking on ``F_tau``) to full precision.

    ``F_tau`` is ``mu``-strongly convex with the Hessian of :func:`smoothed_hessian`, so
    Newton converges quadratically once close; the start defaults to zeros (a good start,
    e.g. the minimax point, saves iterations at small temperatures). ``steps`` bounds the
    number of Newton steps.
    """
    temperature = check_real("temperature", temperature, strict=True)
    steps = check_int("steps", steps)
    x = np.zeros(problem.dim) if x0 is None else np.array(x0, dtype=np.float64)
    f, g = smoothed_value_and_grad(problem, x, temperature)
    decrement = math.inf
    for it in range(1, steps + 1):
        h = smoothed_hessian(problem, x, temperature)
        step = np.linalg.solve(h, g)
        decrement = math.sqrt(max(float(g @ step), 0.0))
        if decrement**2 <= 1e-28 * max(1.0, abs(f)):
            return SmoothedMinimum(x, f, decrement, it)
        alpha = 1.0
        while True:
            x_new = x - alpha * step
            f_new, g_new = smoothed_value_and_grad(problem, x_new, temperature)
            if f_new <= f - 0.25 * alpha * decrement**2 or alpha < 1e-12:
                break
            alpha *= 0.5
        if f_new >= f and alpha < 1e-12:  # no further decrease representable
            return SmoothedMinimum(x, f, decrement, it)
        x, f, g = x_new, f_new, g_new
    return SmoothedMinimum(x, f, decrement, steps)


@dataclass(frozen=True)
class OptimumBracket:
    """``lower <= F* <= upper`` with ``x`` the CVXPY point (``upper = F(x)``).

    ``lower`` is the weak-duality bound ``sum_i w_i L_i(x) - ||sum_i w_i grad L_i(x)||^2 /
    (2 mu)`` at the CVXPY multipliers ``w`` (projected on the simplex): valid for any ``w``
    on the simplex (see :func:`minimax_core.bounds.dual_lower_bound`).
    """

    lower: float
    upper: float
    x: Float
    weights: Float

    @property
    def width(self) -> float:
        return self.upper - self.lower


def optimum_bracket(problem: Any, mu: float | None = None) -> OptimumBracket:
    """Certified bracket on ``F*`` from the CVXPY + Clarabel reference."""
    ref = mc.reference.solve_cvxpy(problem)
    if not ref.success:
        raise RuntimeError(f"the CVXPY reference failed: {ref.message}")
    mu = float(problem.mu if mu is None else mu)
    v = np.asarray(problem.losses(ref.x), dtype=np.float64)
    g = np.asarray(problem.jacobian(ref.x), dtype=np.float64)
    w = np.clip(np.asarray(ref.weights, dtype=np.float64), 0.0, None)
    w = w / w.sum() if w.sum() > 0 else np.full(problem.num_tasks, 1.0 / problem.num_tasks)
    lower = mc.bounds.dual_lower_bound(v, g, w, mu) if mu > 0 else -math.inf
    upper = float(np.max(v))
    return OptimumBracket(min(lower, upper), upper, ref.x, w)


def value_tolerance(*values: float) -> float:
    """Rounding allowance for a difference of computed loss values: ``1e3 eps`` times their
    scale (each value is a sum of ``O(d^2)`` products computed in float64)."""
    return 1e3 * EPS * max(1.0, *(abs(v) for v in values))
