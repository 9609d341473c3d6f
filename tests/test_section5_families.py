"""Section 5's regression families: exact constants, the geometry each is built for, and the
vectorised downstream sampler."""

from __future__ import annotations

import numpy as np
import pytest

import minimax_core as mc
from benchmarks.theory import average_risk_minimiser


def eigen_range(family: mc.problems.RegressionFamily) -> tuple[float, float]:
    eig = np.linalg.eigvalsh(family.covariances)
    return float(eig[:, 0].min()), float(eig[:, -1].max())


@pytest.mark.parametrize(
    "family",
    [
        mc.problems.regression_family(6, 5, mu=0.5, smoothness=5.0, seed=1),
        mc.problems.outlier_family(6, 5, num_outliers=2, mu=0.5, smoothness=5.0, seed=1),
        mc.problems.heterogeneous_family(6, 5, mu=0.5, smoothness=5.0, seed=1),
    ],
    ids=["iid", "outlier", "heterogeneous"],
)
def test_constants_are_exact(family):
    lo, hi = eigen_range(family)
    assert family.eigenvalue_range == pytest.approx((lo, hi), rel=1e-10)
    pop = family.population()
    assert (pop.mu, pop.smoothness) == family.eigenvalue_range
    np.testing.assert_allclose(pop.offsets, 0.5 * family.noise_levels**2)


def test_heterogeneous_family_spans_its_ranges():
    fam = mc.problems.heterogeneous_family(
        5, 4, noise_range=(0.2, 2.0), curvature_range=(1.0, 8.0), mu=0.5, smoothness=4.0, seed=3
    )
    assert fam.noise_levels.min() == pytest.approx(0.2)
    assert fam.noise_levels.max() == pytest.approx(2.0)
    assert fam.eigenvalue_range == pytest.approx((0.5, 32.0))


def test_outlier_family_geometry_puts_minimax_nearer_the_outlier():
    fam = mc.problems.outlier_family(8, 10, outlier_distance=3.0, cluster_spread=0.2, seed=0)
    theta = fam.parameters
    centre = theta[:-1].mean(axis=0)
    assert np.linalg.norm(theta[-1] - centre) > 2.5
    assert np.max(np.linalg.norm(theta[:-1] - centre, axis=1)) < 0.6
    pop = fam.population()
    x_mm = mc.minimize_max(pop, method="auto").x
    x_avg = average_risk_minimiser(pop)
    far_mm = np.linalg.norm(x_mm - theta[-1])
    far_avg = np.linalg.norm(x_avg - theta[-1])
    assert far_mm < 0.75 * far_avg


def test_sample_mixtures_has_the_mixture_population_loss():
    """Least squares on many rows of mixture j recovers the center of downstream task j."""
    fam = mc.problems.heterogeneous_family(3, 2, seed=0)
    mixtures = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    xs, ys = mc.problems.sample_mixtures(fam, mixtures, 40_000, 2, np.random.default_rng(0))
    assert xs.shape == (2, 2, 40_000, 2) and ys.shape == (2, 2, 40_000)
    tasks = mc.problems.downstream_tasks(fam.population(), mixtures)
    rhs = np.einsum("jrni,jrn->jri", xs, ys)[..., None]
    fitted = np.linalg.solve(np.swapaxes(xs, -1, -2) @ xs, rhs)[..., 0]
    np.testing.assert_allclose(
        fitted, np.broadcast_to(tasks.centers[:, None], fitted.shape), atol=0.05
    )
    # the residual variance of the pure task is its noise level
    resid = ys[0] - np.einsum("rni,i->rn", xs[0], fam.parameters[0])
    assert resid.std() == pytest.approx(fam.noise_levels[0], rel=0.03)


def test_bad_family_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="num_outliers"):
        mc.problems.outlier_family(3, 2, num_outliers=3)
    with pytest.raises(ValueError, match="outlier_distance"):
        mc.problems.outlier_family(3, 2, outlier_distance=-1.0)
    with pytest.raises(ValueError, match="noise_range"):
        mc.problems.heterogeneous_family(3, 2, noise_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="curvature_range"):
        mc.problems.heterogeneous_family(3, 2, curvature_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="repetitions"):
        fam = mc.problems.regression_family(2, 2)
        mc.problems.sample_mixtures(fam, np.eye(2), 5, 0, np.random.default_rng(0))
