"""Structure the exact solver uses: least-squares tasks from their samples (no ``d x d``
matrix per task), the fused pass over a large stack of Hessians, and the tolerance measured
from the smallest offset."""

from __future__ import annotations

import numpy as np
import pytest

import minimax_core as mc
from minimax_core.exact import models


def _least_squares(m: int, n: int, d: int, l2: float, seed: int) -> mc.problems.LeastSquaresTasks:
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((m, d)) / np.sqrt(d)
    designs = [rng.standard_normal((n + i % 3, d)) for i in range(m)]
    targets = [
        a @ t + 0.3 * rng.standard_normal(len(a)) for a, t in zip(designs, theta, strict=True)
    ]
    return mc.problems.LeastSquaresTasks(designs, targets, l2=l2)


@pytest.mark.parametrize(("n", "l2"), [(40, 0.0), (8, 0.1)])
def test_least_squares_tasks_equal_their_dense_quadratic(n: int, l2: float) -> None:
    """Values, gradients, constants, centres: the samples form and the dense form agree."""
    prob = _least_squares(5, n, 12, l2, seed=1)
    x = np.random.default_rng(2).standard_normal(12)
    assert "hessian_stack" not in vars(prob)  # nothing d x d per task until asked
    dense = mc.problems.QuadraticTasks(prob.hessian_stack, prob.centers, prob.offsets)
    np.testing.assert_allclose(prob.losses(x), dense.losses(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(prob.jacobian(x), dense.jacobian(x), rtol=1e-10, atol=1e-12)
    assert prob.mu == pytest.approx(dense.mu, rel=1e-8, abs=1e-12)
    assert prob.smoothness == pytest.approx(dense.smoothness, rel=1e-10)
    # the centres are the minimisers: zero gradient there, and the offsets are the minima
    for i in range(5):
        assert np.linalg.norm(prob.jacobian(prob.centers[i])[i]) <= 1e-10
    np.testing.assert_allclose(prob.losses_at(prob.centers), prob.offsets, rtol=1e-12)


def test_auto_on_least_squares_never_forms_the_stack() -> None:
    """n_i < d: the interior point works from the samples and matches the dense solve."""
    prob = _least_squares(6, 5, 40, 0.05, seed=3)
    res = mc.minimize_max(prob)
    assert res.success, res.message
    assert "hessian_stack" not in vars(prob)
    dense = mc.problems.QuadraticTasks(prob.hessian_stack, prob.centers, prob.offsets)
    ref = mc.minimize_max(dense, tol=1e-12)
    assert abs(res.fun - ref.fun) <= 1e-8 * abs(ref.fun)
    assert res.fun - ref.fun <= res.certificate + 1e-14


def test_rank_deficient_least_squares_is_refused() -> None:
    with pytest.raises(ValueError, match=r"positive definite.*task 1"):
        mc.problems.LeastSquaresTasks(
            [np.eye(3), np.ones((5, 3))], [np.ones(3), np.ones(5)], l2=0.0
        )


def test_fused_pass_equals_the_two_products(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stack larger than the fusion threshold is read in chunks: same products, and the
    solve is the same as with one pass per product."""
    prob = mc.problems.random_quadratic(num_tasks=13, dim=30, seed=4)
    rng = np.random.default_rng(5)
    dx, dlam = rng.standard_normal(30), rng.standard_normal(13)
    plain = models.QuadraticModel(prob)
    assert plain.chunks is None
    monkeypatch.setattr(models, "FUSE_BYTES", 1000)
    monkeypatch.setattr(models, "CHUNK_BYTES", 3 * 30 * 30 * 8)
    chunked = models.QuadraticModel(prob)
    assert chunked.chunks is not None and len(chunked.chunks) == 5
    prod, change = chunked.step_products(dx, dlam)
    np.testing.assert_allclose(prod, np.einsum("mij,j->mi", prob.hessian_stack, dx), atol=1e-12)
    np.testing.assert_allclose(change, np.einsum("m,mij->ij", dlam, prob.hessian_stack), atol=1e-12)
    res = mc.minimize_max(prob)
    assert res.success and res.info["hessian_passes"] <= res.nit + 3
