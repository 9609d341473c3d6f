"""``minimize_max``: solve ``min_x max_i L_i(x)`` with the paper's method and its baselines.

========================  ==============================================================
method                    iteration
========================  ==============================================================
``"softmax"``             ``w = softmax(L(x)/temperature)``; ``x <- x - eta sum_i w_i grad L_i``
                          (gradient descent on ``F_tau``; by default Armijo backtracking on
                          ``F_tau`` with Nesterov momentum and temperature continuation down
                          to a bias of 1e-6 of the initial gap; ``line_search="fixed"``: the
                          paper's step ``eta = 1/(L + G^2/tau)``)
``"subgradient"``         hardmax weights (a subgradient of ``F``), projected on a ball that
                          holds ``x*``; ``eta_t = 2/(mu (t+1))`` with the average
                          ``sum t x_t / sum t`` (strongly convex) or ``eta_t = 2R/(G sqrt t)``
                          with the best iterate (``schedule="sqrt"``, convex)
``"average"``             gradient descent on ``mean_i L_i`` (average risk)
``"group_dro"``           exponentiated-gradient weights ``q <- q exp(eta_q L)`` (Group DRO)
                          with steps ``1/smoothness`` on ``x`` and the best iterate
                          (``schedule="strongly_convex"``: projected ``2/(mu (t+1))`` steps
                          and the ``t``-weighted average)
``"auto"``                exact ``min max`` with a certificate (:mod:`minimax_core.exact`):
                          Mehrotra's interior-point method for quadratic tasks or tasks with
                          ``hessians(x)``, Nesterov's accelerated gradient method for
                          max-type functions otherwise; ``tol`` is a relative accuracy
========================  ==============================================================

``stochastic=True`` replaces ``losses``/``jacobian`` by the problem's minibatch estimates
(``problem.sample(x, batch_size, rng)``, seeded by ``seed``) with decreasing steps
``1/(mu t + L_step)`` and the ``t``-weighted average of the iterates.

The result carries the scipy names (``x, fun, nit, nfev, success, status, message``) plus
``history`` (``step``, ``fun``, ``nfev`` on a geometric grid of steps), the task ``weights``
at the end and, where the method gives one, a ``certificate``: an upper bound on
``F(x) - F*``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import bounds, exact, weights
from ._common import (
    BUDGET,
    CALLBACK,
    CONVERGED,
    NON_FINITE,
    STALLED,
    Oracle,
    all_finite,
    check_first_outputs,
    check_real,
    check_seed,
)
from .problems import check_problem
from .result import Iterate, Recorder, Result, Status, geometric_grid

__all__ = ["METHODS", "Iterate", "Result", "geometric_grid", "minimize_max"]

Float = NDArray[np.float64]


# --------------------------------------------------------------------------- plumbing


def _max_loss(problem: Any, x: Float) -> float:
    return float(np.max(problem.losses(x)))


class _Recorder:
    """History on a geometric grid (``F`` of the recorded point), and the callback."""

    def __init__(
        self,
        problem: Any,
        steps: int,
        callback: Callable[[Iterate], bool | None] | None,
        oracle: Oracle,
    ) -> None:
        self.problem = problem
        self.recorder = Recorder.geometric(steps)
        self.callback = callback
        self.oracle = oracle

    def record(self, step: int, point: Float, force: bool = False) -> None:
        if self.recorder.due(step, force):
            self.recorder.record(step, _max_loss(self.problem, point), self.oracle.nfev, force)

    def stop_requested(self, step: int, x: Float, fun: float) -> bool:
        return bool(self.callback is not None and self.callback(Iterate(step, x, fun)))

    def history(self) -> dict[str, Float]:
        return self.recorder.history()


def _result(
    method: str,
    x: Float,
    status: int,
    nit: int,
    rec: _Recorder,
    *,
    weights_out: Float | None = None,
    certificate: float | None = None,
    info: dict[str, Any] | None = None,
    message: str | None = None,
) -> Result:
    rec.record(nit, x, force=True)
    fun = _max_loss(rec.problem, x) if status != NON_FINITE else math.nan
    return Result(
        x=x,
        fun=fun,
        nit=nit,
        nfev=rec.oracle.nfev,
        status=Status(status),
        message=message or "",
        method=method,
        history=rec.history(),
        weights=weights_out,
        certificate=certificate,
        info=info or {},
    )


def _positive(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _constant(problem: Any, name: str, given: float | None, method: str) -> float:
    """A problem constant (``mu``, ``smoothness``) from the options or the problem."""
    if given is not None:
        return given
    value = getattr(problem, name, None)
    if value is None:
        raise TypeError(
            f"method={method!r} needs the constant {name!r}: the problem has no attribute "
            f"{name}; pass {name}=... to minimize_max"
        )
    return float(value)


def _lipschitz(problem: Any, center: Float, radius: float, smoothness: float) -> float:
    fn = getattr(problem, "lipschitz", None)
    if callable(fn):
        return float(fn(center, radius))
    g = np.asarray(problem.jacobian(center))
    return float(np.max(np.linalg.norm(g, axis=1)) + smoothness * radius)


def _project(x: Float, center: Float, radius: float) -> Float:
    d = x - center
    n = float(np.linalg.norm(d))
    return x if n <= radius else center + d * (radius / n)


class _Averager:
    """Running ``sum_t t x_t / sum_t t`` (Lacoste-Julien, Schmidt and Bach 2012)."""

    def __init__(self, x: Float) -> None:
        self.mean = x.copy()
        self.total = 0.0

    def add(self, t: int, x: Float) -> None:
        self.total += t
        self.mean += (t / self.total) * (x - self.mean)


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class _Setup:
    problem: Any
    x0: Float
    steps: int
    tol: float
    stochastic: bool
    batch_size: int
    rng: np.random.Generator
    callback: Callable[[Iterate], bool | None] | None
    mu: float | None
    smoothness: float | None


def _softmax_step_size(
    setup: _Setup, v0: Float, g0: Float, temperature: float, center: Float | None = None
) -> float:
    """``1/(L + G^2/tau)`` with ``G`` bounded on a ball around ``x0`` (or ``center``, the
    point where ``v0, g0`` were evaluated) that holds the sublevel set
    ``{F_tau <= F_tau(x0)}``: radius ``2 sqrt(2 (F_tau(x0) - LB)/mu)`` (``LB <= F*``)."""
    mu = _constant(setup.problem, "mu", setup.mu, "softmax")
    smooth = _constant(setup.problem, "smoothness", setup.smoothness, "softmax")
    if mu <= 0:
        raise ValueError("method='softmax' derives its step from mu > 0; pass step_size=...")
    f_tau0 = float(np.max(v0)) + bounds.smoothed_gap_bound(temperature, setup.problem.num_tasks)
    lb = bounds.lower_bound_on_optimum(v0, g0, mu)
    radius = 2.0 * math.sqrt(max(2.0 * (f_tau0 - lb) / mu, 0.0))
    g = _lipschitz(setup.problem, setup.x0 if center is None else center, radius, smooth)
    return 1.0 / bounds.smoothed_smoothness(smooth, g, temperature)


def smoothed_max(values: Float, temperature: float) -> float:
    """``F_tau = tau log sum_i exp(L_i/tau)``, computed as ``max L + tau log sum exp((L -
    max L)/tau)`` with the differences floored at ``-1000 tau`` (``exp`` is exactly 0 there),
    so no finite losses and no temperature overflow."""
    top = float(np.max(values))
    scaled = np.maximum(values - top, -1000.0 * temperature) / temperature
    return top + temperature * math.log(float(np.sum(np.exp(scaled))))


_ARMIJO_C = 0.5  # sufficient decrease F_tau(x - eta d) <= F_tau(x) - c eta ||d||^2
_ARMIJO_GROWTH = 1.25  # each step first tries the previous step times this (measured:
# 1.1-1.25 need about 35% fewer evaluations than 2 to a 1e-3 gap; 1.25 recovers faster from
# a small first step)
_ARMIJO_HALVINGS = 60


def _armijo(
    oracle: Oracle,
    x: Float,
    direction: Float,
    f_tau: float,
    temperature: float,
    eta: float,
) -> tuple[float, Float, Float, Float] | None:
    """Backtracking on ``F_tau`` from ``eta``: ``(eta, x_new, L(x_new), J(x_new))`` or
    ``None`` when 60 halvings find no acceptable step (round-off level reached).

    Accepts the sufficient decrease ``phi(eta) <= phi(0) - eta ||d||^2 / 2`` for
    ``phi(eta) = F_tau(x - eta d)`` (met by every ``eta <= 1/L_tau`` when ``F_tau`` is
    ``L_tau``-smooth, so the accepted step is at least ``1/(2 L_tau)``) or, where that
    decrease is below ``1e-12 |F_tau|`` (not resolvable in floating point), its derivative form
    ``phi'(eta) <= 0`` (Hager and Zhang's approximate Wolfe condition with ``delta = 1/2``:
    the step does not pass the minimum along the line), which stays decidable when the
    decrease is below the accuracy of ``F_tau``."""
    sq = float(direction @ direction)
    noise = 1e-12 * abs(f_tau)
    for _ in range(_ARMIJO_HALVINGS):
        x_new = x - eta * direction
        v, g = oracle(x_new)
        if all_finite(v, g):
            value = smoothed_max(v, temperature)
            if value <= f_tau - _ARMIJO_C * eta * sq:
                return eta, x_new, v, g
            if _ARMIJO_C * eta * sq <= noise and value <= f_tau + noise:
                slope = -float(weights.softmax_weights(v, temperature) @ g @ direction)
                if slope <= 0.0:
                    return eta, x_new, v, g
        eta *= 0.5
    return None


class _CurvatureCheck:
    """Tests ``mu``-strong convexity between consecutive evaluated iterates ``x, y``:
    ``L_i(y) >= L_i(x) + grad L_i(x)'(y - x) + mu/2 ||y - x||^2`` for every task (beyond
    round-off, ``1e-10`` of the terms). A violation proves ``mu`` too large (a user's
    ``mu=`` or a problem's wrong ``mu`` attribute): ``refuted`` is then the smallest
    curvature measured, ``2 (L_i(y) - L_i(x) - grad L_i(x)'(y - x)) / ||y - x||^2``, and the
    softmax certificate, which needs ``mu``, is withheld. Passing is no proof of ``mu``."""

    def __init__(self, mu: float) -> None:
        self.mu = mu
        self.refuted: float | None = None
        self._last: tuple[Float, Float, Float] | None = None

    def add(self, x: Float, values: Float, jacobian: Float) -> None:
        if not self.mu:
            return
        if self._last is not None:
            x_old, v_old, g_old = self._last
            dx = x - x_old
            sq = float(dx @ dx)
            if sq > 0.0:
                linear = g_old @ dx
                excess = values - v_old - linear
                noise = 1e-10 * (np.abs(values) + np.abs(v_old) + np.abs(linear))
                if np.any(excess - 0.5 * self.mu * sq < -noise):
                    measured = float(np.min(2.0 * excess / sq))
                    known = math.inf if self.refuted is None else self.refuted
                    self.refuted = min(measured, known)
        self._last = (x, values, jacobian)


def _momentum_step(
    oracle: Oracle,
    x: Float,
    x_prev: Float,
    theta: float,
    f_tau: float,
    temperature: float,
    eta: float,
) -> tuple[float, Float, Float, Float] | None:
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
    trial = _armijo(
        oracle, y, direction, smoothed_max(v, temperature), temperature, eta * _ARMIJO_GROWTH
    )
    if trial is None or smoothed_max(trial[2], temperature) > f_tau:
        return None
    return trial


def _auto_temperatures(values: Float, jacobian: Float, mu: float) -> tuple[float, float]:
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


def _softmax(
    setup: _Setup,
    *,
    temperature: float | None = None,
    step_size: float | None = None,
    line_search: str | None = None,
    final_temperature: float | None = None,
    temperature_decay: float = 0.5,
    accelerated: bool | None = None,
) -> Result:
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
    ``mu``, a given one is trusted, but checked along the run (:class:`_CurvatureCheck`):
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
    (:func:`_auto_temperatures`); otherwise ``temperature`` is 0.1.
    """
    if temperature is not None:
        temperature = _positive("temperature", temperature)
    if accelerated is None:
        accelerated = line_search is None and not setup.stochastic and step_size is None
    if not isinstance(accelerated, bool | np.bool_):
        raise TypeError(f"accelerated must be True or False, got {accelerated!r}")
    if line_search is None:
        line_search = "fixed" if setup.stochastic or step_size is not None else "armijo"
    if line_search not in ("fixed", "armijo"):
        raise ValueError(f"line_search must be 'fixed' or 'armijo', got {line_search!r}")
    if accelerated and line_search != "armijo":
        raise ValueError("accelerated=True needs line_search='armijo' (and exact losses)")
    if final_temperature is not None:
        final_temperature = _positive("final_temperature", final_temperature)
    decay = float(temperature_decay)
    if not 0.0 < decay < 1.0:
        raise ValueError(f"temperature_decay must be in (0, 1), got {temperature_decay!r}")
    mu = setup.mu
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
    if (
        temperature is not None
        and final_temperature is not None
        and (final_temperature > temperature)
    ):
        raise ValueError(
            f"final_temperature must be <= temperature = {temperature}, got {final_temperature}"
        )
    problem, oracle = setup.problem, Oracle(setup.problem)
    rec = _Recorder(problem, setup.steps, setup.callback, oracle)
    x = setup.x0.copy()
    v, g = oracle(x)
    check_first_outputs(problem, v, g)
    if auto:
        assert mu
        temperature, auto_final = _auto_temperatures(v, g, mu)
        if final_temperature is None:
            final_temperature = auto_final
        temperature = max(temperature, final_temperature)
    assert temperature is not None
    final = temperature if final_temperature is None else final_temperature
    armijo = line_search == "armijo"
    tau = temperature
    if armijo:
        smooth = setup.smoothness or getattr(problem, "smoothness", None)
        eta = step_size or (1.0 / float(smooth) if smooth else 1.0)
    else:
        eta = step_size or _softmax_step_size(setup, v, g, tau)
    log_m = math.log(problem.num_tasks)
    stages = [(0, tau)]
    avg = _Averager(x)
    status, t, grad_norm, w = BUDGET, 0, math.inf, weights.softmax_weights(v, tau)
    message = None
    x_prev, theta, tau_at_momentum = x, 1.0, tau  # Nesterov momentum (accelerated)
    curvature = _CurvatureCheck(mu if mu and not setup.stochastic else 0.0)
    for t in range(setup.steps + 1):
        if setup.stochastic and t > 0:
            v, g = oracle.sample(x, setup.batch_size, setup.rng)
        elif t > 0 and not armijo:
            v, g = oracle(x)
        if not all_finite(v, g):
            status = NON_FINITE
            break
        curvature.add(x, v, g)
        w = weights.softmax_weights(v, tau)
        direction = w @ g
        grad_norm = float(np.linalg.norm(direction))
        while tau > final and mu and grad_norm**2 / (2.0 * mu) <= tau * log_m:
            tau = max(tau * decay, final)  # continuation: next temperature, warm start
            stages.append((t, tau))
            w = weights.softmax_weights(v, tau)
            direction = w @ g
            grad_norm = float(np.linalg.norm(direction))
            if not armijo and step_size is None:
                eta = _softmax_step_size(setup, v, g, tau, center=x)
        rec.record(t, avg.mean if setup.stochastic else x)
        if rec.stop_requested(t, x, float(np.max(v))):
            status = CALLBACK
            break
        if not setup.stochastic and grad_norm <= setup.tol and tau == final:
            status = CONVERGED
            break
        if t == setup.steps:
            break
        if armijo:
            f_tau = smoothed_max(v, tau)
            trial = None
            if accelerated and stages[-1][1] == tau_at_momentum and theta > 1.0:
                trial = _momentum_step(oracle, x, x_prev, theta, f_tau, tau, eta)
            if trial is None:  # plain step; (re)start the momentum
                theta, tau_at_momentum = 1.0, tau
                trial = _armijo(oracle, x, direction, f_tau, tau, eta * _ARMIJO_GROWTH)
            if trial is None:
                status = STALLED
                message = "stalled: the line search found no decrease of F_tau (round-off)"
                break
            x_prev = x
            eta, x, v, g = trial
            theta = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta * theta))
            continue
        step = eta if not setup.stochastic or not mu else 1.0 / (mu * (t + 1) + 1.0 / eta)
        x = x - step * direction
        if setup.stochastic:
            avg.add(t + 1, x)
    x_out = avg.mean if setup.stochastic else x
    cert = None
    if not setup.stochastic and mu and status != NON_FINITE and curvature.refuted is None:
        sandwich = bounds.smoothed_gap_bound(tau, problem.num_tasks) + grad_norm**2 / (2 * mu)
        dual = float(np.max(v)) - bounds.dual_lower_bound(v, g, w, mu)
        cert = min(sandwich, dual)
    info = {
        "temperature": tau,
        "step_size": eta,
        "gradient_norm": grad_norm,
        "line_search": line_search,
        "accelerated": bool(accelerated),
        "mu_refuted_by_curvature": curvature.refuted,
        "stages": stages,
    }
    return _result(
        "softmax",
        x_out,
        status,
        t,
        rec,
        weights_out=w,
        certificate=cert,
        info=info,
        message=message,
    )


