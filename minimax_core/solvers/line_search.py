"""Backtracking along a weighted-gradient direction, shared by ``"softmax"`` (on
``F_tau``) and the rule methods (on ``w'L`` at the current weights)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from .._common import Oracle, all_finite

__all__ = ["ARMIJO_GROWTH", "Accepted", "armijo"]

Float = NDArray[np.float64]

ARMIJO_C = 0.5  # sufficient decrease phi(eta) <= phi(0) - c eta ||d||^2
ARMIJO_GROWTH = 1.25  # each step first tries the previous step times this (measured:
# 1.1-1.25 need about 35% fewer evaluations than 2 to a 1e-3 gap; 1.25 recovers faster from
# a small first step)
ARMIJO_HALVINGS = 60


class Accepted(NamedTuple):
    """An accepted step: its size, the new point and ``L, J`` there."""

    step_size: float
    x: Float
    values: Float
    jacobian: Float


def armijo(
    oracle: Oracle,
    x: Float,
    direction: Float,
    value: float,
    merit: Callable[[Float], float],
    slope_weights: Callable[[Float], Float],
    eta: float,
) -> Accepted | None:
    """Backtracking on ``phi(eta) = merit(L(x - eta d))`` from ``eta`` (``value = phi(0)``,
    ``d`` the gradient of the merit at ``x``): the first accepted step, or ``None`` when 60
    halvings find none (round-off level reached).

    Accepts the sufficient decrease ``phi(eta) <= phi(0) - eta ||d||^2 / 2`` (met by every
    ``eta <= 1/L_phi`` when the merit is ``L_phi``-smooth, so the accepted step is at least
    ``1/(2 L_phi)``) or, where that decrease is below ``1e-12 |phi(0)|`` (not resolvable in
    floating point), its derivative form ``phi'(eta) <= 0`` with ``phi'(eta) = -(w'J d)`` and
    ``w = slope_weights(L)`` at the new point (Hager and Zhang's approximate Wolfe condition
    with ``delta = 1/2``: the step does not pass the minimum along the line), which stays
    decidable when the decrease is below the accuracy of the merit."""
    sq = float(direction @ direction)
    noise = 1e-12 * abs(value)
    for _ in range(ARMIJO_HALVINGS):
        x_new = x - eta * direction
        v, g = oracle(x_new)
        if all_finite(v, g):
            trial = merit(v)
            if trial <= value - ARMIJO_C * eta * sq:
                return Accepted(eta, x_new, v, g)
            if ARMIJO_C * eta * sq <= noise and trial <= value + noise:
                slope = -float(slope_weights(v) @ g @ direction)
                if slope <= 0.0:
                    return Accepted(eta, x_new, v, g)
        eta *= 0.5
    return None
