"""Every ``proofs_checks`` statement on generated problems (one-sided, at every recorded
step), two-sided rates on fixed seeded problems, and negative controls that show each
check can fail."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

import minimax_core as mc
from minimax_core.weights import smoothed_max
from proofs_checks import (
    Slack,
    convex_combination,
    covering,
    implicit_regularization,
    log_sum_exp,
    smoothing_curvature,
    softmax_rate,
    subgradient_rate,
)
from proofs_checks.numerics import minimize_smoothed, optimum_bracket
from tests.helpers import quadratic_problems

temperatures = st.floats(-4.0, 1.0).map(lambda e: 10.0**e)
seeds = st.integers(0, 2**31 - 1)


def assert_holds(result: Slack) -> None:
    assert isinstance(result, Slack)
    assert math.isfinite(result.slack), result
    assert result.holds, str(result)


def points_near(problem: Any, seed: int, count: int = 4) -> np.ndarray:
    """Random points at the scale of the task centers (plus the origin)."""
    rng = np.random.default_rng(seed)
    scale = 1.0 + float(np.max(np.linalg.norm(problem.centers, axis=1)))
    pts = rng.standard_normal((count, problem.dim)) * scale / math.sqrt(problem.dim)
    return np.vstack([np.zeros(problem.dim), pts])


def average_risk_minimiser(problem: mc.problems.QuadraticTasks) -> np.ndarray:
    a = problem.hessian_stack.sum(axis=0)
    return np.linalg.solve(a, np.einsum("mij,mj->i", problem.hessian_stack, problem.centers))


class Perturbed:
    """A problem whose gradients (or claimed constants) are wrong: the negative control."""

    def __init__(
        self,
        base: Any,
        *,
        grad_scale: float = 1.0,
        mu_scale: float = 1.0,
        lipschitz_scale: float = 1.0,
    ) -> None:
        self.base = base
        self.grad_scale = grad_scale
        self.lipschitz_scale = lipschitz_scale
        self.num_tasks, self.dim = base.num_tasks, base.dim
        self.mu, self.smoothness = base.mu * mu_scale, base.smoothness

    def losses(self, x: np.ndarray) -> np.ndarray:
        return self.base.losses(x)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        return self.grad_scale * self.base.jacobian(x)

    def hessians(self, x: np.ndarray) -> np.ndarray:
        return self.base.hessians(x)

    def lipschitz(self, center: np.ndarray, radius: float) -> float:
        return self.lipschitz_scale * self.base.lipschitz(center, radius)

    def cvxpy_losses(self, cp: Any, x: Any) -> list[Any]:
        return self.base.cvxpy_losses(cp, x)


def opposed_pair() -> mc.problems.QuadraticTasks:
    """Two tasks ``0.5 ||x -+ e_1||^2``: at ``x = 0`` equal losses and gradients ``-+ e_1``,
    the case that attains the curvature bound ``L + G^2/tau``; ``F = 0.5 ||x||^2 + |x_1| +
    0.5`` has a kink at its minimiser ``0`` (the subgradient method's hard case)."""
    return mc.problems.QuadraticTasks(
        np.stack([np.eye(2)] * 2), np.array([[1.0, 0.0], [-1.0, 0.0]]), np.zeros(2)
    )


def slow_direction_task() -> mc.problems.QuadraticTasks:
    """One task ``diag(1, 4)`` started on its ``mu`` eigenvector: the smoothed gap contracts
    by exactly ``(1 - eta mu)^2`` per step, within a hair of the bound ``1 - mu/L_tau``."""
    return mc.problems.QuadraticTasks(
        np.diag([1.0, 4.0])[None], np.array([[3.0, 0.0]]), np.zeros(1)
    )


# --------------------------------------------------------------------------- log-sum-exp


@given(quadratic_problems(), temperatures, seeds)
def test_sandwich_holds_on_generated_problems(problem, temperature, seed):
    result = log_sum_exp.check_sandwich(problem, points_near(problem, seed), temperature)
    assert_holds(result)
    assert 0.0 <= result.ratio <= 1.0 + 1e-12


def test_sandwich_is_attained_at_both_ends():
    # M identical tasks: F_tau - F = tau log M exactly; one task: F_tau = F exactly
    base = mc.problems.random_quadratic(1, 3, seed=0)
    tied = mc.problems.QuadraticTasks(
        np.repeat(base.hessian_stack, 5, axis=0),
        np.repeat(base.centers, 5, axis=0),
        np.repeat(base.offsets, 5),
    )
    pts = np.ones((2, 3))
    assert log_sum_exp.check_sandwich(tied, pts, 0.3).ratio == pytest.approx(1.0, rel=1e-12)
    single = log_sum_exp.check_sandwich(base, pts, 0.3)
    assert single.details["F_tau"] == pytest.approx(single.details["F"], rel=1e-15)


@given(quadratic_problems(), temperatures, seeds)
def test_gradient_formula_on_generated_problems(problem, temperature, seed):
    assert_holds(log_sum_exp.check_gradient(problem, points_near(problem, seed), temperature))


def test_gradient_check_catches_a_wrong_gradient():
    problem = mc.problems.random_quadratic(4, 3, seed=1)
    pts = points_near(problem, 0)
    assert log_sum_exp.check_gradient(problem, pts, 0.5).holds
    wrong = Perturbed(problem, grad_scale=1.01)
    assert not log_sum_exp.check_gradient(wrong, pts, 0.5).holds


def test_gradient_check_on_logistic_tasks():
    problem = mc.problems.logistic_tasks(4, 3, num_samples=30, l2=0.5, seed=8)
    pts = np.random.default_rng(0).standard_normal((4, 3))
    assert_holds(log_sum_exp.check_gradient(problem, pts, 0.1))
    assert_holds(log_sum_exp.check_sandwich(problem, pts, 0.1))


# --------------------------------------------------------------------------- curvature


@given(quadratic_problems(), temperatures, st.floats(0.1, 5.0), seeds)
def test_curvature_bounds_on_generated_problems(problem, temperature, radius, seed):
    center = points_near(problem, seed, count=1)[1]
    result = smoothing_curvature.check_curvature(
        problem, temperature, center=center, radius=radius, num_pairs=20, seed=seed
    )
    assert_holds(result)
    assert result.ratio <= 1.0
    assert result.details["min_curvature_over_mu"] >= 1.0 - 1e-6


def test_curvature_check_catches_an_understated_lipschitz_constant():
    """Near-tight: at ``tau = 0.1`` on the ball of radius 0.1 around the tie point the
    largest curvature is ~0.84 of ``L + G^2/tau``; with ``G`` understated 2x the check
    fails."""
    problem = opposed_pair()
    honest = smoothing_curvature.check_curvature(problem, 0.1, radius=0.1)
    assert_holds(honest)
    assert honest.ratio > 0.75
    wrong = Perturbed(problem, lipschitz_scale=0.5)
    assert not smoothing_curvature.check_curvature(wrong, 0.1, radius=0.1).holds


def test_curvature_check_catches_an_overstated_mu():
    problem = mc.problems.random_quadratic(3, 4, seed=2)
    assert smoothing_curvature.check_curvature(problem, 1.0, radius=2.0).holds
    wrong = Perturbed(problem, mu_scale=1.5)
    assert not smoothing_curvature.check_curvature(wrong, 1.0, radius=2.0).holds


# --------------------------------------------------------------------------- softmax rate


@given(quadratic_problems(max_tasks=5, max_dim=5), st.floats(-2.0, 1.0).map(lambda e: 10.0**e))
@settings(max_examples=20)
def test_softmax_linear_rate_at_every_step(problem, temperature):
    result = softmax_rate.check_linear_rate(problem, temperature, steps=60)
    assert_holds(result)
    assert result.details["step_residual"] <= 1e-12  # the solver ran the stated iteration
    assert result.ratio <= 1.0 + 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_softmax_rate_matches_the_hessian_at_the_optimum(seed):
    """Two-sided: the measured contraction equals ``(1 - eta lambda_min(hess F_tau))^2``."""
    problem = mc.problems.random_quadratic(
        3, 3, mu=1.0, smoothness=2.0, seed=seed, center_scale=0.3
    )
    result = softmax_rate.check_linear_rate(problem, 0.5, steps=400)
    assert_holds(result)
    measured, predicted = result.details["rate"], result.details["predicted_rate"]
    assert math.log(measured) / math.log(predicted) == pytest.approx(1.0, abs=0.03)
    # and the theorem's worst-case rate is slower than what happens
    assert result.details["rate_bound"] >= measured


def test_linear_rate_check_catches_mu_overstated_twice():
    """Near-tight (measured / bound 0.999): with ``mu`` overstated 2x the rate bound
    ``1 - 2 mu / L_tau`` is faster than the true ``(1 - mu / L_tau)^2`` and the check fails."""
    problem = slow_direction_task()
    honest = softmax_rate.check_linear_rate(problem, 0.5, steps=100)
    assert_holds(honest)
    assert honest.ratio > 0.99
    assert not softmax_rate.check_linear_rate(
        Perturbed(problem, mu_scale=2.0), 0.5, steps=100
    ).holds


@given(
    quadratic_problems(max_tasks=4, max_dim=4, max_condition=3.0),
    st.floats(0.3, 0.9),
)
@settings(max_examples=15)
def test_iterations_to_accuracy(problem, fraction):
    gap0 = float(np.max(problem.losses(np.zeros(problem.dim)))) - optimum_bracket(problem).lower
    if gap0 <= 1e-9:
        reject()
    try:
        result = softmax_rate.check_iterations_to_accuracy(problem, fraction * gap0, steps=6000)
    except ValueError:
        reject()  # the theorem asks for more steps than the test budget
    assert_holds(result)
    assert result.details["iterations_needed"] <= result.details["iterations_bound"]


# --------------------------------------------------------------------------- subgradient


@given(quadratic_problems(max_tasks=6, max_dim=6, max_condition=30.0))
@settings(max_examples=20)
def test_subgradient_bound_at_every_recorded_step(problem):
    result = subgradient_rate.check_subgradient_bound(problem, steps=300)
    assert_holds(result)
    assert len(result.details["gap"]) > 10


@pytest.mark.parametrize(
    ("num_tasks", "dim", "smoothness", "seed"),
    [(3, 3, 2.0, s) for s in range(4)] + [(10, 20, 10.0, 0), (10, 20, 10.0, 1)],
)
def test_subgradient_rate_is_one_over_t(num_tasks, dim, smoothness, seed):
    """Two-sided on fixed seeded problems: the log-log slope of the last decade is -1."""
    problem = mc.problems.random_quadratic(num_tasks, dim, mu=1.0, smoothness=smoothness, seed=seed)
    result = subgradient_rate.check_subgradient_bound(problem, steps=3000)
    assert_holds(result)
    assert -1.2 <= result.details["slope"] <= -0.85


def test_subgradient_check_catches_an_overstated_mu():
    """On the kink of two opposed tasks (measured / bound 0.1) the check fails with ``mu``
    overstated 10x (and already 2x): the steps and the projection radius shrink with it."""
    problem = opposed_pair()
    x0 = np.array([0.5, 2.0])
    honest = subgradient_rate.check_subgradient_bound(problem, steps=300, x0=x0)
    assert_holds(honest)
    assert honest.ratio > 0.05
    for scale in (10.0, 2.0):
        wrong = Perturbed(problem, mu_scale=scale)
        assert not subgradient_rate.check_subgradient_bound(wrong, steps=300, x0=x0).holds


# --------------------------------------------------------------------------- Section 5


@given(quadratic_problems(), st.integers(0, 10), st.floats(0.05, 20.0), seeds)
@settings(max_examples=20)
def test_convex_combinations_never_exceed_the_max(problem, count, concentration, seed):
    mixtures = mc.problems.random_mixtures(
        problem.num_tasks, count, concentration=concentration, seed=seed
    )
    x_mm = optimum_bracket(problem).x
    pts = np.vstack([x_mm, average_risk_minimiser(problem), points_near(problem, seed)])
    result = convex_combination.check_convex_combination(problem, mixtures, pts)
    assert_holds(result)
    assert result.details["construction_error"] <= 1e-9
    assert result.ratio == pytest.approx(1.0, abs=1e-9) or np.all(result.details["F"] <= 0)
    # the worst downstream loss at the minimax point is F*, and no larger than at the
    # average-risk minimiser
    worst = result.details["downstream"].max(axis=1)
    assert worst[0] <= worst[1] + 1e-7 * max(1.0, abs(worst[1]))


@given(quadratic_problems(), st.integers(1, 6), seeds, st.floats(0.0, 10.0))
def test_gd_stays_in_the_initial_ball(problem, count, seed, spread):
    tasks = mc.problems.downstream_tasks(
        problem, mc.problems.random_mixtures(problem.num_tasks, count, seed=seed)
    )
    x0 = np.random.default_rng(seed).standard_normal(problem.dim) * spread
    result = implicit_regularization.check_quadratic_tasks_in_ball(tasks, x0, steps=60)
    assert_holds(result)
    assert result.details["radius_slack"] >= -result.tolerance
    assert result.ratio <= 1.0 + 1e-12


def test_gd_contraction_is_tight_on_a_quadratic():
    """Two-sided: the distance contracts at exactly ``1 - mu_f/L_f`` asymptotically."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    eig = np.array([0.5, 1.0, 2.0, 3.0, 4.0])
    a, c = (q * eig) @ q.T, rng.standard_normal(5)
    result = implicit_regularization.check_gd_in_ball(
        lambda x: a @ (x - c), np.zeros(5), c, 0.5, 4.0, steps=200
    )
    assert_holds(result)
    dist = result.details["distance"]
    rate = (dist[200] / dist[100]) ** (1 / 100)
    assert rate == pytest.approx(1 - 0.5 / 4.0, rel=1e-6)


def test_ball_check_ignores_the_trivial_first_step():
    """At ``t = 0`` distance and bound are both ``r``; the slack and ratio come from ``t >=
    1``, so a contraction exactly at the bound has ratio 1 and a faster one less."""
    c = np.array([1.0, 0.0])
    fast = implicit_regularization.check_gd_in_ball(
        lambda x: np.diag([1.0, 2.0]) @ (x - c), np.zeros(2), c, 0.5, 2.0, steps=20
    )
    assert_holds(fast)
    assert fast.slack > 1e-3  # x0 - x* on the stiff-ish direction: faster than the bound
    assert fast.ratio < 1.0 - 1e-3
    exact = implicit_regularization.check_gd_in_ball(
        lambda x: np.diag([0.5, 2.0]) @ (x - c), np.zeros(2), c, 0.5, 2.0, steps=20
    )
    assert exact.ratio == pytest.approx(1.0, abs=1e-12)


def test_ball_check_catches_mu_overstated_twice():
    """On the slow eigen-direction the contraction is exactly ``1 - mu/L``; claiming ``2 mu``
    promises ``1 - 2 mu/L`` and fails from the first step."""
    c = np.array([1.0, 0.0])
    grad = lambda x: np.diag([0.5, 2.0]) @ (x - c)  # noqa: E731
    assert implicit_regularization.check_gd_in_ball(grad, np.zeros(2), c, 0.5, 2.0).holds
    assert not implicit_regularization.check_gd_in_ball(grad, np.zeros(2), c, 1.0, 2.0).holds


def test_ball_check_catches_a_too_long_step():
    c = np.ones(3)
    # gradient of 0.5 * 2.5 ||x - c||^2 while claiming L = 1: GD overshoots and diverges
    result = implicit_regularization.check_gd_in_ball(
        lambda x: 2.5 * (x - c), np.zeros(3), c, 1.0, 1.0, steps=10
    )
    assert not result.holds


# --------------------------------------------------------------------------- covering


@given(st.floats(0.5, 3.0), st.floats(0.5, 3.0), st.integers(1, 4), seeds)
@settings(max_examples=20)
def test_covering_bound(radius, radius_over_eps, dim, seed):
    # (1 + 2r/eps)^d <= 7^4 = 2401 < 3000 candidates: the bound is never met for free
    eps = radius / radius_over_eps
    result = covering.check_covering(radius, eps, dim, num_candidates=3000, seed=seed)
    assert_holds(result)
    assert result.details["net_size"] >= 1


def test_covering_check_refuses_to_be_vacuous():
    """With at most as many candidates as the bound, no net can violate it."""
    with pytest.raises(ValueError, match="num_candidates"):
        covering.check_covering(1.0, 0.1, 3, num_candidates=1000)  # bound 21^3 = 9261


@pytest.mark.parametrize(("radius_over_eps", "dim"), [(10.0, 1), (5.0, 2)])
def test_covering_check_catches_a_bound_off_by_two(monkeypatch, radius_over_eps, dim):
    """Misstate the net bound as ``(1 + r/eps)^d`` (the 2 dropped): the check fails."""
    assert covering.check_covering(1.0, 1.0 / radius_over_eps, dim).holds
    monkeypatch.setattr(mc.bounds, "covering_number_log", lambda r, e, d: d * math.log1p(r / e))
    assert not covering.check_covering(1.0, 1.0 / radius_over_eps, dim).holds


@pytest.mark.parametrize("dim", [1, 2])
def test_covering_exponent_is_the_dimension(dim):
    """Two-sided: log N grows like ``d log(1/eps)`` (a dense candidate set, small eps)."""
    eps = np.array([0.2, 0.1, 0.05]) if dim == 2 else np.array([0.05, 0.02, 0.01])
    sizes = [
        covering.check_covering(1.0, e, dim, num_candidates=8000).details["net_size"] for e in eps
    ]
    slope = np.polyfit(np.log(1 / eps), np.log(sizes), 1)[0]
    assert dim - 0.3 <= slope <= dim + 0.1


def test_greedy_packing_is_separated_and_covers_its_points():
    pts = np.random.default_rng(0).standard_normal((500, 2))
    net = covering.greedy_packing(pts, 0.3)
    gaps = np.linalg.norm(net[:, None] - net[None], axis=2) + np.eye(len(net)) * 10
    assert gaps.min() > 0.3
    assert np.linalg.norm(pts[:, None] - net[None], axis=2).min(axis=1).max() <= 0.3


# --------------------------------------------------------------------------- numerics, input


def test_smoothed_minimum_is_stationary_and_below_the_sandwich():
    problem = mc.problems.random_quadratic(5, 4, seed=3)
    f_star = optimum_bracket(problem)
    for tau in (1e-3, 0.1, 1.0):
        best = minimize_smoothed(problem, tau, x0=f_star.x)
        grad = mc.weights.softmax_weights(problem.losses(best.x), tau) @ problem.jacobian(best.x)
        assert np.linalg.norm(grad) <= 1e-8
        assert f_star.lower - 1e-9 <= best.value <= f_star.upper + tau * math.log(5) + 1e-9
        assert best.value == pytest.approx(smoothed_max(problem.losses(best.x), tau))


def test_bad_inputs_are_rejected_with_the_parameter_name():
    problem = mc.problems.random_quadratic(3, 2, seed=0)
    with pytest.raises(ValueError, match="temperature"):
        log_sum_exp.check_sandwich(problem, np.zeros((1, 2)), 0.0)
    with pytest.raises(ValueError, match="points"):
        log_sum_exp.check_sandwich(problem, np.zeros((1, 3)), 1.0)
    with pytest.raises(ValueError, match="radius"):
        smoothing_curvature.check_curvature(problem, 1.0, radius=-1.0)
    with pytest.raises(ValueError, match="steps"):
        softmax_rate.check_linear_rate(problem, 1.0, steps=0)
    with pytest.raises(ValueError, match="eps"):
        softmax_rate.check_iterations_to_accuracy(problem, -1.0)
    with pytest.raises(ValueError, match="budget steps = 10"):
        softmax_rate.check_iterations_to_accuracy(problem, 1e-6, steps=10)
    with pytest.raises(ValueError, match="simplex"):
        convex_combination.check_convex_combination(problem, [[0.5, 0.6, -0.1]], np.zeros(2))
    with pytest.raises(ValueError, match="mu"):
        implicit_regularization.check_gd_in_ball(lambda x: x, np.zeros(2), np.zeros(2), 2.0, 1.0)
    with pytest.raises(ValueError, match="eps"):
        covering.check_covering(1.0, 0.0, 2)
    with pytest.raises(ValueError, match="dim"):
        covering.check_covering(1.0, 0.5, 0)


@pytest.mark.slow
def test_module_runner_checks_every_statement(capsys):
    from proofs_checks.__main__ import main

    assert main() == 0
    printed = capsys.readouterr().out
    for statement in ("F <= F_tau", "hess F_tau", "(1 - mu/L_tau)^t", "2 G^2", "lambda_i L_i",
                      "||x_t - x*||", "(1 + 2r/eps)^d", "T(eps)"):  # fmt: skip
        assert statement in printed
    assert "every statement held" in printed


@pytest.mark.parametrize("share", [0.25, 0.5, 0.9])
def test_iteration_count_at_any_temperature_reaches_eps(share):
    """``softmax_iterations_at_temperature`` (the count the temperature plot draws): with
    ``tau log M = share * eps``, that many guaranteed steps give ``F(x_T) - F* <= eps``."""
    problem = mc.problems.random_quadratic(3, 3, mu=1.0, smoothness=2.0, seed=0, center_scale=0.3)
    x0 = np.zeros(3)
    bracket = optimum_bracket(problem)
    eps = 0.3 * (float(np.max(problem.losses(x0))) - bracket.lower)
    tau = share * eps / math.log(3)
    eta, l_tau, _ = softmax_rate.theory_step_size(problem, tau, x0)
    gap0 = smoothed_max(problem.losses(x0), tau) - minimize_smoothed(problem, tau).value
    rate = mc.bounds.softmax_linear_rate(problem.mu, l_tau)
    count = mc.bounds.softmax_iterations_at_temperature(eps, tau, gap0, rate, 3)
    assert count is not None and 0 < count <= 20_000
    res = mc.minimize_max(
        problem,
        "softmax",
        temperature=tau,
        step_size=eta,
        line_search="fixed",
        steps=count,
        tol=1e-300,
        x0=x0,
    )
    assert res.nit == count
    assert res.fun - bracket.lower <= eps
    assert mc.bounds.softmax_iterations_at_temperature(eps, 2 * eps, gap0, rate, 3) is None
