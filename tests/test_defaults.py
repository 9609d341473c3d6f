"""Defaults that make progress (issue 14): with default options every method that targets
``min max`` reaches a relative gap ``(F(x) - F*)/(F(x0) - F*) <= 1e-2`` after its default
budget on random quadratics with ``L/mu <= 100``, ``M <= 50``, ``d <= 100``, and never ends
above its start. ``average`` targets ``argmin mean_i L_i``: its own gap is the one checked.

Before issue 14, ``group_dro`` ended above its start on 9 of the 10 grid problems with
``L/mu >= 30`` and softmax (the paper's fixed step) kept a relative gap near 1."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

import minimax_core as mc

MINIMAX = ("softmax", "subgradient", "group_dro")
TARGET = 1e-2

# (M, d, L/mu, seed): the corners of the range (M = 50, d up to 100, L/mu = 100), tiny and
# one-task or one-dimensional problems, and a few in between
GRID = [
    (50, 100, 100.0, 0),
    (50, 10, 100.0, 1),
    (17, 40, 100.0, 2),
    (50, 40, 30.0, 3),
    (5, 60, 100.0, 4),
    (2, 2, 100.0, 5),
    (2, 2, 100.0, 6),
    (1, 8, 100.0, 7),
    (50, 1, 100.0, 8),
    (10, 20, 1.0, 9),
]


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def _relative_gap(prob: mc.problems.QuadraticTasks, x0: np.ndarray, fun: float) -> float:
    f_star = mc.minimize_max(prob, method="auto").fun
    f_start = float(np.max(prob.losses(x0)))
    return (fun - f_star) / (f_start - f_star)


@pytest.mark.slow
@pytest.mark.parametrize("method", MINIMAX)
@pytest.mark.parametrize(("m", "d", "kappa", "seed"), GRID)
def test_default_options_reach_a_relative_gap_of_1e_2(
    method: str, m: int, d: int, kappa: float, seed: int
) -> None:
    if method == "subgradient" and m * d * d > 50 * 40 * 40:
        pytest.skip("20000 subgradient steps at d = 100: `python -m benchmarks run defaults`")
    prob = mc.problems.random_quadratic(m, d, mu=1.0, smoothness=kappa, seed=seed)
    x0 = np.zeros(d)
    res = mc.minimize_max(prob, method=method)
    assert res.fun <= float(np.max(prob.losses(x0)))  # never ends above its start
    assert _relative_gap(prob, x0, res.fun) <= TARGET


@settings(max_examples=12)
@given(
    m=st.integers(1, 8),
    d=st.integers(1, 8),
    kappa=st.floats(1.0, 100.0),
    seed=st.integers(0, 2**16),
    start=st.floats(0.0, 5.0),
)
def test_default_softmax_and_group_dro_property(
    m: int, d: int, kappa: float, seed: int, start: float
) -> None:
    """The same on generated small problems, from a random start at distance ``start``."""
    if d == 1 and m == 1:
        kappa = 1.0
    prob = mc.problems.random_quadratic(m, d, mu=1.0, smoothness=kappa, seed=seed)
    x0 = np.random.default_rng(seed).standard_normal(d)
    x0 *= start / max(float(np.linalg.norm(x0)), 1e-12)
    f_start = float(np.max(prob.losses(x0)))
    for method in ("softmax", "group_dro"):
        res = mc.minimize_max(prob, method=method, x0=x0)
        assert res.fun <= f_start, method
        assert _relative_gap(prob, x0, res.fun) <= TARGET, method


@pytest.mark.parametrize(("m", "d", "kappa", "seed"), GRID[1:4])
def test_default_average_reaches_its_own_target(m: int, d: int, kappa: float, seed: int) -> None:
    """``average`` targets ``argmin mean_i L_i`` (closed form): its own relative gap."""
    prob = mc.problems.random_quadratic(m, d, mu=1.0, smoothness=kappa, seed=seed)
    a = prob.hessian_stack
    x_star = np.linalg.solve(a.sum(axis=0), np.einsum("mij,mj->i", a, prob.centers))
    res = mc.minimize_max(prob, method="average")
    best, start = prob.losses(x_star).mean(), prob.losses(np.zeros(d)).mean()
    assert (prob.losses(res.x).mean() - best) / (start - best) <= 1e-10


def test_the_former_rules_stay_as_explicit_options() -> None:
    """The paper's fixed step (softmax) and the former Group DRO rule are one option away,
    and on the issue's problem (L/mu = 30, M = 40, d = 60) they still make little or negative
    progress: why they are no longer the defaults (positive control of the grid test)."""
    prob = mc.problems.random_quadratic(40, 60, mu=1.0, smoothness=30.0, seed=0)
    x0 = np.zeros(prob.dim)
    paper = mc.minimize_max(prob, method="softmax", temperature=0.1, line_search="fixed")
    assert paper.info["line_search"] == "fixed"
    assert _relative_gap(prob, x0, paper.fun) > 0.5
    former = mc.minimize_max(prob, method="group_dro", step_rule="strongly_convex")
    assert former.info["step_rule"] == "strongly_convex"
    assert former.fun > float(np.max(prob.losses(x0)))  # ends above its start
    with pytest.raises(ValueError, match="step_rule must be 'smooth' or 'strongly_convex'"):
        mc.minimize_max(prob, method="group_dro", step_rule="fast")
