"""Problem families: derivatives, exact constants, Lipschitz bounds, minibatch oracles, input checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minimax_core as mc
from minimax_core import problems as P

from .helpers import CATALOGUE, problem, quadratic_problems


def finite_difference_jacobian(prob, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    cols = []
    for k in range(prob.dim):
        e = np.zeros(prob.dim)
        e[k] = h
        cols.append((prob.losses(x + e) - prob.losses(x - e)) / (2 * h))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("name", CATALOGUE)
def test_jacobian_matches_finite_differences(name: str) -> None:
    prob = problem(name)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.normal(size=prob.dim)
        np.testing.assert_allclose(
            prob.jacobian(x), finite_difference_jacobian(prob, x), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("name", CATALOGUE)
def test_hessians_match_the_jacobian(name: str) -> None:
    prob = problem(name)
    x = np.random.default_rng(1).normal(size=prob.dim)
    h = 1e-6
    fd = np.stack(
        [(prob.jacobian(x + h * e) - prob.jacobian(x - h * e)) / (2 * h) for e in np.eye(prob.dim)],
        axis=2,
    )
    np.testing.assert_allclose(prob.hessians(x), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CATALOGUE)
def test_constants_bound_the_curvature(name: str) -> None:
    """mu <= every eigenvalue of every Hessian <= smoothness (at random points)."""
    prob = problem(name)
    rng = np.random.default_rng(2)
    for _ in range(3):
        eig = np.linalg.eigvalsh(prob.hessians(rng.normal(size=prob.dim) * 3))
        assert eig.min() >= prob.mu * (1 - 1e-9) - 1e-12
        assert eig.max() <= prob.smoothness * (1 + 1e-9) + 1e-12


@given(prob=quadratic_problems())
def test_random_quadratic_constants_are_exact(prob: P.QuadraticTasks) -> None:
    eig = np.linalg.eigvalsh(prob.hessian_stack)
    assert eig.min() == pytest.approx(prob.mu, rel=1e-9)
    assert eig.max() == pytest.approx(prob.smoothness, rel=1e-9)
    recomputed = P.QuadraticTasks(prob.hessian_stack, prob.centers, prob.offsets)
    assert recomputed.mu == pytest.approx(prob.mu, rel=1e-8)
    assert recomputed.smoothness == pytest.approx(prob.smoothness, rel=1e-9)


@pytest.mark.parametrize("name", CATALOGUE)
def test_lipschitz_bound_holds_on_its_ball(name: str) -> None:
    prob = problem(name)
    rng = np.random.default_rng(3)
    center = rng.normal(size=prob.dim)
    for radius in (0.1, 1.0, 5.0):
        g = prob.lipschitz(center, radius)
        for _ in range(20):
            u = rng.normal(size=prob.dim)
            x = center + radius * rng.uniform() ** (1 / prob.dim) * u / np.linalg.norm(u)
            assert np.linalg.norm(prob.jacobian(x), axis=1).max() <= g * (1 + 1e-12)


def test_quadratic_loss_formula() -> None:
    prob = problem("quad-8x10")
    x = np.random.default_rng(4).normal(size=prob.dim)
    for i in range(prob.num_tasks):
        d = x - prob.centers[i]
        expected = 0.5 * d @ prob.hessian_stack[i] @ d + prob.offsets[i]
        assert prob.losses(x)[i] == pytest.approx(expected, rel=1e-12)


def test_least_squares_matches_direct_formula() -> None:
    rng = np.random.default_rng(5)
    designs = [rng.normal(size=(n, 4)) for n in (10, 7, 12)]
    targets = [rng.normal(size=len(a)) for a in designs]
    prob = P.LeastSquaresTasks(designs, targets, l2=0.3)
    x = rng.normal(size=4)
    direct = [
        np.sum((a @ x - y) ** 2) / (2 * len(y)) + 0.15 * x @ x
        for a, y in zip(designs, targets, strict=True)
    ]
    np.testing.assert_allclose(prob.losses(x), direct, rtol=1e-10)


def test_regression_population_is_the_limit_of_empirical() -> None:
    fam = P.regression_family(3, 4, seed=0)
    x = np.random.default_rng(6).normal(size=4)
    pop = fam.population().losses(x)
    emp = fam.empirical(20000, seed=1).losses(x)
    np.testing.assert_allclose(emp, pop, rtol=0.05)


def test_logistic_loss_formula() -> None:
    prob = problem("logistic-4x3")
    x = np.array([0.3, -1.0, 2.0])
    for i in range(prob.num_tasks):
        n = prob.counts[i]
        a, y = prob.features[i, :n], prob.labels[i, :n]
        expected = np.mean(np.log1p(np.exp(-y * (a @ x)))) + 0.5 * prob.l2 * x @ x
        assert prob.losses(x)[i] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["quad-8x10", "lsq-5x6", "logistic-4x3"])
def test_minibatch_oracle_is_unbiased(name: str) -> None:
    prob = problem(name)
    rng = np.random.default_rng(7)
    x = rng.normal(size=prob.dim) * 0.5
    draws = [prob.sample(x, 4, rng) for _ in range(4000)]
    values = np.stack([v for v, _ in draws])
    grads = np.stack([g for _, g in draws])
    # the mean of 4000 draws is within 5 standard errors of the exact value
    se_v = values.std(axis=0) / np.sqrt(len(draws))
    se_g = grads.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(values.mean(axis=0) - prob.losses(x)) <= 5 * se_v + 1e-12)
    assert np.all(np.abs(grads.mean(axis=0) - prob.jacobian(x)) <= 5 * se_g + 1e-12)


@given(batch=st.integers(1, 64), seed=st.integers(0, 100))
def test_minibatch_oracle_shapes(batch: int, seed: int) -> None:
    prob = problem("lsq-5x6")
    v, g = prob.sample(np.zeros(prob.dim), batch, np.random.default_rng(seed))
    assert v.shape == (prob.num_tasks,) and g.shape == (prob.num_tasks, prob.dim)


def test_problem_protocol() -> None:
    for name in CATALOGUE:
        assert isinstance(problem(name), P.TaskSet)


def test_bad_quadratic_input() -> None:
    a = np.stack([np.eye(2)] * 2)
    c = np.zeros((2, 2))
    b = np.zeros(2)
    with pytest.raises(ValueError, match="hessians must have shape"):
        P.QuadraticTasks(a[:, :1], c, b)
    with pytest.raises(ValueError, match="offsets must have shape"):
        P.QuadraticTasks(a, c, np.zeros(3))
    with pytest.raises(ValueError, match="centers must be a 2-d"):
        P.QuadraticTasks(a, np.zeros(2), b)
    with pytest.raises(ValueError, match="symmetric"):
        P.QuadraticTasks(np.stack([np.array([[1.0, 1.0], [0.0, 1.0]])] * 2), c, b)
    with pytest.raises(ValueError, match="positive semidefinite"):
        P.QuadraticTasks(np.stack([np.diag([1.0, -1.0])] * 2), c, b)
    with pytest.raises(ValueError, match="finite"):
        P.QuadraticTasks(a, np.full((2, 2), np.nan), b)


def test_bad_generator_input() -> None:
    with pytest.raises(ValueError, match="num_tasks"):
        P.random_quadratic(0, 3)
    with pytest.raises(ValueError, match="dim"):
        P.random_quadratic(2, 0)
    with pytest.raises(ValueError, match="mu"):
        P.random_quadratic(2, 3, mu=0.0)
    with pytest.raises(ValueError, match="smoothness"):
        P.random_quadratic(2, 3, mu=2.0, smoothness=1.0)
    with pytest.raises(ValueError, match="l2"):
        P.logistic_tasks(2, 3, l2=0.0)
    with pytest.raises(ValueError, match="positive definite"):
        P.LeastSquaresTasks([np.ones((1, 3))], [np.ones(1)])
    with pytest.raises(ValueError, match="labels"):
        P.LogisticTasks([np.ones((2, 2))], [np.array([1.0, 0.0])], l2=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        problem("quad-3x2").sample(np.zeros(2), 0, np.random.default_rng(0))


def test_check_problem_names_what_is_missing() -> None:
    class NoJacobian:
        num_tasks, dim = 2, 3

        def losses(self, x):
            return np.zeros(2)

    with pytest.raises(TypeError, match="jacobian"):
        P.check_problem(NoJacobian())
    with pytest.raises(TypeError, match="num_tasks"):
        mc.minimize_max(object())


# ------------------------------------------------------------ issue 14: clear errors, no silent results


def test_given_eigenvalue_range_is_checked_against_the_hessians() -> None:
    """A wrong ``mu`` gave invalid steps and certificates; it is refused now. Negative
    controls: mu misstated by 2x and by 1e-6 (relative) on a tight instance both fail."""
    prob = P.random_quadratic(4, 5, mu=1.0, smoothness=10.0, seed=3)
    a, c, b = prob.hessian_stack, prob.centers, prob.offsets
    for wrong in [(2.0, 10.0), (1.0 + 1e-6, 10.0), (1.0, 5.0), (1.0, 10.0 * (1 - 1e-6))]:
        with pytest.raises(ValueError, match=r"eigenvalue_range=.* does not hold"):
            P.QuadraticTasks(a, c, b, eigenvalue_range=wrong)
    exact = P.QuadraticTasks(a, c, b, eigenvalue_range=(1.0, 10.0))
    assert (exact.mu, exact.smoothness) == (1.0, 10.0)
    wide = P.QuadraticTasks(a, c, b, eigenvalue_range=(0.5, 20.0))  # valid bounds: kept
    assert (wide.mu, wide.smoothness) == (0.5, 20.0)
    zero = P.QuadraticTasks(
        np.zeros((2, 3, 3)), np.zeros((2, 3)), np.zeros(2), eigenvalue_range=(0, 0)
    )
    assert zero.smoothness == 0.0
    for bad, match in [((1.0,), "pair"), (("a", 2.0), "mu"), ((2.0, 1.0), "mu <= smoothness")]:
        with pytest.raises((ValueError, TypeError), match=match):
            P.QuadraticTasks(a, c, b, eigenvalue_range=bad)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"offset_scale": -1.0}, ValueError, r"offset_scale must be a finite number >= 0"),
        ({"center_scale": float("nan")}, ValueError, r"center_scale must be a finite number >= 0"),
        ({"center_scale": float("inf")}, ValueError, r"center_scale must be a finite number"),
        ({"noise_scale": -0.5}, ValueError, r"noise_scale must be a finite number >= 0"),
        ({"seed": -1}, ValueError, r"seed must be None or an integer >= 0"),
        ({"seed": 1.5}, ValueError, r"seed must be None or an integer >= 0"),
        ({"mu": "abc"}, TypeError, r"mu must be a finite number > 0, got 'abc'"),
        ({"smoothness": "10"}, TypeError, r"smoothness must be a finite number"),
    ],
)
def test_random_quadratic_bad_input_names_the_parameter(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        P.random_quadratic(3, 2, **kwargs)
