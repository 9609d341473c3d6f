"""``method="subgradient"``: hardmax weights (a subgradient of ``F``), projected on a ball
that holds ``x*``.

``step_rule="strongly_convex"`` (the default when ``mu > 0`` is known): steps ``eta_t = 2/(mu
(t+1))`` and the weighted average ``xbar_T = sum_t t x_t / sum_t t``, for which ``F(xbar_T) -
F* <= 2 G^2/(mu (T+1))`` (Lacoste-Julien, Schmidt and Bach 2012). ``step_rule="sqrt"`` (the
merely convex case): ``eta_t = s/sqrt(t)`` with ``s = 2R/G`` (or ``step_size``) and the best
iterate, within ``3 R G/sqrt(T)`` of ``F*``. ``G`` bounds the gradients on the ball of radius
``R`` around ``x0`` (:func:`minimax_core.problems.lipschitz_bound`); ``R`` is ``radius`` or,
from ``mu``, ``sqrt(2 (F(x0) - LB)/mu) >= ||x0 - x*||``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from .. import bounds, weights
from .._common import Oracle
from ..problems import lipschitz_bound
from ..result import Status
from .driver import Average, Best, Finish, Setup, Step, constant, positive, project

__all__ = ["STEP_RULES", "Subgradient", "SubgradientState"]

Float = NDArray[np.float64]

STEP_RULES = ("strongly_convex", "sqrt")


class SubgradientState(NamedTuple):
    """The iterate with ``L, J`` there, the hardmax rule's state, the resolved constants,
    the ``t``-weighted average and the best iterate."""

    x: Float
    values: Float
    jacobian: Float
    rule_state: weights.WeightState
    step_rule: str
    mu: float | None
    radius: float
    lipschitz: float
    scale: float
    average: Average
    best: Best


@dataclass(frozen=True)
class Subgradient:
    """Options of ``method="subgradient"`` (see the module): ``step_rule``, ``radius`` (of the
    ball the iterates are projected on; needed where ``mu`` is 0), ``step_size`` (the scale
    ``s`` of ``step_rule="sqrt"``)."""

    step_rule: str | None = None
    radius: float | None = None
    step_size: float | None = None

    name = "subgradient"

    def __post_init__(self) -> None:
        object.__setattr__(self, "radius", positive("radius", self.radius))
        object.__setattr__(self, "step_size", positive("step_size", self.step_size))
        if self.step_rule is not None and self.step_rule not in STEP_RULES:
            raise ValueError(
                f"step_rule must be 'strongly_convex' or 'sqrt', got {self.step_rule!r}"
            )

    def init(self, setup: Setup, values: Float, jacobian: Float) -> SubgradientState:
        mu = setup.mu if setup.mu is not None else getattr(setup.problem, "mu", None)
        smooth = constant(setup, "smoothness", "subgradient")
        step_rule = self.step_rule
        if step_rule is None:
            step_rule = "strongly_convex" if mu else "sqrt"
        if step_rule == "strongly_convex" and not mu:
            raise ValueError("step_rule='strongly_convex' needs mu > 0 (problem.mu or mu=...)")
        radius = self.radius
        if radius is None:
            if not mu:
                raise ValueError("method='subgradient' on a problem with mu = 0 needs radius=...")
            radius = bounds.initial_radius(values, jacobian, mu)
        radius = max(radius, 1e-300)
        lip = lipschitz_bound(setup.problem, setup.x0, radius, smoothness=smooth)
        if self.step_size is not None and step_rule == "strongly_convex":
            raise ValueError(
                "step_size applies to step_rule='sqrt' only (the scale of 2R/(G sqrt t))"
            )
        scale = self.step_size if self.step_size is not None else 2.0 * radius / max(lip, 1e-300)
        x = setup.x0.copy()
        return SubgradientState(
            x=x,
            values=values,
            jacobian=jacobian,
            rule_state=weights.hardmax().init(setup.problem.num_tasks),
            step_rule=step_rule,
            mu=mu,
            radius=radius,
            lipschitz=lip,
            scale=scale,
            average=Average(x.copy(), 0.0),
            best=Best(x.copy(), math.inf),
        )

    def observe(
        self, setup: Setup, state: SubgradientState, k: int, values: Float, jacobian: Float
    ) -> SubgradientState:
        """The average ``x_1..x_{k+1}`` with weights ``t`` (``x_1 = x0``), or the best
        iterate so far."""
        state = state._replace(values=values, jacobian=jacobian)
        if state.step_rule == "strongly_convex":
            return state._replace(average=state.average.add(k + 1, state.x))
        return state._replace(best=state.best.add(state.x, float(np.max(values))))

    def output(self, setup: Setup, state: SubgradientState) -> Float:
        return state.average.mean if state.step_rule == "strongly_convex" else state.best.x

    def converged(self, setup: Setup, state: SubgradientState) -> bool:
        return False  # no stopping test: the budget (or the callback) ends the run

    def step(
        self, setup: Setup, state: SubgradientState, k: int, oracle: Oracle
    ) -> Step[SubgradientState]:
        w, rule_state = weights.hardmax().update(state.values, state.rule_state)
        direction = w @ state.jacobian
        t, mu = k + 1, state.mu
        if mu and state.step_rule == "strongly_convex":
            eta = 2.0 / (mu * (t + 1))
        else:
            eta = state.scale / math.sqrt(t)
        x = project(state.x - eta * direction, setup.x0, state.radius)
        return Step(state._replace(x=x, rule_state=rule_state))

    def finish(self, setup: Setup, state: SubgradientState, status: Status, nit: int) -> Finish:
        """``info["theorem_bound"]``: the rate's bound on ``F - F*`` after ``nit`` steps."""
        lip, mu = state.lipschitz, state.mu
        if state.step_rule == "strongly_convex" and mu:
            bound = float(bounds.subgradient_strongly_convex_bound(lip, mu, max(nit, 1)))
        else:
            bound = float(bounds.subgradient_convex_bound(lip, state.radius, max(nit, 1)))
        info = {
            "step_rule": state.step_rule,
            "radius": state.radius,
            "lipschitz": lip,
            "theorem_bound": bound,
        }
        return Finish(None, None, info)