def _subgradient(
    setup: _Setup,
    *,
    schedule: str | None = None,
    radius: float | None = None,
    step_size: float | None = None,
) -> Result:
    problem, oracle = setup.problem, Oracle(setup.problem)
    rec = _Recorder(problem, setup.steps, setup.callback, oracle)
    x0 = setup.x0
    v, g = oracle(x0)
    check_first_outputs(problem, v, g)
    mu = setup.mu if setup.mu is not None else getattr(problem, "mu", None)
    smooth = _constant(problem, "smoothness", setup.smoothness, "subgradient")
    if schedule is None:
        schedule = "strongly_convex" if mu else "sqrt"
    if schedule not in ("strongly_convex", "sqrt"):
        raise ValueError(f"schedule must be 'strongly_convex' or 'sqrt', got {schedule!r}")
    if schedule == "strongly_convex" and not mu:
        raise ValueError("schedule='strongly_convex' needs mu > 0 (problem.mu or mu=...)")
    if radius is None:
        if not mu:
            raise ValueError("method='subgradient' on a problem with mu = 0 needs radius=...")
        radius = bounds.initial_radius(v, g, mu)
    radius = max(radius, 1e-300)
    lip = _lipschitz(problem, x0, radius, smooth)
    if step_size is not None and schedule == "strongly_convex":
        raise ValueError("step_size applies to schedule='sqrt' only (the scale of 2R/(G sqrt t))")
    scale = step_size if step_size is not None else 2.0 * radius / max(lip, 1e-300)
    hm = weights.hardmax()
    hm_state = hm.init(problem.num_tasks)
    x = x0.copy()
    avg = _Averager(x)
    best_x, best_f = x.copy(), math.inf
    status, t = BUDGET, 0
    for t in range(1, setup.steps + 2):
        if t > 1:
            v, g = oracle.sample(x, setup.batch_size, setup.rng) if setup.stochastic else oracle(x)
        if not all_finite(v, g):
            status = NON_FINITE
            break
        fx = float(np.max(v))
        if schedule == "strongly_convex":
            avg.add(t, x)  # xbar_T averages x_1..x_T with weights t (x_1 = x0)
        elif fx < best_f:
            best_f, best_x = fx, x.copy()
        rec.record(t - 1, avg.mean if schedule == "strongly_convex" else best_x)
        if rec.stop_requested(t - 1, x, fx):
            status = CALLBACK
            break
        if t - 1 == setup.steps:
            break
        w, hm_state = hm.update(v, hm_state)
        direction = w @ g
        eta = 2.0 / (mu * (t + 1)) if mu and schedule == "strongly_convex" else scale / math.sqrt(t)
        x = _project(x - eta * direction, x0, radius)
    nit = t - 1
    x_out = avg.mean if schedule == "strongly_convex" else best_x
    if schedule == "strongly_convex" and mu:
        bound = float(bounds.subgradient_strongly_convex_bound(lip, mu, max(nit, 1)))
    else:
        bound = float(bounds.subgradient_convex_bound(lip, radius, max(nit, 1)))
    info = {"schedule": schedule, "radius": radius, "lipschitz": lip, "theorem_bound": bound}
    return _result("subgradient", x_out, status, nit, rec, info=info)


