"""The first-order engine of ``method="auto"`` (``"gradient_mapping"``), for tasks that give
only ``losses`` and ``jacobian``.

Nesterov's accelerated gradient method for max-type functions (Nesterov 2004,
Section 2.3.3): ``x+ = argmin_z max_i [L_i(y) + <grad L_i(y), z - y>] + (L/2)||z - y||^2``,
whose dual is the simplex QP ``max_w <w, L(y)> - ||G'w||^2/(2L)``
(:func:`~minimax_core.simplex_qp.solve_simplex_qp`, warm-started), then the momentum
``y = x+ + beta (x+ - x)`` with ``beta = (sqrt L - sqrt mu)/(sqrt L + sqrt mu)`` (FISTA's
sequence when ``mu`` is unknown) and the gradient restart of O'Donoghue and Candes
(2015). Without a known ``smoothness`` the step backtracks on ``L``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._common import Oracle, all_finite, check_first_outputs
from ..result import Result, Status
from ..simplex_qp import solve_simplex_qp
from .certificate import accuracy_target, strong_convexity_floor
from .progress import STALL_WINDOW, Callback, Progress, check_weights, finish

__all__ = ["gradient_mapping", "qp_model_value"]

Float = NDArray[np.float64]


def qp_model_value(weights: Float, values: Float, move: Float, smoothness: float) -> float:
    """``min_z max_i [L_i(y) + <grad L_i(y), z - y>] + (L/2)||z - y||^2`` by duality:
    ``<w, L(y)> - ||G'w||^2 / (2L)`` at the QP's solution ``w`` (``move = G'w``)."""
    return float(weights @ values - (move @ move) / (2.0 * smoothness))


def _secant_smoothness(evaluate: Oracle, x: Float, jac: Float) -> float:
    """``max_i ||grad L_i(x') - grad L_i(x)|| / ||x' - x||`` along a short step of the
    mean gradient: a starting guess that backtracking corrects upwards."""
    direction = jac.mean(axis=0)
    norm = float(np.linalg.norm(direction))
    if norm == 0.0:
        direction, norm = np.ones_like(x), math.sqrt(x.size)
    h = 1e-4 * max(1.0, float(np.linalg.norm(x))) / norm
    _, jac2 = evaluate(x - h * direction)
    change = float(np.max(np.linalg.norm(jac2 - jac, axis=1))) / (h * norm)
    return max(change, 1e-12)


def gradient_mapping(
    problem: Any,
    x0: Float,
    *,
    mu: float = 0.0,
    smoothness: float | None = None,
    tol: float = 1e-10,
    atol: float = 0.0,
    steps: int = 2000,
    callback: Callback | None = None,
    weights0: Float | None = None,
) -> Result:
    """Nesterov's accelerated gradient method for max-type functions, with restart.

    ``smoothness`` (every task ``L``-smooth) fixes the step; without it ``L`` starts from a
    secant estimate and doubles whenever the upper model fails at the new point (one more
    evaluation per step). ``mu > 0`` gives the momentum ``(sqrt L - sqrt mu)/(sqrt L +
    sqrt mu)`` and the certificate; with ``mu = 0`` there is no certificate and the
    result cannot succeed. ``weights0`` (a previous solution's weights) warm-starts the
    first simplex QP.
    """
    evaluate = Oracle(problem)
    x = np.array(x0, dtype=np.float64)
    values, jac = evaluate(x)
    check_first_outputs(problem, values, jac)
    adaptive = smoothness is None
    lip = _secant_smoothness(evaluate, x, jac) if smoothness is None else float(smoothness)
    progress = Progress(callback)
    y, x_prev = x.copy(), x.copy()
    best_x, best_fun = x.copy(), float(np.max(values))
    lower, best_weights = -math.inf, np.full(values.shape[0], 1.0 / values.shape[0])
    w: Float | None = None if weights0 is None else check_weights(weights0, values.shape[0])
    momentum, status, it, backtracks = 1.0, Status.BUDGET, 0, 0
    floor = -math.inf
    for it in range(steps + 1):
        fun_y = float(np.max(values))
        floor = max(floor, strong_convexity_floor(values, jac, mu))
        if fun_y < best_fun:
            best_x, best_fun = y.copy(), fun_y
        gram = jac @ jac.T
        while True:
            qp = solve_simplex_qp(gram / lip, values, warm_start=w)
            w = qp.weights
            move = w @ jac  # L (y - x+)
            x_new = y - move / lip
            if not adaptive:
                break
            new_values, new_jac = evaluate(x_new)
            step = x_new - y
            model = values + jac @ step + 0.5 * lip * float(step @ step)
            slack = 1e-12 * max(1.0, float(np.max(np.abs(values))))
            if all_finite(new_values, new_jac) and np.all(new_values <= model + slack):
                break
            lip *= 2.0
            backtracks += 1
        if mu > 0:
            bound = float(w @ values - (move @ move) / (2.0 * mu))
            if bound > lower:
                lower, best_weights = bound, w.copy()
        else:
            best_weights = w.copy()
        if adaptive and float(np.max(new_values)) < best_fun:
            best_x, best_fun = x_new.copy(), float(np.max(new_values))
        # without mu: the decrease promised by the model, F(y) - min model (0 iff optimal)
        measure = best_fun - lower if mu > 0 else fun_y - qp_model_value(w, values, move, lip)
        if progress.record(it, y, fun_y, measure, evaluate.nfev):
            status = Status.CALLBACK
            break
        if best_fun - lower <= accuracy_target(best_fun, best_fun - floor, tol, atol):
            status = Status.CONVERGED
            break
        if mu <= 0 and measure <= accuracy_target(fun_y, math.inf, tol, atol):
            status = Status.NO_CERTIFICATE
            break
        if it == steps:
            break
        # linear rate 1 - sqrt(mu/L): a 10% gain may take about sqrt(L/mu)/10 steps
        window = 200 if mu <= 0 else max(STALL_WINDOW, 10 * math.ceil(math.sqrt(lip / mu)))
        if progress.stalled(it, window):
            status = Status.STALLED
            break
        if float((y - x_new) @ (x_new - x_prev)) > 0:  # gradient restart
            y, momentum = x_new, 1.0
        else:
            if mu > 0:
                root_l, root_mu = math.sqrt(lip), math.sqrt(mu)
                beta = (root_l - root_mu) / (root_l + root_mu)
            else:
                nxt = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * momentum * momentum))
                beta, momentum = (momentum - 1.0) / nxt, nxt
            y = x_new + beta * (x_new - x_prev)
        x_prev = x_new
        if adaptive and y is x_new:
            values, jac = new_values, new_jac
        else:
            values, jac = evaluate(y)
        if not all_finite(values, jac):
            status = Status.NON_FINITE
            break
    return finish(
        "gradient_mapping",
        status,
        best_x,
        best_fun,
        best_weights,
        lower,
        it,
        evaluate.nfev,
        progress,
        certified=mu > 0,
        info={"smoothness": lip, "backtracks": backtracks},
    )
