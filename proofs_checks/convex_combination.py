"""Section 5: a convex combination of the upstream losses never exceeds their maximum.

Statement
---------
For any ``lambda`` on the probability simplex and any ``x``,
``l_lambda(x) = sum_i lambda_i L_i(x) <= max_i L_i(x) = F(x)``. In particular, at the
minimax point ``x_mm`` every downstream loss of this form is at most ``F* = F(x_mm)``:
``max_lambda l_lambda(x_mm) = F*``, while at any other point (e.g. the average-risk
minimiser) the worst downstream loss is ``F(x) >= F*``.

Derivation
----------
``sum_i lambda_i L_i <= sum_i lambda_i max_k L_k = max_k L_k`` since ``lambda_i >= 0`` and
``sum_i lambda_i = 1``; the vertex ``lambda = e_{argmax}`` attains it, so the worst
downstream loss over all mixtures equals ``F``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

import minimax_core as mc

from ._slack import Slack
from .numerics import value_tolerance

__all__ = ["check_convex_combination"]


def check_convex_combination(problem: Any, mixtures: ArrayLike, points: ArrayLike) -> Slack:
    """``F(x) - sum_i lambda_ji L_i(x) >= 0`` for every mixture row ``j`` and point ``x``.

    Quadratic problems also build the downstream tasks with
    :func:`minimax_core.problems.downstream_tasks` and check their losses agree with the
    mixtures of the upstream losses (``details["construction_error"]``). ``ratio`` is the
    largest ``l_j(x) / F(x)`` over positive ``F`` (1 when a vertex is among the mixtures).
    """
    lam = np.asarray(mixtures, dtype=np.float64)
    if lam.ndim != 2 or lam.shape[1] != problem.num_tasks:
        raise ValueError(f"mixtures must have shape (K, {problem.num_tasks}), got {lam.shape}")
    if np.any(lam < 0) or not np.allclose(lam.sum(axis=1), 1.0, rtol=0.0, atol=1e-9):
        raise ValueError("every row of mixtures must be on the simplex (>= 0, summing to 1)")
    pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
    if pts.shape[1] != problem.dim:
        raise ValueError(f"points must have shape (P, {problem.dim}), got {pts.shape}")
    values = np.array([np.asarray(problem.losses(x), dtype=np.float64) for x in pts])  # (P, M)
    f = values.max(axis=1)
    down = values @ lam.T  # (P, K)
    gaps = f[:, None] - down
    construction = 0.0
    if isinstance(problem, mc.problems.QuadraticTasks):
        tasks = mc.problems.downstream_tasks(problem, lam)
        built = np.array([tasks.losses(x) for x in pts])
        construction = float(np.max(np.abs(built - down)) / max(1.0, float(np.abs(down).max())))
    positive = f > 0
    ratio = float(np.max(down[positive] / f[positive, None])) if positive.any() else 0.0
    return Slack(
        statement="sum_i lambda_i L_i(x) <= max_i L_i(x)",
        slack=float(gaps.min()),
        tolerance=value_tolerance(float(np.abs(values).max())),
        ratio=ratio,
        details={"F": f, "downstream": down, "construction_error": construction},
    )
