"""Curvature of the smoothing: ``F_tau`` is ``mu``-strongly convex and ``(L + G^2/tau)``-smooth.

Statement
---------
If every ``L_i`` is ``mu``-strongly convex and ``L``-smooth, and ``||grad L_i|| <= G`` on a
convex region ``C``, then on ``C``

    mu/2 ||y - x||^2 <= F_tau(y) - F_tau(x) - <grad F_tau(x), y - x> <= L_tau/2 ||y - x||^2

with ``L_tau = L + G^2 / tau``; equivalently ``mu I <= hess F_tau <= L_tau I``.

Derivation
----------
With ``w = softmax(L/tau)`` and ``g_i = grad L_i`` (see :func:`proofs_checks.numerics.smoothed_hessian`)

    hess F_tau = sum_i w_i hess L_i + (1/tau) Cov_w(g),   Cov_w(g) = sum_i w_i (g_i - gbar)(g_i - gbar)'.

The first term lies between ``mu I`` and ``L I`` (a convex combination). The covariance
is PSD, so it only adds curvature (lower bound ``mu``), and ``v' Cov_w(g) v <= sum_i w_i
(g_i' v)^2 <= G^2`` for a unit ``v`` (upper bound ``G^2/tau``). Integrating the Hessian
bounds along the segment ``[x, y] subset C`` gives the two quadratic bounds. The upper
bound is attained in the limit by two tasks with opposite gradients ``+-G v`` and equal
losses.

The check samples pairs in a ball ``C`` around ``center``, takes ``G`` from the problem's
own bound on that ball, and measures the normalised curvature ``2 D / ||y - x||^2`` of the
Bregman gap ``D`` (and, when the problem has ``hessians``, the extreme eigenvalues of
``hess F_tau`` at the sampled points).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import minimax_core as mc
from minimax_core.validation import check_int, check_real

from ._slack import Slack
from .numerics import (
    EPS,
    Float,
    smoothed_hessian,
    smoothed_value_and_grad,
    value_tolerance,
)

__all__ = ["check_curvature", "sample_ball"]


def sample_ball(rng: np.random.Generator, center: Float, radius: float, count: int) -> Float:
    """``count`` points uniform in the ball ``||x - center|| <= radius``."""
    d = center.shape[0]
    u = rng.standard_normal((count, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r = radius * rng.random(count) ** (1.0 / d)
    out: Float = center + u * r[:, None]
    return out


def check_curvature(
    problem: Any,
    temperature: float,
    *,
    center: Float | None = None,
    radius: float = 1.0,
    num_pairs: int = 50,
    seed: int = 0,
) -> Slack:
    """``mu <= 2 D(x, y) / ||y - x||^2 <= L + G^2/tau`` on random pairs in the ball (and
    the same bounds on the eigenvalues of ``hess F_tau`` where available).

    ``slack`` is in curvature units (loss per squared parameter distance): the smallest
    distance of a measured curvature to either bound. ``ratio`` is the largest measured
    curvature over ``L_tau``; ``details["min_curvature_over_mu"]`` the tightness of the
    lower bound.
    """
    tau = check_real("temperature", temperature, strict=True)
    radius = check_real("radius", radius, strict=True)
    num_pairs = check_int("num_pairs", num_pairs)
    c = np.zeros(problem.dim) if center is None else np.asarray(center, dtype=np.float64)
    rng = np.random.default_rng(seed)
    mu, smooth = float(problem.mu), float(problem.smoothness)
    g_bound = mc.problems.lipschitz_bound(problem, c, radius)
    l_tau = mc.bounds.smoothed_smoothness(smooth, g_bound, tau)
    xs = sample_ball(rng, c, radius, num_pairs)
    ys = sample_ball(rng, c, radius, num_pairs)
    far = np.linalg.norm(ys - xs, axis=1) >= 0.05 * radius
    xs, ys = xs[far], ys[far]
    curv, tols = [], []
    for x, y in zip(xs, ys, strict=True):
        fx, gx = smoothed_value_and_grad(problem, x, tau)
        fy, _ = smoothed_value_and_grad(problem, y, tau)
        step = y - x
        sq = float(step @ step)
        lin = float(gx @ step)
        curv.append(2.0 * (fy - fx - lin) / sq)
        tols.append(2.0 * value_tolerance(fx, fy, lin) / sq)
    curvature = np.asarray(curv)
    slacks = [curvature - mu, l_tau - curvature]
    tol = float(max(tols, default=0.0))
    eig_lo = eig_hi = np.zeros(0)
    if callable(getattr(problem, "hessians", None)):
        eigs = np.array([np.linalg.eigvalsh(smoothed_hessian(problem, x, tau)) for x in xs])
        eig_lo, eig_hi = eigs[:, 0], eigs[:, -1]
        slacks += [eig_lo - mu, l_tau - eig_hi]
        tol = max(tol, 1e3 * EPS * problem.dim * l_tau)
    all_slack = np.concatenate(slacks)
    measured_hi = max(float(curvature.max(initial=0.0)), float(eig_hi.max(initial=0.0)))
    measured_lo = min(float(curvature.min(initial=np.inf)), float(eig_lo.min(initial=np.inf)))
    return Slack(
        statement="mu I <= hess F_tau <= (L + G^2/tau) I",
        slack=float(all_slack.min()),
        tolerance=tol,
        ratio=measured_hi / l_tau,
        details={
            "curvature": curvature,
            "hessian_min_eig": eig_lo,
            "hessian_max_eig": eig_hi,
            "mu": mu,
            "smoothness_tau": l_tau,
            "lipschitz": g_bound,
            "min_curvature_over_mu": measured_lo / mu if mu > 0 else np.inf,
        },
    )
