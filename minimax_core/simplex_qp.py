"""Convex quadratic programs over the probability simplex, by a primal active-set method.

``min_w  q(w) = 0.5 w' Q w - l' w   s.t.  w >= 0,  sum_i w_i = 1``  with ``Q`` symmetric PSD.

This is the dual of one step of Nesterov's gradient method for max-type functions:
``min_z max_i [f_i + <g_i, z - y>] + (L/2) ||z - y||^2`` has the dual
``max_w <w, f> - ||G'w||^2 / (2L)``, i.e. ``Q = G G'/L``, ``l = f``, ``z = y - G'w/L``.

Method (Nocedal and Wright, Algorithm 16.3, in the null space of ``1'``): keep a free set
``F`` (the other weights are fixed at 0) and a feasible ``w``. On ``F`` the equality-
constrained problem ``min 0.5 p' Q_FF p + grad_F' p  s.t. 1'p = 0`` is solved through the
eigen-decomposition of the projected Hessian ``P Q_FF P`` (``P = I - 11'/|F|``):

- if ``grad_F`` has a component along a null direction of ``P Q_FF P`` (``Q`` singular,
  e.g. more tasks than dimensions) the objective decreases linearly along it: move along
  that ray until a weight reaches 0 (it always does: the ray sums to 0);
- otherwise take the Newton step, shortened to the first weight that reaches 0;
- when the step is zero, the multipliers of the fixed weights are
  ``grad_i - grad_F`` (``grad_F`` is constant on ``F`` at a stationary point); if one is
  negative its weight is freed, otherwise ``w`` is optimal (KKT conditions hold).

Warm starts (the previous weights) make repeated solves cheap: the support of the weights
changes little between nearby problems.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["SimplexQPResult", "kkt_residual", "solve_simplex_qp"]

Float = NDArray[np.float64]


class SimplexQPResult(NamedTuple):
    """Solution of :func:`solve_simplex_qp`.

    ``weights`` on the simplex (exact zeros off the support), ``value`` the objective
    ``q(w)``, ``iter_num`` active-set iterations, ``error`` the KKT residual
    (:func:`kkt_residual`), ``converged`` whether the KKT test passed.
    """

    weights: Float
    value: float
    iter_num: int
    error: float
    converged: bool


def kkt_residual(gram: Float, linear: Float, weights: Float) -> float:
    """KKT residual of ``w`` on the simplex: ``max_i w_i (grad_i - m) + max(0, m - min_i grad_i)``.

    ``grad = Q w - l`` and ``m = <w, grad>``: at the optimum every weight in the support has
    ``grad_i = m`` (the multiplier of ``sum w = 1``) and every other ``grad_i >= m``. It is
    zero exactly at the optimum and is the duality gap of the linear model
    ``<grad, w> - min_i grad_i`` split into its two parts.
    """
    grad = gram @ weights - linear
    mean = float(weights @ grad)
    spread = float(np.max(weights * np.abs(grad - mean)))
    return spread + max(0.0, mean - float(np.min(grad)))


def _start(linear: Float, gram: Float, warm_start: Float | None) -> Float:
    m = linear.shape[0]
    if warm_start is not None:
        w = np.asarray(warm_start, dtype=np.float64)
        if w.shape == (m,) and np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0:
            out: Float = w / w.sum()
            return out
    w = np.zeros(m)
    w[int(np.argmax(linear - 0.5 * np.diagonal(gram)))] = 1.0  # the best vertex
    return w


def _eqp_direction(hess: Float, grad: Float, scale: float) -> tuple[Float, bool]:
    """Direction on the free set: ``(ray, True)`` for an unbounded descent ray, else
    ``(newton_step, False)``; both sum to zero."""
    k = grad.shape[0]
    if k == 1:
        return np.zeros(1), False
    centred = hess - hess.mean(axis=0, keepdims=True)
    projected = centred - centred.mean(axis=1, keepdims=True)  # P Q P
    g = grad - grad.mean()
    evals, evecs = np.linalg.eigh(projected)
    coef = evecs.T @ g
    cutoff = 1e-12 * max(float(evals[-1]), scale, 1e-300)
    flat = evals <= cutoff
    # flat directions of P Q P: the ones vector (coef 0 since g sums to 0) and the null
    # space of Q within 1'p = 0; a nonzero slope there is an unbounded descent ray
    ray: Float = -(evecs[:, flat] @ coef[flat])
    ray -= ray.mean()  # the ones vector is flat too; its rounding-level coefficient is no ray
    g_norm = float(np.linalg.norm(g))
    if g_norm <= 1e-14 * scale:  # grad is constant on F up to rounding: stationary
        return np.zeros(k), False
    if float(np.linalg.norm(ray)) > 1e-9 * g_norm:
        return ray, True
    step: Float = -(evecs[:, ~flat] @ (coef[~flat] / evals[~flat]))
    return step - step.mean(), False


def solve_simplex_qp(
    gram: ArrayLike,
    linear: ArrayLike,
    *,
    warm_start: ArrayLike | None = None,
    tol: float = 1e-12,
    steps: int | None = None,
) -> SimplexQPResult:
    """Minimise ``0.5 w' Q w - l' w`` over the probability simplex.

    Parameters
    ----------
    gram: ``Q``, symmetric positive semidefinite ``(M, M)`` (singular is fine).
    linear: ``l``, shape ``(M,)``.
    warm_start: a point of the simplex to start from (e.g. the previous solution); ignored
        if it is not one.
    tol: relative KKT tolerance (scaled by ``max(1, |Q|, |l|)``).
    steps: active-set iterations (default ``10 M + 50``).
    """
    q = np.asarray(gram, dtype=np.float64)
    lin = np.asarray(linear, dtype=np.float64)
    if lin.ndim != 1 or lin.shape[0] < 1:
        raise ValueError(f"linear must be a 1-d array with at least one entry, got {lin.shape}")
    m = lin.shape[0]
    if q.shape != (m, m):
        raise ValueError(f"gram must have shape (M, M) = ({m}, {m}), got {q.shape}")
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(lin))):
        raise ValueError("gram and linear must be finite (no NaN or Inf)")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    limit = 10 * m + 50 if steps is None else int(steps)
    if limit < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    q = 0.5 * (q + q.T)
    shifted = lin - float(np.max(lin))  # a constant shift does not change the minimiser
    scale = max(1.0, float(np.max(np.abs(q))), float(np.max(np.abs(shifted))))
    w = _start(shifted, q, None if warm_start is None else np.asarray(warm_start))
    free = w > 0
    it, converged, stationary = 0, False, False
    while it < limit:
        it += 1
        grad = q @ w - shifted
        idx = np.flatnonzero(free)
        if not stationary:
            direction, unbounded = _eqp_direction(q[np.ix_(idx, idx)], grad[idx], scale)
            stationary = not unbounded and float(np.max(np.abs(direction))) <= 1e-14
        if stationary:
            multipliers = grad - float(np.mean(grad[idx]))
            multipliers[free] = 0.0
            j = int(np.argmin(multipliers))
            if multipliers[j] >= -tol * scale:
                converged = True
                break
            free[j] = True
            stationary = False
            continue
        neg = direction < 0
        ratios = np.full(direction.shape, math.inf)
        ratios[neg] = w[idx][neg] / -direction[neg]
        block = int(np.argmin(ratios))
        alpha = float(ratios[block])
        if not unbounded and alpha >= 1.0:
            w[idx] = np.maximum(w[idx] + direction, 0.0)
            stationary = True  # the minimiser on the current free set
        else:
            w[idx] = np.maximum(w[idx] + alpha * direction, 0.0)
            w[idx[block]] = 0.0
        w /= w.sum()
        free &= w > 0
    value = float(0.5 * w @ q @ w - w @ lin)
    error = kkt_residual(q, lin, w)
    return SimplexQPResult(w, value, it, error, converged)
