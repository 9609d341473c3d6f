"""``problems.lipschitz_bound``: the one bound ``G >= max_i ||grad L_i||`` on a ball that the
solvers (and ``proofs_checks``) use."""

from __future__ import annotations

import numpy as np
import pytest

import minimax_core as mc

from .helpers import problem


class _Plain:
    """A problem without its own ``lipschitz`` (only the generic bound applies)."""

    def __init__(self, base: mc.problems.QuadraticTasks) -> None:
        self.base = base
        self.num_tasks, self.dim, self.smoothness = base.num_tasks, base.dim, base.smoothness

    def losses(self, x: np.ndarray) -> np.ndarray:
        return self.base.losses(x)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        return self.base.jacobian(x)


@pytest.mark.parametrize("name", ["quad-8x10", "lsq-5x6", "logistic-4x3"])
def test_the_problems_own_bound_is_preferred(name: str) -> None:
    prob = problem(name)
    c = np.linspace(-1.0, 1.0, prob.dim)
    assert mc.problems.lipschitz_bound(prob, c, 2.0) == prob.lipschitz(c, 2.0)
    assert mc.problems.lipschitz_bound(prob, c, 2.0) <= mc.problems.generic_lipschitz(
        prob, c, 2.0
    ) * (1 + 1e-12)


def test_generic_bound_holds_on_its_ball_and_takes_a_smoothness() -> None:
    base = problem("quad-8x10")
    plain = _Plain(base)
    rng = np.random.default_rng(0)
    c, radius = rng.normal(size=plain.dim), 1.5
    bound = mc.problems.lipschitz_bound(plain, c, radius)
    g0 = np.max(np.linalg.norm(plain.jacobian(c), axis=1))
    assert bound == pytest.approx(g0 + plain.smoothness * radius, rel=1e-15)
    for _ in range(200):
        u = rng.normal(size=plain.dim)
        x = c + radius * rng.uniform() * u / np.linalg.norm(u)
        assert np.max(np.linalg.norm(plain.jacobian(x), axis=1)) <= bound * (1 + 1e-12)
    looser = mc.problems.lipschitz_bound(plain, c, radius, smoothness=2 * plain.smoothness)
    assert looser == pytest.approx(g0 + 2 * plain.smoothness * radius, rel=1e-15)
