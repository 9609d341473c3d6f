"""First-order methods of ``minimize_max`` against the CVXPY optimum and their theorems."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

import minimax_core as mc
from minimax_core import bounds

from .helpers import CATALOGUE, optimum, problem, quadratic_problems

FIRST_ORDER = ("softmax", "subgradient", "average", "group_dro")


@pytest.mark.parametrize("name", CATALOGUE)
def test_softmax_ends_within_its_smoothing_bias(name: str) -> None:
    """Run to convergence (``success``: ``||grad F_tau|| <= tol``), softmax GD ends within
    ``tau log M`` of ``F*``; its certificate ``tau log M + ||grad F_tau||^2 / (2 mu)``
    bounds the gap. The Armijo step is requested explicitly (the fixed step ``1/(L +
    G^2/tau)`` needs far more than 3000 steps at ``tau = 0.05``)."""
    prob = problem(name)
    tau = 0.05
    res = mc.minimize_max(
        prob, method="softmax", temperature=tau, line_search="armijo", steps=3000, tol=1e-8
    )
    assert res.success, res.message
    gap = res.fun - optimum(name)
    bias = tau * math.log(prob.num_tasks)
    assert res.certificate is not None
    assert gap <= res.certificate + 1e-7
    assert res.certificate <= bias + res.info["gradient_norm"] ** 2 / (2 * prob.mu) * (1 + 1e-12)
    assert res.info["gradient_norm"] ** 2 / (2 * prob.mu) <= 1e-12
    assert -1e-7 <= gap <= bias + 1e-7


def test_softmax_converges_to_the_smoothed_minimiser() -> None:
    """With enough steps the gradient of F_tau vanishes (tol met, success)."""
    prob = problem("quad-3x2")
    res = mc.minimize_max(prob, method="softmax", temperature=0.5, steps=200_000, tol=1e-9)
    assert res.success and res.status == 0
    assert res.fun - optimum("quad-3x2") <= 0.5 * math.log(3) + 1e-9


@settings(max_examples=20)
@given(prob=quadratic_problems(max_tasks=5, max_dim=5))
def test_subgradient_theorem_bound_at_every_recorded_step(prob: mc.problems.QuadraticTasks) -> None:
    """F(xbar_T) - F* <= 2 G^2 / (mu (T+1)) on every step of the geometric grid, with the
    theorem's ``T`` (the number of averaged iterates ``x_1..x_T``, ``x_1 = x_0``)."""
    res = mc.minimize_max(prob, method="subgradient", steps=500)
    ref = mc.reference.solve_cvxpy(prob)
    assert ref.success, ref.message
    lip, mu = res.info["lipschitz"], prob.mu
    big_t = res.history["step"] + 1  # the theorem's T: history step s holds xbar_{s+1}
    gaps = res.history["fun"] - ref.fun
    bound = bounds.subgradient_strongly_convex_bound(lip, mu, big_t)
    assert np.all(gaps <= bound + 1e-7 * (1 + abs(ref.fun)))


def test_subgradient_does_not_blow_up_when_ill_conditioned() -> None:
    """L/mu = 100: the first steps 2/(mu (t+1)) exceed 2/L; the projection on the ball that
    holds x* keeps the iterates bounded, and the theorem bound holds."""
    prob = mc.problems.random_quadratic(num_tasks=6, dim=10, mu=0.1, smoothness=10.0, seed=11)
    seen: list[float] = []
    res = mc.minimize_max(
        prob,
        method="subgradient",
        steps=3000,
        callback=lambda it: seen.append(float(np.linalg.norm(it.x))) and False,
    )
    assert np.isfinite(res.fun)
    assert max(seen) <= res.info["radius"] * (1 + 1e-12)
    ref = mc.reference.solve_cvxpy(prob)
    gaps = res.history["fun"] - ref.fun
    bound = bounds.subgradient_strongly_convex_bound(
        res.info["lipschitz"], prob.mu, res.history["step"] + 1
    )
    assert np.all(gaps <= bound + 1e-8)
    assert res.fun - ref.fun < 0.05


def test_unprojected_steps_would_blow_up() -> None:
    """The reason for the projection: the same steps without it diverge at L/mu = 100."""
    prob = mc.problems.random_quadratic(num_tasks=6, dim=10, mu=0.1, smoothness=10.0, seed=11)
    x = np.zeros(prob.dim)
    norms = []
    for t in range(1, 30):
        v, g = prob.value_and_jacobian(x)
        x = x - 2.0 / (prob.mu * (t + 1)) * g[np.argmax(v)]
        norms.append(np.linalg.norm(x))
    assert max(norms) > 1e3


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subgradient_log_log_slope_is_minus_one(seed: int) -> None:
    """Two-sided rate check on fixed seeded, well-conditioned problems: slope of
    log(F(xbar_T) - F*) vs log T over T in [1e3, 5e4] is within 0.1 of -1."""
    prob = mc.problems.random_quadratic(num_tasks=10, dim=20, mu=1.0, smoothness=10.0, seed=seed)
    ref = mc.reference.solve_cvxpy(prob)
    res = mc.minimize_max(prob, method="subgradient", steps=50_000)
    steps, gaps = res.history["step"], res.history["fun"] - ref.fun
    sel = steps >= 1000
    slope = np.polyfit(np.log(steps[sel]), np.log(gaps[sel]), 1)[0]
    assert abs(slope + 1) <= 0.1, slope