def _average(setup: _Setup, *, step_size: float | None = None) -> Result:
    problem, oracle = setup.problem, Oracle(setup.problem)
    rec = _Recorder(problem, setup.steps, setup.callback, oracle)
    x = setup.x0.copy()
    v, g = oracle(x)
    check_first_outputs(problem, v, g)
    mu = setup.mu if setup.mu is not None else float(getattr(problem, "mu", 0.0) or 0.0)
    if step_size is None:
        smooth = _constant(problem, "smoothness", setup.smoothness, "average")
        if mu + smooth <= 0.0:
            raise ValueError(
                "method='average' steps 2/(mu + smoothness): both are 0; pass step_size="
            )
        step_size = 2.0 / (mu + smooth)
    avg = _Averager(x)
    status, t, grad_norm = BUDGET, 0, math.inf
    for t in range(setup.steps + 1):
        if t > 0:
            v, g = oracle.sample(x, setup.batch_size, setup.rng) if setup.stochastic else oracle(x)
        if not all_finite(v, g):
            status = NON_FINITE
            break
        direction = g.mean(axis=0)
        grad_norm = float(np.linalg.norm(direction))
        rec.record(t, avg.mean if setup.stochastic else x)
        if rec.stop_requested(t, x, float(np.max(v))):
            status = CALLBACK
            break
        if not setup.stochastic and grad_norm <= setup.tol:
            status = CONVERGED
            break
        if t == setup.steps:
            break
        eta = (
            step_size if not setup.stochastic or not mu else 1.0 / (mu * (t + 1) + 1.0 / step_size)
        )
        x = x - eta * direction
        if setup.stochastic:
            avg.add(t + 1, x)
    x_out = avg.mean if setup.stochastic else x
    m = problem.num_tasks
    info = {"step_size": step_size, "gradient_norm": grad_norm}
    return _result("average", x_out, status, t, rec, weights_out=np.full(m, 1.0 / m), info=info)


