"""Any weight rule as a method: ``minimize_max(problem, method=rule)`` for a
:class:`~minimax_core.weights.WeightRule` (``softmax(tau)``, ``hardmax()``,
``exponentiated_gradient(s)``, a wrapped or a user's own rule: any object with
``init(num_tasks)`` and ``update(losses, state) -> (weights, state)``), the same object that
drives ``deep.pretrain``.

The plain weighted-gradient step: ``w_k, state = rule.update(L(x_k), state)``, ``x_{k+1} =
x_k - eta_k sum_i w_ki grad L_i(x_k)`` (one rule update per step, so stateful rules such as
``exponentiated_gradient`` evolve as in training). Step sizes:

- ``line_search="fixed"`` (the default): ``eta = step_size``, default ``1/smoothness``: for
  weights on the simplex ``w'L`` is ``smoothness``-smooth, so this step decreases ``w'L`` at
  the current weights;
- ``line_search="armijo"``: backtracking on ``w'L`` at the current weights (the surrogate
  the step descends), from 1.25 times the previous step (first ``step_size``, else
  ``1/smoothness``, else 1);
- neither accounts for how fast the weights move: for ``softmax(tau)`` the guaranteed step is
  ``1/(L + G^2/tau)`` (``F_tau``'s smoothness), and at a small temperature steps of about
  ``1/smoothness`` overshoot in the weights and cycle (measured: ``tau <= 0.5`` on the
  test catalogue's quadratics); give ``step_size`` there, or use ``method="softmax"``;
- ``stochastic=True``: fixed steps ``1/(mu t + 1/eta)`` (``eta`` where ``mu`` is 0) and the
  ``t``-weighted average of the iterates, as ``"softmax"`` and ``"average"`` do.

``tol`` applies to ``||w'J||``. ``certificate``: with ``mu > 0`` and exact losses, the dual
bound ``F(x) - [w'L(x) - ||w'J(x)||^2/(2 mu)]`` at the last weights (valid for any weights
on the simplex), withheld when the measured curvature refutes ``mu``.

What ``method="softmax"`` adds on top of ``method=weights.softmax(tau)`` (:mod:`.softmax`):
the default temperature with continuation, the paper's step ``1/(L + G^2/tau)``, the line
search on ``F_tau`` (not ``w'L``) with momentum, and the smoothing sandwich in its
certificate. With ``step_size`` given (``line_search="fixed"``) and one temperature, the two
produce the same iterates bit for bit (the same ``softmax_weights`` and the same step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from .._common import Oracle
from ..result import Status
from .driver import Average, Finish, Setup, Step, gradient_step, positive
from .line_search import ARMIJO_GROWTH, armijo
from .softmax import Curvature, dual_certificate

__all__ = ["LINE_SEARCHES", "Rule", "RuleState", "is_weight_rule"]

Float = NDArray[np.float64]

LINE_SEARCHES = ("fixed", "armijo")


def is_weight_rule(obj: Any) -> bool:
    """Whether ``obj`` looks like a weight rule: callable ``init`` and ``update``."""
    return callable(getattr(obj, "init", None)) and callable(getattr(obj, "update", None))


class RuleState(NamedTuple):
    """The iterate with ``L, J`` there, the rule's weights and state, the direction
    ``w'J`` and its norm, the step size, the average (``stochastic=True``) and the curvature
    check."""

    x: Float
    values: Float
    jacobian: Float
    w: Float
    rule_state: Any
    direction: Float
    grad_norm: float
    eta: float
    average: Average
    curvature: Curvature


@dataclass(frozen=True)
class Rule:
    """A weight rule as a method (see the module): ``rule``, ``step_size``,
    ``line_search``."""

    rule: Any
    step_size: float | None = None
    line_search: str = "fixed"

    def __post_init__(self) -> None:
        if not is_weight_rule(self.rule):
            raise TypeError(
                "a rule method needs a weight rule: an object with init(num_tasks) and "
                f"update(losses, state), got {type(self.rule).__name__}"
            )
        object.__setattr__(self, "step_size", positive("step_size", self.step_size))
        if self.line_search not in LINE_SEARCHES:
            raise ValueError(f"line_search must be 'fixed' or 'armijo', got {self.line_search!r}")

    @property
    def name(self) -> str:
        return f"rule:{getattr(self.rule, 'name', type(self.rule).__name__)}"

    def init(self, setup: Setup, values: Float, jacobian: Float) -> RuleState:
        if setup.stochastic and self.line_search == "armijo":
            raise ValueError("line_search='armijo' needs exact losses: stochastic=False")
        smooth = setup.smoothness or getattr(setup.problem, "smoothness", None)
        eta = self.step_size or (1.0 / float(smooth) if smooth else None)
        if eta is None:
            if self.line_search == "fixed":
                raise TypeError(
                    f"method={self.name!r} steps 1/smoothness by default: the problem has no "
                    "smoothness attribute; pass step_size=..., smoothness=... or "
                    "line_search='armijo'"
                )
            eta = 1.0
        x = setup.x0.copy()
        mu = setup.mu
        m = setup.problem.num_tasks
        return RuleState(
            x=x,
            values=values,
            jacobian=jacobian,
            w=np.full(m, 1.0 / m),
            rule_state=self.rule.init(m),
            direction=np.zeros_like(x),
            grad_norm=math.inf,
            eta=eta,
            average=Average(x.copy(), 0.0),
            curvature=Curvature(mu if mu and not setup.stochastic else 0.0),
        )

    def observe(
        self, setup: Setup, state: RuleState, k: int, values: Float, jacobian: Float
    ) -> RuleState:
        """One rule update on the losses at ``x_k``, and the direction ``w'J``."""
        w, rule_state = self.rule.update(values, state.rule_state)
        w = np.asarray(w, dtype=np.float64)
        direction = w @ jacobian
        return state._replace(
            values=values,
            jacobian=jacobian,
            w=w,
            rule_state=rule_state,
            direction=direction,
            grad_norm=float(np.linalg.norm(direction)),
            curvature=state.curvature.add(state.x, values, jacobian),
        )

    def output(self, setup: Setup, state: RuleState) -> Float:
        return state.average.mean if setup.stochastic else state.x

    def converged(self, setup: Setup, state: RuleState) -> bool:
        return not setup.stochastic and state.grad_norm <= setup.tol

    def step(self, setup: Setup, state: RuleState, k: int, oracle: Oracle) -> Step[RuleState]:
        if self.line_search == "armijo":
            w = state.w
            trial = armijo(
                oracle,
                state.x,
                state.direction,
                float(w @ state.values),
                lambda v: float(w @ v),
                lambda v: w,
                state.eta * ARMIJO_GROWTH,
            )
            if trial is None:
                return Step(
                    state, stalled="stalled: the line search found no decrease of w'L (round-off)"
                )
            moved = state._replace(x=trial.x, eta=trial.step_size)
            return Step(moved, trial.values, trial.jacobian)
        x, average = gradient_step(setup, state.x, state.direction, state.eta, k, state.average)
        return Step(state._replace(x=x, average=average))

    def finish(self, setup: Setup, state: RuleState, status: Status, nit: int) -> Finish:
        cert = dual_certificate(
            setup, status, state.curvature, state.values, state.jacobian, state.w
        )
        info = {
            "rule": getattr(self.rule, "name", type(self.rule).__name__),
            "rule_params": dict(getattr(self.rule, "params", {}) or {}),
            "step_size": state.eta,
            "gradient_norm": state.grad_norm,
            "line_search": self.line_search,
            "mu_refuted_by_curvature": state.curvature.refuted,
        }
        return Finish(state.w, cert, info)
