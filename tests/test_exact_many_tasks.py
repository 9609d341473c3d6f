"""``method="auto"`` with many more tasks than dimensions (issue 17): the interior point
reaches its certified accuracy where it used to stall (status 4) because Mehrotra's
corrector cancelled the merit's descent."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minimax_core as mc
from minimax_core import exact
from minimax_core.exact.interior import corrector_share


def _least_squares(m: int, d: int, seed: int, n: int = 20) -> mc.problems.LeastSquaresTasks:
    """The scaling benchmark's family: ``n`` rows ``N(0, I/d)`` per task, noisy targets."""
    rng = np.random.default_rng(seed)
    designs = rng.standard_normal((m, n, d)) / math.sqrt(d)
    theta = rng.standard_normal((m, d))
    targets = np.einsum("mni,mi->mn", designs, theta) + 0.3 * rng.standard_normal((m, n))
    return mc.problems.LeastSquaresTasks(list(designs), list(targets), l2=0.1)


def _independent_gap(prob: mc.problems.QuadraticTasks, res: mc.Result) -> float:
    """``F(x) - min_y sum_i w_i L_i(y)`` from the problem's own losses, gradients and
    Hessians at the returned point and weights: weak duality, nothing from the solver."""
    assert res.weights is not None
    values, jac = prob.losses(res.x), prob.jacobian(res.x)
    weighted = np.einsum("m,mij->ij", res.weights, prob.hessian_stack)
    lower = exact.quadratic_lower_bound(values, jac, res.weights, weighted)
    return float(np.max(values)) - lower


@pytest.mark.parametrize(
    ("family", "m", "d"),
    [("least_squares", 1000, 50), ("least_squares", 2000, 50), ("dense", 2000, 50)],
)
def test_many_tasks_reach_the_certified_accuracy(family: str, m: int, d: int) -> None:
    if family == "dense":
        prob = mc.problems.random_quadratic(m, d, mu=1.0, smoothness=10.0, seed=0)
    else:
        prob = _least_squares(m, d, seed=0)
    res = mc.minimize_max(prob)
    assert res.success and res.status == 0, res.message
    assert res.certificate is not None and res.certificate <= 1e-8 * abs(res.fun)
    assert 1 <= len(res.info["active"]) <= d + 1  # a vertex of the epigraph: <= d+1 tasks
    gap = _independent_gap(prob, res)
    assert 0.0 <= gap <= 1e-8 * abs(res.fun) + 1e-12, gap


def test_corrector_share_keeps_half_the_descent() -> None:
    """The share is 1 while the corrector leaves half the Newton slope, else exactly the
    share at which the slope ``-2 (merit - feasible) - 2 gamma r_c' c`` is half of it."""
    rc = np.array([1.0, -2.0])
    assert corrector_share(10.0, 0.0, rc, np.array([1.0, 1.0])) == 1.0
    corr = np.array([-3.0, 4.0])  # r_c' c = -11 < -5
    gamma = corrector_share(10.0, 0.0, rc, corr)
    assert gamma == pytest.approx(5.0 / 11.0)
    slope = -2 * 10.0 - 2 * gamma * float(rc @ corr)
    assert slope == pytest.approx(-10.0)