def _group_dro(
    setup: _Setup,
    *,
    step_size: float | None = None,
    weight_step_size: float | None = None,
    schedule: str | None = None,
) -> Result:
    """Group DRO: exponentiated-gradient weights ``q <- q exp(eta_q L)`` (Hedge's rate
    ``eta_q = sqrt(8 log M / T) / B``, ``B`` the range of the losses at ``x0``, unless
    ``weight_step_size``) and a gradient step on ``q'L`` for ``x``.

    ``schedule="smooth"`` (the default with exact losses): ``x <- x - eta q'J(x)`` with the
    step ``eta = 1/smoothness`` (``q'L`` is ``smoothness``-smooth, so each step decreases it
    for the current ``q``) or ``step_size``; returns the best iterate (lowest ``F``, seen at
    every step for free), so it never ends above its start (the last iterate with
    ``stochastic=True``). ``schedule="strongly_convex"``
    (the default with ``stochastic=True``, and the rule before issue 14): steps
    ``2/(mu (t+1))`` (or ``step_size``) projected on a ball that holds ``x*``, returning the
    ``t``-weighted average (it ended above its start at ``L/mu >= 30``).
    """
    if schedule is None:
        schedule = "strongly_convex" if setup.stochastic else "smooth"
    if schedule not in ("smooth", "strongly_convex"):
        raise ValueError(f"schedule must be 'smooth' or 'strongly_convex', got {schedule!r}")
    problem, oracle = setup.problem, Oracle(setup.problem)
    rec = _Recorder(problem, setup.steps, setup.callback, oracle)
    x0 = setup.x0
    v, g = oracle(x0)
    check_first_outputs(problem, v, g)
    smooth_schedule = schedule == "smooth"
    keep_best = smooth_schedule and not setup.stochastic  # F of a noisy sample is no guide
    if smooth_schedule:
        mu = setup.mu or 0.0
        if step_size is None:
            smooth = _constant(problem, "smoothness", setup.smoothness, "group_dro")
            if smooth <= 0.0:
                raise ValueError(
                    "schedule='smooth' steps 1/smoothness: the smoothness is 0; pass step_size="
                )
            step_size = 1.0 / smooth
        radius = math.inf
    else:
        mu = _constant(problem, "mu", setup.mu, "group_dro")
        if mu <= 0 and step_size is None:
            raise ValueError(
                "method='group_dro' needs mu > 0 for its default steps; pass step_size=..."
            )
        radius = bounds.initial_radius(v, g, mu) if mu > 0 else math.inf
    if weight_step_size is None:
        # Hedge's rate sqrt(8 log M / T) / B, B the range of the task losses (at x0)
        spread = float(np.max(v) - np.min(v))
        if spread <= 0.0 and mu > 0:
            spread = float(np.max(v)) - bounds.lower_bound_on_optimum(v, g, mu)
        spread = max(spread, 1e-12 * max(abs(float(np.max(v))), 1.0))
        m = max(problem.num_tasks, 2)
        weight_step_size = math.sqrt(8.0 * math.log(m) / max(setup.steps, 1)) / spread
    rule = weights.exponentiated_gradient(weight_step_size)
    state = rule.init(problem.num_tasks)
    x = x0.copy()
    avg = _Averager(x)
    best_x, best_f = x.copy(), math.inf
    status, t = BUDGET, 0
    q = np.full(problem.num_tasks, 1.0 / problem.num_tasks)
    for t in range(1, setup.steps + 2):
        if t > 1:
            v, g = oracle.sample(x, setup.batch_size, setup.rng) if setup.stochastic else oracle(x)
        if not all_finite(v, g):
            status = NON_FINITE
            break
        avg.add(t, x)
        fx = float(np.max(v))
        if fx < best_f:
            best_f, best_x = fx, x.copy()
        rec.record(t - 1, best_x if keep_best else x if smooth_schedule else avg.mean)
        if rec.stop_requested(t - 1, x, fx):
            status = CALLBACK
            break
        if t - 1 == setup.steps:
            break
        q, state = rule.update(v, state)
        eta = step_size if step_size is not None else 2.0 / (mu * (t + 1))
        x = _project(x - eta * (q @ g), x0, radius)
    info = {"weight_step_size": weight_step_size, "radius": radius, "schedule": schedule}
    if smooth_schedule:
        info["step_size"] = step_size
    x_out = best_x if keep_best else x if smooth_schedule else avg.mean
    return _result("group_dro", x_out, status, t - 1, rec, weights_out=q, info=info)


