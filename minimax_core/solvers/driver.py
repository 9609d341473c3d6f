"""The one loop every first-order method of :func:`~minimax_core.solvers.minimize_max` runs.

A method supplies only what is its own (jaxopt/optimistix's init/step/terminate split):

- ``init(setup, L(x0), J(x0))``: its state at ``x0`` (step sizes and radii derived from the
  first evaluation);
- ``observe(setup, state, k, L, J)``: the state after seeing the losses and Jacobian at the
  current iterate ``state.x`` (weights, direction, averages, best point); every state has
  the iterate as ``x``;
- ``output(setup, state)``: the point it would return now (the iterate, an average, the best
  point), whose ``F`` the history records;
- ``converged(setup, state)``: its stopping test;
- ``step(setup, state, k, oracle)``: the next iterate (a :class:`Step`; a line search that
  evaluates the new point hands its ``L, J`` back, so they are not computed twice);
- ``finish(setup, state, status, nit)``: the final weights, certificate and diagnostics.

The loop (:func:`run`) owns the rest: the counted oracle, minibatch sampling for
``stochastic=True``, the finiteness check, the history on a geometric grid of steps, the
callback, the step budget and the :class:`~minimax_core.result.Status`. Step ``k`` (``0 <= k
<= steps``) observes iterate ``x_k``; the run stops at the first of: non-finite values
(``NON_FINITE``), the callback (``CALLBACK``), the method's test (``CONVERGED``), ``k =
steps`` (``BUDGET``), or a step the method cannot take (``STALLED``). ``nit`` is that ``k``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from .._common import Oracle, all_finite, check_first_outputs
from ..result import Iterate, Recorder, Result, Status

__all__ = [
    "Average",
    "Best",
    "Finish",
    "Method",
    "Setup",
    "State",
    "Step",
    "constant",
    "gradient_step",
    "max_loss",
    "positive",
    "project",
    "run",
]

Float = NDArray[np.float64]


class State(Protocol):
    """A method's state: whatever it carries, with the current iterate as ``x``."""

    @property
    def x(self) -> Float: ...


S = TypeVar("S", bound=State)


@dataclass(frozen=True)
class Setup:
    """What :func:`~minimax_core.solvers.minimize_max` validated, shared by every method:
    ``mu``/``smoothness`` are the given values or the problem's (``None`` if neither)."""

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


class Step(NamedTuple, Generic[S]):
    """A method's move: the new state and, where the step evaluated the new point (a line
    search), its ``values``/``jacobian``; ``stalled`` says why no step could be taken."""

    state: S
    values: Float | None = None
    jacobian: Float | None = None
    stalled: str | None = None


class Finish(NamedTuple):
    """What a method adds to the :class:`~minimax_core.result.Result` at the end."""

    weights: Float | None
    certificate: float | None
    info: dict[str, Any]


class Method(Protocol[S]):
    """A first-order method for :func:`run` (its options are the object's fields)."""

    @property
    def name(self) -> str: ...

    def init(self, setup: Setup, values: Float, jacobian: Float) -> S: ...

    def observe(self, setup: Setup, state: S, k: int, values: Float, jacobian: Float) -> S: ...

    def output(self, setup: Setup, state: S) -> Float: ...

    def converged(self, setup: Setup, state: S) -> bool: ...

    def step(self, setup: Setup, state: S, k: int, oracle: Oracle) -> Step[S]: ...

    def finish(self, setup: Setup, state: S, status: Status, nit: int) -> Finish: ...


def max_loss(problem: Any, x: Float) -> float:
    """``F(x) = max_i L_i(x)`` (not counted as an evaluation: it is the record, not the
    method)."""
    return float(np.max(problem.losses(x)))


