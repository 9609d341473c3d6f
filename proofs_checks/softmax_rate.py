"""Linear convergence of softmax-weighted GD, and its iteration count to reach ``eps`` on ``F``.

Statement
---------
Let every ``L_i`` be ``mu``-strongly convex (``mu > 0``) and ``L``-smooth, ``x_0`` a start,
``LB <= F*`` any lower bound, and ``G`` a bound on every ``||grad L_i||`` over the ball
``B(x_0, r)`` with ``r = 2 sqrt(2 (F_tau(x_0) - LB) / mu)``. Softmax-weighted GD

    x_{t+1} = x_t - eta sum_i softmax(L(x_t)/tau)_i grad L_i(x_t),   eta = 1/L_tau,
    L_tau = L + G^2/tau,

satisfies, for every ``t``,

    (a) F_tau(x_t) - min F_tau <= (1 - mu/L_tau)^t (F_tau(x_0) - min F_tau);
    (b) with tau = eps / (2 log M) and
        T = ceil( log(2 (F(x_0) - F* + eps/2) / eps) / -log(1 - mu/L_tau) ),
        F(x_T) - F* <= eps.

Derivation
----------
(a) The step is GD on ``F_tau`` (:mod:`proofs_checks.log_sum_exp`). The sublevel set
``S = {F_tau <= F_tau(x_0)}`` lies in ``B(x_tau, r/2)`` by ``mu``-strong convexity (with
``min F_tau >= F* >= LB``), and ``x_0 in S``, so ``S subset B(x_0, r)`` where ``F_tau`` is
``L_tau``-smooth (:mod:`proofs_checks.smoothing_curvature`). The descent lemma gives
``F_tau(x_{t+1}) <= F_tau(x_t) - ||grad||^2 / (2 L_tau)``, so iterates never leave ``S``
(the function cannot increase along the step before leaving the ball), and the
Polyak-Lojasiewicz inequality of a ``mu``-strongly convex function, ``||grad F_tau||^2 >=
2 mu (F_tau - min F_tau)``, turns it into the contraction ``1 - mu/L_tau``.

(b) ``F(x_T) - F* <= F_tau(x_T) - min F_tau + (min F_tau - F*)``; the second term is at
most ``tau log M = eps/2`` (sandwich at ``x*``), the first at most ``(1 - mu/L_tau)^T
(F(x_0) - F* + eps/2) <= eps/2`` by the choice of ``T`` (using ``F_tau(x_0) <= F(x_0) +
eps/2`` and ``min F_tau >= F*``).

The bound of (a) is a worst case over the class; on a given problem the asymptotic rate
is ``(1 - eta lambda_min(hess F_tau(x_tau)))^2`` (the slowest eigen-direction of the
linearised iteration), which the seeded tests compare with the measured slope, two-sided.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

import minimax_core as mc
from minimax_core.validation import check_int, check_real
from minimax_core.weights import smoothed_max

from ._slack import Slack
from .numerics import (
    Float,
    minimize_smoothed,
    optimum_bracket,
    smoothed_hessian,
    smoothed_value_and_grad,
    value_tolerance,
)

__all__ = ["check_iterations_to_accuracy", "check_linear_rate", "theory_step_size"]


def _start(problem: Any, x0: ArrayLike | None) -> Float:
    if x0 is None:
        return np.zeros(problem.dim)
    x = np.array(x0, dtype=np.float64)
    if x.shape != (problem.dim,) or not np.all(np.isfinite(x)):
        raise ValueError(f"x0 must be a finite vector of shape ({problem.dim},)")
    return x


def theory_step_size(problem: Any, temperature: float, x0: Float) -> tuple[float, float, float]:
    """``(eta, L_tau, G)``: the step ``1/(L + G^2/tau)`` with ``G`` bounded on ``B(x_0, r)``,
    ``r = 2 sqrt(2 (F_tau(x_0) - LB) / mu)`` and ``LB`` the strong-convexity lower bound
    :func:`minimax_core.bounds.lower_bound_on_optimum`."""
    mu = float(problem.mu)
    if not mu > 0:
        raise ValueError(f"the linear rate needs problem.mu > 0, got {mu}")
    v = np.asarray(problem.losses(x0), dtype=np.float64)
    g = np.asarray(problem.jacobian(x0), dtype=np.float64)
    lb = mc.bounds.lower_bound_on_optimum(v, g, mu)
    radius = 2.0 * math.sqrt(max(2.0 * (smoothed_max(v, temperature) - lb) / mu, 0.0))
    g_bound = mc.problems.lipschitz_bound(problem, x0, radius)
    l_tau = mc.bounds.smoothed_smoothness(float(problem.smoothness), g_bound, temperature)
    return 1.0 / l_tau, l_tau, g_bound


def _run_softmax(
    problem: Any, temperature: float, eta: float, steps: int, x0: Float
) -> tuple[list[Float], mc.Result]:
    """Every iterate ``x_0..x_T`` of :func:`minimax_core.minimize_max` (method softmax)."""
    iterates: list[Float] = []

    def keep(it: mc.Iterate) -> bool:
        iterates.append(np.array(it.x, dtype=np.float64))
        return False

    res = mc.minimize_max(
        problem,
        method="softmax",
        temperature=temperature,
        step_size=eta,
        line_search="fixed",
        steps=steps,
        x0=x0,
        tol=1e-300,
        callback=keep,
    )
    return iterates, res


def _step_residual(problem: Any, iterates: list[Float], temperature: float, eta: float) -> float:
    """Largest ``||x_{t+1} - (x_t - eta grad F_tau(x_t))|| / max(1, ||x_t||)``: that the
    solver ran exactly the iteration of the statement."""
    worst = 0.0
    for a, b in itertools.pairwise(iterates):
        _, grad = smoothed_value_and_grad(problem, a, temperature)
        err = float(np.linalg.norm(b - (a - eta * grad))) / max(1.0, float(np.linalg.norm(a)))
        worst = max(worst, err)
    return worst


def _tail_rate(gaps: Float, floor: float) -> float:
    """Per-step contraction fitted (least squares on ``log gap``) over the second half of
    the steps whose gap is above ``floor``; ``nan`` with fewer than 4 such steps."""
    idx = np.flatnonzero(gaps > floor)
    if idx.size < 4:
        return math.nan
    idx = idx[idx.size // 2 :]
    if idx.size < 2:
        return math.nan
    slope = np.polyfit(idx.astype(np.float64), np.log(gaps[idx]), 1)[0]
    return float(math.exp(slope))


def check_linear_rate(
    problem: Any, temperature: float, *, steps: int = 200, x0: ArrayLike | None = None
) -> Slack:
    """Statement (a) at every step ``t = 0..steps`` of the library's softmax method.

    ``details``: ``gap`` and ``bound`` per step, the step ``eta``, ``rate_bound = 1 -
    mu/L_tau``, the measured asymptotic ``rate`` and the ``predicted_rate`` from the
    Hessian at ``x_tau`` (when the problem has ``hessians``), and ``step_residual``.
    """
    tau = check_real("temperature", temperature, strict=True)
    steps = check_int("steps", steps)
    x_start = _start(problem, x0)
    eta, l_tau, g_bound = theory_step_size(problem, tau, x_start)
    best = minimize_smoothed(problem, tau, x0=x_start)
    iterates, res = _run_softmax(problem, tau, eta, steps, x_start)
    values = np.array([smoothed_max(np.asarray(problem.losses(x)), tau) for x in iterates])
    gaps = values - best.value
    rate_bound = mc.bounds.softmax_linear_rate(float(problem.mu), l_tau)
    t = np.arange(len(gaps), dtype=np.float64)
    bound = rate_bound**t * gaps[0]
    tol = value_tolerance(float(values[0]), best.value)
    meaningful = (bound > 1e3 * tol) & (t > 0)  # gap_0 / bound_0 = 1 says nothing
    ratio = float(np.max(gaps[meaningful] / bound[meaningful])) if meaningful.any() else 0.0
    predicted = math.nan
    if callable(getattr(problem, "hessians", None)):
        lam_min = float(np.linalg.eigvalsh(smoothed_hessian(problem, best.x, tau))[0])
        predicted = (1.0 - eta * lam_min) ** 2
    return Slack(
        statement="F_tau(x_t) - min F_tau <= (1 - mu/L_tau)^t (F_tau(x_0) - min F_tau)",
        slack=float(np.min(bound - gaps)),
        tolerance=tol,
        ratio=ratio,
        details={
            "gap": gaps,
            "bound": bound,
            "step_size": eta,
            "smoothness_tau": l_tau,
            "lipschitz": g_bound,
            "rate_bound": rate_bound,
            "rate": _tail_rate(gaps, 1e4 * tol),
            "predicted_rate": predicted,
            "step_residual": _step_residual(problem, iterates, tau, eta),
            "solver_status": res.status,
        },
    )


def check_iterations_to_accuracy(
    problem: Any, eps: float, *, x0: ArrayLike | None = None, steps: int = 100_000
) -> Slack:
    """Statement (b): run ``T`` steps with ``tau = eps/(2 log M)`` and check ``F(x_T) - F*
    <= eps`` (``F*`` replaced by a certified lower bound, which can only enlarge the gap).

    ``ratio`` is ``gap_T / eps``; ``details["iterations_needed"]`` is the first step whose
    certified gap is below ``eps`` (how pessimistic ``T`` is), ``["iterations_bound"]`` is
    ``T``. ``steps`` is the budget: ``ValueError`` when ``T > steps`` (choose a larger
    ``eps``).
    """
    eps = check_real("eps", eps, strict=True)
    steps = check_int("steps", steps)
    x_start = _start(problem, x0)
    m = int(problem.num_tasks)
    bracket = optimum_bracket(problem)
    f0 = float(np.max(problem.losses(x_start)))
    initial_gap = max(f0 - bracket.lower, 0.0)
    # for one task the smoothing is exact at any temperature: tau only labels the run
    tau = eps / (2.0 * math.log(m)) if m > 1 else 1.0
    eta, l_tau, g_bound = theory_step_size(problem, tau, x_start)
    if m == 1:
        eta, l_tau = 1.0 / float(problem.smoothness), float(problem.smoothness)
    count = mc.bounds.softmax_iterations_to_accuracy(
        eps, initial_gap, float(problem.mu), float(problem.smoothness), g_bound, m
    )
    if count > steps:
        raise ValueError(
            f"the theorem needs T = {count} steps for eps = {eps:g}, more than the budget "
            f"steps = {steps}; choose a larger eps or raise steps"
        )
    iterates, _ = _run_softmax(problem, tau, eta, max(count, 1), x_start)
    iterates = iterates[: count + 1]
    gaps = np.array([float(np.max(problem.losses(x))) - bracket.lower for x in iterates])
    reached = np.flatnonzero(gaps <= eps)
    return Slack(
        statement="T(eps) steps with tau = eps/(2 log M) give F(x_T) - F* <= eps",
        slack=float(eps - gaps[count]),
        tolerance=value_tolerance(f0, bracket.lower),
        ratio=float(gaps[count] / eps),
        details={
            "gap": gaps,
            "eps": eps,
            "temperature": tau,
            "step_size": eta,
            "smoothness_tau": l_tau,
            "iterations_bound": count,
            "iterations_needed": int(reached[0]) if reached.size else -1,
            "optimum_bracket": (bracket.lower, bracket.upper),
        },
    )
