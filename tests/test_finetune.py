"""The three fine-tuning modes of ``minimax_core.finetune`` against direct iterations and
the closed forms they claim, and their input checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from minimax_core import finetune


def batch(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(d), rng.standard_normal((3, n, d)), rng.standard_normal((3, n))


def gd_loop(x0: np.ndarray, xs: np.ndarray, ys: np.ndarray, steps: int) -> np.ndarray:
    n = xs.shape[-2]
    h = np.swapaxes(xs, -1, -2) @ xs / n
    b = np.einsum("kni,kn->ki", xs, ys) / n
    step = 1.0 / np.linalg.eigvalsh(h)[:, -1]
    x = np.broadcast_to(x0, b.shape).copy()
    for _ in range(steps):
        x -= step[:, None] * (np.einsum("kij,kj->ki", h, x) - b)
    return x


@pytest.mark.parametrize(("n", "d"), [(3, 6), (20, 5)])
def test_gd_steps_is_gradient_descent_and_its_limit_the_closest_solution(n, d):
    x0, xs, ys = batch(n, d)
    for k in (0, 1, 2, 7):
        np.testing.assert_allclose(
            finetune.gd_steps(x0, xs, ys, k), gd_loop(x0, xs, ys, k), atol=1e-12
        )
    limit = finetune.gd_steps(x0, xs, ys, None)
    closest = x0 + np.einsum("kin,kn->ki", np.linalg.pinv(xs), ys - xs @ x0)
    np.testing.assert_allclose(limit, closest, atol=1e-10)
    np.testing.assert_allclose(gd_loop(x0, xs, ys, 20_000), limit, atol=1e-7)


def test_ridge_solves_the_regularised_problem_and_matches_the_spectral_form():
    x0, xs, ys = batch(4, 6, seed=1)
    for strength in (0.01, 1.0, 100.0):
        x = finetune.ridge(x0, xs, ys, strength)
        grad = np.einsum("kni,kn->ki", xs, np.einsum("kni,ki->kn", xs, x) - ys) / 4
        np.testing.assert_allclose(grad + strength * (x - x0), 0.0, atol=1e-12)
        np.testing.assert_allclose(finetune.spectral_fit(x0, xs, ys).ridge(strength), x, atol=1e-12)
    # strong ridge stays at the start; weak ridge tends to the closest solution
    np.testing.assert_allclose(
        finetune.ridge(x0, xs, ys, 1e12), np.broadcast_to(x0, (3, 6)), atol=1e-9
    )
    np.testing.assert_allclose(
        finetune.ridge(x0, xs, ys, 1e-10), finetune.gd_steps(x0, xs, ys, None), atol=1e-4
    )


@pytest.mark.parametrize(("n", "d"), [(3, 6), (20, 5)])
def test_ball_is_the_limit_of_projected_gd(n, d):
    x0, xs, ys = batch(n, d, seed=2)
    free = np.linalg.norm(finetune.gd_steps(x0, xs, ys, None) - x0, axis=1)
    for radius in (0.05, 0.5 * float(free.min()), float(free.max()) * 2):
        exact = finetune.ball(x0, xs, ys, radius)
        np.testing.assert_allclose(
            exact, finetune.projected_gd(x0, xs, ys, radius, 20_000), atol=1e-7
        )
        dist = np.linalg.norm(exact - x0, axis=1)
        assert np.all(dist <= radius * (1 + 1e-12))
        # on the boundary exactly when the unconstrained limit is outside
        np.testing.assert_allclose(dist, np.minimum(free, radius), rtol=1e-9)
    np.testing.assert_allclose(finetune.ball(x0, xs, ys, 0.0), np.broadcast_to(x0, (3, d)))


def test_ball_solution_is_optimal_on_the_sphere():
    """KKT: at ``||x - x0|| = R`` the gradient is ``-lam (x - x0)`` with ``lam >= 0``."""
    x0, xs, ys = batch(30, 4, seed=3)
    x = finetune.ball(x0, xs, ys, 0.1)
    grad = np.einsum("kni,kn->ki", xs, np.einsum("kni,ki->kn", xs, x) - ys) / 30
    lam = finetune.spectral_fit(x0, xs, ys).multiplier(0.1)
    assert np.all(lam > 0)
    np.testing.assert_allclose(grad, -lam[:, None] * (x - x0), atol=1e-10)


def test_budget_limits_the_distance_from_the_start():
    """Implicit regularisation: fewer steps, a smaller ball or a stronger ridge keep the
    fine-tuned point nearer the start."""
    x0, xs, ys = batch(50, 8, seed=4)
    dist = lambda x: np.linalg.norm(x - x0, axis=1)  # noqa: E731
    steps = [dist(finetune.gd_steps(x0, xs, ys, k)) for k in (1, 2, 5, 20, None)]
    assert all(np.all(a <= b + 1e-12) for a, b in itertools.pairwise(steps))
    ridges = [dist(finetune.ridge(x0, xs, ys, s)) for s in (10.0, 1.0, 0.1)]
    assert all(np.all(a <= b + 1e-12) for a, b in itertools.pairwise(ridges))


def test_bad_input_names_the_parameter():
    x0, xs, ys = batch(4, 3)
    with pytest.raises(ValueError, match="steps"):
        finetune.gd_steps(x0, xs, ys, -1)
    with pytest.raises(ValueError, match="strength"):
        finetune.ridge(x0, xs, ys, 0.0)
    with pytest.raises(ValueError, match="radius"):
        finetune.ball(x0, xs, ys, -0.5)
    with pytest.raises(ValueError, match="radius"):
        finetune.ball(x0, xs, ys, float("inf"))
    with pytest.raises(ValueError, match="targets"):
        finetune.gd_steps(x0, xs, ys[:, :2], 1)
    with pytest.raises(ValueError, match="x0"):
        finetune.gd_steps(np.zeros(5), xs, ys, 1)
    with pytest.raises(ValueError, match="designs"):
        finetune.gd_steps(x0, np.full((4, 3), np.nan), np.zeros(4), 1)
    with pytest.raises(ValueError, match="steps"):
        finetune.projected_gd(x0, xs, ys, 1.0, None)  # type: ignore[arg-type]


def test_with_start_equals_a_fresh_decomposition():
    x0, xs, ys = batch(5, 4, seed=5)
    other = np.random.default_rng(6).standard_normal(4)
    moved = finetune.spectral_fit(x0, xs, ys).with_start(other)
    fresh = finetune.spectral_fit(other, xs, ys)
    for k in (1, 3, None):
        np.testing.assert_allclose(moved.gd(k), fresh.gd(k), atol=1e-12)
    np.testing.assert_allclose(moved.ball(0.3), fresh.ball(0.3), atol=1e-10)
    np.testing.assert_allclose(moved.ridge(0.5), fresh.ridge(0.5), atol=1e-12)
