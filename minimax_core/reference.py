"""CVXPY reference: the epigraph form ``min t  s.t.  L_i(x) <= t`` solved by Clarabel.

Only for checking (tests, benchmarks): ``cvxpy`` is imported when :func:`solve_cvxpy` is
called, never by the solvers. The problem must provide ``cvxpy_losses(cp, x)`` returning one
convex expression per task (every family in :mod:`minimax_core.problems` does).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._common import CONVERGED, NOT_OPTIMAL
from .problems import check_problem
from .solvers import Result

__all__ = ["solve_cvxpy"]

#: Clarabel settings for a reference optimum: gaps and feasibility to 1e-9.
TIGHT = {
    "tol_gap_abs": 1e-9,
    "tol_gap_rel": 1e-9,
    "tol_feas": 1e-9,
    "tol_ktratio": 1e-7,
    "max_iter": 500,
}


def solve_cvxpy(problem: Any, *, solver_options: dict[str, Any] | None = None) -> Result:
    """Solve ``min_x max_i L_i(x)`` with CVXPY + Clarabel at tight tolerances.

    ``success`` is true only for the status ``optimal``; ``optimal_inaccurate`` and every
    other status are reported in ``message`` with ``success=False``. ``weights`` are the
    constraint multipliers (on the simplex at the optimum), ``info`` holds the times of the
    model build + compile and of the solve.
    """
    check_problem(problem)
    if not callable(getattr(problem, "cvxpy_losses", None)):
        raise TypeError(
            "solve_cvxpy needs problem.cvxpy_losses(cp, x) returning one convex CVXPY "
            "expression per task"
        )
    try:
        import cvxpy as cp
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("solve_cvxpy needs cvxpy: pip install 'taskrobust[reference]'") from err

    start = time.perf_counter()
    x = cp.Variable(problem.dim)
    t = cp.Variable()
    constraints = [loss <= t for loss in problem.cvxpy_losses(cp, x)]
    model = cp.Problem(cp.Minimize(t), constraints)
    options = dict(TIGHT)
    options.update(solver_options or {})
    model.get_problem_data(cp.CLARABEL)  # compile once, so the timings separate
    compiled = time.perf_counter()
    model.solve(solver=cp.CLARABEL, **options)  # type: ignore[no-untyped-call]
    solved = time.perf_counter()
    status = str(model.status)
    ok = status == cp.OPTIMAL
    if x.value is None:
        x_out = np.full(problem.dim, np.nan)
        fun = float("nan")
    else:
        x_out = np.asarray(x.value, dtype=np.float64)
        fun = float(np.max(problem.losses(x_out)))
    duals = [c.dual_value for c in constraints]
    w = None if any(v is None for v in duals) else np.asarray(duals, dtype=np.float64).ravel()
    stats = model.solver_stats
    return Result(
        x=x_out,
        fun=fun,
        nit=int(getattr(stats, "num_iters", 0) or 0),
        nfev=0,
        success=ok,
        status=CONVERGED if ok else NOT_OPTIMAL,
        message=f"cvxpy/clarabel status: {status}",
        method="cvxpy",
        history={"step": np.zeros(0, dtype=np.int64), "fun": np.zeros(0)},
        weights=w,
        certificate=None,
        info={
            "epigraph_value": float(t.value) if t.value is not None else float("nan"),
            "compile_seconds": compiled - start,
            "solve_seconds": solved - compiled,
            "wall_seconds": solved - start,
            "cvxpy_status": status,
        },
    )