def _auto(setup: _Setup, *, algorithm: str | None = None, atol: float = 0.0) -> Result:
    """Exact ``min max`` with a certificate (:mod:`minimax_core.exact`).

    Quadratic tasks, or tasks with ``hessians(x)``: Mehrotra's primal-dual interior-point
    method on ``min t s.t. L_i(x) <= t``; tasks with only ``losses``/``jacobian``:
    Nesterov's accelerated gradient method for max-type functions with restart
    (``algorithm="interior_point"`` or ``"gradient_mapping"`` forces one). ``tol`` is a
    relative accuracy: ``success`` iff the certificate (an upper bound on ``F(x) - F*``
    from the dual weights) is at most ``tol * |F(x)| + atol``. ``weights`` are the dual
    multipliers on the simplex (zero on inactive tasks). ``status`` 4: the certificate
    stopped improving (floating-point limit); 5: the optimality conditions hold but no
    certificate exists (``mu`` unknown for non-quadratic tasks).
    """
    if setup.stochastic:
        raise ValueError(
            "method='auto' solves the deterministic problem; stochastic=True needs one of "
            "'softmax', 'subgradient', 'average', 'group_dro'"
        )
    if algorithm is not None and algorithm not in exact.ALGORITHMS:
        raise ValueError(f"algorithm must be one of {exact.ALGORITHMS}, got {algorithm!r}")
    atol = float(atol)
    if not (math.isfinite(atol) and atol >= 0):
        raise ValueError(f"atol must be a finite number >= 0, got {atol!r}")
    problem = setup.problem
    mu = setup.mu if setup.mu is not None else float(getattr(problem, "mu", 0.0) or 0.0)
    user_callback = setup.callback

    def callback(step: int, x: Float, fun: float) -> bool:
        return bool(user_callback is not None and user_callback(Iterate(step, x, fun)))

    sol = exact.solve(
        problem,
        setup.x0,
        algorithm=algorithm,
        mu=mu,
        smoothness=setup.smoothness,
        tol=setup.tol,
        atol=atol,
        max_iter=setup.steps,
        callback=callback if user_callback is not None else None,
    )
    info = dict(sol.info)
    info.update(
        algorithm=sol.algorithm,
        lower_bound=sol.lower_bound,
        active=np.flatnonzero(sol.weights > 0),
        relative_certificate=sol.certificate / max(abs(sol.fun), 1e-300),
    )
    return Result(
        x=sol.x,
        fun=sol.fun,
        nit=sol.nit,
        nfev=sol.nfev,
        status=Status(sol.status),
        message=sol.message,
        method="auto",
        history=sol.history,
        weights=sol.weights,
        certificate=sol.certificate if math.isfinite(sol.certificate) else None,
        info=info,
    )


