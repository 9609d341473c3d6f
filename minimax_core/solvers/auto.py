"""``method="auto"``: the exact ``min max`` with a certificate (:mod:`minimax_core.exact`,
imported when first used: it needs scipy).

Quadratic tasks, or tasks with ``hessians(x)``: Mehrotra's primal-dual interior-point method
on ``min t s.t. L_i(x) <= t``; tasks with only ``losses``/``jacobian``: Nesterov's
accelerated gradient method for max-type functions with restart (``algorithm=
"interior_point"`` or ``"gradient_mapping"`` forces one). ``tol`` is a relative accuracy:
``success`` iff the certificate (an upper bound on ``F(x) - F*`` from the dual weights) is at
most ``tol * |F(x)| + atol``. ``weights`` are the dual multipliers on the simplex (zero on
inactive tasks). ``status`` 4: the certificate stopped improving (floating-point limit); 5:
the optimality conditions hold but no certificate exists (``mu`` unknown for non-quadratic
tasks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..result import Result
from .driver import Setup

__all__ = ["Auto"]

Float = NDArray[np.float64]


@dataclass(frozen=True)
class Auto:
    """Options of ``method="auto"``: ``algorithm`` (``None``: by the problem's structure),
    ``atol`` (an absolute accuracy added to the relative ``tol``) and ``weights0`` (the dual
    weights of a related problem's result, with ``x0`` its ``x``: a warm start for a
    sequence of related problems, see :func:`minimax_core.exact.minimize`)."""

    algorithm: str | None = None
    atol: float = 0.0
    weights0: ArrayLike | None = None

    name = "auto"

    def solve(self, setup: Setup) -> Result:
        if setup.stochastic:
            raise ValueError(
                "method='auto' solves the deterministic problem; stochastic=True needs one of "
                "'softmax', 'subgradient', 'average', 'group_dro' or a weight rule"
            )
        from .. import exact  # scipy: imported on first use

        if self.algorithm is not None and self.algorithm not in exact.ALGORITHMS:
            raise ValueError(f"algorithm must be one of {exact.ALGORITHMS}, got {self.algorithm!r}")
        atol = float(self.atol)
        if not (math.isfinite(atol) and atol >= 0):
            raise ValueError(f"atol must be a finite number >= 0, got {self.atol!r}")
        problem = setup.problem
        mu = setup.mu if setup.mu is not None else float(getattr(problem, "mu", 0.0) or 0.0)
        return exact.minimize(
            problem,
            setup.x0,
            algorithm=self.algorithm,
            mu=mu,
            smoothness=setup.smoothness,
            tol=setup.tol,
            atol=atol,
            steps=setup.steps,
            callback=setup.callback,
            weights0=self.weights0,
        )
