"""The CVXPY reference: optimum, multipliers and honest status."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import minimax_core as mc

from .helpers import CATALOGUE, problem


@pytest.mark.parametrize("name", CATALOGUE)
def test_reference_is_optimal_with_simplex_multipliers(name: str) -> None:
    prob = problem(name)
    ref = mc.reference.solve_cvxpy(prob)
    assert ref.success and ref.status == 0, ref.message
    assert ref.fun == pytest.approx(ref.info["epigraph_value"], rel=1e-7, abs=1e-8)
    w = ref.weights
    assert w is not None and np.all(w >= -1e-8) and w.sum() == pytest.approx(1.0, abs=1e-7)
    # stationarity of the Lagrangian, sum_i w_i grad L_i(x*) = 0, up to the accuracy of an
    # interior-point x: a 1e-9 gap leaves x within about sqrt(2e-9 / mu) of x*
    g = w @ prob.jacobian(ref.x)
    x_accuracy = np.sqrt(2e-9 * (1 + abs(ref.fun)) / prob.mu)
    assert np.linalg.norm(g) <= 10 * prob.smoothness * x_accuracy
    # no point of a random cloud around x* does better
    rng = np.random.default_rng(0)
    for _ in range(50):
        y = ref.x + rng.normal(size=prob.dim) * 0.1
        assert np.max(prob.losses(y)) >= ref.fun - 1e-7


def test_inaccurate_status_is_not_accepted() -> None:
    prob = problem("quad-20x5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # cvxpy warns "may be inaccurate"
        ref = mc.reference.solve_cvxpy(prob, solver_options={"max_iter": 2})
    assert not ref.success
    assert ref.status != 0
    assert "status" in ref.message and ref.info["cvxpy_status"] != "optimal"


def test_problem_without_cvxpy_form() -> None:
    class Plain:
        num_tasks, dim = 1, 1

        def losses(self, x):
            return x**2

        def jacobian(self, x):
            return 2 * x[None, :]

    with pytest.raises(TypeError, match="cvxpy_losses"):
        mc.reference.solve_cvxpy(Plain())


def test_importing_minimax_core_imports_neither_torch_nor_cvxpy() -> None:
    code = (
        "import sys, minimax_core, minimax_core.solvers, minimax_core.problems;"
        "bad = [m for m in ('torch', 'cvxpy') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_constant_task_has_a_multiplier() -> None:
    """A task with ``A_i = 0`` is constant in x: CVXPY gives its multiplier as a scalar."""
    base = problem("quad-8x10")
    hessians = base.hessian_stack.copy()
    hessians[0] = 0.0
    offsets = base.offsets.copy()
    offsets[0] = 1.0  # above the others' minima, below F*
    prob = mc.problems.QuadraticTasks(hessians, base.centers, offsets)
    ref = mc.reference.solve_cvxpy(prob)
    assert ref.success, ref.message
    assert ref.weights is not None and ref.weights.shape == (8,)
    assert ref.weights.sum() == pytest.approx(1.0, abs=1e-7)
    res = mc.minimize_max(prob)
    assert res.success and abs(res.fun - ref.fun) <= 1e-8 * abs(ref.fun)


@pytest.mark.parametrize("solver", mc.reference.CONIC_SOLVERS)
@pytest.mark.parametrize("name", ["quad-8x10", "lsq-5x6", "quad-single"])
def test_direct_conic_solvers_reach_the_optimum(name: str, solver: str) -> None:
    """The second-order-cone form, solved without CVXPY, gives the certified optimum."""
    pytest.importorskip(solver)
    prob = problem(name)
    form = mc.reference.conic_form(prob)
    assert form.matrix.shape == (sum(form.cones), prob.dim + 1)
    sol = mc.reference.solve_conic(form, solver)
    best = mc.minimize_max(prob, tol=1e-12)
    fun = float(np.max(prob.losses(sol.x)))
    accuracy = 1e-5 if solver == "scs" else 1e-7  # SCS is a first-order method
    assert fun - best.fun >= -1e-12 * abs(best.fun)  # no point beats the certified optimum
    assert fun - best.fun <= accuracy * abs(best.fun), (sol.status, fun, best.fun)
    assert sol.t == pytest.approx(best.fun, rel=10 * accuracy)
    assert sol.seconds > 0 and sol.iterations >= 1


def test_conic_form_of_a_singular_task_and_bad_input() -> None:
    """A PSD task of rank 1 (and a constant one) keeps only its nonzero directions."""
    base = problem("quad-3x2")
    hessians = base.hessian_stack.copy()
    hessians[0] = np.outer([1.0, 2.0], [1.0, 2.0])
    hessians[1] = 0.0
    prob = mc.problems.QuadraticTasks(hessians, base.centers, base.offsets)
    form = mc.reference.conic_form(prob)
    assert form.cones == (3, 2, 4)
    sol = mc.reference.solve_conic(form)
    ref = mc.reference.solve_cvxpy(prob)
    assert sol.optimal and abs(float(np.max(prob.losses(sol.x))) - ref.fun) <= 1e-7
    with pytest.raises(ValueError, match="solver must be one of"):
        mc.reference.solve_conic(form, "mosek")
    with pytest.raises(ValueError, match="tol"):
        mc.reference.solve_conic(form, tol=0.0)
    with pytest.raises(TypeError, match="conic_form needs"):
        mc.reference.conic_form(problem("logistic-4x3"))
