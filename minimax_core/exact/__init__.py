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

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..result import Iterate, Result, Status
from .certificate import quadratic_lower_bound
from .first_order import gradient_mapping
from .interior import interior_point
from .models import choose_algorithm, is_quadratic
from .progress import Callback, check_weights

__all__ = [
    "ALGORITHMS",
    "ExactSolution",
    "check_weights",
    "choose_algorithm",
    "gradient_mapping",
    "interior_point",
    "is_quadratic",
    "minimize",
    "quadratic_lower_bound",
    "solve",
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
    max_iter: int | None = None,
    callback: Callback | None = None,
    weights0: ArrayLike | None = None,
) -> Result:
    """Solve ``min_x max_i L_i(x)`` to the relative accuracy ``tol`` with a certificate.

    ``x0``: the start (default zeros). ``algorithm``: ``"interior_point"``,
    ``"gradient_mapping"`` or ``None`` (by :func:`choose_algorithm`). ``mu``/``smoothness``
    default to the problem's attributes. ``max_iter``: default 200 (interior point) or 5000
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
            max_iter=200 if max_iter is None else max_iter,
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
        max_iter=5000 if max_iter is None else max_iter,
        callback=callback,
        weights0=w0,
    )


# ------------------------------------------------------------------ until solvers.auto moves
# minimax_core.solvers.auto (the core's file) still calls solve() and converts its answer to
# a Result; once it returns minimize(...) directly, ExactSolution and solve() go.


@dataclass(frozen=True)
class ExactSolution:
    """:func:`minimize`'s :class:`~minimax_core.result.Result` in the shape
    ``minimax_core.solvers.auto`` reads today (``algorithm``, ``lower_bound`` and an
    infinite ``certificate`` when there is none)."""

    x: Float
    fun: float
    weights: Float
    lower_bound: float
    certificate: float
    nit: int
    nfev: int
    status: Status
    message: str
    algorithm: str
    history: dict[str, Float]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status == Status.CONVERGED


def solve(
    problem: Any,
    x0: ArrayLike,
    *,
    algorithm: str | None = None,
    mu: float | None = None,
    smoothness: float | None = None,
    tol: float = 1e-10,
    atol: float = 0.0,
    max_iter: int | None = None,
    callback: Any = None,
    weights0: ArrayLike | None = None,
) -> ExactSolution:
    """:func:`minimize` for ``minimax_core.solvers.auto``: ``callback(step, x, fun)``, and
    an :class:`ExactSolution`."""
    user = callback

    def relay(it: Iterate) -> bool:
        return bool(user(it.step, it.x, it.fun))

    res = minimize(
        problem,
        x0,
        algorithm=algorithm,
        mu=mu,
        smoothness=smoothness,
        tol=tol,
        atol=atol,
        max_iter=max_iter,
        callback=None if user is None else relay,
        weights0=weights0,
    )
    assert res.weights is not None  # both algorithms return their dual weights
    return ExactSolution(
        x=res.x,
        fun=res.fun,
        weights=res.weights,
        lower_bound=float(res.info["lower_bound"]),
        certificate=math.inf if res.certificate is None else res.certificate,
        nit=res.nit,
        nfev=res.nfev,
        status=res.status,
        message=res.message,
        algorithm=str(res.info["algorithm"]),
        history=res.history,
        info=res.info,
    )
