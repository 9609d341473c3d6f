"""References: the epigraph form ``min t  s.t.  L_i(x) <= t`` solved by conic solvers.

Only for checking (tests, benchmarks): the solver packages are imported when called, never
by the solvers of this package.

- :func:`solve_cvxpy`: CVXPY + Clarabel; the problem must provide ``cvxpy_losses(cp, x)``
  returning one convex expression per task (every family in :mod:`minimax_core.problems`
  does).
- :func:`conic_form` + :func:`solve_conic`: the strongest anchor, a conic solver called
  directly (no modelling layer). Each quadratic task is written as
  ``0.5 ||R_i x - r_i||^2 + b_i <= t`` (``A_i = R_i'R_i``; least-squares tasks give
  ``R_i = [X_i / sqrt(n_i); sqrt(l2) I]`` without forming ``A_i``), and
  ``||u||^2 <= 2 v`` is the second-order cone ``||(v - 1/2, u)|| <= v + 1/2``, here with
  ``v = t - b_i``. Variables ``z = (x, t)``; the cone constraint is ``h - G z in K``. The
  matrices are built once (scipy.sparse); :func:`solve_conic` hands them to Clarabel,
  QOCO, ECOS or SCS, whichever is installed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse

from .problems import check_problem
from .result import Recorder, Result, Status

__all__ = [
    "CONIC_SOLVERS",
    "ConicForm",
    "ConicSolution",
    "conic_form",
    "solve_conic",
    "solve_cvxpy",
]


def _multipliers(duals: list[Any]) -> np.ndarray | None:
    """One multiplier per task constraint: CVXPY gives a scalar for a constraint whose
    loss is constant in ``x`` (a task with ``A_i = 0``) and a 1-element array otherwise."""
    if any(v is None for v in duals):
        return None
    return np.array([float(np.asarray(v, dtype=np.float64).reshape(-1)[0]) for v in duals])


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
    w = _multipliers([c.dual_value for c in constraints])
    stats = model.solver_stats
    return Result(
        x=x_out,
        fun=fun,
        nit=int(getattr(stats, "num_iters", 0) or 0),
        nfev=0,
        status=Status.CONVERGED if ok else Status.NOT_OPTIMAL,
        message=f"cvxpy/clarabel status: {status}",
        method="cvxpy",
        history=Recorder().history(),  # no iterates of its own: empty columns
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


# --------------------------------------------------------------------------- direct conic form

#: Direct conic solvers :func:`solve_conic` can call (each needs its package installed).
CONIC_SOLVERS = ("clarabel", "qoco", "ecos", "scs")


@dataclass(frozen=True)
class ConicForm:
    """``min c'z  s.t.  h - G z in K`` with ``K`` a product of second-order cones
    (``cones[i]`` is task ``i``'s cone dimension); ``z = (x, t)``."""

    cost: np.ndarray
    matrix: scipy.sparse.csc_matrix
    rhs: np.ndarray
    cones: tuple[int, ...]
    dim: int
    build_seconds: float


class ConicSolution(NamedTuple):
    """What :func:`solve_conic` returns: ``x``, the epigraph value ``t``, the solver's status
    text, whether it reports an optimum, its iterations and the wall time of its setup +
    solve (the matrices of :class:`ConicForm` are built beforehand)."""

    x: np.ndarray
    t: float
    status: str
    optimal: bool
    iterations: int
    seconds: float


def _task_factors(problem: Any) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """``(R_i, r_i, b_i)`` with ``L_i(x) = 0.5 ||R_i x - r_i||^2 + b_i`` for every task."""
    from .problems import LeastSquaresTasks, QuadraticTasks

    out = []
    if isinstance(problem, LeastSquaresTasks):
        d = problem.dim
        for i in range(problem.num_tasks):
            n = int(problem.counts[i])
            rows = problem.designs[i, :n] / math.sqrt(n)
            rhs = problem.targets[i, :n] / math.sqrt(n)
            if problem.l2 > 0:
                rows = np.vstack([rows, math.sqrt(problem.l2) * np.eye(d)])
                rhs = np.concatenate([rhs, np.zeros(d)])
            out.append((rows, rhs, 0.0))
        return out
    if not isinstance(problem, QuadraticTasks):
        raise TypeError(
            f"conic_form needs QuadraticTasks or LeastSquaresTasks, got {type(problem).__name__}"
        )
    eig, vec = np.linalg.eigh(problem.hessian_stack)
    for i in range(problem.num_tasks):
        keep = eig[i] > 1e-14 * max(float(eig[i, -1]), 1e-300)
        factor = np.sqrt(eig[i, keep])[:, None] * vec[i][:, keep].T  # A_i = R'R
        out.append((factor, factor @ problem.centers[i], float(problem.offsets[i])))
    return out


def conic_form(problem: Any) -> ConicForm:
    """The second-order-cone form of ``min_x max_i L_i(x)`` for quadratic tasks (see the
    module): cone ``i`` is ``(t - b_i + 1/2, t - b_i - 1/2, R_i x - r_i)``."""
    start = time.perf_counter()
    factors = _task_factors(problem)
    d = int(problem.dim)
    blocks, rhs, cones = [], [], []
    for factor, target, offset in factors:
        k = factor.shape[0]
        head = np.zeros((2, d + 1))
        head[:, d] = -1.0  # h - G z = (t - b + 1/2, t - b - 1/2, R x - r)
        body = np.hstack([-factor, np.zeros((k, 1))])
        blocks.append(scipy.sparse.csr_matrix(np.vstack([head, body])))
        rhs.append(np.concatenate([[0.5 - offset, -0.5 - offset], -target]))
        cones.append(k + 2)
    matrix = scipy.sparse.vstack(blocks, format="csc")
    cost = np.zeros(d + 1)
    cost[d] = 1.0
    return ConicForm(
        cost=cost,
        matrix=matrix,
        rhs=np.concatenate(rhs),
        cones=tuple(cones),
        dim=d,
        build_seconds=time.perf_counter() - start,
    )


def solve_conic(form: ConicForm, solver: str = "clarabel", *, tol: float = 1e-9) -> ConicSolution:
    """Solve a :class:`ConicForm` with a conic solver called directly, single-threaded,
    at gap and feasibility tolerances ``tol`` (SCS, a first-order method: ``eps_abs`` and
    ``eps_rel``; its status ``solved`` is at that looser sense)."""
    if solver not in CONIC_SOLVERS:
        raise ValueError(f"solver must be one of {CONIC_SOLVERS}, got {solver!r}")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    n, rows = form.dim + 1, form.matrix.shape[0]
    start = time.perf_counter()
    if solver == "clarabel":
        import clarabel  # type: ignore[import-untyped, import-not-found, unused-ignore]

        settings = clarabel.DefaultSettings()
        settings.verbose = False
        settings.max_threads = 1
        settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = tol
        settings.tol_ktratio = 1e-7
        settings.max_iter = 500
        cones = [clarabel.SecondOrderConeT(k) for k in form.cones]
        empty = scipy.sparse.csc_matrix((n, n))
        sol = clarabel.DefaultSolver(empty, form.cost, form.matrix, form.rhs, cones, settings)
        out = sol.solve()
        z, status, iters = np.asarray(out.x), str(out.status), int(out.iterations)
        ok = status == "Solved"
    elif solver == "qoco":
        import qoco  # type: ignore[import-untyped, import-not-found, unused-ignore]

        model = qoco.QOCO()
        model.setup(
            n, rows, 0, None, form.cost, None, None, form.matrix, form.rhs, 0,
            len(form.cones), np.asarray(form.cones), verbose=False, abstol=tol, reltol=tol,
            max_iters=500,
        )  # fmt: skip
        out = model.solve()
        z, status, iters = np.asarray(out.x), str(out.status), int(out.iters)
        ok = status == "QOCO_SOLVED"
    elif solver == "ecos":
        import ecos  # type: ignore[import-untyped, import-not-found, unused-ignore]

        out = ecos.solve(
            form.cost, form.matrix, form.rhs, {"l": 0, "q": list(form.cones)},
            verbose=False, abstol=tol, reltol=tol, feastol=tol, max_iters=500,
        )  # fmt: skip
        z, status = np.asarray(out["x"]), str(out["info"]["infostring"])
        iters, ok = int(out["info"]["iter"]), int(out["info"]["exitFlag"]) == 0
    else:
        import scs  # type: ignore[import-untyped, import-not-found, unused-ignore]

        model = scs.SCS(
            {"A": form.matrix, "b": form.rhs, "c": form.cost}, {"q": list(form.cones)},
            eps_abs=tol, eps_rel=tol, verbose=False, max_iters=100_000,
        )  # fmt: skip
        out = model.solve()
        z, status = np.asarray(out["x"]), str(out["info"]["status"])
        iters, ok = int(out["info"]["iter"]), status == "solved"
    seconds = time.perf_counter() - start
    if z.shape != (n,) or not np.all(np.isfinite(z)):
        z = np.full(n, np.nan)
    return ConicSolution(z[:-1].copy(), float(z[-1]), status, bool(ok), iters, seconds)
