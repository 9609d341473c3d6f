"""Any weight rule is a method of ``minimize_max``; method options are typed objects."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import minimax_core as mc
from minimax_core import solvers

from .helpers import CATALOGUE, optimum, problem


def _trace(prob: Any, method: Any, **options: Any) -> tuple[mc.Result, list[np.ndarray]]:
    xs: list[np.ndarray] = []
    res = mc.minimize_max(
        prob, method=method, callback=lambda it: xs.append(it.x.copy()) and False, **options
    )
    return res, xs


@pytest.mark.parametrize("name", ["quad-8x10", "lsq-5x6", "logistic-4x3"])
def test_softmax_rule_gives_the_iterates_of_method_softmax(name: str) -> None:
    """``method=weights.softmax(0.1)`` and ``method="softmax", temperature=0.1`` with the same
    step options take the same steps, bit for bit: both compute ``softmax_weights(L, 0.1)``
    and ``x - eta w'J`` with one ``eta`` (the string's extras -- continuation, the line
    search on ``F_tau``, momentum -- are off with a given ``step_size``)."""
    prob = problem(name)
    eta = 0.5 / prob.smoothness
    string, xs = _trace(prob, "softmax", temperature=0.1, step_size=eta, steps=200)
    rule, ys = _trace(prob, mc.weights.softmax(0.1), step_size=eta, steps=200)
    assert string.info["line_search"] == "fixed" and not string.info["accelerated"]
    assert len(xs) == len(ys) == string.nit + 1 > 30
    for x, y in zip(xs, ys, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(string.x, rule.x)
    np.testing.assert_array_equal(string.weights, rule.weights)
    assert (string.fun, string.nit, string.nfev, string.status) == (
        rule.fun,
        rule.nit,
        rule.nfev,
        rule.status,
    )
    assert rule.method == "rule:softmax" and rule.info["rule_params"] == {"temperature": 0.1}
    # the same with stochastic minibatches (same seed): decreasing steps and the average
    if callable(getattr(prob, "sample", None)):
        kw: dict[str, Any] = {"step_size": eta, "steps": 100, "stochastic": True, "seed": 4}
        a = mc.minimize_max(prob, "softmax", temperature=0.1, batch_size=5, **kw)
        b = mc.minimize_max(prob, mc.weights.softmax(0.1), batch_size=5, **kw)
        np.testing.assert_array_equal(a.x, b.x)


def test_exponentiated_gradient_rule_runs_and_is_certified() -> None:
    """Group DRO's rule as a method: one rule update per step (the weights move toward the
    worst tasks), so ``q'J -> 0`` only where ``q`` has reached the minimax weights; a valid
    dual certificate, and it improves on the start."""
    name = "quad-8x10"
    prob = problem(name)
    x0 = np.zeros(prob.dim)
    res = mc.minimize_max(prob, method=mc.weights.exponentiated_gradient(0.1), steps=500)
    assert res.method == "rule:exponentiated_gradient" and res.success, res.message
    assert res.fun < float(np.max(prob.losses(x0)))
    assert res.weights is not None and res.weights.sum() == pytest.approx(1.0)
    assert res.certificate is not None
    assert res.fun - optimum(name) <= res.certificate * (1 + 1e-9) + 1e-12
    assert res.info["step_size"] == 1.0 / prob.smoothness


@pytest.mark.parametrize("name", ["quad-3x2", "quad-8x10", "lsq-5x6"])
def test_rule_armijo_converges_to_the_rules_fixed_point(name: str) -> None:
    """``line_search="armijo"`` (backtracking on ``w'L`` at the current weights) with the
    softmax rule reaches ``||w'J|| <= tol``: the minimiser of ``F_tau``, within ``tau log M``
    of ``F*``. (At a temperature this high the weights move slowly; at ``tau = 0.05`` steps
    that decrease ``w'L`` overshoot in the weights and cycle -- the line search on ``F_tau``
    of ``method="softmax"`` is what converges there.)"""
    prob = problem(name)
    tau = 2.0
    res = mc.minimize_max(prob, mc.weights.softmax(tau), line_search="armijo", steps=5000, tol=1e-7)
    assert res.success, res.message
    assert res.info["gradient_norm"] <= 1e-7
    bias = mc.bounds.smoothed_gap_bound(tau, prob.num_tasks)
    assert res.fun - optimum(name) <= bias + 1e-6


def test_a_users_own_rule_is_a_method() -> None:
    """Any object with ``init``/``update`` works (here: fixed weights on two tasks)."""

    class Fixed:
        name = "fixed"

        def init(self, num_tasks: int) -> int:
            return 0

        def update(self, losses: np.ndarray, state: int) -> tuple[np.ndarray, int]:
            w = np.zeros_like(losses)
            w[:2] = 0.5
            return w, state + 1

    prob = problem("quad-8x10")
    res = mc.minimize_max(prob, Fixed(), steps=3000, tol=1e-10)
    a, c = prob.hessian_stack[:2], prob.centers[:2]
    target = np.linalg.solve(a.sum(axis=0), np.einsum("mij,mj->i", a, c))
    assert res.success and res.method == "rule:fixed"
    np.testing.assert_allclose(res.x, target, atol=1e-8)


def test_rule_method_options_are_checked() -> None:
    prob = problem("quad-3x2")
    rule = mc.weights.softmax(0.1)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['temperature'\] for method=rule"):
        mc.minimize_max(prob, rule, temperature=0.2)
    with pytest.raises(ValueError, match="line_search must be 'fixed' or 'armijo'"):
        mc.minimize_max(prob, rule, line_search="wolfe")
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        mc.minimize_max(prob, rule, step_size=-1.0)
    with pytest.raises(ValueError, match="needs exact losses"):
        mc.minimize_max(prob, rule, line_search="armijo", stochastic=True)

    class NoSmoothness:
        num_tasks, dim = prob.num_tasks, prob.dim
        losses, jacobian = prob.losses, prob.jacobian

    with pytest.raises(TypeError, match="no smoothness attribute; pass step_size"):
        mc.minimize_max(NoSmoothness(), rule)
    with pytest.raises(ValueError, match="method must be one of"):
        mc.minimize_max(prob, object())


def test_an_options_object_is_the_same_call() -> None:
    prob = problem("quad-8x10")
    by_name = mc.minimize_max(prob, "softmax", temperature=0.2, line_search="armijo", steps=50)
    by_object = mc.minimize_max(
        prob, solvers.Softmax(temperature=0.2, line_search="armijo"), steps=50
    )
    np.testing.assert_array_equal(by_name.x, by_object.x)
    with pytest.raises(TypeError, match="carries its options"):
        mc.minimize_max(prob, solvers.Softmax(), temperature=0.2)
    with pytest.raises(TypeError, match=r"for method='average'; allowed: \['step_size'\]"):
        mc.minimize_max(prob, "average", temperature=0.2)
    assert set(solvers.METHODS) == {"auto", "softmax", "subgradient", "average", "group_dro"}


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_first_order_method_records_through_one_recorder(name: str) -> None:
    """One history layout for every method (``step``, ``fun``, ``nfev``; steps increasing,
    the last one ``nit``)."""
    prob = problem(name)
    for method in ("softmax", "subgradient", "average", "group_dro", mc.weights.hardmax()):
        res = mc.minimize_max(prob, method, steps=40)
        assert list(res.history) == ["step", "fun", "nfev"]
        assert res.history["step"][-1] == res.nit and np.all(np.diff(res.history["step"]) > 0)
        assert isinstance(res.status, mc.Status)


def test_importing_the_core_imports_no_scipy() -> None:
    """scipy (and cvxpy, matplotlib, torch) stay off the import path of ``minimax_core`` and
    of ``deep``; ``method="auto"`` imports scipy when it runs."""
    heavy = "('scipy', 'cvxpy', 'matplotlib', 'torch')"
    code = (
        "import sys, minimax_core, minimax_core.solvers, minimax_core.problems;"
        f"bad = [m for m in {heavy} if m in sys.modules]; assert not bad, bad;"
        "import deep; assert 'scipy' not in sys.modules;"
        "p = minimax_core.problems.random_quadratic(3, 2, seed=0);"
        "assert minimax_core.minimize_max(p).success and 'scipy' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
