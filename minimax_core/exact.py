"""Exact solvers of ``min_x F(x) = max_i L_i(x)``: the engines behind ``method="auto"``.

Two algorithms, chosen by what the problem offers (:func:`solve`):

``"interior_point"`` (tasks with Hessians: :class:`~minimax_core.problems.QuadraticTasks`,
or any problem with ``hessians(x) -> (M, d, d)``)
    A primal-dual interior-point method on the epigraph form ``min t  s.t.  L_i(x) <= t``
    with Mehrotra's predictor-corrector. Slacks ``s = t - L(x) > 0`` and multipliers
    ``lam > 0``; the Newton system for stationarity (``sum_i lam_i grad L_i = 0``,
    ``sum_i lam_i = 1``) and centrality ``lam * s = sigma mu_c``, with ``ds = dt - G dx``
    and ``dlam`` eliminated, is the ``(d+1) x (d+1)`` positive-definite system

    ``[[H + G' D G, -G' D 1], [-1' D G, 1' D 1]] [dx; dt] = rhs``,
    ``H = sum_i lam_i hess L_i``, ``D = diag(lam / s)``, ``G`` the Jacobian,

    solved by one Cholesky factorisation (two solves: predictor and corrector; the
    corrector is scaled down where it would cancel the merit's descent, which happens with
    many more tasks than dimensions: :func:`_corrector_share`). The step
    keeps a fraction of ``lam`` and of the linearised slacks, then backtracks on the
    squared KKT residual, whose slack part ``L(x + a dx) - (t + a dt) - (s + a ds)`` is the
    curvature the linearisation missed (``a^2 dx' A_i dx / 2`` for quadratic tasks): far from
    the solution a full Newton step would trade the whole gain for infeasibility. After the
    step ``t`` is raised until ``s = t - L(x)`` is at least its linear prediction (slacks
    never shrink below it). For quadratic tasks every trial step is exact and free: the
    losses and gradients along ``dx`` follow from ``A_i dx``, so one iteration costs two
    products with the stack of Hessians (``A_i dx``, and ``sum_i dlam_i A_i``, which updates
    ``H`` since it is linear in ``lam``) read chunk by chunk in one pass, plus one Cholesky;
    least-squares tasks work from their samples (no ``d x d`` matrix per task); for other
    tasks each trial evaluates the losses.

``"gradient_mapping"`` (tasks that give only ``losses`` and ``jacobian``)
    Nesterov's accelerated gradient method for max-type functions (Nesterov 2004,
    Section 2.3.3): ``x+ = argmin_z max_i [L_i(y) + <grad L_i(y), z - y>] + (L/2)||z - y||^2``,
    whose dual is the simplex QP ``max_w <w, L(y)> - ||G'w||^2/(2L)``
    (:func:`~minimax_core.simplex_qp.solve_simplex_qp`, warm-started), then the momentum
    ``y = x+ + beta (x+ - x)`` with ``beta = (sqrt L - sqrt mu)/(sqrt L + sqrt mu)`` (FISTA's
    sequence when ``mu`` is unknown) and the gradient restart of O'Donoghue and Candes
    (2015). Without a known ``smoothness`` the step backtracks on ``L``.

Certificate (both algorithms): for weights ``w`` on the simplex, weak duality gives
``F* >= min_y sum_i w_i L_i(y)``, bounded below by

- ``sum_i w_i L_i(x) - ||sum_i w_i grad L_i(x)||^2 / (2 mu)`` (every task ``mu``-strongly
  convex; :func:`minimax_core.bounds.dual_lower_bound`), and for quadratic tasks exactly by
- ``sum_i w_i L_i(x) - r' H_w^{-1} r / 2`` with ``r = sum_i w_i grad L_i(x)`` and
  ``H_w = sum_i w_i A_i`` (the minimum of the quadratic ``sum_i w_i L_i``).

``certificate = F(x) - lower bound >= F(x) - F*``. ``success`` means
``certificate <= tol * min(|F(x)|, F(x) - c) + atol`` (:func:`_target`): ``tol`` is a
relative accuracy on the part of ``F`` that depends on ``x``, ``c <= min_i inf L_i`` the
constant every task lies above (quadratic tasks: the smallest offset; otherwise the
strong-convexity bound ``min_i L_i - ||grad L_i||^2/(2 mu)``), so a common offset such
as ``b_i + 1e8`` does not loosen it; never looser than ``tol |F(x)| + atol``. ``atol``
(default 0) is for optima at or near 0. The returned weights are the normalised multipliers; tasks
whose multiplier is negligible are set to exactly zero when the pruned weights still
certify the same tolerance, so the weights name the active tasks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from . import bounds
from ._common import (
    BUDGET,
    CALLBACK,
    CONVERGED,
    NO_CERTIFICATE,
    NON_FINITE,
    STALLED,
    Oracle,
    all_finite,
    check_first_outputs,
)
from .simplex_qp import solve_simplex_qp

__all__ = [
    "ALGORITHMS",
    "ExactSolution",
    "check_weights",
    "choose_algorithm",
    "gradient_mapping",
    "interior_point",
    "quadratic_lower_bound",
    "solve",
]

Float = NDArray[np.float64]
Callback = Callable[[int, Float, float], bool]

ALGORITHMS = ("interior_point", "gradient_mapping")

_FRACTION = 0.995  # fraction to the boundary kept by interior-point steps
_STALL_WINDOW = 25  # iterations without a 10% better certificate before giving up
_MERIT_HALVINGS = 40  # backtracking steps on the KKT residual
_START_GAP = 0.1  # initial epigraph gap t - F(x0) over the spread of the losses (see below)
_WARM_UNIFORM = 0.1  # share of the uniform weights in warm-started multipliers
_WARM_GAP = 0.1  # warm start: the initial epigraph gap t - F(x0) is this fraction of the cold one


@dataclass(frozen=True)
class ExactSolution:
    """What :func:`interior_point` and :func:`gradient_mapping` return.

    ``certificate = fun - lower_bound`` bounds ``F(x) - F*``; ``weights`` are on the
    simplex (the dual multipliers); ``history`` holds ``step``, ``fun`` (``F`` at the
    iterate), ``certificate`` (or, without one, the estimated gap) and ``nfev`` per
    iteration.
    """

    x: Float
    fun: float
    weights: Float
    lower_bound: float
    certificate: float
    nit: int
    nfev: int
    status: int
    message: str
    algorithm: str
    history: dict[str, Float]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status == CONVERGED


# --------------------------------------------------------------------------- lower bounds


def quadratic_lower_bound(
    values: Float, jacobian: Float, weights: Float, weighted_hessian: Float
) -> float:
    """``min_y sum_i w_i L_i(y)`` for quadratic tasks, ``-inf`` if ``H_w`` is singular.

    ``sum_i w_i L_i`` is the quadratic with value ``w'L(x)``, gradient ``r = G'w`` and
    Hessian ``H_w`` at ``x``; its minimum is ``w'L(x) - r' H_w^{-1} r / 2``.
    """
    r = weights @ jacobian
    factor, info = _POTRF(weighted_hessian, lower=0, clean=0, overwrite_a=0)
    if info != 0:  # not positive definite (or an invalid entry)
        return -math.inf
    step, _ = _POTRS(factor, r, lower=0)
    return float(weights @ values - 0.5 * (r @ step))


def _lower_bound(
    values: Float,
    jacobian: Float,
    weights: Float,
    mu: float,
    weighted_hessian: Callable[[], Float] | None,
    target: float = math.inf,
) -> float:
    """A lower bound on ``F*`` from the weights ``w`` (see the module).

    The strong-convexity bound (free) when ``mu > 0``; the exact quadratic bound (a
    Cholesky of ``H_w``, from ``weighted_hessian()``) only if that misses ``F(x) - target``
    and can meet it: the exact bound is at most ``w'L(x)``. ``target=inf`` always tries it.
    """
    lower = -math.inf
    if mu > 0:
        lower = bounds.dual_lower_bound(values, jacobian, weights, mu)
    fun = float(values.max())
    if (
        weighted_hessian is not None
        and fun - lower > target
        and (math.isinf(target) or fun - float(weights @ values) <= target)
    ):
        exact = quadratic_lower_bound(values, jacobian, weights, weighted_hessian())
        lower = max(lower, exact)
    return lower


def qp_model_value(weights: Float, values: Float, move: Float, smoothness: float) -> float:
    """``min_z max_i [L_i(y) + <grad L_i(y), z - y>] + (L/2)||z - y||^2`` by duality:
    ``<w, L(y)> - ||G'w||^2 / (2L)`` at the QP's solution ``w`` (``move = G'w``)."""
    return float(weights @ values - (move @ move) / (2.0 * smoothness))


def check_weights(weights0: Any, num_tasks: int) -> Float:
    """``weights0`` as float64 weights on the simplex: shape ``(num_tasks,)``, finite,
    ``>= 0`` with a positive sum (normalised to 1), or an error naming ``weights0``."""
    raw = np.asarray(weights0)
    if raw.dtype.kind not in "biuf":
        raise TypeError(f"weights0 must be real numbers, got an array of dtype {raw.dtype}")
    w = np.asarray(raw, dtype=np.float64)
    if w.shape != (num_tasks,):
        raise ValueError(f"weights0 must have shape (num_tasks,) = ({num_tasks},), got {w.shape}")
    total = float(w.sum()) if np.all(np.isfinite(w)) else math.nan
    if not (np.all(w >= 0) and math.isfinite(total) and total > 0):
        raise ValueError(
            "weights0 must be finite, >= 0 and not all 0 (a previous solution's weights)"
        )
    out: Float = w / total
    return out


# --------------------------------------------------------------------------- task models


class _Model(Protocol):
    """What the interior-point method needs from the tasks (calling it evaluates them).

    Losses are returned less the constant ``shift`` (quadratic tasks: the smallest offset,
    so that a large common offset costs no accuracy); ``floor(values, jac)`` is a lower
    bound on ``min_i inf_y L_i(y) - shift`` (``-inf`` if none is known).
    """

    exact_steps: bool
    quadratic: bool
    nfev: int
    passes: int
    shift: float

    def __call__(self, x: Float) -> tuple[Float, Float]: ...

    def weighted_hessian(self, x: Float, weights: Float) -> Float: ...

    def step_products(
        self, direction: Float, weight_change: Float
    ) -> tuple[Float, Float | None]: ...

    def floor(self, values: Float, jac: Float) -> float: ...


_CHUNK_BYTES = 8 << 20  # tasks per chunk of the fused pass: about 8 MiB of Hessians (in L3)
_FUSE_BYTES = 32 << 20  # stacks larger than this (beyond the caches) are passed over in chunks


class _QuadraticModel:
    """Quadratic tasks ``0.5 (x-c_i)' A_i (x-c_i) + b_i`` from the stack of Hessians.

    One pass over the stack per iteration (:meth:`step_products`): ``A_i dx`` for the
    exact steps and ``sum_i dlam_i A_i`` for the next weighted Hessian (linear in the
    multipliers), chunk by chunk so that each chunk of Hessians is read from memory once.
    """

    exact_steps = True
    quadratic = True

    def __init__(self, problem: Any) -> None:
        stack = np.ascontiguousarray(problem.hessian_stack, dtype=np.float64)
        m, d, _ = stack.shape
        self.rows = stack.reshape(m * d, d)  # (A_1; ...; A_M) for all A_i v at once
        self.flat = stack.reshape(m, d * d)  # for sum_i w_i A_i
        self.shape = (m, d)
        self.centers = np.asarray(problem.centers, dtype=np.float64)
        a_c = getattr(problem, "_a_c", None)
        if a_c is None or np.shape(a_c) != (m, d):
            a_c = np.matmul(stack, self.centers[:, :, None])[:, :, 0]
        self.a_c = np.asarray(a_c, dtype=np.float64)
        offsets = np.asarray(problem.offsets, dtype=np.float64)
        self.shift = float(np.min(offsets))
        self.offsets = offsets - self.shift
        per_task = d * d * 8
        step = max(1, _CHUNK_BYTES // per_task)
        self.chunks = (
            [(lo, min(lo + step, m)) for lo in range(0, m, step)]
            if stack.nbytes > _FUSE_BYTES and m > step
            else None
        )
        self.nfev = 0
        self.passes = 0

    def __call__(self, x: Float) -> tuple[Float, Float]:
        self.nfev += 1
        jac: Float = (self.rows @ x).reshape(self.shape)
        jac -= self.a_c
        values: Float = 0.5 * np.einsum("mi,mi->m", x - self.centers, jac) + self.offsets
        return values, jac

    def weighted_hessian(self, x: Float, weights: Float) -> Float:
        self.passes += 1
        d = self.shape[1]
        out: Float = (weights @ self.flat).reshape(d, d)
        return out

    def step_products(self, direction: Float, weight_change: Float) -> tuple[Float, Float | None]:
        """``A_i dx`` (rows) and ``sum_i dlam_i A_i`` in one pass over the stack."""
        self.passes += 1
        m, d = self.shape
        if self.chunks is None:
            prod: Float = (self.rows @ direction).reshape(m, d)
            return prod, (weight_change @ self.flat).reshape(d, d)
        prod = np.empty((m, d))
        change = np.zeros(d * d)
        for lo, hi in self.chunks:  # the second product reads the chunk from the cache
            np.matmul(self.rows[lo * d : hi * d], direction, out=prod[lo:hi].reshape(-1))
            _GEMV(1.0, self.flat[lo:hi].T, weight_change[lo:hi], beta=1.0, y=change, overwrite_y=1)
        return prod, change.reshape(d, d)

    def floor(self, values: Float, jac: Float) -> float:
        return 0.0  # L_i >= b_i >= min_i b_i = shift (A_i is PSD)


class _LeastSquaresModel:
    """Least-squares tasks ``1/(2 n_i) ||X_i x - y_i||^2 + (l2/2) ||x||^2`` from the samples:
    no ``d x d`` matrix per task. ``sum_i w_i H_i = X' diag(w_i / n_i) X + l2 (sum w) I``
    (one product of the stacked samples), ``H_i dx = X_i'(X_i dx)/n_i + l2 dx``."""

    exact_steps = True
    quadratic = True

    def __init__(self, problem: Any) -> None:
        self.designs = np.asarray(problem.designs, dtype=np.float64)  # (M, n_max, d), zero-padded
        m, n, d = self.designs.shape
        self.samples = self.designs.reshape(m * n, d)
        self.targets = np.asarray(problem.targets, dtype=np.float64)
        self.inv_n = 1.0 / np.asarray(problem.counts, dtype=np.float64)
        self.l2 = float(problem.l2)
        self.shape = (m, d)
        self.shift = float(np.min(problem.offsets))
        self.nfev = 0
        self.passes = 0

    def _rows(self, residuals: Float) -> Float:
        """``X_i' r_i / n_i`` for every task: a batched product, ``(M, d)``."""
        out: Float = np.matmul(residuals[:, None, :], self.designs)[:, 0, :]
        out *= self.inv_n[:, None]
        return out

    def __call__(self, x: Float) -> tuple[Float, Float]:
        self.nfev += 1
        m = self.shape[0]
        resid = (self.samples @ x).reshape(m, -1) - self.targets  # padding rows stay 0
        sq = 0.5 * float(x @ x) * self.l2
        values: Float = 0.5 * np.einsum("mn,mn->m", resid, resid) * self.inv_n + (sq - self.shift)
        jac = self._rows(resid)
        if self.l2:
            jac += self.l2 * x
        return values, jac

    def weighted_hessian(self, x: Float, weights: Float) -> Float:
        self.passes += 1
        n = self.targets.shape[1]
        scale = np.repeat(weights * self.inv_n, n)
        out: Float = self.samples.T @ (self.samples * scale[:, None])
        if self.l2:
            out.flat[:: self.shape[1] + 1] += self.l2 * float(weights.sum())
        return out

    def step_products(self, direction: Float, weight_change: Float) -> tuple[Float, Float | None]:
        self.passes += 1
        m = self.shape[0]
        prod = self._rows((self.samples @ direction).reshape(m, -1))
        if self.l2:
            prod += self.l2 * direction
        return prod, None  # the next weighted Hessian is formed afresh

    def floor(self, values: Float, jac: Float) -> float:
        return 0.0  # the offsets b_i = L_i(c_i) are the minima


class _HessianModel(Oracle):
    """Smooth tasks with ``hessians(x)``: steps are checked by evaluating the losses."""

    exact_steps = False
    quadratic = False
    shift = 0.0

    def __init__(self, problem: Any, mu: float) -> None:
        super().__init__(problem)
        self.passes = 0
        self.mu = mu

    def weighted_hessian(self, x: Float, weights: Float) -> Float:
        self.passes += 1
        hess = np.asarray(self.problem.hessians(x), dtype=np.float64)
        m, d = self.problem.num_tasks, self.problem.dim
        if hess.shape != (m, d, d):
            raise ValueError(
                f"problem.hessians(x) must return shape (num_tasks, dim, dim) = ({m}, {d}, {d}),"
                f" got {hess.shape}"
            )
        out: Float = np.einsum("m,mij->ij", weights, hess)
        return 0.5 * (out + out.T)

    def step_products(  # pragma: no cover - never called
        self, direction: Float, weight_change: Float
    ) -> tuple[Float, Float | None]:
        raise NotImplementedError("steps of non-quadratic tasks are checked by evaluation")

    def floor(self, values: Float, jac: Float) -> float:
        return _strong_convexity_floor(values, jac, self.mu)


def _strong_convexity_floor(values: Float, jac: Float, mu: float) -> float:
    """``min_i (L_i(x) - ||grad L_i(x)||^2 / (2 mu)) <= min_i inf_y L_i(y)`` (``-inf`` if
    ``mu = 0``): the constant part every task shares, bounded below."""
    if mu <= 0:
        return -math.inf
    return float(np.min(values - np.einsum("mi,mi->m", jac, jac) / (2.0 * mu)))


def _model(problem: Any, mu: float) -> _Model:
    from .problems import LeastSquaresTasks

    if isinstance(problem, LeastSquaresTasks) and hasattr(problem, "designs"):
        return _LeastSquaresModel(problem)
    if is_quadratic(problem):
        return _QuadraticModel(problem)
    return _HessianModel(problem, mu)


def is_quadratic(problem: Any) -> bool:
    from .problems import QuadraticTasks

    return isinstance(problem, QuadraticTasks)


def choose_algorithm(problem: Any) -> str:
    """``"interior_point"`` when Hessians are available (quadratic tasks or a
    ``hessians(x)`` method), else ``"gradient_mapping"``."""
    if is_quadratic(problem) or callable(getattr(problem, "hessians", None)):
        return "interior_point"
    return "gradient_mapping"


# --------------------------------------------------------------------------- bookkeeping


class _Trace:
    """History per iteration, the best point and its certificate, the stall test."""

    def __init__(self, callback: Callback | None) -> None:
        self.callback = callback
        self.steps: list[int] = []
        self.funs: list[float] = []
        self.certs: list[float] = []
        self.nfevs: list[int] = []
        self.best_cert = math.inf
        self.anchor = math.inf  # the certificate at the last 10% improvement
        self.last_improvement = 0

    def record(self, step: int, x: Float, fun: float, cert: float, nfev: int) -> bool:
        """Record one iterate; ``True`` when the callback asks to stop."""
        self.nfevs.append(nfev)
        self.steps.append(step)
        self.funs.append(fun)
        self.certs.append(cert)
        self.best_cert = min(self.best_cert, cert)
        if cert < 0.9 * self.anchor:
            self.anchor = cert
            self.last_improvement = step
        return bool(self.callback is not None and self.callback(step, x, fun))

    def stalled(self, step: int, window: int = _STALL_WINDOW) -> bool:
        return step - self.last_improvement >= window

    def history(self) -> dict[str, Float]:
        return {
            "step": np.asarray(self.steps, dtype=np.int64),
            "fun": np.asarray(self.funs, dtype=np.float64),
            "certificate": np.asarray(self.certs, dtype=np.float64),
            "nfev": np.asarray(self.nfevs, dtype=np.int64),
        }


_MESSAGES = {
    CONVERGED: "converged: certificate <= tol * min(|F(x)|, F(x) - c) + atol",
    BUDGET: "iteration budget reached before the certificate met the tolerance",
    CALLBACK: "stopped by the callback",
    NON_FINITE: "diverged: non-finite losses or gradients",
    STALLED: "stalled: the certificate stopped improving before the tolerance "
    "(the limit of floating-point accuracy for this problem, or tol too small)",
    NO_CERTIFICATE: "the optimality conditions hold to tol (estimated gap from the local "
    "model), but without a certificate",
}


def _prune(weights: Float, slacks: Float) -> Float:
    """Weights with the negligible multipliers set to 0 (renormalised): a task is kept
    when its weight is not tiny next to the largest one (the slack decides ties of scale)."""
    top = float(weights.max())
    keep = weights > 1e-9 * top
    keep &= ~((weights < 1e-6 * top) & (slacks > 1e3 * float(slacks.min())))
    if not np.any(keep):
        return weights
    out = np.where(keep, weights, 0.0)
    pruned: Float = out / out.sum()
    return pruned


_NO_CERTIFICATE_NOTE = (
    "no certificate: the tasks' strong convexity mu is unknown (pass mu=... or give the "
    "problem a mu attribute), so F(x) - F* cannot be bounded"
)


def _solution(
    algorithm: str,
    status: int,
    x: Float,
    fun: float,
    weights: Float,
    lower: float,
    nit: int,
    nfev: int,
    trace: _Trace,
    *,
    certified: bool,
    info: dict[str, Any],
    certificate: float | None = None,
) -> ExactSolution:
    """The :class:`ExactSolution` of either algorithm; the message says why there is no
    certificate when the problem cannot give one (``mu`` unknown, tasks not quadratic)."""
    message = _MESSAGES[status]
    if not certified and status != CONVERGED:
        message = f"{message}; {_NO_CERTIFICATE_NOTE}"
    return ExactSolution(
        x=x,
        fun=fun,
        weights=weights,
        lower_bound=lower,
        certificate=fun - lower if certificate is None else certificate,
        nit=nit,
        nfev=nfev,
        status=status,
        message=message,
        algorithm=algorithm,
        history=trace.history(),
        info=info,
    )


# --------------------------------------------------------------------------- interior point


_GEMV = scipy.linalg.blas.get_blas_funcs("gemv", (np.empty(1),))
_POTRF, _POTRS = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potrs"), (np.empty(1),))


def _max_step(lam: Float, dlam: Float, slack: Float, ds: Float, fraction: float) -> float:
    """Largest ``a <= 1`` with ``lam + a dlam >= (1 - fraction) lam`` and the same for the
    slacks (both positive)."""
    worst = float(np.minimum(dlam / lam, ds / slack).min())
    return 1.0 if worst >= -fraction else fraction / -worst


def _newton_matrix(hess: Float, jac: Float, scaling: Float) -> Float:
    """``[[H + G'DG, -G'D1], [-1'DG, 1'D1]]`` for ``D = diag(scaling)``."""
    d = jac.shape[1]
    k = np.empty((d + 1, d + 1))
    scaled = jac * scaling[:, None]
    k[:d, :d] = jac.T @ scaled + hess  # one temporary: a product into a strided block copies
    col = -scaled.sum(axis=0)
    k[:d, d] = col
    k[d, :d] = col
    k[d, d] = float(scaling.sum())
    return k


def _factor(matrix: Float) -> tuple[Float, float]:
    """Cholesky factor (LAPACK ``potrf``, upper) of ``matrix``, with a diagonal shift added
    if it is not positive definite."""
    shift = 0.0
    for _ in range(30):
        shifted = matrix if shift == 0.0 else matrix + shift * np.eye(matrix.shape[0])
        factor, info = _POTRF(shifted, lower=0, clean=0, overwrite_a=0)
        # a NaN or Inf anywhere reaches the last pivot through the elimination
        if info == 0 and math.isfinite(factor[-1, -1]):
            return factor, shift
        scale = max(float(np.max(np.abs(np.diagonal(matrix)))), 1e-300)
        shift = max(shift * 100.0, 1e-14 * scale)
    raise np.linalg.LinAlgError("the Newton matrix is not positive definite even shifted")


def _target(fun: float, x_part: float, tol: float, atol: float) -> float:
    """What a certificate must reach: ``tol * min(|F(x)|, F(x) - c) + atol``.

    ``c <= min_i inf_y L_i(y)`` is a constant every task lies above (quadratic tasks: the
    smallest offset), so ``F(x) - c >= 0`` is the part of ``F`` that depends on ``x``: a
    common offset (``b_i + 1e8``) does not loosen the tolerance. ``F`` itself is resolved
    only to its floating-point spacing, so a certificate within ``2 eps |F(x)|`` also
    counts (the case ``F* = c``, e.g. one task); never looser than ``tol |F(x)| + atol``.
    ``x_part = inf`` when no ``c`` is known.
    """
    rel = tol * abs(fun)
    if math.isfinite(x_part):
        rel = min(rel, tol * max(x_part, 0.0) + _RESOLUTION * abs(fun))
    return rel + atol


_RESOLUTION = 2.0 * float(np.finfo(np.float64).eps)


def _finite(*arrays: Float) -> bool:
    """Every entry finite (:func:`all_finite` without the per-call overhead)."""
    return all(np.isfinite(a).all() for a in arrays)


def interior_point(
    problem: Any,
    x0: Float,
    *,
    mu: float = 0.0,
    tol: float = 1e-10,
    atol: float = 0.0,
    max_iter: int = 200,
    callback: Callback | None = None,
    weights0: Float | None = None,
) -> ExactSolution:
    """Primal-dual interior-point method (Mehrotra) on ``min t  s.t.  L_i(x) <= t``.

    ``problem``: :class:`~minimax_core.problems.QuadraticTasks` (exact steps; least-squares
    tasks from their samples) or any task set with ``hessians(x)``. ``mu``: strong
    convexity of every task (0 if unknown: quadratic tasks then use the exact quadratic
    bound). See the module docstring for the method and the certificate. Internally the
    losses are measured from the constant ``model.shift`` (no digits lost to a large
    common offset); ``fun`` and ``lower_bound`` are reported in the problem's units.

    Start: ``lam = 1/M`` and ``t = F(x0) + theta`` with ``theta = 0.1 max(F(x0) - min_i
    L_i(x0), 1e-2 |F(x0)|)`` (measured: a tenth of the spread takes fewer iterations than
    the whole spread at every size tried, e.g. 7 -> 6 at (M, d) = (10, 50), 37 -> 27 at
    (1000, 50)). Warm start (a sequence of related problems): ``x0`` and ``weights0`` from
    the previous solution; the multipliers start at ``0.9 weights0 + 0.1 / M`` (every task
    keeps a positive multiplier) and ``theta`` is ten times smaller again.
    """
    model = _model(problem, mu)
    x = np.array(x0, dtype=np.float64)
    values, jac = model(x)
    check_first_outputs(problem, values, jac)
    shift = model.shift
    m, d = jac.shape
    fun = float(values.max())
    theta = max(_START_GAP * max(fun - float(values.min()), 1e-2 * abs(fun)), 1e-12)
    if weights0 is None:
        lam = np.full(m, 1.0 / m)
    else:
        lam = (1.0 - _WARM_UNIFORM) * check_weights(weights0, m) + _WARM_UNIFORM / m
        theta *= _WARM_GAP
    t = fun + theta
    slack = t - values
    trace = _Trace(callback)
    status, it, fresh = BUDGET, 0, True
    weights, lower, shift_k, floor = lam.copy(), -math.inf, 0.0, -math.inf
    hess: Float | None = None
    hess_exact = False  # hess == sum_i lam_i A_i computed afresh (not by updates)
    rhs = np.empty(d + 1)
    for it in range(max_iter + 1):
        if hess is None:
            hess, hess_exact = model.weighted_hessian(x, lam), True
        total = float(lam.sum())
        weights = lam / total
        fun = float(values.max())
        floor = max(floor, model.floor(values, jac))
        target = _target(fun + shift, fun - floor, tol, atol)
        exact_hessian = _exact_hessian(model, x, weights, (hess, total) if hess_exact else None)
        lower = _lower_bound(values, jac, weights, mu, exact_hessian, target)
        if fun - lower <= target and not fresh:
            values, jac = model(x)  # drop the round-off of the incremental updates
            fresh = True
            if not _finite(values, jac):
                status = NON_FINITE
                break
            fun = float(values.max())
            target = _target(fun + shift, fun - floor, tol, atol)
            lower = _lower_bound(values, jac, weights, mu, exact_hessian, target)
        measure = fun - lower
        if lower == -math.inf:  # no mu: the local quadratic model's estimate of the gap
            measure = fun - quadratic_lower_bound(values, jac, weights, hess / total)
        if trace.record(it, x, fun + shift, measure, model.nfev):
            status = CALLBACK
            break
        if fun - lower <= target:
            status = CONVERGED
            break
        if measure <= target:
            status = NO_CERTIFICATE
            break
        if it == max_iter:
            break
        if trace.stalled(it):
            status = STALLED
            break
        # ---- Newton system (predictor, then corrector with the same factorisation)
        scaling = lam / slack
        try:
            factor, shift_k = _factor(_newton_matrix(hess, jac, scaling))
        except np.linalg.LinAlgError:
            status = STALLED
            break
        grad_x = lam @ jac
        neg_grad_x = -grad_x
        grad_t = 1.0 - total
        products = lam * slack
        duality = float(products.sum()) / m

        def solve(r: Float) -> tuple[Float, float, Float, Float, Float]:
            """Newton step with ``lam ds + s dlam = r`` (``r``: the centrality residual);
            the linearised constraint gives ``ds = dt - G dx`` and then ``dlam``."""
            ratio = r / slack  # noqa: B023
            np.subtract(neg_grad_x, ratio @ jac, out=rhs[:d])  # noqa: B023
            rhs[d] = float(ratio.sum()) - grad_t  # noqa: B023
            dz, _ = _POTRS(factor, rhs, lower=0)  # noqa: B023
            dx, dt = dz[:d], float(dz[d])
            jdx = jac @ dx  # noqa: B023
            ds = dt - jdx
            dlam = ratio - scaling * ds  # noqa: B023
            return dx, dt, ds, dlam, jdx

        _, _, ds_aff, dlam_aff, _ = solve(-products)
        a_aff = _max_step(lam, dlam_aff, slack, ds_aff, 1.0)
        duality_aff = float((lam + a_aff * dlam_aff) @ (slack + a_aff * ds_aff)) / m
        sigma = min(1.0, (duality_aff / duality) ** 3) if duality > 0 else 0.0
        centre = sigma * duality
        feasibility = values - t + slack  # 0 up to round-off (t is restored every step)
        centrality = products - centre
        pp = feasibility @ feasibility
        merit = float(grad_x @ grad_x + grad_t * grad_t + pp + centrality @ centrality)
        correction = dlam_aff * ds_aff
        gamma = _corrector_share(merit, float(pp), centrality, correction)
        dx, dt, ds, dlam, jdx = solve(
            -centrality - (correction if gamma == 1.0 else gamma * correction)
        )
        alpha = _max_step(lam, dlam, slack, ds, _FRACTION)
        change: Float | None = None
        accepted = False
        if model.exact_steps:  # quadratic tasks: exact values and gradients along dx
            prod, change = model.step_products(dx, dlam)
            curv = prod @ dx  # dx' A_i dx
            # residuals along the step as polynomials in a: stationarity lam(a)' G(a)
            # (four products), feasibility (feasibility + a^2 curv / 2; the linear term
            # vanishes by the Newton equations), the t part and centrality
            djlp, dp = dlam @ jac + lam @ prod, dlam @ prod
            pc, cc = feasibility @ curv, curv @ curv
            sum_dlam = float(dlam.sum())
            for _ in range(_MERIT_HALVINGS):
                half_sq = 0.5 * alpha * alpha
                r_x = grad_x + alpha * djlp + (alpha * alpha) * dp
                r_t = grad_t - alpha * sum_dlam
                r_c = (lam + alpha * dlam) * (slack + alpha * ds) - centre
                new_merit = float(
                    r_x @ r_x + r_t * r_t + pp + 2 * half_sq * pc + half_sq * half_sq * cc
                ) + float(r_c @ r_c)
                if math.isfinite(new_merit) and new_merit <= (1.0 - 1e-4 * alpha) * merit:
                    accepted = True
                    break
                alpha *= 0.5
            half_sq = 0.5 * alpha * alpha
            values = values + alpha * jdx + half_sq * curv
            jac = jac + alpha * prod
        else:
            for _ in range(_MERIT_HALVINGS):
                trial_values, trial_jac = model(x + alpha * dx)
                lam_new = lam + alpha * dlam
                new_merit = _merit(
                    lam_new @ trial_jac,
                    1.0 - float(lam_new.sum()),
                    trial_values - (t + alpha * dt) + (slack + alpha * ds),
                    lam_new * (slack + alpha * ds) - centre,
                )
                if _finite(trial_values, trial_jac) and new_merit <= (1.0 - 1e-4 * alpha) * merit:
                    accepted = True
                    break
                alpha *= 0.5
            values, jac = trial_values, trial_jac
        fresh = not model.exact_steps
        # an accepted step has a finite merit: with lam > 0 every value and gradient is finite
        if not accepted and not _finite(values, jac):
            status = NON_FINITE
            break
        x = x + alpha * dx
        t = t + alpha * dt
        slack = np.maximum(slack + alpha * ds, 1e-300)
        lam = np.maximum(lam + alpha * dlam, 1e-300)
        # restore L(x) - t + s = 0 by raising t (the slacks only grow): the step's
        # curvature term dx' A_i dx / 2 would otherwise linger as infeasibility
        t = max(t, float((values + slack).max()))
        slack = t - values
        if change is not None:  # sum_i lam_i A_i is linear in lam: one update, no pass
            hess, hess_exact = hess + alpha * change, False
        else:
            hess = None
    if not fresh and status != NON_FINITE:
        values, jac = model(x)
        fun = float(values.max())
        weights = lam / float(lam.sum())
        floor = max(floor, model.floor(values, jac))
        lower = _lower_bound(values, jac, weights, mu, _exact_hessian(model, x, weights, None))
    weights, lower = _pruned_certificate(
        model, x, values, jac, weights, lower, fun - values, mu, floor, shift, tol, atol
    )
    if trace.steps and trace.steps[-1] == it and math.isfinite(lower):
        trace.certs[-1] = fun - lower  # the history ends with the returned certificate
    return _solution(
        "interior_point",
        status,
        x,
        fun + shift,
        weights,
        lower + shift,
        it,
        model.nfev,
        trace,
        certified=mu > 0 or model.quadratic,
        certificate=fun - lower,
        info={"hessian_passes": model.passes, "regularisation": shift_k},
    )


def _exact_hessian(
    model: _Model, x: Float, weights: Float, current: tuple[Float, float] | None
) -> Callable[[], Float] | None:
    """``sum_i w_i A_i`` for the exact quadratic bound (``None`` for non-quadratic tasks):
    ``hess / total`` from ``current = (hess, total)`` when ``hess = sum_i lam_i A_i`` was
    computed afresh, else one more pass; either only when the bound asks for it."""
    if not model.quadratic:
        return None
    if current is not None:
        hess, total = current
        return lambda: hess / total
    return lambda: model.weighted_hessian(x, weights)


def _pruned_certificate(
    model: _Model,
    x: Float,
    values: Float,
    jac: Float,
    weights: Float,
    lower: float,
    slack: Float,
    mu: float,
    floor: float,
    shift: float,
    tol: float,
    atol: float,
) -> tuple[Float, float]:
    """Zero the negligible multipliers if the pruned weights still certify ``tol``."""
    pruned = _prune(weights, np.maximum(slack, 0.0))
    if np.array_equal(pruned > 0, weights > 0):
        return weights, lower
    fun = float(np.max(values))
    goal = max(_target(fun + shift, fun - floor, tol, atol), fun - lower)
    pruned_lower = _lower_bound(
        values, jac, pruned, mu, _exact_hessian(model, x, pruned, None), goal
    )
    if fun - pruned_lower <= goal:
        return pruned, pruned_lower
    return weights, lower


def _corrector_share(merit: float, feasible: float, centrality: Float, correction: Float) -> float:
    """How much of Mehrotra's corrector the step keeps (``gamma`` in ``[0, 1]``).

    The Newton step for the centrality residual ``r_c = lam s - centre`` with the
    second-order term ``gamma c`` (``c = dlam_aff ds_aff``) changes ``r_c`` to first order
    by ``-r_c - gamma c`` and the stationarity residuals by minus themselves; the
    constraint part (``feasible``, its square) has no linear change. So the merit's slope
    at ``a = 0`` is ``-2 (merit - feasible) - 2 gamma r_c' c``. With many more tasks than
    dimensions (``M >> d``: most multipliers are on their way to 0) the full correction can
    cancel the whole descent, ``r_c' c ~ -(merit - feasible)``, and the backtracking then
    accepts only vanishing steps (the certificate stalls, status 4). ``gamma`` is the
    largest share that keeps at least half the pure Newton step's slope
    ``-2 (merit - feasible)``; 1 (the full corrector) whenever that holds already.
    """
    cross = float(centrality @ correction)
    budget = 0.5 * (merit - feasible)
    if cross >= -budget:
        return 1.0
    return budget / -cross


def _merit(r_x: Float, r_t: float, r_p: Float, r_c: Float) -> float:
    """Squared KKT residual of the barrier problem from its parts: stationarity in ``x``
    (``sum_i lam_i grad L_i``) and ``t`` (``1 - sum_i lam_i``), the constraints
    ``L(x) - t + s = 0`` and centrality ``lam * s - centre``."""
    return float(r_x @ r_x + r_t * r_t + r_p @ r_p + r_c @ r_c)


# --------------------------------------------------------------------------- gradient mapping


def _secant_smoothness(evaluate: Oracle, x: Float, jac: Float) -> float:
    """``max_i ||grad L_i(x') - grad L_i(x)|| / ||x' - x||`` along a short step of the
    mean gradient: a starting guess that backtracking corrects upwards."""
    direction = jac.mean(axis=0)
    norm = float(np.linalg.norm(direction))
    if norm == 0.0:
        direction, norm = np.ones_like(x), math.sqrt(x.size)
    h = 1e-4 * max(1.0, float(np.linalg.norm(x))) / norm
    _, jac2 = evaluate(x - h * direction)
    change = float(np.max(np.linalg.norm(jac2 - jac, axis=1))) / (h * norm)
    return max(change, 1e-12)


def gradient_mapping(
    problem: Any,
    x0: Float,
    *,
    mu: float = 0.0,
    smoothness: float | None = None,
    tol: float = 1e-10,
    atol: float = 0.0,
    max_iter: int = 2000,
    callback: Callback | None = None,
    weights0: Float | None = None,
) -> ExactSolution:
    """Nesterov's accelerated gradient method for max-type functions, with restart.

    ``smoothness`` (every task ``L``-smooth) fixes the step; without it ``L`` starts from a
    secant estimate and doubles whenever the upper model fails at the new point (one more
    evaluation per step). ``mu > 0`` gives the momentum ``(sqrt L - sqrt mu)/(sqrt L +
    sqrt mu)`` and the certificate; with ``mu = 0`` there is no certificate and the
    result cannot succeed. ``weights0`` (a previous solution's weights) warm-starts the
    first simplex QP.
    """
    evaluate = Oracle(problem)
    x = np.array(x0, dtype=np.float64)
    values, jac = evaluate(x)
    check_first_outputs(problem, values, jac)
    adaptive = smoothness is None
    lip = _secant_smoothness(evaluate, x, jac) if smoothness is None else float(smoothness)
    trace = _Trace(callback)
    y, x_prev = x.copy(), x.copy()
    best_x, best_fun = x.copy(), float(np.max(values))
    lower, best_weights = -math.inf, np.full(values.shape[0], 1.0 / values.shape[0])
    w: Float | None = None if weights0 is None else check_weights(weights0, values.shape[0])
    momentum, status, it, backtracks = 1.0, BUDGET, 0, 0
    floor = -math.inf
    for it in range(max_iter + 1):
        fun_y = float(np.max(values))
        floor = max(floor, _strong_convexity_floor(values, jac, mu))
        if fun_y < best_fun:
            best_x, best_fun = y.copy(), fun_y
        gram = jac @ jac.T
        while True:
            qp = solve_simplex_qp(gram / lip, values, warm_start=w)
            w = qp.weights
            move = w @ jac  # L (y - x+)
            x_new = y - move / lip
            if not adaptive:
                break
            new_values, new_jac = evaluate(x_new)
            step = x_new - y
            model = values + jac @ step + 0.5 * lip * float(step @ step)
            slack = 1e-12 * max(1.0, float(np.max(np.abs(values))))
            if all_finite(new_values, new_jac) and np.all(new_values <= model + slack):
                break
            lip *= 2.0
            backtracks += 1
        if mu > 0:
            bound = float(w @ values - (move @ move) / (2.0 * mu))
            if bound > lower:
                lower, best_weights = bound, w.copy()
        else:
            best_weights = w.copy()
        if adaptive and float(np.max(new_values)) < best_fun:
            best_x, best_fun = x_new.copy(), float(np.max(new_values))
        # without mu: the decrease promised by the model, F(y) - min model (0 iff optimal)
        measure = best_fun - lower if mu > 0 else fun_y - qp_model_value(w, values, move, lip)
        if trace.record(it, y, fun_y, measure, evaluate.nfev):
            status = CALLBACK
            break
        if best_fun - lower <= _target(best_fun, best_fun - floor, tol, atol):
            status = CONVERGED
            break
        if mu <= 0 and measure <= _target(fun_y, math.inf, tol, atol):
            status = NO_CERTIFICATE
            break
        if it == max_iter:
            break
        # linear rate 1 - sqrt(mu/L): a 10% gain may take about sqrt(L/mu)/10 steps
        window = 200 if mu <= 0 else max(_STALL_WINDOW, 10 * math.ceil(math.sqrt(lip / mu)))
        if trace.stalled(it, window):
            status = STALLED
            break
        if float((y - x_new) @ (x_new - x_prev)) > 0:  # gradient restart
            y, momentum = x_new, 1.0
        else:
            if mu > 0:
                root_l, root_mu = math.sqrt(lip), math.sqrt(mu)
                beta = (root_l - root_mu) / (root_l + root_mu)
            else:
                nxt = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * momentum * momentum))
                beta, momentum = (momentum - 1.0) / nxt, nxt
            y = x_new + beta * (x_new - x_prev)
        x_prev = x_new
        if adaptive and y is x_new:
            values, jac = new_values, new_jac
        else:
            values, jac = evaluate(y)
        if not all_finite(values, jac):
            status = NON_FINITE
            break
    return _solution(
        "gradient_mapping",
        status,
        best_x,
        best_fun,
        best_weights,
        lower,
        it,
        evaluate.nfev,
        trace,
        certified=mu > 0,
        info={"smoothness": lip, "backtracks": backtracks},
    )


