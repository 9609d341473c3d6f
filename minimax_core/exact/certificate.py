"""Certificates of the exact solvers: lower bounds on ``F* = min_x max_i L_i(x)`` from dual
weights, the accuracy a certificate must reach, and the pruning of negligible weights.

For weights ``w`` on the simplex, weak duality gives ``F* >= min_y sum_i w_i L_i(y)``,
bounded below by

- ``sum_i w_i L_i(x) - ||sum_i w_i grad L_i(x)||^2 / (2 mu)`` (every task ``mu``-strongly
  convex; :func:`minimax_core.bounds.dual_lower_bound`), and for quadratic tasks exactly by
- ``sum_i w_i L_i(x) - r' H_w^{-1} r / 2`` with ``r = sum_i w_i grad L_i(x)`` and
  ``H_w = sum_i w_i A_i`` (the minimum of the quadratic ``sum_i w_i L_i``).

``certificate = F(x) - lower bound >= F(x) - F*``. ``success`` means
``certificate <= tol * min(|F(x)|, F(x) - c) + atol`` (:func:`accuracy_target`): ``tol`` is a
relative accuracy on the part of ``F`` that depends on ``x``, ``c <= min_i inf L_i`` the
constant every task lies above (quadratic tasks: the smallest offset; otherwise the
strong-convexity bound ``min_i L_i - ||grad L_i||^2/(2 mu)``), so a common offset such
as ``b_i + 1e8`` does not loosen it; never looser than ``tol |F(x)| + atol``. ``atol``
(default 0) is for optima at or near 0. Tasks whose multiplier is negligible are set to
exactly zero when the pruned weights still certify the same tolerance
(:func:`pruned_certificate`), so the weights name the active tasks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from .. import bounds

if TYPE_CHECKING:
    from .models import TaskModel

__all__ = [
    "accuracy_target",
    "hessian_source",
    "lower_bound",
    "pruned_certificate",
    "quadratic_lower_bound",
    "strong_convexity_floor",
]

Float = NDArray[np.float64]

_POTRF, _POTRS = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potrs"), (np.empty(1),))
_RESOLUTION = 2.0 * float(np.finfo(np.float64).eps)


def quadratic_lower_bound(
    values: Float, jacobian: Float, weights: Float, weighted_hessian: Float
) -> float:
    """``min_y sum_i w_i L_i(y)`` for quadratic tasks, ``-inf`` if ``H_w`` is singular.

    ``sum_i w_i L_i`` is the quadratic with value ``w'L(x)``, gradient ``r = G'w`` and
    Hessian ``H_w`` at ``x``; its minimum is ``w'L(x) - r' H_w^{-1} r / 2``.
    """
    r = weights @ jacobian
    factor, info = _POTRF(weighted_hessian, lower=0, clean=0, overwrite_a=0)
    if info != 0:  # not positive definite (or an invalid entry)
        return -math.inf
    step, _ = _POTRS(factor, r, lower=0)
    return float(weights @ values - 0.5 * (r @ step))


def lower_bound(
    values: Float,
    jacobian: Float,
    weights: Float,
    mu: float,
    weighted_hessian: Callable[[], Float] | None,
    target: float = math.inf,
) -> float:
    """A lower bound on ``F*`` from the weights ``w`` (see the module).

    The strong-convexity bound (free) when ``mu > 0``; the exact quadratic bound (a
    Cholesky of ``H_w``, from ``weighted_hessian()``) only if that misses ``F(x) - target``
    and can meet it: the exact bound is at most ``w'L(x)``. ``target=inf`` always tries it.
    """
    lower = -math.inf
    if mu > 0:
        lower = bounds.dual_lower_bound(values, jacobian, weights, mu)
    fun = float(values.max())
    if (
        weighted_hessian is not None
        and fun - lower > target
        and (math.isinf(target) or fun - float(weights @ values) <= target)
    ):
        exact = quadratic_lower_bound(values, jacobian, weights, weighted_hessian())
        lower = max(lower, exact)
    return lower


def strong_convexity_floor(values: Float, jac: Float, mu: float) -> float:
    """``min_i (L_i(x) - ||grad L_i(x)||^2 / (2 mu)) <= min_i inf_y L_i(y)`` (``-inf`` if
    ``mu = 0``): the constant part every task shares, bounded below."""
    if mu <= 0:
        return -math.inf
    return float(np.min(values - np.einsum("mi,mi->m", jac, jac) / (2.0 * mu)))


def accuracy_target(fun: float, x_part: float, tol: float, atol: float) -> float:
    """What a certificate must reach: ``tol * min(|F(x)|, F(x) - c) + atol``.

    ``c <= min_i inf_y L_i(y)`` is a constant every task lies above (quadratic tasks: the
    smallest offset), so ``F(x) - c >= 0`` is the part of ``F`` that depends on ``x``: a
    common offset (``b_i + 1e8``) does not loosen the tolerance. ``F`` itself is resolved
    only to its floating-point spacing, so a certificate within ``2 eps |F(x)|`` also
    counts (the case ``F* = c``, e.g. one task); never looser than ``tol |F(x)| + atol``.
    ``x_part = inf`` when no ``c`` is known.
    """
    rel = tol * abs(fun)
    if math.isfinite(x_part):
        rel = min(rel, tol * max(x_part, 0.0) + _RESOLUTION * abs(fun))
    return rel + atol


def _prune(weights: Float, slacks: Float) -> Float:
    """Weights with the negligible multipliers set to 0 (renormalised): a task is kept
    when its weight is not tiny next to the largest one (the slack decides ties of scale)."""
    top = float(weights.max())
    keep = weights > 1e-9 * top
    keep &= ~((weights < 1e-6 * top) & (slacks > 1e3 * float(slacks.min())))
    if not np.any(keep):
        return weights
    out = np.where(keep, weights, 0.0)
    pruned: Float = out / out.sum()
    return pruned


def hessian_source(
    model: TaskModel, x: Float, weights: Float, current: tuple[Float, float] | None
) -> Callable[[], Float] | None:
    """``sum_i w_i A_i`` for the exact quadratic bound (``None`` for non-quadratic tasks):
    ``hess / total`` from ``current = (hess, total)`` when ``hess = sum_i lam_i A_i`` was
    computed afresh, else one more pass; either only when the bound asks for it."""
    if not model.quadratic:
        return None
    if current is not None:
        hess, total = current
        return lambda: hess / total
    return lambda: model.weighted_hessian(x, weights)


def pruned_certificate(
    model: TaskModel,
    x: Float,
    values: Float,
    jac: Float,
    weights: Float,
    lower: float,
    slack: Float,
    mu: float,
    floor: float,
    shift: float,
    tol: float,
    atol: float,
) -> tuple[Float, float]:
    """Zero the negligible multipliers if the pruned weights still certify ``tol``."""
    pruned = _prune(weights, np.maximum(slack, 0.0))
    if np.array_equal(pruned > 0, weights > 0):
        return weights, lower
    fun = float(np.max(values))
    goal = max(accuracy_target(fun + shift, fun - floor, tol, atol), fun - lower)
    pruned_lower = lower_bound(
        values, jac, pruned, mu, hessian_source(model, x, pruned, None), goal
    )
    if fun - pruned_lower <= goal:
        return pruned, pruned_lower
    return weights, lower
