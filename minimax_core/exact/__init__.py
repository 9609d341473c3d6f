"""Exact solvers of ``min_x F(x) = max_i L_i(x)``: the engines behind ``method="auto"``.

Two algorithms, chosen by what the problem offers (:func:`minimize`,
:func:`~minimax_core.exact.models.choose_algorithm`):

- ``"interior_point"`` (:mod:`~minimax_core.exact.interior`): tasks with Hessians
  (:class:`~minimax_core.problems.QuadraticTasks`, least-squares tasks from their samples,
  or any problem with ``hessians(x) -> (M, d, d)``). A primal-dual interior-point method on
  the epigraph form ``min t  s.t.  L_i(x) <= t`` with Mehrotra's predictor-corrector; each
  task structure supplies its products (:mod:`~minimax_core.exact.models`).
- ``"gradient_mapping"`` (:mod:`~minimax_core.exact.first_order`): tasks that give only
  ``losses`` and ``jacobian``. Nesterov's accelerated gradient method for max-type
  functions, with restart.

Both certify their answer (:mod:`~minimax_core.exact.certificate`): dual weights ``w`` on
the simplex give a lower bound on ``F*`` by weak duality, and ``certificate = F(x) - lower
bound >= F(x) - F*``; ``success`` means ``certificate <= tol * min(|F(x)|, F(x) - c) +
atol`` (``c`` the constant every task lies above). Both return the package's
:class:`~minimax_core.result.Result` (``method="auto"``; ``weights`` the dual multipliers,
zero on inactive tasks; ``certificate``; ``info`` with ``algorithm``, ``lower_bound``,
``active``, ``relative_certificate``) with one history row per iteration
(:mod:`~minimax_core.exact.progress`).

A sequence of related problems is solved faster from the previous solution:
``minimize(next_problem, res.x, weights0=res.weights)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..result import Result
from .certificate import quadratic_lower_bound
from .first_order import gradient_mapping
from .interior import interior_point
from .models import choose_algorithm, is_quadratic
from .progress import Callback, check_weights

__all__ = [
    "ALGORITHMS",
    "check_weights",
    "choose_algorithm",
    "gradient_mapping",
    "interior_point",
    "is_quadratic",
    "minimize",
    "quadratic_lower_bound",
]

Float = NDArray[np.float64]

ALGORITHMS = ("interior_point", "gradient_mapping")


def minimize(
    problem: Any,
    x0: ArrayLike | None = None,
    *,
    algorithm: str | None = None,
    mu: float | None = None,
    smoothness: float | None = None,
    tol: float = 1e-10,
    atol: float = 0.0,
    steps: int | None = None,
    callback: Callback | None = None,
    weights0: ArrayLike | None = None,
) -> Result:
    """Solve ``min_x max_i L_i(x)`` to the relative accuracy ``tol`` with a certificate.

    ``x0``: the start (default zeros). ``algorithm``: ``"interior_point"``,
    ``"gradient_mapping"`` or ``None`` (by :func:`choose_algorithm`). ``mu``/``smoothness``
    default to the problem's attributes. ``steps``: default 200 (interior point) or 5000
    (gradient mapping). ``callback(Iterate) -> bool``: ``True`` stops. ``x0`` and
    ``weights0`` (``res.x`` and ``res.weights`` of a related problem) warm-start a sequence
    of related problems (see :func:`interior_point`).
    """
    if algorithm is None:
        algorithm = choose_algorithm(problem)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS} or None, got {algorithm!r}")
    if mu is None:
        mu = float(getattr(problem, "mu", 0.0) or 0.0)
    if smoothness is None:
        value = getattr(problem, "smoothness", None)
        smoothness = None if value is None else float(value)
    start = np.zeros(int(problem.dim)) if x0 is None else np.asarray(x0, dtype=np.float64)
    w0 = None if weights0 is None else np.asarray(weights0)
    if algorithm == "interior_point":
        if choose_algorithm(problem) != "interior_point":
            raise ValueError(
                "algorithm='interior_point' needs quadratic tasks or problem.hessians(x)"
            )
        return interior_point(
            problem,
            start,
            mu=mu,
            tol=tol,
            atol=atol,
            steps=200 if steps is None else steps,
            callback=callback,
            weights0=w0,
        )
    return gradient_mapping(
        problem,
        start,
        mu=mu,
        smoothness=smoothness,
        tol=tol,
        atol=atol,
        steps=5000 if steps is None else steps,
        callback=callback,
        weights0=w0,
    )
