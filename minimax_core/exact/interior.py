"""The primal-dual interior-point method of ``method="auto"`` (``"interior_point"``: tasks
with Hessians, :class:`~minimax_core.problems.QuadraticTasks` or any problem with
``hessians(x) -> (M, d, d)``).

A primal-dual interior-point method on the epigraph form ``min t  s.t.  L_i(x) <= t``
with Mehrotra's predictor-corrector. Slacks ``s = t - L(x) > 0`` and multipliers
``lam > 0``; the Newton system for stationarity (``sum_i lam_i grad L_i = 0``,
``sum_i lam_i = 1``) and centrality ``lam * s = sigma mu_c``, with ``ds = dt - G dx``
and ``dlam`` eliminated, is the ``(d+1) x (d+1)`` positive-definite system

``[[H + G' D G, -G' D 1], [-1' D G, 1' D 1]] [dx; dt] = rhs``,
``H = sum_i lam_i hess L_i``, ``D = diag(lam / s)``, ``G`` the Jacobian,

solved by one Cholesky factorisation (two solves: predictor and corrector; the
corrector is scaled down where it would cancel the merit's descent, which happens with
many more tasks than dimensions: :func:`corrector_share`). The step
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

Certificates: :mod:`minimax_core.exact.certificate`; the tasks' products:
:mod:`minimax_core.exact.models`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from .._common import check_first_outputs
from ..result import Result, Status
from .certificate import (
    accuracy_target,
    hessian_source,
    lower_bound,
    pruned_certificate,
    quadratic_lower_bound,
)
from .models import task_model
from .progress import Callback, Progress, check_weights, finish

__all__ = ["corrector_share", "interior_point"]

Float = NDArray[np.float64]

_FRACTION = 0.995  # fraction to the boundary kept by interior-point steps
_MERIT_HALVINGS = 40  # backtracking steps on the KKT residual
_START_GAP = 0.1  # initial epigraph gap t - F(x0) over the spread of the losses (see below)
_WARM_UNIFORM = 0.1  # share of the uniform weights in warm-started multipliers
_WARM_GAP = 0.1  # warm start: the initial epigraph gap t - F(x0) is this fraction of the cold one

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
    steps: int = 200,
    callback: Callback | None = None,
    weights0: Float | None = None,
) -> Result:
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
    model = task_model(problem, mu)
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
    progress = Progress(callback)
    status, it, fresh = Status.BUDGET, 0, True
    weights, lower, shift_k, floor = lam.copy(), -math.inf, 0.0, -math.inf
    hess: Float | None = None
    hess_exact = False  # hess == sum_i lam_i A_i computed afresh (not by updates)
    rhs = np.empty(d + 1)
    for it in range(steps + 1):
        if hess is None:
            hess, hess_exact = model.weighted_hessian(x, lam), True
        total = float(lam.sum())
        weights = lam / total
        fun = float(values.max())
        floor = max(floor, model.floor(values, jac))
        target = accuracy_target(fun + shift, fun - floor, tol, atol)
        exact_hessian = hessian_source(model, x, weights, (hess, total) if hess_exact else None)
        lower = lower_bound(values, jac, weights, mu, exact_hessian, target)
        if fun - lower <= target and not fresh:
            values, jac = model(x)  # drop the round-off of the incremental updates
            fresh = True
            if not _finite(values, jac):
                status = Status.NON_FINITE
                break
            fun = float(values.max())
            target = accuracy_target(fun + shift, fun - floor, tol, atol)
            lower = lower_bound(values, jac, weights, mu, exact_hessian, target)
        measure = fun - lower
        if lower == -math.inf:  # no mu: the local quadratic model's estimate of the gap
            measure = fun - quadratic_lower_bound(values, jac, weights, hess / total)
        if progress.record(it, x, fun + shift, measure, model.nfev):
            status = Status.CALLBACK
            break
        if fun - lower <= target:
            status = Status.CONVERGED
            break
        if measure <= target:
            status = Status.NO_CERTIFICATE
            break
        if it == steps:
            break
        if progress.stalled(it):
            status = Status.STALLED
            break
        # ---- Newton system (predictor, then corrector with the same factorisation)
        scaling = lam / slack
        try:
            factor, shift_k = _factor(_newton_matrix(hess, jac, scaling))
        except np.linalg.LinAlgError:
            status = Status.STALLED
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
        gamma = corrector_share(merit, float(pp), centrality, correction)
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
            status = Status.NON_FINITE
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
    if not fresh and status != Status.NON_FINITE:
        values, jac = model(x)
        fun = float(values.max())
        weights = lam / float(lam.sum())
        floor = max(floor, model.floor(values, jac))
        lower = lower_bound(values, jac, weights, mu, hessian_source(model, x, weights, None))
    weights, lower = pruned_certificate(
        model, x, values, jac, weights, lower, fun - values, mu, floor, shift, tol, atol
    )
    if math.isfinite(lower):
        progress.end_with(it, fun - lower)  # the history ends with the returned certificate
    return finish(
        "interior_point",
        status,
        x,
        fun + shift,
        weights,
        lower + shift,
        it,
        model.nfev,
        progress,
        certified=mu > 0 or model.quadratic,
        certificate=fun - lower,
        info={"hessian_passes": model.passes, "regularisation": shift_k},
    )


def corrector_share(merit: float, feasible: float, centrality: Float, correction: Float) -> float:
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