# --------------------------------------------------------------------------- dispatch


def solve(
    problem: Any,
    x0: Float,
    *,
    algorithm: str | None = None,
    mu: float | None = None,
    smoothness: float | None = None,
    tol: float = 1e-10,
    atol: float = 0.0,
    max_iter: int | None = None,
    callback: Callback | None = None,
    weights0: Float | None = None,
) -> ExactSolution:
    """Solve ``min_x max_i L_i(x)`` to the relative accuracy ``tol`` with a certificate.

    ``algorithm``: ``"interior_point"``, ``"gradient_mapping"`` or ``None`` (by
    :func:`choose_algorithm`). ``mu``/``smoothness`` default to the problem's attributes.
    ``x0`` and ``weights0`` (``res.x`` and ``res.weights`` of a related problem) warm-start
    a sequence of related problems (see :func:`interior_point`).
    """
    if algorithm is None:
        algorithm = choose_algorithm(problem)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS} or None, got {algorithm!r}")
    if mu is None:
        mu = float(getattr(problem, "mu", 0.0) or 0.0)
    if smoothness is None:
        value = getattr(problem, "smoothness", None)
        smoothness = None if value is None else float(value)
    x0 = np.asarray(x0, dtype=np.float64)
    if algorithm == "interior_point":
        if choose_algorithm(problem) != "interior_point":
            raise ValueError(
                "algorithm='interior_point' needs quadratic tasks or problem.hessians(x)"
            )
        return interior_point(
            problem,
            x0,
            mu=mu,
            tol=tol,
            atol=atol,
            max_iter=200 if max_iter is None else max_iter,
            callback=callback,
            weights0=weights0,
        )
    return gradient_mapping(
        problem,
        x0,
        mu=mu,
        smoothness=smoothness,
        tol=tol,
        atol=atol,
        max_iter=5000 if max_iter is None else max_iter,
        callback=callback,
        weights0=weights0,
    )