METHODS: dict[str, Callable[..., Result]] = {
    "auto": _auto,
    "softmax": _softmax,
    "subgradient": _subgradient,
    "average": _average,
    "group_dro": _group_dro,
}

_METHOD_OPTIONS: dict[str, frozenset[str]] = {
    "auto": frozenset({"algorithm", "atol"}),
    "softmax": frozenset(
        {
            "temperature",
            "step_size",
            "line_search",
            "final_temperature",
            "temperature_decay",
            "accelerated",
        }
    ),
    "subgradient": frozenset({"schedule", "radius", "step_size"}),
    "average": frozenset({"step_size"}),
    "group_dro": frozenset({"step_size", "weight_step_size", "schedule"}),
}

_DEFAULT_STEPS = 2000  # every method's step (iteration) budget, except:
# the subgradient method converges at O(1/T) (Lacoste-Julien et al. 2012): measured on random
# quadratics with L/mu = 100, M = 50 (benchmarks/experiments/defaults.py), 2000 steps leave a
# relative gap of about 4e-2 and 20000 steps about 5e-3 (the 1e-2 target with a margin)
_SUBGRADIENT_STEPS = 20_000


def minimize_max(
    problem: Any,
    method: str = "auto",
    *,
    x0: ArrayLike | None = None,
    steps: int | None = None,
    tol: float = 1e-8,
    stochastic: bool = False,
    batch_size: int = 32,
    seed: int | None = 0,
    callback: Callable[[Iterate], bool | None] | None = None,
    mu: float | None = None,
    smoothness: float | None = None,
    **options: Any,
) -> Result:
    """Minimise ``F(x) = max_i L_i(x)`` over ``x in R^d``.

    Parameters
    ----------
    problem: any object with ``num_tasks``, ``dim``, ``losses(x)`` and ``jacobian(x)``
        (plus ``mu``/``smoothness``/``lipschitz``/``sample`` where a method needs them).
    method: one of ``"auto"``, ``"softmax"``, ``"subgradient"``, ``"average"``,
        ``"group_dro"``.
    x0: starting point (default zeros). steps: iteration budget (default 2000; 20000
        for subgradient, whose rate is O(1/T)). tol: stopping tolerance on
        the norm of the step direction (``grad F_tau`` for softmax, ``grad mean L`` for
        average); for auto the relative accuracy: ``success`` iff ``certificate <= tol *
        |F(x)| + atol``. stochastic / batch_size / seed: minibatch oracle. callback:
        ``callback(Iterate) -> bool``; ``True`` stops. mu, smoothness: override the
        problem's constants.
    options: method-specific: ``algorithm``, ``atol`` (auto); ``temperature``,
        ``step_size``, ``line_search``, ``final_temperature``, ``temperature_decay``,
        ``accelerated`` (softmax); ``schedule``, ``radius``, ``step_size`` (subgradient); ``step_size``
        (average); ``step_size``, ``weight_step_size``, ``schedule`` (group_dro).

    With default options every method that targets ``min max`` (softmax, subgradient,
    group_dro) reaches ``F(x) - F* <= 1e-2 (F(x0) - F*)`` after its default budget on random
    quadratics with ``L/mu <= 100``, ``M <= 50``, ``d <= 100`` and never ends above its start
    (``tests/test_defaults.py``; ``python -m benchmarks run defaults`` prints the gaps).
    ``average`` targets ``argmin mean_i L_i`` instead: its default step ``2/(mu + L)``
    reaches that point (its own gap, not the ``min max`` gap, is the one tested).
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    check_problem(problem)
    allowed = _METHOD_OPTIONS[method]
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)} for method={method!r}; allowed: {sorted(allowed)}"
        )
    for name in ("temperature", "step_size", "weight_step_size", "radius"):
        if name in options:
            options[name] = _positive(name, options[name])
    x_start = _start_point(x0, int(problem.dim))
    seed = check_seed(seed)
    if steps is None:
        steps = _SUBGRADIENT_STEPS if method == "subgradient" else _DEFAULT_STEPS
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    tol_value = _positive("tol", tol)
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if stochastic and not callable(getattr(problem, "sample", None)):
        raise TypeError("stochastic=True needs a problem with sample(x, batch_size, rng)")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable: callback(Iterate) -> bool | None")
    setup = _Setup(
        problem=problem,
        x0=x_start,
        steps=int(steps),
        tol=float(tol_value or tol),
        stochastic=bool(stochastic),
        batch_size=int(batch_size),
        rng=np.random.default_rng(seed),
        callback=callback,
        mu=_resolved_constant(problem, "mu", mu),
        smoothness=_resolved_constant(problem, "smoothness", smoothness),
    )
    return METHODS[method](setup, **options)


def _start_point(x0: ArrayLike | None, dim: int) -> Float:
    """``x0`` as a float64 copy of shape ``(dim,)``: real and finite (a complex ``x0`` would
    lose its imaginary part, a string one would be parsed)."""
    if x0 is None:
        return np.zeros(dim)
    raw = np.asarray(x0)
    if raw.dtype.kind not in "iuf":
        raise TypeError(
            f"x0 must be an array of real numbers of shape (dim,) = ({dim},), got dtype {raw.dtype}"
        )
    x_start = np.array(raw, dtype=np.float64)
    if x_start.shape != (dim,):
        raise ValueError(f"x0 must have shape (dim,) = ({dim},), got {x_start.shape}")
    if not np.all(np.isfinite(x_start)):
        raise ValueError("x0 must be finite (no NaN or Inf)")
    return x_start


def _resolved_constant(problem: Any, name: str, given: float | None) -> float | None:
    """``mu`` or ``smoothness``: the given value, else the problem's attribute (checked: a
    finite number ``>= 0``; a given smoothness ``> 0``), else ``None``.

    A given ``mu`` above ``problem.mu`` (or ``smoothness`` below ``problem.smoothness``)
    is refused: the steps, radii and certificates derived from it would not hold (the
    problem's constants are exact, or valid bounds, by the problem's contract)."""
    own = getattr(problem, name, None)
    if own is not None:
        own = check_real(f"problem.{name}", own)
    if given is None:
        return own
    value = check_real(name, given, strict=name == "smoothness")
    if own is not None and name == "mu" and value > own * (1 + 1e-12):
        raise ValueError(
            f"mu={value!r} exceeds problem.mu = {own!r}: the tasks are not {value}-strongly "
            "convex, so steps, radii and certificates derived from it would be invalid; "
            f"pass mu <= {own!r} (or none)"
        )
    if own is not None and name == "smoothness" and value < own * (1 - 1e-12):
        raise ValueError(
            f"smoothness={value!r} is below problem.smoothness = {own!r}: the tasks are not "
            f"{value}-smooth; pass smoothness >= {own!r} (or none)"
        )
    return value
