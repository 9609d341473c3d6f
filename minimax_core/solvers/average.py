"""``method="average"``: gradient descent on the average risk ``mean_i L_i`` (the paper's
comparison), with the step ``2/(mu + smoothness)`` (the best fixed step for a
``mu``-strongly convex, ``smoothness``-smooth function) or ``step_size``. It targets
``argmin mean_i L_i``, not ``min max``; ``tol`` applies to ``||grad mean L||``.
``stochastic=True``: steps ``1/(mu t + 1/eta)`` and the ``t``-weighted average."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from .._common import Oracle
from ..result import Status
from .driver import Average, Finish, Setup, Step, constant, gradient_step, positive

__all__ = ["AverageRisk", "AverageState"]

Float = NDArray[np.float64]


class AverageState(NamedTuple):
    """The iterate, ``grad mean L`` there and its norm, the step size and the average
    (``stochastic=True``)."""

    x: Float
    direction: Float
    grad_norm: float
    step_size: float
    average: Average


@dataclass(frozen=True)
class AverageRisk:
    """Options of ``method="average"``: ``step_size`` (default ``2/(mu + smoothness)``)."""

    step_size: float | None = None

    name = "average"

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", positive("step_size", self.step_size))

    def init(self, setup: Setup, values: Float, jacobian: Float) -> AverageState:
        problem = setup.problem
        mu = setup.mu if setup.mu is not None else float(getattr(problem, "mu", 0.0) or 0.0)
        step_size = self.step_size
        if step_size is None:
            smooth = constant(setup, "smoothness", "average")
            if mu + smooth <= 0.0:
                raise ValueError(
                    "method='average' steps 2/(mu + smoothness): both are 0; pass step_size="
                )
            step_size = 2.0 / (mu + smooth)
        x = setup.x0.copy()
        return AverageState(x, jacobian.mean(axis=0), math.inf, step_size, Average(x.copy(), 0.0))

    def observe(
        self, setup: Setup, state: AverageState, k: int, values: Float, jacobian: Float
    ) -> AverageState:
        direction = jacobian.mean(axis=0)
        return state._replace(direction=direction, grad_norm=float(np.linalg.norm(direction)))

    def output(self, setup: Setup, state: AverageState) -> Float:
        return state.average.mean if setup.stochastic else state.x

    def converged(self, setup: Setup, state: AverageState) -> bool:
        return not setup.stochastic and state.grad_norm <= setup.tol

    def step(self, setup: Setup, state: AverageState, k: int, oracle: Oracle) -> Step[AverageState]:
        x, average = gradient_step(
            setup, state.x, state.direction, state.step_size, k, state.average
        )
        return Step(state._replace(x=x, average=average))

    def finish(self, setup: Setup, state: AverageState, status: Status, nit: int) -> Finish:
        m = setup.problem.num_tasks
        info = {"step_size": state.step_size, "gradient_norm": state.grad_norm}
        return Finish(np.full(m, 1.0 / m), None, info)
