"""Numerical checks of every statement the theory leans on, one module per statement.

Each module states its result and derivation in its docstring and has a ``check_*``
function that measures the statement on a given problem and returns a :class:`Slack`
(``slack >= -tolerance`` means it held everywhere it was tried; ``ratio`` says how tight).

=============================  ===========================================================
module                          statement
=============================  ===========================================================
``log_sum_exp``                 ``F <= F_tau <= F + tau log M``; ``grad F_tau = sum_i w_i grad L_i``
``smoothing_curvature``         ``mu I <= hess F_tau <= (L + G^2/tau) I``
``softmax_rate``                linear rate ``1 - mu/L_tau`` of softmax GD on ``F_tau``; the
                                iteration count to reach ``eps`` on ``F`` with
                                ``tau = eps/(2 log M)``
``subgradient_rate``            ``F(xbar_T) - F* <= 2 G^2/(mu (T+1))`` (weighted averaging)
``convex_combination``          ``sum_i lambda_i L_i <= max_i L_i`` (Section 5)
``implicit_regularization``     Prop 5.3: GD stays in ``B(x*, ||x_0 - x*||)``, linear rate
``covering``                    ``N(B_r, eps) <= (1 + 2r/eps)^d``
=============================  ===========================================================

:mod:`proofs_checks.numerics` holds what the checks share (the smoothed minimiser by Newton,
the certified bracket on ``F*``, the smoothed Hessian), public for the experiments; the
log-sum-exp, the validators and the Lipschitz bound are the library's own.

``python -m proofs_checks`` runs every check on seeded problems and prints the slacks.
"""

from __future__ import annotations

from . import (
    convex_combination,
    covering,
    implicit_regularization,
    log_sum_exp,
    numerics,
    smoothing_curvature,
    softmax_rate,
    subgradient_rate,
)
from ._slack import Slack

__all__ = [
    "Slack",
    "convex_combination",
    "covering",
    "implicit_regularization",
    "log_sum_exp",
    "numerics",
    "smoothing_curvature",
    "softmax_rate",
    "subgradient_rate",
]
