"""``method="softmax"``: softmax-weighted gradient descent, i.e. gradient descent on the
log-sum-exp smoothing ``F_tau(x) = tau log sum_i exp(L_i(x)/tau)`` (the paper's algorithm).

What the string ``"softmax"`` adds to the plain rule method
(``method=minimax_core.weights.softmax(tau)``, :mod:`.rule`), all from knowing that the
weights are the gradient of ``F_tau`` and the problem's constants:

- the default temperature from the problem's scale, with continuation on ``tau``;
- the paper's fixed step ``1/(L + G^2/tau)`` (``F_tau`` is ``(L + G^2/tau)``-smooth);
- backtracking on ``F_tau`` itself, with Nesterov's momentum;
- a certificate ``F(x) - F*`` (the smoothing sandwich and the dual bound), withheld when
  the measured curvature refutes ``mu``.

With ``line_search="fixed"``, one ``temperature`` and a given ``step_size``, both give the
same iterates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from .. import bounds, weights
from .._common import Oracle, all_finite
from ..problems import lipschitz_bound
from ..result import Status
from ..weights import smoothed_max
from .driver import Average, Finish, Setup, Step, constant, gradient_step, positive
from .line_search import ARMIJO_GROWTH, Accepted, armijo

__all__ = ["Softmax", "SoftmaxState", "smoothed_max"]

Float = NDArray[np.float64]

LINE_SEARCHES = ("fixed", "armijo")


def fixed_step_size(
    setup: Setup, v0: Float, g0: Float, temperature: float, center: Float | None = None
) -> float:
    """``1/(L + G^2/tau)`` with ``G`` bounded on a ball around ``x0`` (or ``center``, the
    point where ``v0, g0`` were evaluated) that holds the sublevel set
    ``{F_tau <= F_tau(x0)}``: radius ``2 sqrt(2 (F_tau(x0) - LB)/mu)`` (``LB <= F*``)."""
    mu = constant(setup, "mu", "softmax")
    smooth = constant(setup, "smoothness", "softmax")
    if mu <= 0:
        raise ValueError("method='softmax' derives its step from mu > 0; pass step_size=...")
    f_tau0 = float(np.max(v0)) + bounds.smoothed_gap_bound(temperature, setup.problem.num_tasks)
    lb = bounds.lower_bound_on_optimum(v0, g0, mu)
    radius = 2.0 * math.sqrt(max(2.0 * (f_tau0 - lb) / mu, 0.0))
    center = setup.x0 if center is None else center
    g = lipschitz_bound(setup.problem, center, radius, smoothness=smooth)
    return 1.0 / bounds.smoothed_smoothness(smooth, g, temperature)


def auto_temperatures(values: Float, jacobian: Float, mu: float) -> tuple[float, float]:
    """Default ``(temperature, final_temperature)`` from the scale of the problem at ``x0``.

    ``Delta = F(x0) - LB >= F(x0) - F*`` (``LB``: the best of the per-task and the uniform-
    weight dual lower bounds); start at ``tau_0 = Delta / log M`` (a smoothing bias on the
    scale of the initial gap) and continue down to ``tau_f = 1e-6 Delta / log M``, whose
    bias ``tau_f log M`` is a millionth of the initial gap bound (``log M`` read as at least
    1, so ``M = 1``, where ``F_tau = L_1``, is covered too)."""
    m = values.shape[0]
    lb = max(
        bounds.lower_bound_on_optimum(values, jacobian, mu),
        bounds.dual_lower_bound(values, jacobian, np.full(m, 1.0 / m), mu),
    )
    top = float(np.max(values))
    log_m = max(math.log(m), 1.0)
    gap = max(top - lb, 1e-12 * max(abs(top), 1.0))
    final = max(1e-6 * gap / log_m, weights.MIN_TEMPERATURE)
    return (final if m == 1 else max(gap / log_m, final)), final


class Curvature(NamedTuple):
    """Tests ``mu``-strong convexity between consecutive evaluated iterates ``x, y``:
    ``L_i(y) >= L_i(x) + grad L_i(x)'(y - x) + mu/2 ||y - x||^2`` for every task (beyond
    round-off, ``1e-10`` of the terms). A violation proves ``mu`` too large (a user's
    ``mu=`` or a problem's wrong ``mu`` attribute): ``refuted`` is then the smallest
    curvature measured, ``2 (L_i(y) - L_i(x) - grad L_i(x)'(y - x)) / ||y - x||^2``, and the
    certificate, which needs ``mu``, is withheld. Passing is no proof of ``mu``.
    ``mu = 0`` checks nothing."""

    mu: float
    refuted: float | None = None
    last: tuple[Float, Float, Float] | None = None

    def add(self, x: Float, values: Float, jacobian: Float) -> Curvature:
        if not self.mu:
            return self
        refuted = self.refuted
        if self.last is not None:
            x_old, v_old, g_old = self.last
            dx = x - x_old
            sq = float(dx @ dx)
            if sq > 0.0:
                linear = g_old @ dx
                excess = values - v_old - linear
                noise = 1e-10 * (np.abs(values) + np.abs(v_old) + np.abs(linear))
                if np.any(excess - 0.5 * self.mu * sq < -noise):
                    measured = float(np.min(2.0 * excess / sq))
                    refuted = min(measured, math.inf if refuted is None else refuted)
        return Curvature(self.mu, refuted, (x, values, jacobian))


def dual_certificate(
    setup: Setup, status: Status, curvature: Curvature, values: Float, jac: Float, w: Float
) -> float | None:
    """``F(x) - [w'L(x) - ||w'J(x)||^2/(2 mu)]`` at the last iterate: for ``mu``-strongly
    convex tasks the bracket is a lower bound on ``F*`` for any ``w`` on the simplex (weak
    duality: ``F(y) >= w'L(y) >= w'L(x) + (w'J)(y - x) + mu/2 ||y - x||^2``, minimised over
    ``y``), so this bounds ``F(x) - F*``. ``None`` without ``mu > 0``, on minibatch losses,
    after non-finite values, or where the curvature check refuted ``mu``."""
    mu = setup.mu
    if setup.stochastic or not mu or status == Status.NON_FINITE or curvature.refuted is not None:
        return None
    return float(np.max(values)) - bounds.dual_lower_bound(values, jac, w, mu)


def momentum_step(
    oracle: Oracle,
    x: Float,
    x_prev: Float,
    theta: float,
    f_tau: float,
    temperature: float,
    eta: float,
) -> Accepted | None:
    """One accelerated step (FISTA's momentum, Beck and Teboulle 2009): an Armijo step on
    ``F_tau`` from ``y = x + (theta_prev - 1)/theta (x - x_prev)`` with ``theta_prev`` the
    previous momentum (``theta = (1 + sqrt(1 + 4 theta_prev^2))/2``), or ``None`` when it does
    not decrease ``F_tau`` below ``F_tau(x)`` (O'Donoghue and Candes' function restart: the
    caller then takes a plain step from ``x`` and restarts the momentum)."""
    theta_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta * theta))
    y = x + ((theta - 1.0) / theta_next) * (x - x_prev)
    v, g = oracle(y)
    if not all_finite(v, g):
        return None
    direction = weights.softmax_weights(v, temperature) @ g
    trial = _armijo_on_f_tau(oracle, y, direction, v, temperature, eta * ARMIJO_GROWTH)
    if trial is None or smoothed_max(trial.values, temperature) > f_tau:
        return None
    return trial


def _armijo_on_f_tau(
    oracle: Oracle, x: Float, direction: Float, values: Float, tau: float, eta: float
) -> Accepted | None:
    return armijo(
        oracle,
        x,
        direction,
        smoothed_max(values, tau),
        lambda v: smoothed_max(v, tau),
        lambda v: weights.softmax_weights(v, tau),
        eta,
    )


class SoftmaxState(NamedTuple):
    """The iterate ``x`` with ``L, J`` there, the softmax weights ``w`` at ``tau``, the
    direction ``w'J = grad F_tau`` and its norm, the step size, the continuation stages
    ``(step, tau)``, the average (``stochastic=True``), the momentum (previous iterate,
    ``theta``, the ``tau`` it started at) and the curvature check."""

    x: Float
    values: Float
    jacobian: Float
    w: Float
    direction: Float
    grad_norm: float
    tau: float
    final: float
    eta: float
    line_search: str
    accelerated: bool
    stages: tuple[tuple[int, float], ...]
    average: Average
    x_prev: Float
    theta: float
    tau_at_momentum: float
    curvature: Curvature


@dataclass(frozen=True)
class Softmax:
    """Softmax-weighted GD, i.e. gradient descent on ``F_tau`` (the paper's algorithm).

    ``line_search="fixed"``: the step ``step_size`` or ``1/(L + G^2/tau)`` (the paper's
    guaranteed step: slow, about ``(L + G^2/tau)/mu`` steps per e-fold).
    ``line_search="armijo"``: backtracking on ``F_tau`` from 1.25 times the previous step (first
    try ``step_size``, else ``1/smoothness``, else 1). ``final_temperature``: temperature
    continuation from ``temperature`` down to ``final_temperature``, multiplying ``tau`` by
    ``temperature_decay`` whenever ``||grad F_tau||^2/(2 mu) <= tau log M`` (the remaining
    suboptimality on ``F_tau`` is below its smoothing bias), warm-started at the current
    ``x``; the fixed step is recomputed for each ``tau``. ``tol`` applies to
    ``||grad F_tau||`` at the final temperature. The certificate is the dual bound
    ``F(x) - [w'L(x) - ||w'J(x)||^2/(2 mu)]`` at the softmax weights ``w``, which is at most
    ``tau log M + ||grad F_tau||^2/(2 mu)``. It holds if every task is ``mu``-strongly convex:
    a ``mu=`` above ``problem.mu`` is refused (:func:`minimize_max`); where the problem has no
    ``mu``, a given one is trusted, but checked along the run (:class:`Curvature`):
    a measured curvature below it withholds the certificate (``None``, and
    ``info["mu_refuted_by_curvature"]``).

    ``accelerated=True``: Nesterov's momentum on top of the Armijo steps (FISTA's sequence,
    restarted whenever a step would not decrease ``F_tau`` and at every new temperature;
    about ``sqrt`` of the plain method's steps on ill-conditioned ``F_tau``, two evaluations
    per step).

    Defaults (they target ``min max``, not ``min F_tau``): ``line_search="armijo"`` with
    ``accelerated=True`` (``"fixed"``, not accelerated, when ``step_size`` is given or
    ``stochastic=True``; an explicit ``line_search`` is not accelerated unless asked); with
    ``mu > 0`` known and exact losses, no ``temperature`` means continuation from the
    problem's scale down to a bias of a millionth of the initial gap
    (:func:`auto_temperatures`); otherwise ``temperature`` is 0.1.

    ``stochastic=True``: fixed steps ``1/(mu t + 1/eta)`` (``eta`` where ``mu`` is 0) and the
    ``t``-weighted average of the iterates.
    """

    temperature: float | None = None
    step_size: float | None = None
    line_search: str | None = None
    final_temperature: float | None = None
    temperature_decay: float = 0.5
    accelerated: bool | None = None

    name = "softmax"

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", positive("temperature", self.temperature))
        object.__setattr__(self, "step_size", positive("step_size", self.step_size))
        if self.accelerated is not None and not isinstance(self.accelerated, bool | np.bool_):
            raise TypeError(f"accelerated must be True or False, got {self.accelerated!r}")
        if self.line_search is not None and self.line_search not in LINE_SEARCHES:
            raise ValueError(f"line_search must be 'fixed' or 'armijo', got {self.line_search!r}")
        final = positive("final_temperature", self.final_temperature)
        object.__setattr__(self, "final_temperature", final)
        decay = float(self.temperature_decay)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"temperature_decay must be in (0, 1), got {self.temperature_decay!r}")
        object.__setattr__(self, "temperature_decay", decay)
        if self.temperature is not None and final is not None and final > self.temperature:
            raise ValueError(
                f"final_temperature must be <= temperature = {self.temperature}, got {final}"
            )

    def init(self, setup: Setup, values: Float, jacobian: Float) -> SoftmaxState:
        accelerated = self.accelerated
        if accelerated is None:
            accelerated = (
                self.line_search is None and not setup.stochastic and self.step_size is None
            )
        line_search = self.line_search
        if line_search is None:
            line_search = "fixed" if setup.stochastic or self.step_size is not None else "armijo"
        if accelerated and line_search != "armijo":
            raise ValueError("accelerated=True needs line_search='armijo' (and exact losses)")
        mu = setup.mu
        temperature, final_temperature = self.temperature, self.final_temperature
        auto = temperature is None and bool(mu) and not setup.stochastic
        if temperature is None and not auto:
            temperature = 0.1
        if setup.stochastic and (line_search == "armijo" or final_temperature is not None):
            raise ValueError(
                "line_search='armijo' and final_temperature need exact losses: stochastic=False"
            )
        if final_temperature is not None and not mu:
            raise ValueError(
                "final_temperature (continuation) decides when to lower tau from mu > 0: "
                "give the problem a mu attribute or pass mu=..."
            )
        if auto:
            assert mu
            temperature, auto_final = auto_temperatures(values, jacobian, mu)
            if final_temperature is None:
                final_temperature = auto_final
            temperature = max(temperature, final_temperature)
        assert temperature is not None
        final = temperature if final_temperature is None else final_temperature
        if line_search == "armijo":
            smooth = setup.smoothness or getattr(setup.problem, "smoothness", None)
            eta = self.step_size or (1.0 / float(smooth) if smooth else 1.0)
        else:
            eta = self.step_size or fixed_step_size(setup, values, jacobian, temperature)
        x = setup.x0.copy()
        w = weights.softmax_weights(values, temperature)
        return SoftmaxState(
            x=x,
            values=values,
            jacobian=jacobian,
            w=w,
            direction=w @ jacobian,
            grad_norm=math.inf,
            tau=temperature,
            final=final,
            eta=eta,
            line_search=line_search,
            accelerated=bool(accelerated),
            stages=((0, temperature),),
            average=Average(x.copy(), 0.0),
            x_prev=x,
            theta=1.0,
            tau_at_momentum=temperature,
            curvature=Curvature(mu if mu and not setup.stochastic else 0.0),
        )

    def observe(
        self, setup: Setup, state: SoftmaxState, k: int, values: Float, jacobian: Float
    ) -> SoftmaxState:
        """The softmax weights at ``tau`` and ``grad F_tau``; continuation lowers ``tau``
        (warm start at ``x``) while ``||grad F_tau||^2/(2 mu) <= tau log M``."""
        mu = setup.mu
        tau, eta, stages = state.tau, state.eta, state.stages
        w = weights.softmax_weights(values, tau)
        direction = w @ jacobian
        grad_norm = float(np.linalg.norm(direction))
        log_m = math.log(setup.problem.num_tasks)
        while tau > state.final and mu and grad_norm**2 / (2.0 * mu) <= tau * log_m:
            tau = max(tau * self.temperature_decay, state.final)
            stages = (*stages, (k, tau))
            w = weights.softmax_weights(values, tau)
            direction = w @ jacobian
            grad_norm = float(np.linalg.norm(direction))
            if state.line_search == "fixed" and self.step_size is None:
                eta = fixed_step_size(setup, values, jacobian, tau, center=state.x)
        return state._replace(
            values=values,
            jacobian=jacobian,
            w=w,
            direction=direction,
            grad_norm=grad_norm,
            tau=tau,
            eta=eta,
            stages=stages,
            curvature=state.curvature.add(state.x, values, jacobian),
        )

    def output(self, setup: Setup, state: SoftmaxState) -> Float:
        return state.average.mean if setup.stochastic else state.x

    def converged(self, setup: Setup, state: SoftmaxState) -> bool:
        return not setup.stochastic and state.grad_norm <= setup.tol and state.tau == state.final

    def step(self, setup: Setup, state: SoftmaxState, k: int, oracle: Oracle) -> Step[SoftmaxState]:
        if state.line_search == "armijo":
            return self._backtracking_step(state, oracle)
        x, average = gradient_step(setup, state.x, state.direction, state.eta, k, state.average)
        return Step(state._replace(x=x, average=average))

    def _backtracking_step(self, state: SoftmaxState, oracle: Oracle) -> Step[SoftmaxState]:
        """An Armijo step on ``F_tau`` (from the momentum point when accelerated and the
        momentum has not been restarted by a new temperature or a failed step)."""
        tau, theta, tau_at_momentum = state.tau, state.theta, state.tau_at_momentum
        f_tau = smoothed_max(state.values, tau)
        trial = None
        if state.accelerated and state.stages[-1][1] == tau_at_momentum and theta > 1.0:
            trial = momentum_step(oracle, state.x, state.x_prev, theta, f_tau, tau, state.eta)
        if trial is None:  # plain step; (re)start the momentum
            theta, tau_at_momentum = 1.0, tau
            trial = _armijo_on_f_tau(
                oracle, state.x, state.direction, state.values, tau, state.eta * ARMIJO_GROWTH
            )
        if trial is None:
            return Step(
                state,
                stalled="stalled: the line search found no decrease of F_tau (round-off)",
            )
        moved = state._replace(
            x=trial.x,
            eta=trial.step_size,
            x_prev=state.x,
            theta=0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta * theta)),
            tau_at_momentum=tau_at_momentum,
        )
        return Step(moved, trial.values, trial.jacobian)

    def finish(self, setup: Setup, state: SoftmaxState, status: Status, nit: int) -> Finish:
        dual = dual_certificate(
            setup, status, state.curvature, state.values, state.jacobian, state.w
        )
        cert = None
        if dual is not None and setup.mu:  # the smoothing sandwich, tau log M + ||grad||^2/2mu
            bias = bounds.smoothed_gap_bound(state.tau, setup.problem.num_tasks)
            cert = min(bias + state.grad_norm**2 / (2 * setup.mu), dual)
        info = {
            "temperature": state.tau,
            "step_size": state.eta,
            "gradient_norm": state.grad_norm,
            "line_search": state.line_search,
            "accelerated": state.accelerated,
            "mu_refuted_by_curvature": state.curvature.refuted,
            "stages": list(state.stages),
        }
        return Finish(state.w, cert, info)
