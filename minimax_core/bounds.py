"""Closed-form bounds used by the solvers, the plots, the tests and ``proofs_checks``.

Notation: ``F(x) = max_i L_i(x)`` over ``M`` tasks, each ``mu``-strongly convex and
``smoothness``-smooth (``L``); ``G`` bounds every ``||grad L_i||`` on the region of the
iterates; ``F_tau(x) = tau log sum_i exp(L_i(x)/tau)`` is the log-sum-exp smoothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "covering_number_log",
    "dual_lower_bound",
    "gradient_descent_distance_bound",
    "initial_radius",
    "lower_bound_on_optimum",
    "smoothed_gap_bound",
    "smoothed_smoothness",
    "softmax_iterations_at_temperature",
    "softmax_iterations_to_accuracy",
    "softmax_linear_rate",
    "subgradient_convex_bound",
    "subgradient_strongly_convex_bound",
]

Float = NDArray[np.float64]


def smoothed_gap_bound(temperature: float, num_tasks: int) -> float:
    """``F <= F_tau <= F + tau log M``: the smoothing costs at most ``tau log M``.

    ``max_i e^{L_i/tau} <= sum_i e^{L_i/tau} <= M max_i e^{L_i/tau}``; take ``tau log``.
    """
    return temperature * math.log(num_tasks)


def smoothed_smoothness(smoothness: float, lipschitz: float, temperature: float) -> float:
    """``F_tau`` is ``(L + G^2/tau)``-smooth where every ``||grad L_i|| <= G``.

    ``hess F_tau = sum_i w_i hess L_i + (1/tau) Cov_w(grad L)`` with ``w = softmax(L/tau)``;
    the first term is ``<= L I`` and ``Cov_w(g) <= E_w[g g'] <= G^2 I``.
    """
    return smoothness + lipschitz**2 / temperature


def softmax_linear_rate(mu: float, smoothness_tau: float) -> float:
    """Contraction ``1 - mu/L_tau`` of ``F_tau(x_t) - min F_tau`` per step of GD with step
    ``1/L_tau`` (``F_tau`` is ``mu``-strongly convex as a max-type smoothing of
    ``mu``-strongly convex functions: the covariance term is PSD)."""
    return 1.0 - mu / smoothness_tau


def softmax_iterations_to_accuracy(
    eps: float, initial_gap: float, mu: float, smoothness: float, lipschitz: float, num_tasks: int
) -> int:
    """Steps of softmax GD that guarantee ``F(x_T) - F* <= eps``.

    With ``tau = eps / (2 log M)`` the smoothing costs ``eps/2``; GD on ``F_tau`` needs
    ``F_tau(x_T) - min F_tau <= eps/2``, i.e. ``T >= log(2 gap_0 / eps) / -log(1 - mu/L_tau)``
    with ``gap_0 = F_tau(x_0) - min F_tau <= initial_gap + eps/2``.
    """
    if num_tasks == 1:
        tau = math.inf
        l_tau = smoothness
    else:
        tau = eps / (2.0 * math.log(num_tasks))
        l_tau = smoothed_smoothness(smoothness, lipschitz, tau)
    gap0 = initial_gap + eps / 2.0
    if gap0 <= eps / 2.0:
        return 0
    rate = softmax_linear_rate(mu, l_tau)
    return math.ceil(math.log(2.0 * gap0 / eps) / -math.log(rate)) if rate > 0 else 1


def subgradient_strongly_convex_bound(lipschitz: float, mu: float, steps: int | Float) -> Any:
    """``F(xbar_T) - F* <= 2 G^2 / (mu (T + 1))`` for the projected subgradient method with
    steps ``2/(mu (t+1))`` and the average ``xbar_T = sum_t t x_t / sum_t t``
    (Lacoste-Julien, Schmidt and Bach 2012)."""
    return 2.0 * lipschitz**2 / (mu * (np.asarray(steps, dtype=np.float64) + 1.0))


def subgradient_convex_bound(lipschitz: float, radius: float, steps: int | Float) -> Any:
    """``min_{t<=T} F(x_t) - F* <= 3 R G / sqrt(T)`` for the subgradient method projected on
    a ball of radius ``R`` (diameter ``D = 2R``) that holds a minimiser, steps ``D/(G sqrt t)``.

    ``||x_{t+1}-x*||^2 <= ||x_t-x*||^2 - 2 eta_t (F(x_t)-F*) + eta_t^2 G^2``; summing with
    non-increasing steps, ``sum_t (F(x_t)-F*) <= D^2/(2 eta_T) + (G^2/2) sum_t eta_t
    <= (3/2) D G sqrt(T)``.
    """
    t = np.maximum(np.asarray(steps, dtype=np.float64), 1.0)
    return 3.0 * radius * lipschitz / np.sqrt(t)


def lower_bound_on_optimum(values: Float, jacobian: Float, mu: float) -> float:
    """``F* >= max_i (L_i(x) - ||grad L_i(x)||^2 / (2 mu))`` (each ``L_i >= `` its own minimum,
    bounded below by strong convexity at any ``x``)."""
    sq = np.einsum("mi,mi->m", jacobian, jacobian)
    return float(np.max(values - sq / (2.0 * mu)))


def initial_radius(values: Float, jacobian: Float, mu: float) -> float:
    """A radius ``R >= ||x - x*||``: ``mu/2 ||x - x*||^2 <= F(x) - F* <= F(x) - LB``."""
    lb = lower_bound_on_optimum(values, jacobian, mu)
    return math.sqrt(max(2.0 * (float(np.max(values)) - lb) / mu, 0.0))


def dual_lower_bound(values: Float, jacobian: Float, weights: Float, mu: float) -> float:
    """``F* >= sum_i w_i L_i(x) - ||sum_i w_i grad L_i(x)||^2 / (2 mu)`` for any ``w`` on the
    simplex: ``F* >= min_y sum_i w_i L_i(y)`` (weak duality) and ``sum_i w_i L_i`` is
    ``mu``-strongly convex. ``F(x)`` minus this is a certificate on the gap at ``x``."""
    g = weights @ jacobian
    return float(weights @ values - (g @ g) / (2.0 * mu))


def covering_number_log(radius: float, eps: float, dim: int) -> float:
    """``log N(eps) <= d log(1 + 2r/eps)``: a ball of radius ``r`` in ``R^d`` has an
    ``eps``-net of at most ``(1 + 2r/eps)^d`` points (volume argument)."""
    return dim * math.log1p(2.0 * radius / eps)


def softmax_iterations_at_temperature(
    eps: float, temperature: float, smoothed_initial_gap: float, rate: float, num_tasks: int
) -> int | None:
    """Steps of softmax GD at a given ``tau`` that guarantee ``F(x_T) - F* <= eps``.

    ``F(x_T) - F* <= rate^T (F_tau(x_0) - min F_tau) + tau log M``, so ``T = ceil(log(gap_0 /
    (eps - tau log M)) / -log(rate))`` with ``rate = 1 - mu/L_tau``; ``None`` when ``tau log
    M >= eps`` (the smoothing alone may cost more than ``eps``: no ``T`` is guaranteed).
    """
    room = eps - smoothed_gap_bound(temperature, num_tasks)
    if room <= 0:
        return None
    if smoothed_initial_gap <= room:
        return 0
    return math.ceil(math.log(smoothed_initial_gap / room) / -math.log(rate))


def gradient_descent_distance_bound(
    mu: float, smoothness: float, initial_distance: float, steps: int | Float
) -> Any:
    """``||x_t - x*|| <= (1 - mu/L)^t ||x_0 - x*||`` for gradient descent with step ``1/L``
    on a ``mu``-strongly convex, ``L``-smooth function (Prop 5.3: the iterates never leave
    the ball of radius ``||x_0 - x*||`` around ``x*``).

    ``h = f - mu ||x||^2/2`` has a co-coercive gradient, which makes the step map a
    contraction with factor ``max(|1 - mu/L|, |1 - L/L|) = 1 - mu/L``.
    """
    t = np.asarray(steps, dtype=np.float64)
    return (1.0 - mu / smoothness) ** t * initial_distance
