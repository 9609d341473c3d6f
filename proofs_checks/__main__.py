"""``python -m proofs_checks``: every check on a few seeded problems, one line each.

Exit status 1 if any statement was violated beyond its rounding tolerance.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

import minimax_core as mc

from . import (
    Slack,
    convex_combination,
    covering,
    implicit_regularization,
    log_sum_exp,
    smoothing_curvature,
    softmax_rate,
    subgradient_rate,
)
from .numerics import optimum_bracket


def _checks() -> list[tuple[str, Callable[[], Slack]]]:
    problems = {
        "quad M=6 d=5": mc.problems.random_quadratic(6, 5, seed=3),
        "quad M=20 d=10 kappa=100": mc.problems.random_quadratic(
            20, 10, mu=0.1, smoothness=10.0, seed=4
        ),
        "logistic M=4 d=3": mc.problems.logistic_tasks(4, 3, num_samples=30, l2=0.5, seed=8),
    }
    small = mc.problems.random_quadratic(3, 3, mu=1.0, smoothness=2.0, seed=0, center_scale=0.3)
    rng = np.random.default_rng(0)
    out: list[tuple[str, Callable[[], Slack]]] = []
    for name, p in problems.items():
        pts = rng.standard_normal((6, p.dim))
        for tau in (1e-3, 0.1, 1.0):
            out.append(
                (
                    f"{name}, tau={tau:g}",
                    lambda p=p, pts=pts, t=tau: log_sum_exp.check_sandwich(p, pts, t),
                )
            )
            out.append(
                (
                    f"{name}, tau={tau:g}",
                    lambda p=p, pts=pts, t=tau: log_sum_exp.check_gradient(p, pts, t),
                )
            )
            out.append(
                (
                    f"{name}, tau={tau:g}",
                    lambda p=p, t=tau: smoothing_curvature.check_curvature(p, t, radius=2.0),
                )
            )
    for name, p in list(problems.items())[:2]:
        out.append(
            (f"{name}, tau=0.1", lambda p=p: softmax_rate.check_linear_rate(p, 0.1, steps=200))
        )
        out.append((name, lambda p=p: subgradient_rate.check_subgradient_bound(p, steps=2000)))
        lam = mc.problems.random_mixtures(p.num_tasks, 20, seed=1)
        out.append(
            (
                name,
                lambda p=p, lam=lam: convex_combination.check_convex_combination(
                    p, lam, np.vstack([optimum_bracket(p).x, np.zeros(p.dim)])
                ),
            )
        )
        out.append(
            (
                f"{name}, downstream from x*",
                lambda p=p, lam=lam: implicit_regularization.check_quadratic_tasks_in_ball(
                    mc.problems.downstream_tasks(p, lam), optimum_bracket(p).x, steps=200
                ),
            )
        )
    out.append(
        (
            "quad M=3 d=3 kappa=2, eps=0.05",
            lambda: softmax_rate.check_iterations_to_accuracy(small, 0.05),
        )
    )
    for r, eps, d in ((1.0, 0.2, 2), (1.0, 0.4, 3), (2.0, 1.0, 4)):
        out.append(
            (f"r={r:g} eps={eps:g} d={d}", lambda r=r, e=eps, d=d: covering.check_covering(r, e, d))
        )
    return out


def main() -> int:
    failed = 0
    for label, check in _checks():
        result = check()
        failed += not result.holds
        verdict = "ok  " if result.holds else "FAIL"
        print(
            f"{verdict} {result.statement:<70} {label:<38} slack {result.slack:+.2e}  "
            f"measured/bound {result.ratio:.3g}"
        )
    print(f"{failed} violated" if failed else "every statement held")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