def test_convex_step_rule_bound() -> None:
    """step_rule="sqrt" (the merely convex case): best iterate within 3 R G / sqrt(T)."""
    prob = problem("quad-8x10")
    res = mc.minimize_max(
        prob, method="subgradient", step_rule="sqrt", steps=2000, mu=0.0, radius=5.0
    )
    assert np.linalg.norm(res.x) <= 5.0 + 1e-12
    gaps = res.history["fun"] - optimum("quad-8x10")
    big_t = res.history["step"] + 1  # best of x_1..x_T (x_1 = x_0)
    bound = bounds.subgradient_convex_bound(res.info["lipschitz"], 5.0, big_t)
    assert np.all(gaps <= bound)
    assert gaps[-1] < gaps[0]


@pytest.mark.parametrize("name", [n for n in CATALOGUE if n.startswith(("quad", "lsq"))])
def test_average_matches_closed_form(name: str) -> None:
    """argmin mean_i L_i = (sum_i A_i)^{-1} sum_i A_i c_i for quadratic tasks."""
    prob = problem(name)
    a = prob.hessian_stack
    x_star = np.linalg.solve(a.sum(axis=0), np.einsum("mij,mj->i", a, prob.centers))
    res = mc.minimize_max(prob, method="average", tol=1e-11)
    assert res.success
    np.testing.assert_allclose(res.x, x_star, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(res.weights, 1.0 / prob.num_tasks)


@pytest.mark.parametrize("name", ["quad-8x10", "lsq-5x6", "logistic-4x3"])
def test_group_dro_approaches_the_optimum(name: str) -> None:
    prob = problem(name)
    res = mc.minimize_max(prob, method="group_dro", steps=4000)
    gaps = res.history["fun"] - optimum(name)
    # Hedge weights converge at O(1/sqrt T): a tenth of the initial gap after 4000 steps
    assert gaps[-1] < 0.1 * max(gaps[0], 1e-3)
    assert gaps[-1] < gaps[len(gaps) // 2]
    assert res.weights is not None and res.weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("method", FIRST_ORDER)
def test_stochastic_variants_are_seeded_and_make_progress(method: str) -> None:
    prob = problem("lsq-5x6")
    opts = {"temperature": 0.05} if method == "softmax" else {}
    a = mc.minimize_max(
        prob, method=method, stochastic=True, batch_size=8, seed=3, steps=2000, **opts
    )
    b = mc.minimize_max(
        prob, method=method, stochastic=True, batch_size=8, seed=3, steps=2000, **opts
    )
    c = mc.minimize_max(
        prob, method=method, stochastic=True, batch_size=8, seed=4, steps=2000, **opts
    )
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    assert a.fun < a.history["fun"][0]


@pytest.mark.parametrize("method", FIRST_ORDER)
def test_result_fields_and_geometric_history(method: str) -> None:
    prob = problem("quad-3x2")
    res = mc.minimize_max(prob, method=method, steps=1000, tol=1e-30)
    assert res.method == method
    assert res.x.shape == (prob.dim,)
    assert res.fun == pytest.approx(float(np.max(prob.losses(res.x))))
    assert res.nit == 1000 and res.status == 1 and not res.success
    assert res.nfev >= 1000
    steps = res.history["step"]
    assert steps[0] == 0 and steps[-1] == 1000
    assert np.all(np.diff(steps) > 0) and len(steps) <= 102
    # geometric: the ratios of consecutive recorded steps are roughly constant
    assert len(steps[steps <= 10]) >= 5 and len(steps[steps >= 100]) <= 60
    assert res.history["fun"].shape == steps.shape


@pytest.mark.parametrize("method", FIRST_ORDER)
def test_callback_can_stop(method: str) -> None:
    prob = problem("quad-3x2")
    calls: list[int] = []

    def cb(it: mc.Iterate) -> bool:
        calls.append(it.step)
        return it.step >= 7

    res = mc.minimize_max(prob, method=method, steps=100, callback=cb)
    assert res.status == 2 and not res.success and "callback" in res.message
    assert calls[-1] == 7


def test_user_problem_with_only_losses_and_jacobian() -> None:
    class TwoParabolas:
        num_tasks, dim = 2, 1
        mu, smoothness = 2.0, 2.0

        def losses(self, x):
            return np.array([(x[0] - 1) ** 2, (x[0] + 1) ** 2])

        def jacobian(self, x):
            return np.array([[2 * (x[0] - 1)], [2 * (x[0] + 1)]])

    res = mc.minimize_max(TwoParabolas(), method="subgradient", x0=[0.7], steps=5000)
    assert res.fun == pytest.approx(1.0, abs=1e-3)
    res = mc.minimize_max(TwoParabolas(), method="softmax", x0=[0.7], temperature=0.01, steps=5000)
    assert res.fun - 1.0 <= 0.01 * math.log(2) + 1e-6


def test_divergence_is_reported() -> None:
    prob = problem("quad-3x2")
    res = mc.minimize_max(prob, method="average", step_size=1e3, steps=2000)
    assert res.status == 3 and not res.success and "diverged" in res.message


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "newton"}, ValueError, "method must be one of"),
        ({"method": "softmax", "temperature": 0.0}, ValueError, "temperature"),
        ({"method": "softmax", "temperature": -1.0}, ValueError, "temperature"),
        ({"method": "softmax", "step_size": math.nan}, ValueError, "step_size"),
        ({"method": "group_dro", "weight_step_size": -2.0}, ValueError, "weight_step_size"),
        ({"method": "subgradient", "temperature": 0.1}, TypeError, "temperature"),
        ({"method": "softmax", "x0": [np.nan, 0.0]}, ValueError, "x0"),
        ({"method": "softmax", "x0": [np.inf, 0.0]}, ValueError, "x0"),
        ({"method": "softmax", "x0": [0.0, 0.0, 0.0]}, ValueError, "x0 must have shape"),
        ({"method": "softmax", "steps": -1}, ValueError, "steps"),
        ({"method": "softmax", "tol": 0.0}, ValueError, "tol"),
        ({"method": "softmax", "batch_size": 0}, ValueError, "batch_size"),
        ({"method": "softmax", "callback": 3}, TypeError, "callback"),
        ({"method": "subgradient", "step_rule": "fast"}, ValueError, "step_rule"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        mc.minimize_max(problem("quad-3x2"), **kwargs)


def test_bad_problem_outputs() -> None:
    class WrongShape:
        num_tasks, dim, mu, smoothness = 3, 2, 1.0, 1.0

        def losses(self, x):
            return np.zeros(2)

        def jacobian(self, x):
            return np.zeros((3, 2))

    with pytest.raises(ValueError, match="losses"):
        mc.minimize_max(WrongShape(), method="softmax")

    class NoSample(WrongShape):
        pass

    with pytest.raises(TypeError, match="sample"):
        mc.minimize_max(NoSample(), method="softmax", stochastic=True)

    class NoConstants:
        num_tasks, dim = 2, 1

        def losses(self, x):
            return np.array([x[0] ** 2, (x[0] - 1) ** 2])

        def jacobian(self, x):
            return np.array([[2 * x[0]], [2 * (x[0] - 1)]])

    with pytest.raises(TypeError, match="mu"):
        mc.minimize_max(NoConstants(), method="softmax", line_search="fixed")
    # the default (Armijo at temperature 0.1) needs no constant: it targets F_0.1
    res = mc.minimize_max(NoConstants(), method="softmax")
    assert res.info["line_search"] == "armijo" and res.info["temperature"] == 0.1
    assert abs(res.x[0] - 0.5) < 0.1


# ------------------------------------------------------------ issue 14: clear errors, no silent results


class _ShapeShifter:
    """Quadratic tasks whose losses (and jacobian) lose a task from the third evaluation."""

    def __init__(self) -> None:
        self.inner = problem("quad-3x2")
        self.num_tasks, self.dim = self.inner.num_tasks, self.inner.dim
        self.mu, self.smoothness = self.inner.mu, self.inner.smoothness
        self.calls = 0

    def losses(self, x):
        self.calls += 1
        v = self.inner.losses(x)
        return v if self.calls < 3 else v[:-1]

    def jacobian(self, x):
        g = self.inner.jacobian(x)
        return g if self.calls < 3 else g[:-1]


@pytest.mark.parametrize("method", [*FIRST_ORDER, "auto"])
def test_losses_changing_shape_mid_run_are_refused(method: str) -> None:
    """average accepted losses of another shape mid-run (its mean still computed)."""
    with pytest.raises(ValueError, match=r"at every evaluation; evaluation \d+ returned \(2,\)"):
        mc.minimize_max(_ShapeShifter(), method=method, steps=50)


class _Constants:
    def __init__(self, mu, smoothness=10.0) -> None:
        inner = problem("quad-3x2")
        self.num_tasks, self.dim = inner.num_tasks, inner.dim
        self.losses, self.jacobian = inner.losses, inner.jacobian
        self.mu, self.smoothness = mu, smoothness


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "match"),
    [
        (lambda: problem("quad-3x2"), {"x0": [1.0 + 2.0j, 0.0]}, TypeError, "x0 must be .*real"),
        (lambda: problem("quad-3x2"), {"x0": ["a", "b"]}, TypeError, "x0 must be .*real"),
        (lambda: problem("quad-3x2"), {"x0": ["1", "2"]}, TypeError, "x0 must be .*real"),
        (lambda: problem("quad-3x2"), {"seed": -1}, ValueError, "seed must be None or an integer"),
        (lambda: problem("quad-3x2"), {"seed": "0"}, ValueError, "seed must be None or an integer"),
        (lambda: _Constants("abc"), {}, TypeError, r"problem.mu must be a finite number >= 0"),
        (lambda: _Constants(math.nan), {}, ValueError, r"problem.mu must be a finite number"),
        (lambda: _Constants(1.0, "x"), {}, TypeError, r"problem.smoothness must be a finite"),
        (lambda: problem("quad-3x2"), {"mu": "abc"}, TypeError, r"mu must be a finite number"),
    ],
)
@pytest.mark.parametrize("method", [*FIRST_ORDER, "auto"])
def test_bad_input_is_a_clear_error(make, kwargs, error, match, method) -> None:
    with pytest.raises(error, match=match):
        mc.minimize_max(make(), method=method, steps=5, **kwargs)