def run(method: Method[S], setup: Setup) -> Result:
    """Run ``method`` from ``setup.x0`` for at most ``setup.steps`` steps (see the module)."""
    problem = setup.problem
    oracle = Oracle(problem)
    recorder = Recorder.geometric(setup.steps)
    values, jac = oracle(setup.x0)
    check_first_outputs(problem, values, jac)
    state = method.init(setup, values, jac)
    status, message, k, fresh = Status.BUDGET, "", 0, True
    for k in range(setup.steps + 1):
        if not fresh:
            x = state.x
            if setup.stochastic:
                values, jac = oracle.sample(x, setup.batch_size, setup.rng)
            else:
                values, jac = oracle(x)
        if not all_finite(values, jac):
            status = Status.NON_FINITE
            break
        state = method.observe(setup, state, k, values, jac)
        if recorder.due(k):
            recorder.record(k, max_loss(problem, method.output(setup, state)), oracle.nfev)
        if setup.callback is not None and setup.callback(
            Iterate(k, state.x, float(np.max(values)))
        ):
            status = Status.CALLBACK
            break
        if method.converged(setup, state):
            status = Status.CONVERGED
            break
        if k == setup.steps:
            break
        move = method.step(setup, state, k, oracle)
        if move.stalled is not None:
            status, message = Status.STALLED, move.stalled
            break
        state, fresh = move.state, move.values is not None and move.jacobian is not None
        if move.values is not None and move.jacobian is not None:
            values, jac = move.values, move.jacobian
    x_out = method.output(setup, state)
    if recorder.due(k, force=True):
        recorder.record(k, max_loss(problem, x_out), oracle.nfev, force=True)
    end = method.finish(setup, state, status, k)
    return Result(
        x=x_out,
        fun=max_loss(problem, x_out) if status != Status.NON_FINITE else math.nan,
        nit=k,
        nfev=oracle.nfev,
        status=status,
        message=message,
        method=method.name,
        history=recorder.history(),
        weights=end.weights,
        certificate=end.certificate,
        info=end.info,
    )


# --------------------------------------------------------------------------- shared pieces


def positive(name: str, value: float | None) -> float | None:
    """``None``, or ``value`` as a finite float ``> 0`` (an error naming ``name`` otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def constant(setup: Setup, name: str, method: str) -> float:
    """A problem constant (``"mu"``, ``"smoothness"``) from the options or the problem, or an
    error naming the method that needs it."""
    given = setup.mu if name == "mu" else setup.smoothness
    if given is not None:
        return given
    value = getattr(setup.problem, name, None)
    if value is None:
        raise TypeError(
            f"method={method!r} needs the constant {name!r}: the problem has no attribute "
            f"{name}; pass {name}=... to minimize_max"
        )
    return float(value)


def project(x: Float, center: Float, radius: float) -> Float:
    """The Euclidean projection of ``x`` on the ball ``||x - center|| <= radius``."""
    d = x - center
    n = float(np.linalg.norm(d))
    return x if n <= radius else center + d * (radius / n)


def gradient_step(
    setup: Setup, x: Float, direction: Float, eta: float, k: int, average: Average
) -> tuple[Float, Average]:
    """``x - eta_k d`` with ``eta_k = eta`` on exact losses; with ``stochastic=True`` the
    decreasing ``eta_k = 1/(mu (k+1) + 1/eta)`` (``eta`` where ``mu`` is 0 or unknown) and
    the new point added to the ``t``-weighted ``average`` (weight ``k + 1``)."""
    mu = setup.mu
    step = eta if not setup.stochastic or not mu else 1.0 / (mu * (k + 1) + 1.0 / eta)
    x = x - step * direction
    return x, average.add(k + 1, x) if setup.stochastic else average


class Average(NamedTuple):
    """Running ``sum_t t x_t / sum_t t`` (Lacoste-Julien, Schmidt and Bach 2012): ``mean``
    and the total weight so far (``Average(x, 0.0)`` before the first :meth:`add`)."""

    mean: Float
    total: float

    def add(self, t: int, x: Float) -> Average:
        total = self.total + t
        return Average(self.mean + (t / total) * (x - self.mean), total)


class Best(NamedTuple):
    """The iterate with the lowest ``F`` seen so far (``Best(x0, inf)`` before the first)."""

    x: Float
    fun: float

    def add(self, x: Float, fun: float) -> Best:
        return Best(x.copy(), fun) if fun < self.fun else self
