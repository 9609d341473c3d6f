"""``method="auto"`` (minimax_core.exact) against CVXPY: optimum, certificate, dual weights;
the simplex QP behind the first-order engine; bad input."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minimax_core as mc
from minimax_core import exact
from minimax_core.simplex_qp import kkt_residual, solve_simplex_qp

from .helpers import CATALOGUE, optimum, problem, quadratic_problems

ALGORITHMS = ("interior_point", "gradient_mapping")


class FirstOrderOnly:
    """A user problem that gives only losses and jacobian (plus the constants it knows)."""

    def __init__(self, inner: Any, *, mu: float | None, smoothness: float | None) -> None:
        self.inner = inner
        self.num_tasks, self.dim = inner.num_tasks, inner.dim
        if mu is not None:
            self.mu = mu
        if smoothness is not None:
            self.smoothness = smoothness

    def losses(self, x: np.ndarray) -> np.ndarray:
        return self.inner.losses(x)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        return self.inner.jacobian(x)


def _check_optimality(prob: Any, res: mc.Result, scale: float) -> None:
    """KKT conditions of ``min t s.t. L_i(x) <= t`` at ``(res.x, res.weights)``: weights on
    the simplex, ``sum_i w_i grad L_i(x) = 0``, weight only on active tasks."""
    w = res.weights
    assert w is not None and w.shape == (prob.num_tasks,)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
    values, jac = prob.losses(res.x), prob.jacobian(res.x)
    grad_norm = float(np.linalg.norm(w @ jac))
    assert grad_norm <= 1e-4 * max(1.0, float(np.max(np.linalg.norm(jac, axis=1)))), grad_norm
    slack = float(np.max(values)) - values
    assert np.all(slack[w > 0] <= 1e-6 * scale), slack[w > 0]
    # complementarity is what the certificate measures: w'(F - L) <= certificate
    assert float(w @ slack) <= res.certificate + 1e-14 * scale


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", CATALOGUE)
def test_auto_matches_cvxpy_with_a_valid_certificate(name: str, algorithm: str) -> None:
    prob = problem(name)
    ref = optimum(name)
    res = mc.minimize_max(prob, algorithm=algorithm)
    assert res.method == "auto" and res.info["algorithm"] == algorithm
    assert res.success and res.status == 0, res.message
    assert res.fun == pytest.approx(float(np.max(prob.losses(res.x))), rel=1e-14)
    # certified: F(x) - F* <= certificate <= tol |F(x)|, and the lower bound is below F*
    assert res.certificate is not None
    assert 0.0 <= res.certificate <= 1e-8 * abs(res.fun)
    assert res.info["lower_bound"] <= ref + 1e-8 * max(1.0, abs(ref))
    # F_cvxpy >= F*, so F(x) - F_cvxpy <= F(x) - F* <= certificate; CVXPY is accurate to
    # about 1e-9, so auto is within 1e-8 relative of it
    assert res.fun - ref <= res.certificate + 1e-15
    assert abs(res.fun - ref) <= 1e-8 * abs(ref)
    _check_optimality(prob, res, max(1.0, abs(ref)))


@pytest.mark.parametrize("name", [n for n in CATALOGUE if n != "quad-identical"])
def test_auto_weights_are_the_cvxpy_multipliers(name: str) -> None:
    """Away from ties the multipliers are unique: both solvers find the same ones."""
    prob = problem(name)
    ref = mc.reference.solve_cvxpy(prob)
    res = mc.minimize_max(prob)
    np.testing.assert_allclose(res.weights, ref.weights, atol=1e-5)
    assert set(res.info["active"]) == set(np.flatnonzero(ref.weights > 1e-6))


def test_identical_tasks_split_the_weight_evenly() -> None:
    res = mc.minimize_max(problem("quad-identical"))
    np.testing.assert_allclose(res.weights, 0.25, atol=1e-12)
    assert res.success


@settings(max_examples=15)
@given(prob=quadratic_problems(max_tasks=6, max_dim=6), algorithm=st.sampled_from(ALGORITHMS))
def test_auto_certificate_holds_on_generated_problems(
    prob: mc.problems.QuadraticTasks, algorithm: str
) -> None:
    ref = mc.reference.solve_cvxpy(prob)
    assert ref.success, ref.message
    res = mc.minimize_max(prob, algorithm=algorithm)
    assert res.success, res.message
    assert res.fun - ref.fun <= res.certificate + 1e-9 * max(1.0, abs(ref.fun))
    assert res.info["lower_bound"] <= ref.fun + 1e-9 * max(1.0, abs(ref.fun))
    assert abs(res.fun - ref.fun) <= 1e-7 * max(1.0, abs(ref.fun))


def test_tolerance_is_relative() -> None:
    """Scaling every loss by c scales F and the certificate by c: the same point succeeds."""
    base = problem("quad-8x10")
    for c in (1e-6, 1.0, 1e6):
        prob = mc.problems.QuadraticTasks(base.hessian_stack * c, base.centers, base.offsets * c)
        res = mc.minimize_max(prob, tol=1e-10)
        assert res.success, (c, res.message)
        assert res.certificate <= 1e-10 * abs(res.fun)
        assert res.fun / c == pytest.approx(optimum("quad-8x10"), rel=1e-8)


def test_tight_tolerance_and_atol() -> None:
    prob = problem("quad-20x5")
    res = mc.minimize_max(prob, tol=1e-13)
    assert res.success and res.certificate <= 1e-13 * abs(res.fun)
    # an optimum at 0 (common minimiser, zero offsets) needs atol
    zero = mc.problems.QuadraticTasks(prob.hessian_stack, np.zeros((20, 5)), np.zeros(20))
    res = mc.minimize_max(zero, x0=np.ones(5), atol=1e-12)
    assert res.success and res.fun <= 1e-12
    np.testing.assert_allclose(res.x, 0.0, atol=1e-5)


def test_far_start_and_ill_conditioning() -> None:
    prob = mc.problems.random_quadratic(num_tasks=15, dim=12, mu=0.01, smoothness=100.0, seed=3)
    ref = mc.reference.solve_cvxpy(prob)
    for algorithm in ALGORITHMS:
        res = mc.minimize_max(prob, x0=np.full(12, 50.0), algorithm=algorithm)
        assert res.success, res.message
        assert abs(res.fun - ref.fun) <= 1e-7 * abs(ref.fun)


def test_more_tasks_than_dimensions() -> None:
    """M >> d: at most d + 1 tasks are active at the optimum."""
    prob = mc.problems.random_quadratic(num_tasks=80, dim=3, seed=4)
    ref = mc.reference.solve_cvxpy(prob)
    for algorithm in ALGORITHMS:
        res = mc.minimize_max(prob, algorithm=algorithm)
        assert res.success and abs(res.fun - ref.fun) <= 1e-8 * abs(ref.fun)
        assert 1 <= len(res.info["active"]) <= 4
        _check_optimality(prob, res, abs(ref.fun))


def test_singular_hessians_use_the_exact_quadratic_bound() -> None:
    """PSD tasks of rank 3 in R^6 (mu = 0): the strong-convexity bound is unavailable; the
    exact minimum of sum_i w_i L_i certifies the interior-point solution."""
    rng = np.random.default_rng(5)
    factors = rng.standard_normal((5, 6, 3))
    prob = mc.problems.QuadraticTasks(
        factors @ np.swapaxes(factors, 1, 2), rng.standard_normal((5, 6)), rng.uniform(0, 1, 5)
    )
    assert prob.mu == 0.0
    ref = mc.reference.solve_cvxpy(prob)
    res = mc.minimize_max(prob)
    assert res.success and res.info["algorithm"] == "interior_point"
    assert abs(res.fun - ref.fun) <= 1e-8 * abs(ref.fun)


def test_user_problem_without_hessians_uses_the_gradient_mapping() -> None:
    inner = problem("quad-8x10")
    known = FirstOrderOnly(inner, mu=inner.mu, smoothness=inner.smoothness)
    res = mc.minimize_max(known)
    assert res.info["algorithm"] == "gradient_mapping"
    assert res.success and abs(res.fun - optimum("quad-8x10")) <= 1e-8 * abs(res.fun)
    # unknown smoothness: backtracking on L finds a valid step
    res = mc.minimize_max(FirstOrderOnly(inner, mu=inner.mu, smoothness=None))
    assert res.success and abs(res.fun - optimum("quad-8x10")) <= 1e-8 * abs(res.fun)
    assert res.info["smoothness"] <= 4 * inner.smoothness


def test_without_mu_there_is_no_certificate() -> None:
    """The optimality conditions still hold, but success needs a certificate."""
    inner = problem("quad-8x10")
    res = mc.minimize_max(FirstOrderOnly(inner, mu=None, smoothness=inner.smoothness))
    assert not res.success and res.status == 5 and res.certificate is None
    assert "mu" in res.message
    assert abs(res.fun - optimum("quad-8x10")) <= 1e-6 * abs(res.fun)
    # passing mu gives the certificate
    res = mc.minimize_max(FirstOrderOnly(inner, mu=None, smoothness=inner.smoothness), mu=inner.mu)
    assert res.success
    # the interior point on non-quadratic tasks needs mu as well
    logistic = problem("logistic-4x3")
    res = mc.minimize_max(logistic, mu=0.0)
    assert res.info["algorithm"] == "interior_point"
    assert not res.success and res.status == 5 and res.certificate is None
    assert abs(res.fun - optimum("logistic-4x3")) <= 1e-7 * abs(res.fun)


def test_history_callback_and_budget() -> None:
    prob = problem("quad-20x5")
    res = mc.minimize_max(prob)
    hist = res.history
    assert hist["step"][0] == 0 and hist["step"][-1] == res.nit
    assert np.all(np.diff(hist["step"]) == 1) and np.all(np.diff(hist["nfev"]) >= 0)
    assert hist["certificate"][-1] == pytest.approx(res.certificate, rel=1e-6)
    seen: list[int] = []

    def stop_at_two(it: mc.Iterate) -> bool:
        seen.append(it.step)
        assert it.fun == pytest.approx(float(np.max(prob.losses(it.x))), rel=1e-10)
        return it.step == 2

    res = mc.minimize_max(prob, callback=stop_at_two)
    assert res.status == 2 and not res.success and seen == [0, 1, 2]
    res = mc.minimize_max(prob, steps=1)
    assert res.status == 1 and not res.success and res.nit == 1


def test_quadratic_lower_bound_is_the_minimum_of_the_weighted_loss() -> None:
    prob = problem("quad-8x10")
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(10), rng.dirichlet(np.ones(8))
    values, jac = prob.value_and_jacobian(x)
    hess = np.einsum("m,mij->ij", w, prob.hessian_stack)
    bound = exact.quadratic_lower_bound(values, jac, w, hess)
    y = np.linalg.solve(hess, np.einsum("m,mij,mj->i", w, prob.hessian_stack, prob.centers))
    assert bound == pytest.approx(float(w @ prob.losses(y)), rel=1e-12)
    assert exact.quadratic_lower_bound(values, jac, w, np.zeros((10, 10))) == -math.inf


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"algorithm": "newton"}, ValueError, "algorithm"),
        ({"atol": -1.0}, ValueError, "atol"),
        ({"atol": math.nan}, ValueError, "atol"),
        ({"stochastic": True}, ValueError, "stochastic"),
        ({"temperature": 0.1}, TypeError, "temperature"),
        ({"tol": 0.0}, ValueError, "tol"),
    ],
)
def test_auto_bad_input(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        mc.minimize_max(problem("lsq-5x6"), **kwargs)


def test_interior_point_needs_hessians() -> None:
    inner = problem("quad-3x2")
    with pytest.raises(ValueError, match="hessians"):
        mc.minimize_max(FirstOrderOnly(inner, mu=1.0, smoothness=10.0), algorithm="interior_point")


def test_bad_problem_output_shape_is_named() -> None:
    class WrongShape:
        num_tasks, dim, mu, smoothness = 3, 2, 1.0, 1.0

        def losses(self, x):
            return np.zeros(2)

        def jacobian(self, x):
            return np.zeros((3, 2))

    with pytest.raises(ValueError, match=r"losses\(x\) must return shape"):
        mc.minimize_max(WrongShape())


# --------------------------------------------------------------------------- simplex QP


@settings(max_examples=40)
@given(
    m=st.integers(1, 12),
    d=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
    spread=st.floats(0.01, 100.0),
)
def test_simplex_qp_is_optimal(m: int, d: int, seed: int, spread: float) -> None:
    """KKT residual ~0 and no better point among random simplex points and vertices
    (Q = G G' is singular when M > d)."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((m, d))
    q, lin = g @ g.T, rng.standard_normal(m) * spread
    res = solve_simplex_qp(q, lin)
    assert res.converged
    w = res.weights
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
    scale = max(1.0, float(np.max(np.abs(q))), spread)
    assert res.error <= 1e-9 * scale
    assert res.value == pytest.approx(0.5 * w @ q @ w - w @ lin, abs=1e-12 * scale)
    others = np.vstack([rng.dirichlet(np.ones(m), size=200), np.eye(m)])
    values = 0.5 * np.einsum("ki,ij,kj->k", others, q, others) - others @ lin
    assert np.all(values >= res.value - 1e-9 * scale)


def test_simplex_qp_warm_start_and_residual() -> None:
    rng = np.random.default_rng(1)
    g = rng.standard_normal((30, 10))
    q, lin = g @ g.T, rng.standard_normal(30)
    cold = solve_simplex_qp(q, lin)
    warm = solve_simplex_qp(q, lin, warm_start=cold.weights)
    assert warm.iter_num <= 2 and warm.converged
    np.testing.assert_allclose(warm.weights, cold.weights, atol=1e-12)
    assert kkt_residual(q, lin, np.full(30, 1 / 30)) > 1e-3  # not optimal: detected


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.eye(2), np.zeros(3)), {}, "gram must have shape"),
        ((np.eye(2), np.zeros((2, 1))), {}, "linear must be a 1-d"),
        ((np.eye(2), np.array([0.0, np.nan])), {}, "finite"),
        ((np.eye(2), np.zeros(2)), {"tol": 0.0}, "tol"),
        ((np.eye(2), np.zeros(2)), {"steps": 0}, "steps"),
    ],
)
def test_simplex_qp_bad_input(args: tuple[Any, ...], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        solve_simplex_qp(*args, **kwargs)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_common_offset_does_not_loosen_the_tolerance(algorithm: str) -> None:
    """Offsets ``b_i + 1e8``: the tolerance is on the part of F that depends on x
    (``F - min_i b_i``), not on ``|F| ~ 1e8`` (which allowed ``F - F* ~ 0.1``)."""
    base = mc.problems.random_quadratic(num_tasks=10, dim=20, seed=11, center_scale=3.0)
    exact_fun = mc.minimize_max(base, tol=1e-13).fun  # F* of the unshifted tasks
    shift = 1e8
    prob = mc.problems.QuadraticTasks(base.hessian_stack, base.centers, base.offsets + shift)
    inner = prob if algorithm == "interior_point" else FirstOrderOnly(prob, mu=1.0, smoothness=10.0)
    res = mc.minimize_max(inner, algorithm=algorithm)
    assert res.success, res.message
    x_part = exact_fun - float(np.min(base.offsets))
    resolution = 2 * np.spacing(shift)  # F ~ 1e8 is resolved to ~1.5e-8
    # the returned point is tol-accurate on the x part (F(x) evaluated without the shift)
    assert float(np.max(base.losses(res.x))) - exact_fun <= 1e-8 * x_part + 1e-15
    assert res.fun - (exact_fun + shift) <= 1e-8 * x_part + resolution
    if algorithm == "interior_point":  # knows c = min_i b_i exactly
        assert res.certificate <= 1e-8 * x_part + resolution
    else:  # only its strong-convexity bound c >= min_i (L_i - ||grad L_i||^2 / (2 mu))
        values, jac = prob.losses(res.x), prob.jacobian(res.x)
        floor = float(np.min(values - np.einsum("mi,mi->m", jac, jac) / 2.0))
        assert res.certificate <= 1e-8 * (res.fun - floor) + resolution