@pytest.mark.parametrize("method", [*FIRST_ORDER, "auto"])
def test_mu_above_the_problems_mu_is_refused(method: str) -> None:
    """A mu larger than the truth made the softmax certificate (and the subgradient and
    Group DRO radii) claim bounds that do not hold; it is refused. Negative control near the
    edge: 1 + 1e-9 times the true mu is refused, the true mu and below are accepted."""
    prob = problem("quad-3x2")
    for factor in (2.0, 1.0 + 1e-9):
        with pytest.raises(ValueError, match=r"exceeds problem\.mu"):
            mc.minimize_max(prob, method=method, mu=factor * prob.mu, steps=5)
    with pytest.raises(ValueError, match=r"below problem\.smoothness"):
        mc.minimize_max(prob, method=method, smoothness=0.5 * prob.smoothness, steps=5)
    for factor in (1.0, 0.5):
        mc.minimize_max(prob, method=method, mu=factor * prob.mu, steps=5)


def test_softmax_certificate_with_a_wrong_mu_is_withheld() -> None:
    """Positive control: on tasks whose mu the solver cannot check, mu = 2 x the truth gives a
    'certificate' below the true gap at x0. Since issue 14 the run measures the curvature
    between its iterates: from the first step on, a mu above what it measures (2x, and
    1.2x near the edge) withholds the certificate; the true mu keeps a valid one."""
    prob = mc.problems.random_quadratic(num_tasks=3, dim=2, mu=1.0, smoothness=1.5, seed=0)
    hidden = _Constants(None, prob.smoothness)
    hidden.losses, hidden.jacobian = prob.losses, prob.jacobian
    f_star = mc.minimize_max(prob, method="auto").fun
    at_start = mc.minimize_max(hidden, method="softmax", temperature=1e-3, mu=2.0, steps=0)
    assert at_start.certificate is not None and at_start.fun - f_star > at_start.certificate
    for factor in (2.0, 1.2):
        res = mc.minimize_max(hidden, method="softmax", mu=factor, steps=5)
        assert res.certificate is None
        assert res.info["mu_refuted_by_curvature"] < factor
    for steps in (5, 2000):
        res = mc.minimize_max(hidden, method="softmax", mu=1.0, steps=steps)
        assert res.info["mu_refuted_by_curvature"] is None
        assert res.certificate is not None and res.fun - f_star <= res.certificate
    # a problem whose own mu attribute is wrong is caught the same way
    lying = _Constants(2.0 * prob.mu, prob.smoothness)
    lying.losses, lying.jacobian = prob.losses, prob.jacobian
    res = mc.minimize_max(lying, method="softmax", steps=5)
    assert res.certificate is None and res.info["mu_refuted_by_curvature"] < 2.0


def test_constant_tasks_get_a_clear_error_where_a_step_needs_smoothness() -> None:
    """smoothness = 0 (A = 0) divided by zero in average's default step."""
    prob = mc.problems.QuadraticTasks(np.zeros((2, 2, 2)), np.zeros((2, 2)), np.array([0.0, 1.0]))
    for method in ("average", "group_dro"):
        with pytest.raises(ValueError, match=r"smoothness.*pass step_size="):
            mc.minimize_max(prob, method=method, steps=3)
        assert mc.minimize_max(prob, method=method, steps=3, step_size=0.5).fun == 1.0
