"""``method="group_dro"``: exponentiated-gradient weights ``q <- q exp(eta_q L)`` (Group DRO,
Sagawa et al. 2020) and a gradient step on ``q'L`` for ``x``.

The weight step is Hedge's rate ``eta_q = sqrt(8 log M / T) / B`` (``B`` the range of the
losses at ``x0``, ``T`` the step budget) unless ``weight_step_size`` is given.

``step_rule="smooth"`` (the default with exact losses): ``x <- x - eta q'J(x)`` with the step
``eta = 1/smoothness`` (``q'L`` is ``smoothness``-smooth, so each step decreases it for the
current ``q``) or ``step_size``; returns the best iterate (lowest ``F``, seen at every step
for free), so it never ends above its start (the last iterate with ``stochastic=True``).
``step_rule="strongly_convex"`` (the default with ``stochastic=True``, and the rule before
issue 14): steps ``2/(mu (t+1))`` (or ``step_size``) projected on a ball that holds ``x*``,
returning the ``t``-weighted average (it ended above its start at ``L/mu >= 30``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from .. import bounds, weights
from .._common import Oracle
from ..result import Status
from .driver import Average, Best, Finish, Setup, Step, constant, positive, project

__all__ = ["STEP_RULES", "GroupDRO", "GroupDROState"]

Float = NDArray[np.float64]

STEP_RULES = ("smooth", "strongly_convex")


class GroupDROState(NamedTuple):
    """The iterate with ``L, J`` there, the weights ``q`` and their rule's state, the
    resolved step rule and constants, the ``t``-weighted average and the best iterate."""

    x: Float
    values: Float
    jacobian: Float
    q: Float
    rule: weights.WeightRule
    rule_state: weights.WeightState
    step_rule: str
    step_size: float | None
    weight_step_size: float
    mu: float
    radius: float
    average: Average
    best: Best


def hedge_step_size(values: Float, jacobian: Float, mu: float, steps: int) -> float:
    """Hedge's rate ``sqrt(8 log M / T) / B``, ``B`` the range of the task losses at ``x0``
    (where they are all equal: ``F(x0)`` minus a lower bound on ``F*``, given ``mu > 0``;
    floored at ``1e-12`` of the scale of ``F(x0)``)."""
    spread = float(np.max(values) - np.min(values))
    if spread <= 0.0 and mu > 0:
        spread = float(np.max(values)) - bounds.lower_bound_on_optimum(values, jacobian, mu)
    spread = max(spread, 1e-12 * max(abs(float(np.max(values))), 1.0))
    m = max(values.shape[0], 2)
    return math.sqrt(8.0 * math.log(m) / max(steps, 1)) / spread


@dataclass(frozen=True)
class GroupDRO:
    """Options of ``method="group_dro"`` (see the module): ``step_size`` (of ``x``),
    ``weight_step_size`` (``eta_q``), ``step_rule``."""

    step_size: float | None = None
    weight_step_size: float | None = None
    step_rule: str | None = None

    name = "group_dro"

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", positive("step_size", self.step_size))
        eta_q = positive("weight_step_size", self.weight_step_size)
        object.__setattr__(self, "weight_step_size", eta_q)
        if self.step_rule is not None and self.step_rule not in STEP_RULES:
            raise ValueError(
                f"step_rule must be 'smooth' or 'strongly_convex', got {self.step_rule!r}"
            )

    def init(self, setup: Setup, values: Float, jacobian: Float) -> GroupDROState:
        problem = setup.problem
        step_rule = self.step_rule
        if step_rule is None:
            step_rule = "strongly_convex" if setup.stochastic else "smooth"
        step_size = self.step_size
        if step_rule == "smooth":
            mu = setup.mu or 0.0
            if step_size is None:
                smooth = constant(setup, "smoothness", "group_dro")
                if smooth <= 0.0:
                    raise ValueError(
                        "step_rule='smooth' steps 1/smoothness: the smoothness is 0; "
                        "pass step_size="
                    )
                step_size = 1.0 / smooth
            radius = math.inf
        else:
            mu = constant(setup, "mu", "group_dro")
            if mu <= 0 and step_size is None:
                raise ValueError(
                    "method='group_dro' needs mu > 0 for its default steps; pass step_size=..."
                )
            radius = bounds.initial_radius(values, jacobian, mu) if mu > 0 else math.inf
        eta_q = self.weight_step_size
        if eta_q is None:
            eta_q = hedge_step_size(values, jacobian, mu, setup.steps)
        rule = weights.exponentiated_gradient(eta_q)
        x = setup.x0.copy()
        m = problem.num_tasks
        return GroupDROState(
            x=x,
            values=values,
            jacobian=jacobian,
            q=np.full(m, 1.0 / m),
            rule=rule,
            rule_state=rule.init(m),
            step_rule=step_rule,
            step_size=step_size,
            weight_step_size=eta_q,
            mu=mu,
            radius=radius,
            average=Average(x.copy(), 0.0),
            best=Best(x.copy(), math.inf),
        )

    def observe(
        self, setup: Setup, state: GroupDROState, k: int, values: Float, jacobian: Float
    ) -> GroupDROState:
        """The average of ``x_1..x_{k+1}`` with weights ``t`` and the best iterate so far."""
        state = state._replace(
            values=values, jacobian=jacobian, average=state.average.add(k + 1, state.x)
        )
        return state._replace(best=state.best.add(state.x, float(np.max(values))))

    def output(self, setup: Setup, state: GroupDROState) -> Float:
        if state.step_rule != "smooth":
            return state.average.mean
        keep_best = not setup.stochastic  # F of a noisy sample is no guide
        return state.best.x if keep_best else state.x

    def converged(self, setup: Setup, state: GroupDROState) -> bool:
        return False  # no stopping test: the budget (or the callback) ends the run

    def step(
        self, setup: Setup, state: GroupDROState, k: int, oracle: Oracle
    ) -> Step[GroupDROState]:
        q, rule_state = state.rule.update(state.values, state.rule_state)
        t = k + 1
        eta = state.step_size if state.step_size is not None else 2.0 / (state.mu * (t + 1))
        x = project(state.x - eta * (q @ state.jacobian), setup.x0, state.radius)
        return Step(state._replace(x=x, q=q, rule_state=rule_state))

    def finish(self, setup: Setup, state: GroupDROState, status: Status, nit: int) -> Finish:
        info: dict[str, object] = {
            "weight_step_size": state.weight_step_size,
            "radius": state.radius,
            "step_rule": state.step_rule,
        }
        if state.step_rule == "smooth":
            info["step_size"] = state.step_size
        return Finish(state.q, None, info)
