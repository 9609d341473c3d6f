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
