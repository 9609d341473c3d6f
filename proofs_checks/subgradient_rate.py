"""The subgradient bound ``F(xbar_T) - F* <= 2 G^2 / (mu (T + 1))`` with weighted averaging.

Statement (Lacoste-Julien, Schmidt and Bach 2012)
-------------------------------------------------
Let ``F = max_i L_i`` be ``mu``-strongly convex, ``C`` a closed convex set holding a
minimiser ``x*`` and ``||g|| <= G`` for every subgradient used on ``C``. Projected
subgradient steps ``x_{t+1} = P_C(x_t - eta_t g_t)`` with ``eta_t = 2 / (mu (t + 1))``,
``t = 1, 2, ...``, and the average ``xbar_T = sum_{t=1}^T t x_t / sum_{t=1}^T t`` satisfy

    F(xbar_T) - F* <= 2 G^2 / (mu (T + 1)).

Derivation
----------
Non-expansiveness of ``P_C`` and strong convexity (``<g_t, x_t - x*> >= F(x_t) - F* +
mu/2 ||x_t - x*||^2``) give ``F(x_t) - F* <= (1/eta_t - mu)/2 ||x_t - x*||^2 - 1/(2 eta_t)
||x_{t+1} - x*||^2 + eta_t G^2 / 2``. Multiply by ``t``: with ``eta_t = 2/(mu(t+1))`` the
distance terms telescope (``t (1/eta_t - mu) = mu t (t-1)/2`` and ``t/eta_t = mu t (t+1)/2``)
and ``sum_t t eta_t <= 2T/mu``. Hence ``sum_t t (F(x_t) - F*) <= G^2 T / mu``; divide by
``sum_t t = T (T+1)/2`` and use convexity of ``F`` at ``xbar_T``.

Here ``C = B(x_0, R)`` with ``R = sqrt(2 (F(x_0) - LB) / mu) >= ||x_0 - x*||`` (``LB <=
F*`` from :func:`minimax_core.bounds.lower_bound_on_optimum`) and ``G`` the problem's
bound on that ball. ``minimize_max`` records ``xbar_T`` at history step ``T - 1`` (its
step 0 is ``xbar_1 = x_1 = x_0``), which this check accounts for.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

import minimax_core as mc
from minimax_core.validation import check_int

from ._slack import Slack
from .numerics import optimum_bracket, value_tolerance

__all__ = ["check_subgradient_bound", "loglog_slope"]


def loglog_slope(steps: ArrayLike, gaps: ArrayLike, start: float, stop: float) -> float:
    """Least-squares slope of ``log gap`` against ``log step`` over ``start <= step <= stop``
    (positive gaps only); ``nan`` with fewer than 3 points."""
    t = np.asarray(steps, dtype=np.float64)
    g = np.asarray(gaps, dtype=np.float64)
    keep = (t >= start) & (t <= stop) & (g > 0) & (t > 0)
    if keep.sum() < 3:
        return math.nan
    return float(np.polyfit(np.log(t[keep]), np.log(g[keep]), 1)[0])


def check_subgradient_bound(
    problem: Any, *, steps: int = 1000, x0: ArrayLike | None = None
) -> Slack:
    """The bound at every recorded step of ``minimize_max(method="subgradient")``.

    ``F*`` is replaced by a certified lower bound (it can only enlarge the measured gap).
    ``details``: ``step`` (``T``), ``gap``, ``bound``, ``lipschitz``, ``radius`` and the
    log-log ``slope`` of the gap over the last decade of steps.
    """
    steps = check_int("steps", steps)
    x_start = np.zeros(problem.dim) if x0 is None else np.array(x0, dtype=np.float64)
    mu = float(problem.mu)
    if not mu > 0:
        raise ValueError(f"the bound needs problem.mu > 0, got {mu}")
    v0 = np.asarray(problem.losses(x_start), dtype=np.float64)
    g0 = np.asarray(problem.jacobian(x_start), dtype=np.float64)
    radius = max(mc.bounds.initial_radius(v0, g0, mu), 1e-12)
    g_bound = mc.problems.lipschitz_bound(problem, x_start, radius)
    bracket = optimum_bracket(problem)
    res = mc.minimize_max(
        problem,
        method="subgradient",
        step_rule="strongly_convex",
        radius=radius,
        steps=steps,
        x0=x_start,
    )
    big_t = res.history["step"].astype(np.float64) + 1.0  # xbar_T is recorded at step T - 1
    gaps = res.history["fun"] - bracket.lower
    bound = np.asarray(mc.bounds.subgradient_strongly_convex_bound(g_bound, mu, big_t))
    return Slack(
        statement="F(xbar_T) - F* <= 2 G^2 / (mu (T + 1))",
        slack=float(np.min(bound - gaps)),
        tolerance=value_tolerance(float(np.max(res.history["fun"])), bracket.lower),
        ratio=float(np.max(gaps / bound)),
        details={
            "step": big_t,
            "gap": gaps,
            "bound": bound,
            "lipschitz": g_bound,
            "radius": radius,
            "slope": loglog_slope(big_t, gaps, big_t[-1] / 10.0, big_t[-1]),
            "optimum_bracket": (bracket.lower, bracket.upper),
        },
    )
