"""Warm starts of the exact solvers for a sequence of related problems (issue 17): the
previous solution's ``x`` and ``weights`` give the same certified optimum in fewer
iterations; bad ``weights0`` is refused with an error naming it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import minimax_core as mc
from minimax_core import exact


def _moved(prob: mc.problems.QuadraticTasks, scale: float, seed: int) -> mc.problems.QuadraticTasks:
    """The same tasks with their centres moved by ``scale`` (a related problem)."""
    rng = np.random.default_rng(seed)
    centers = prob.centers + scale * rng.standard_normal(prob.centers.shape)
    return mc.problems.QuadraticTasks(prob.hessian_stack, centers, prob.offsets)


@pytest.mark.parametrize(("m", "d"), [(5, 20), (10, 50), (50, 200)])
def test_warm_start_is_certified_and_saves_iterations(m: int, d: int) -> None:
    prob = mc.problems.random_quadratic(m, d, mu=1.0, smoothness=10.0, seed=0)
    first = exact.minimize(prob, np.zeros(d), tol=1e-8)
    assert first.success
    saved = 0
    for k, scale in enumerate((1e-3, 1e-2)):
        nxt = _moved(prob, scale, seed=k)
        cold = exact.minimize(nxt, np.zeros(d), tol=1e-8)
        warm = exact.minimize(nxt, first.x, tol=1e-8, weights0=first.weights)
        assert cold.success and warm.success, warm.message
        assert warm.certificate is not None and warm.certificate <= 1e-8 * abs(warm.fun)
        assert abs(warm.fun - cold.fun) <= 1e-8 * abs(cold.fun)
        assert warm.nit <= cold.nit
        saved += cold.nit - warm.nit
    assert saved >= 2  # measured: (10, 50) goes from 7 to 3-4 iterations


def test_warm_start_of_the_gradient_mapping() -> None:
    prob = mc.problems.random_quadratic(8, 6, mu=1.0, smoothness=10.0, seed=2)
    first = exact.minimize(prob, np.zeros(6), algorithm="gradient_mapping", tol=1e-8)
    nxt = _moved(prob, 1e-3, seed=3)
    warm = exact.minimize(
        nxt, first.x, algorithm="gradient_mapping", tol=1e-8, weights0=first.weights
    )
    ref = exact.minimize(nxt, np.zeros(6), tol=1e-10)
    assert warm.success and abs(warm.fun - ref.fun) <= 1e-8 * abs(ref.fun)


@pytest.mark.parametrize(
    ("weights0", "error", "match"),
    [
        (np.ones(3), ValueError, r"weights0 must have shape \(num_tasks,\) = \(4,\)"),
        (np.array([1.0, -1.0, 1.0, 1.0]), ValueError, "weights0 must be finite, >= 0"),
        (np.zeros(4), ValueError, "not all 0"),
        (np.array([1.0, np.nan, 0.0, 0.0]), ValueError, "weights0 must be finite"),
        (np.array(["a", "b", "c", "d"]), TypeError, "weights0 must be real numbers"),
    ],
)
def test_bad_weights0_is_refused(weights0: Any, error: type, match: str) -> None:
    prob = mc.problems.random_quadratic(4, 3, seed=1)
    with pytest.raises(error, match=match):
        exact.minimize(prob, np.zeros(3), weights0=weights0)


def test_check_weights_normalises() -> None:
    np.testing.assert_allclose(exact.check_weights([1, 3], 2), [0.25, 0.75])


def test_warm_start_through_minimize_max() -> None:
    """``minimize_max(method="auto", x0=res.x, weights0=res.weights)`` is the same warm
    start as :func:`exact.minimize` (same iterates), and saves iterations over a cold start."""
    prob = mc.problems.random_quadratic(10, 50, mu=1.0, smoothness=10.0, seed=0)
    first = mc.minimize_max(prob, method="auto", tol=1e-8)
    nxt = _moved(prob, 1e-3, seed=0)
    warm = mc.minimize_max(nxt, method="auto", tol=1e-8, x0=first.x, weights0=first.weights)
    direct = exact.minimize(nxt, first.x, tol=1e-8, weights0=first.weights)
    cold = mc.minimize_max(nxt, method="auto", tol=1e-8)
    assert warm.success and cold.success
    np.testing.assert_array_equal(warm.x, direct.x)
    assert warm.nit == direct.nit < cold.nit
    with pytest.raises(TypeError, match="weights0"):
        mc.minimize_max(nxt, method="softmax", weights0=first.weights)
