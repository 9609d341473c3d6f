"""Proposition 5.3: gradient descent from ``x_0`` stays in the ball of radius ``||x_0 - x*||``.

Statement
---------
Let ``f`` be ``mu_f``-strongly convex and ``L_f``-smooth on ``R^d`` with minimiser ``x*``.
Gradient descent ``x_{t+1} = x_t - grad f(x_t) / L_f`` satisfies, for every ``t``,

    ||x_t - x*|| <= (1 - mu_f / L_f)^t ||x_0 - x*|| <= ||x_0 - x*||.

So fine-tuning by GD never leaves the ball ``B(x*, r)`` with ``r = ||x_0 - x*||``: the
initialisation acts as an implicit regulariser, and an initialisation closer to the
downstream optimum confines the search to a smaller ball (whose covering number, and so
the sample complexity, grows with ``d log(r / eps)``; see :mod:`proofs_checks.covering`).

Derivation
----------
``h = f - mu_f ||x||^2 / 2`` is convex and ``(L_f - mu_f)``-smooth, so its gradient is
co-coercive: ``<Dh, x - y> >= ||Dh||^2 / (L_f - mu_f)`` with ``Dh = grad h(x) - grad h(y)``.
The GD map ``T(x) = x - eta grad f(x)`` gives ``T(x) - T(y) = (1 - eta mu_f)(x - y) - eta
Dh``, hence

    ||T(x) - T(y)||^2 <= (1 - eta mu_f)^2 ||x - y||^2 + (eta^2 - 2 eta (1 - eta mu_f)/(L_f - mu_f)) ||Dh||^2.

At ``eta = 1/L_f`` the bracket is ``-1/L_f^2 <= 0``; with ``y = x* = T(x*)`` this is the
contraction ``1 - mu_f/L_f`` of the distance to ``x*``. (For ``L_f = mu_f``, ``h`` is
affine and one step lands on ``x*``.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

import minimax_core as mc
from minimax_core.validation import check_int

from ._slack import Slack
from .numerics import EPS, Float

__all__ = ["check_gd_in_ball", "check_quadratic_tasks_in_ball"]


def check_gd_in_ball(
    gradient: Callable[[Float], Float],
    x0: ArrayLike,
    minimiser: ArrayLike,
    mu: float,
    smoothness: float,
    *,
    steps: int = 100,
) -> Slack:
    """Run GD with step ``1/smoothness`` and check ``||x_t - x*|| <= (1 - mu/L)^t r``.

    Over the steps ``t = 1..steps`` (at ``t = 0`` both sides are ``r`` by definition, which
    would make every slack 0 and every ratio 1 whatever the iteration did): ``slack`` is the
    smallest ``(1 - mu/L)^t r - ||x_t - x*||`` (length units); ``details["radius_slack"]``
    the smallest ``r - ||x_t - x*||``; ``ratio`` the largest ``||x_t - x*|| / ((1 -
    mu/L)^t r)``. The tolerance covers rounding of ``x*`` and of each step.
    """
    steps = check_int("steps", steps)
    mu, smoothness = float(mu), float(smoothness)
    if not (0 < mu <= smoothness < np.inf):
        raise ValueError(f"need 0 < mu <= smoothness < inf, got mu={mu}, smoothness={smoothness}")
    x = np.array(x0, dtype=np.float64)
    x_star = np.asarray(minimiser, dtype=np.float64)
    if x.shape != x_star.shape or x.ndim != 1:
        raise ValueError(
            f"x0 and minimiser must be vectors of one shape, got {x.shape}, {x_star.shape}"
        )
    r0 = float(np.linalg.norm(x - x_star))
    dist = [r0]
    for _ in range(steps):
        x = x - np.asarray(gradient(x), dtype=np.float64) / smoothness
        dist.append(float(np.linalg.norm(x - x_star)))
    distance = np.asarray(dist)
    bound = mc.bounds.gradient_descent_distance_bound(mu, smoothness, r0, np.arange(steps + 1))
    scale = max(1.0, float(np.linalg.norm(x_star)), float(np.linalg.norm(np.asarray(x0))))
    tol = 1e3 * EPS * scale * x.shape[0]
    later = slice(1, None)  # t >= 1: t = 0 holds with equality by definition
    meaningful = bound[later] > tol
    ratio = (
        float(np.max(distance[later][meaningful] / bound[later][meaningful]))
        if meaningful.any()
        else 0.0
    )
    return Slack(
        statement="||x_t - x*|| <= (1 - mu_f/L_f)^t ||x_0 - x*||",
        slack=float(np.min(bound[later] - distance[later])),
        tolerance=tol,
        ratio=ratio,
        details={
            "distance": distance,
            "bound": bound,
            "radius": r0,
            "radius_slack": float(np.min(r0 - distance[later])),
        },
    )


def check_quadratic_tasks_in_ball(tasks: Any, x0: ArrayLike, *, steps: int = 100) -> Slack:
    """:func:`check_gd_in_ball` for every task of a :class:`~minimax_core.problems.QuadraticTasks`
    (e.g. the downstream tasks of :func:`minimax_core.problems.downstream_tasks`), each with
    its own exact ``mu_f``, ``L_f`` (eigenvalues of its Hessian) and ``x* = c_j``."""
    results = []
    for j in range(tasks.num_tasks):
        a = tasks.hessian_stack[j]
        c = tasks.centers[j]
        eig = np.linalg.eigvalsh(a)

        def gradient(x: Float, a: Float = a, c: Float = c) -> Float:
            out: Float = a @ (x - c)
            return out

        results.append(
            check_gd_in_ball(gradient, x0, c, float(eig[0]), float(eig[-1]), steps=steps)
        )
    worst = min(results, key=lambda s: s.slack + s.tolerance)
    return Slack(
        statement=worst.statement,
        slack=min(s.slack for s in results),
        tolerance=max(s.tolerance for s in results),
        ratio=max(s.ratio for s in results),
        details={
            "radius": np.array([s.details["radius"] for s in results]),
            "distance": np.array([s.details["distance"] for s in results]),
            "radius_slack": min(s.details["radius_slack"] for s in results),
        },
    )
