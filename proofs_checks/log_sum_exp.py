"""The log-sum-exp smoothing: the sandwich and the gradient formula.

Statement
---------
For losses ``L_1..L_M`` and ``tau > 0`` let ``F = max_i L_i`` and ``F_tau = tau log sum_i
exp(L_i / tau)``. Then

1. ``F <= F_tau <= F + tau log M`` everywhere;
2. ``grad F_tau = sum_i w_i grad L_i`` with ``w = softmax(L / tau)``: the paper's
   softmax-weighted direction is the exact gradient of ``F_tau``.

Derivation
----------
1. ``exp(F/tau) = max_i exp(L_i/tau) <= sum_i exp(L_i/tau) <= M exp(F/tau)``; take ``tau
   log`` of the three terms. Equality on the left needs one task only (``M = 1``), on the
   right all ``M`` losses equal.
2. Chain rule: ``d/dx tau log S = tau S^{-1} sum_i exp(L_i/tau) grad L_i / tau = sum_i
   w_i grad L_i`` with ``S = sum_i exp(L_i/tau)``.

Check of 2 without trusting any derivative code: along a unit direction ``v`` the
function ``phi(s) = F_tau(x + s v)`` is convex and ``L_tau``-smooth on ``[-h, h]``
(``L_tau = L + G^2/tau``, :mod:`proofs_checks.smoothing_curvature`), so
``0 <= phi(+-h) - phi(0) -+ h phi'(0) <= L_tau h^2/2`` and the central difference obeys
``|(phi(h) - phi(-h))/(2h) - phi'(0)| <= L_tau h / 4``. Rounding adds at most
``delta/h`` where ``delta`` bounds the error of one evaluation of ``F_tau``. A wrong
gradient formula misses this bound by ``O(||grad||)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

import minimax_core as mc
from minimax_core.validation import check_int, check_real
from minimax_core.weights import smoothed_max

from ._slack import Slack
from .numerics import EPS, Float, smoothed_value_and_grad, value_tolerance

__all__ = ["check_gradient", "check_sandwich"]


def _points(problem: Any, points: ArrayLike) -> Float:
    pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
    if pts.ndim != 2 or pts.shape[1] != problem.dim:
        raise ValueError(f"points must have shape (K, dim) = (K, {problem.dim}), got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("points must be finite")
    return pts


def check_sandwich(problem: Any, points: ArrayLike, temperature: float) -> Slack:
    """``F <= F_tau <= F + tau log M`` at every point (rows of ``points``).

    ``slack`` is the smaller of the two gaps over all points; ``ratio`` is the largest
    ``(F_tau - F) / (tau log M)`` (0 for one task).
    """
    tau = check_real("temperature", temperature, strict=True)
    pts = _points(problem, points)
    m = int(problem.num_tasks)
    bound = mc.bounds.smoothed_gap_bound(tau, m)
    f = np.array([float(np.max(problem.losses(x))) for x in pts])
    f_tau = np.array([smoothed_max(np.asarray(problem.losses(x)), tau) for x in pts])
    lower = f_tau - f
    upper = f + bound - f_tau
    tol = value_tolerance(float(np.max(np.abs(f))), float(np.max(np.abs(f_tau))))
    ratio = float(np.max(lower) / bound) if bound > 0 else 0.0
    return Slack(
        statement="F <= F_tau <= F + tau log M",
        slack=float(min(lower.min(), upper.min())),
        tolerance=tol,
        ratio=ratio,
        details={"F": f, "F_tau": f_tau, "bound": bound, "temperature": tau},
    )


def check_gradient(
    problem: Any,
    points: ArrayLike,
    temperature: float,
    *,
    directions_per_point: int = 3,
    seed: int = 0,
) -> Slack:
    """``grad F_tau = sum_i w_i grad L_i``, against central differences with a proven
    error bound ``L_tau h / 4 + delta / h`` (``h`` chosen to balance the two terms).

    ``slack`` is the smallest ``bound - |difference quotient - <grad, v>|`` over points and
    random unit directions; ``ratio`` the largest error/bound.
    """
    tau = check_real("temperature", temperature, strict=True)
    pts = _points(problem, points)
    directions_per_point = check_int("directions_per_point", directions_per_point)
    rng = np.random.default_rng(seed)
    smooth = float(problem.smoothness)
    errors, allowed = [], []
    for x in pts:
        f0, grad = smoothed_value_and_grad(problem, x, tau)
        scale = max(1.0, abs(f0), float(np.max(np.abs(problem.losses(x)))))
        delta = 1e3 * EPS * scale  # error of one evaluation of F_tau
        for _ in range(directions_per_point):
            v = rng.standard_normal(problem.dim)
            v /= np.linalg.norm(v)
            # G on the ball of radius h_max around x bounds the gradients on the segment
            h_max = 1e-2 * max(1.0, float(np.linalg.norm(x)))
            lip = mc.problems.lipschitz_bound(problem, x, h_max)
            l_tau = mc.bounds.smoothed_smoothness(smooth, lip, tau)
            h = min(h_max, 2.0 * math.sqrt(delta / l_tau))
            f_plus = smoothed_max(np.asarray(problem.losses(x + h * v)), tau)
            f_minus = smoothed_max(np.asarray(problem.losses(x - h * v)), tau)
            quotient = (f_plus - f_minus) / (2.0 * h)
            errors.append(abs(quotient - float(grad @ v)))
            allowed.append(l_tau * h / 4.0 + delta / h)
    err = np.asarray(errors)
    bound = np.asarray(allowed)
    return Slack(
        statement="grad F_tau = sum_i softmax(L/tau)_i grad L_i",
        slack=float(np.min(bound - err)),
        tolerance=0.0,
        ratio=float(np.max(err / bound)),
        details={"error": err, "bound": bound, "temperature": tau},
    )
