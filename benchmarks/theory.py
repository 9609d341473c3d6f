"""Pieces shared by the convex theory experiments (convergence, temperature, num-tasks,
convex-combination, sample-complexity): the seeded quadratic problem with its certified
optimum, the average-risk minimiser, and the iteration count of softmax GD to a target gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import minimax_core as mc
from proofs_checks.numerics import OptimumBracket, optimum_bracket

__all__ = [
    "QuadraticInstance",
    "average_risk_minimiser",
    "iterations_to_gap",
    "quadratic_instance",
]


@dataclass(frozen=True)
class QuadraticInstance:
    """A task set, its CVXPY optimum bracket, and the start ``x0 = 0`` with ``v0 = L(x0)``."""

    problem: mc.problems.QuadraticTasks
    bracket: OptimumBracket
    x0: np.ndarray
    v0: np.ndarray

    @property
    def f_star(self) -> float:
        """``F*`` as the experiments use it: ``F`` at the CVXPY point (the bracket's upper end)."""
        return self.bracket.upper

    @property
    def initial_gap(self) -> float:
        """``F(x0) - F*``."""
        return float(np.max(self.v0)) - self.f_star

    def gradient_at_optimum(self) -> float:
        """``G_* = max_i ||grad L_i(x*)||``, the largest task gradient at the optimum."""
        return float(np.max(np.linalg.norm(self.problem.jacobian(self.bracket.x), axis=1)))


def quadratic_instance(
    num_tasks: int, dim: int, *, mu: float, smoothness: float, seed: int
) -> QuadraticInstance:
    """``random_quadratic(num_tasks, dim, mu, smoothness, seed)`` with its optimum and ``x0 = 0``."""
    problem = mc.problems.random_quadratic(num_tasks, dim, mu=mu, smoothness=smoothness, seed=seed)
    x0 = np.zeros(dim)
    return QuadraticInstance(problem, optimum_bracket(problem), x0, problem.losses(x0))


def average_risk_minimiser(problem: mc.problems.QuadraticTasks) -> np.ndarray:
    """``argmin_x mean_i L_i(x) = (sum_i A_i)^{-1} sum_i A_i c_i`` for quadratic tasks."""
    a = problem.hessian_stack.sum(axis=0)
    b = np.einsum("mij,mj->i", problem.hessian_stack, problem.centers)
    out: np.ndarray = np.linalg.solve(a, b)
    return out


def iterations_to_gap(
    problem: Any, temperature: float, step: float, f_star: float, eps: float, budget: int
) -> int | None:
    """First ``t`` with ``F(x_t) - F* <= eps`` for softmax GD with a constant step, or
    ``None`` if the budget ran out first."""
    hit: list[int] = []

    def stop(it: mc.Iterate) -> bool:
        if it.fun - f_star <= eps:
            hit.append(it.step)
            return True
        return False

    mc.minimize_max(
        problem,
        method="softmax",
        temperature=temperature,
        step_size=step,
        line_search="fixed",
        steps=budget,
        tol=1e-300,
        callback=stop,
    )
    return hit[0] if hit else None
