"""Task sets ``L_1..L_M: R^d -> R`` with known constants.

Any object with ``num_tasks``, ``dim``, ``losses(x) -> (M,)`` and ``jacobian(x) -> (M, d)``
is a problem (see :class:`TaskSet`); the solvers accept user problems. The families here
also know their constants and can sample minibatch estimates for the stochastic setting:

- ``mu``: every ``L_i`` is ``mu``-strongly convex (``mu = min_i lambda_min(hess L_i)``);
- ``smoothness``: every ``L_i`` is ``smoothness``-smooth (``max_i lambda_max``);
- ``lipschitz(center, radius)``: a bound ``G >= ||grad L_i(x)||`` for all i on the ball
  ``||x - center|| <= radius``;
- ``sample(x, batch_size, rng)``: unbiased minibatch estimates of ``losses`` and ``jacobian``;
- ``hessians(x) -> (M, d, d)`` and ``cvxpy_losses(cp, x)`` (used by the CVXPY reference).

Families: :class:`QuadraticTasks` (and :func:`random_quadratic`), :class:`LeastSquaresTasks`
built from samples (and the population model :class:`RegressionFamily` that generates
them), and :class:`LogisticTasks` (L2-regularised logistic regression on samples). Section
5's regression families: i.i.d. task deviations (:func:`regression_family`), a cluster
with outlier tasks (:func:`outlier_family`) and heterogeneous noise and curvature
(:func:`heterogeneous_family`); downstream tasks are mixtures of them
(:func:`downstream_tasks`, :func:`sample_mixtures`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .validation import check_int, check_real, check_seed

__all__ = [
    "LeastSquaresTasks",
    "LogisticTasks",
    "QuadraticTasks",
    "RegressionFamily",
    "TaskSet",
    "check_problem",
    "downstream_tasks",
    "generic_lipschitz",
    "heterogeneous_family",
    "lipschitz_bound",
    "logistic_tasks",
    "outlier_family",
    "random_mixtures",
    "random_quadratic",
    "regression_family",
    "sample_mixture",
    "sample_mixtures",
]

Float = NDArray[np.float64]


@runtime_checkable
class TaskSet(Protocol):
    """What every solver needs: ``M`` tasks on ``R^d`` with losses and gradients."""

    @property
    def num_tasks(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def losses(self, x: Float) -> Float: ...

    def jacobian(self, x: Float) -> Float: ...


def check_problem(problem: Any) -> None:
    """Raise ``TypeError`` naming what a problem object lacks."""
    for name in ("num_tasks", "dim"):
        value = getattr(problem, name, None)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise TypeError(
                f"problem.{name} must be an integer >= 1, got {value!r} "
                f"(a problem needs num_tasks, dim, losses(x) and jacobian(x))"
            )
    for name in ("losses", "jacobian"):
        if not callable(getattr(problem, name, None)):
            raise TypeError(
                f"problem has no method {name}(x); a problem needs num_tasks, dim, "
                "losses(x) -> (M,) and jacobian(x) -> (M, d)"
            )


def _float_array(name: str, value: ArrayLike, ndim: int) -> Float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or Inf)")
    return arr


def generic_lipschitz(
    problem: Any, center: Float, radius: float, smoothness: float | None = None
) -> float:
    """``max_i ||grad L_i(center)|| + smoothness * radius`` (``smoothness`` defaults to
    ``problem.smoothness``).

    Valid for any ``smoothness``-smooth tasks: ``||grad L_i(x)|| <= ||grad L_i(c)|| +
    smoothness ||x - c||`` on the ball ``||x - c|| <= radius``. The families use it inside
    their own ``lipschitz``; callers want :func:`lipschitz_bound`, which prefers those.
    """
    smooth = problem.smoothness if smoothness is None else smoothness
    g = problem.jacobian(np.asarray(center, dtype=np.float64))
    return float(np.max(np.linalg.norm(g, axis=1)) + smooth * radius)


def lipschitz_bound(
    problem: Any, center: Float, radius: float, *, smoothness: float | None = None
) -> float:
    """``G >= max_i ||grad L_i(x)||`` on the ball ``||x - center|| <= radius``: the problem's
    own ``lipschitz(center, radius)`` when it has one (the families' are tighter), else
    :func:`generic_lipschitz` with ``smoothness`` (default ``problem.smoothness``)."""
    own = getattr(problem, "lipschitz", None)
    if callable(own):
        return float(own(center, radius))
    return generic_lipschitz(problem, center, radius, smoothness)


class QuadraticTasks:
    """``L_i(x) = 0.5 (x - c_i)' A_i (x - c_i) + b_i`` with symmetric PSD ``A_i``.

    Arrays: ``hessians`` ``(M, d, d)``, ``centers`` ``(M, d)``, ``offsets`` ``(M,)``. The
    constants ``mu = min_i lambda_min(A_i)`` and ``smoothness = max_i lambda_max(A_i)`` are
    computed from the eigenvalues unless ``eigenvalue_range=(mu, smoothness)`` is given by a
    generator that knows them exactly; a given range is checked against the hessians (two
    Cholesky factorisations per task, cheaper than the eigenvalues): every ``A_i - mu I``
    and ``smoothness I - A_i`` must be positive semidefinite (to ``1e-8 * smoothness``), so a
    wrong ``mu`` cannot give invalid steps or certificates. A range wider than the truth is
    valid (and kept).

    ``sample`` perturbs each center by ``xi ~ N(0, noise_scale^2 I / batch_size)``: the loss
    estimate ``0.5 (x-c-xi)' A (x-c-xi) + b - 0.5 noise_scale^2 tr(A) / batch_size`` and the
    gradient estimate ``A (x - c - xi)`` are unbiased.
    """

    def __init__(
        self,
        hessians: ArrayLike,
        centers: ArrayLike,
        offsets: ArrayLike,
        *,
        eigenvalue_range: tuple[float, float] | None = None,
        noise_scale: float = 1.0,
    ) -> None:
        a = _float_array("hessians", hessians, 3)
        c = _float_array("centers", centers, 2)
        b = _float_array("offsets", offsets, 1)
        m, d = c.shape
        if a.shape != (m, d, d):
            raise ValueError(f"hessians must have shape (M, d, d) = ({m}, {d}, {d}), got {a.shape}")
        if b.shape != (m,):
            raise ValueError(f"offsets must have shape (M,) = ({m},), got {b.shape}")
        scale = max(float(np.max(np.abs(a))), 1.0)
        if not np.allclose(a, np.swapaxes(a, 1, 2), rtol=0.0, atol=1e-10 * scale):
            raise ValueError("hessians must be symmetric: A_i == A_i.T for every task")
        a = 0.5 * (a + np.swapaxes(a, 1, 2))
        if eigenvalue_range is None:
            eig = np.linalg.eigvalsh(a)
            lo, hi = float(eig[:, 0].min()), float(eig[:, -1].max())
            if lo < -1e-10 * max(hi, 1.0):
                raise ValueError(
                    f"hessians must be positive semidefinite; the smallest eigenvalue is {lo:.3g}"
                )
            lo = max(lo, 0.0)
        else:
            lo, hi = _checked_eigenvalue_range(a, eigenvalue_range)
        self.hessian_stack: Float = a
        self.centers: Float = c
        self.offsets: Float = b
        self.mu: float = lo
        self.smoothness: float = hi
        self.noise_scale: float = check_real("noise_scale", noise_scale)
        self._flat = a.reshape(m * d, d)
        self._a_c = np.einsum("mij,mj->mi", a, c)

    @property
    def num_tasks(self) -> int:
        return int(self.centers.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centers.shape[1])

    def jacobian(self, x: Float) -> Float:
        """Rows ``A_i (x - c_i)``: one ``(M d) x d`` matrix-vector product."""
        out: Float = (self._flat @ x).reshape(self.num_tasks, self.dim) - self._a_c
        return out

    def losses(self, x: Float) -> Float:
        return self.value_and_jacobian(x)[0]

    def value_and_jacobian(self, x: Float) -> tuple[Float, Float]:
        g = self.jacobian(x)
        return 0.5 * np.einsum("mi,mi->m", x - self.centers, g) + self.offsets, g

    def hessians(self, x: Float | None = None) -> Float:
        return self.hessian_stack

    def lipschitz(self, center: Float, radius: float) -> float:
        """``max_i ||A_i (center - c_i)|| + smoothness * radius`` (see :func:`generic_lipschitz`)."""
        return generic_lipschitz(self, center, radius)

    def sample(self, x: Float, batch_size: int, rng: np.random.Generator) -> tuple[Float, Float]:
        batch_size = check_int("batch_size", batch_size)
        sd = self.noise_scale / math.sqrt(batch_size)
        xi = rng.standard_normal(self.centers.shape) * sd
        g = self.jacobian(x) - np.einsum("mij,mj->mi", self.hessian_stack, xi)
        diff = x - self.centers - xi
        trace = np.einsum("mii->m", self.hessian_stack)
        values = 0.5 * np.einsum("mi,mi->m", diff, g) + self.offsets - 0.5 * sd**2 * trace
        return values, g

    def cvxpy_losses(self, cp: Any, x: Any) -> list[Any]:
        return [
            0.5 * cp.quad_form(x - self.centers[i], self.hessian_stack[i], assume_PSD=True)
            + self.offsets[i]
            for i in range(self.num_tasks)
        ]


def _orthogonal_stack(rng: np.random.Generator, m: int, d: int) -> Float:
    """``m`` Haar-random orthogonal ``d x d`` matrices (QR with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((m, d, d)))
    signs = np.sign(np.diagonal(r, axis1=1, axis2=2))
    signs[signs == 0] = 1.0
    out: Float = q * signs[:, None, :]
    return out


def _spectra(rng: np.random.Generator, m: int, d: int, mu: float, smoothness: float) -> Float:
    """Log-uniform eigenvalues in ``[mu, smoothness]``; every task has both end points when
    ``d >= 2`` (for ``d = 1`` the first two tasks take ``mu`` and ``smoothness``)."""
    lo = math.log(mu)
    hi = math.log(smoothness)
    u = rng.uniform(lo, hi, size=(m, d))
    if d >= 2:
        u[:, 0], u[:, -1] = lo, hi
    else:
        u[0, 0] = lo
        if m >= 2:
            u[1, 0] = hi
    return np.exp(np.sort(u, axis=1))


def _checked_eigenvalue_range(a: Float, eigenvalue_range: Any) -> tuple[float, float]:
    """``(mu, smoothness)`` from ``eigenvalue_range``, checked to bound every eigenvalue of
    every ``A_i`` (see :class:`QuadraticTasks`)."""
    try:
        lo_raw, hi_raw = eigenvalue_range
    except (TypeError, ValueError):
        raise ValueError(
            f"eigenvalue_range must be a pair (mu, smoothness), got {eigenvalue_range!r}"
        ) from None
    lo = check_real("eigenvalue_range[0] (mu)", lo_raw)
    hi = check_real("eigenvalue_range[1] (smoothness)", hi_raw)
    if lo > hi:
        raise ValueError(
            f"eigenvalue_range must satisfy 0 <= mu <= smoothness, got {eigenvalue_range}"
        )
    slack = 1e-8 * max(hi, float(np.max(np.abs(a), initial=0.0)), 1e-300)
    eye = np.eye(a.shape[-1])
    for label, shifted in (
        (f"below mu = {lo!r}", a - (lo - slack) * eye),
        (f"above smoothness = {hi!r}", (hi + slack) * eye - a),
    ):
        try:
            np.linalg.cholesky(shifted)
        except np.linalg.LinAlgError:
            eig = np.linalg.eigvalsh(a)
            raise ValueError(
                f"eigenvalue_range={eigenvalue_range!r} does not hold for these hessians: an "
                f"eigenvalue is {label} (the eigenvalues lie in [{eig.min():.6g}, "
                f"{eig.max():.6g}]); pass eigenvalue_range=None to compute it"
            ) from None
    return lo, hi


def random_quadratic(
    num_tasks: int,
    dim: int,
    mu: float = 1.0,
    smoothness: float = 10.0,
    seed: int = 0,
    *,
    center_scale: float = 1.0,
    offset_scale: float = 1.0,
    noise_scale: float = 1.0,
) -> QuadraticTasks:
    """Random quadratic tasks with exact constants ``mu`` and ``smoothness``.

    ``A_i = Q_i diag(lambda_i) Q_i'`` with Haar-random ``Q_i`` and log-uniform eigenvalues
    in ``[mu, smoothness]`` (both end points attained); centers ``c_i ~ N(0, I
    center_scale^2 / d)`` (so ``||c_i|| ~ center_scale``); offsets ``b_i ~ U(0,
    offset_scale)``.
    """
    num_tasks = check_int("num_tasks", num_tasks)
    dim = check_int("dim", dim)
    mu = check_real("mu", mu, strict=True)
    smoothness = check_real("smoothness", smoothness, low=mu)
    center_scale = check_real("center_scale", center_scale)
    offset_scale = check_real("offset_scale", offset_scale)
    noise_scale = check_real("noise_scale", noise_scale)
    seed = check_seed(seed)
    if dim == 1 and num_tasks == 1 and smoothness != mu:
        raise ValueError("dim=1 with num_tasks=1 has one eigenvalue: it needs mu == smoothness")
    rng = np.random.default_rng(seed)
    q = _orthogonal_stack(rng, num_tasks, dim)
    lam = _spectra(rng, num_tasks, dim, mu, smoothness)
    a = np.einsum("mij,mj,mkj->mik", q, lam, q)
    centers = rng.standard_normal((num_tasks, dim)) * (center_scale / math.sqrt(dim))
    offsets = rng.uniform(0.0, offset_scale, size=num_tasks)
    return QuadraticTasks(
        a, centers, offsets, eigenvalue_range=(mu, smoothness), noise_scale=noise_scale
    )


def _padded(name: str, arrays: Sequence[ArrayLike], ndim: int) -> tuple[Float, NDArray[np.int64]]:
    """Stack per-task arrays of different lengths into ``(M, n_max, ...)`` with zero rows."""
    if len(arrays) == 0:
        raise ValueError(f"{name} must hold one array per task (at least one task)")
    items = [_float_array(f"{name}[{i}]", a, ndim) for i, a in enumerate(arrays)]
    counts = np.array([len(a) for a in items], dtype=np.int64)
    if np.any(counts == 0):
        raise ValueError(f"{name}[{int(np.argmin(counts))}] is empty: every task needs samples")
    out = np.zeros((len(items), int(counts.max()), *items[0].shape[1:]))
    for i, a in enumerate(items):
        if a.shape[1:] != items[0].shape[1:]:
            raise ValueError(f"{name}[{i}] has shape {a.shape}, others have {items[0].shape[1:]}")
        out[i, : len(a)] = a
    return out, counts


class LeastSquaresTasks(QuadraticTasks):
    """``L_i(x) = 1/(2 n_i) ||X_i x - y_i||^2 + (l2/2) ||x||^2`` from per-task samples.

    The loss is the quadratic ``0.5 (x - c_i)' H_i (x - c_i) + b_i`` with ``H_i = X_i'X_i/n_i
    + l2 I``, ``c_i = H_i^{-1} X_i'y_i/n_i`` and ``b_i = L_i(c_i)``, so every quadratic
    method applies. Every ``H_i`` must be positive definite (``n_i >= d`` with full rank, or
    ``l2 > 0``). ``sample`` draws ``batch_size`` rows of each task with replacement.

    The tasks are kept as their samples: losses and gradients cost ``O(n_i d)`` per task,
    and no ``d x d`` matrix per task is formed (``c_i`` and the eigenvalues come from the
    smaller of ``X_i'X_i`` and the Gram matrix ``X_i X_i'``, by ``(X'X/n + l2 I)^{-1} X'y/n
    = X'(XX'/n + l2 I)^{-1} y/n``). ``hessian_stack`` is built, once, only when read.
    """

    def __init__(
        self, designs: Sequence[ArrayLike], targets: Sequence[ArrayLike], l2: float = 0.0
    ) -> None:
        x, counts = _padded("designs", designs, 2)
        y, y_counts = _padded("targets", targets, 1)
        if len(designs) != len(targets) or np.any(counts != y_counts):
            raise ValueError("designs and targets must have the same number of rows per task")
        l2 = check_real("l2", l2)
        m, _, d = x.shape
        centers = np.empty((m, d))
        lowest, highest = np.empty(m), np.empty(m)
        for i, n in enumerate(counts.tolist()):
            xi, yi = x[i, :n], y[i, :n]
            if n >= d:  # H_i = X'X/n + l2 I directly (d x d)
                h = xi.T @ xi / n + l2 * np.eye(d)
                eig = np.linalg.eigvalsh(h)
                lowest[i], highest[i] = eig[0], eig[-1]
                if eig[0] > 1e-12 * max(eig[-1], 1e-300):
                    centers[i] = np.linalg.solve(h, xi.T @ yi / n)
            else:  # d - n eigenvalues are l2; the others l2 + those of the Gram XX'/n
                gram = xi @ xi.T / n
                eig = np.linalg.eigvalsh(gram)
                lowest[i], highest[i] = l2, eig[-1] + l2
                if l2 > 0:
                    centers[i] = xi.T @ np.linalg.solve(gram + l2 * np.eye(n), yi / n)
            if not lowest[i] > 1e-12 * max(highest[i], 1e-300):
                raise ValueError(
                    "every task's X_i'X_i/n_i + l2 I must be positive definite: give n_i >= "
                    f"dim samples of full rank, or l2 > 0 (task {i} has n_i = {n}, dim = {d})"
                )
        self.designs: Float = x
        self.targets: Float = y
        self.counts: NDArray[np.int64] = counts
        self.l2: float = l2
        self._inv_n = 1.0 / counts.astype(np.float64)
        self._samples = x.reshape(-1, d)
        self.centers = centers
        self.offsets = self.losses_at(centers)
        self.mu = float(lowest.min())
        self.smoothness = float(highest.max())
        self.noise_scale = 1.0

    def __getattr__(self, name: str) -> Any:
        """``hessian_stack`` (and the quadratic form's helpers) on first use: ``M d^2``
        memory, formed only for code that asks for the stack."""
        if name == "hessian_stack":
            n = self._inv_n
            stack = np.einsum("mni,mnj->mij", self.designs, self.designs) * n[:, None, None]
            stack += self.l2 * np.eye(self.dim)
            self.__dict__["hessian_stack"] = stack
            return stack
        if name == "_a_c":
            out = self.products(self.centers)
            self.__dict__["_a_c"] = out
            return out
        if name == "_flat":
            flat = self.hessian_stack.reshape(-1, self.dim)
            self.__dict__["_flat"] = flat
            return flat
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _rows(self, residuals: Float) -> Float:
        """``X_i' r_i / n_i`` for every task ``(M, d)`` from residuals ``(M, n_max)``."""
        out: Float = np.matmul(residuals[:, None, :], self.designs)[:, 0, :]
        out *= self._inv_n[:, None]
        return out

    def products(self, points: Float) -> Float:
        """``H_i v_i`` for rows ``v_i`` of ``points`` ``(M, d)`` (or one ``v`` for every task)."""
        v = np.broadcast_to(np.asarray(points, dtype=np.float64), (self.num_tasks, self.dim))
        proj = np.matmul(self.designs, v[:, :, None])[:, :, 0]
        out: Float = self._rows(proj) + self.l2 * v
        return out

    def losses_at(self, points: Float) -> Float:
        """``L_i(p_i)`` for one point per task (rows of ``points``)."""
        resid = np.matmul(self.designs, points[:, :, None])[:, :, 0] - self.targets
        out: Float = 0.5 * np.einsum("mn,mn->m", resid, resid) * self._inv_n
        out += 0.5 * self.l2 * np.einsum("mi,mi->m", points, points)
        return out

    def value_and_jacobian(self, x: Float) -> tuple[Float, Float]:
        """Losses and gradients from the residuals ``X_i x - y_i``: ``O(N d)``."""
        x = np.asarray(x, dtype=np.float64)
        resid = (self._samples @ x).reshape(self.num_tasks, -1) - self.targets  # padding: 0
        values = 0.5 * np.einsum("mn,mn->m", resid, resid) * self._inv_n
        jac = self._rows(resid)
        if self.l2:
            values = values + 0.5 * self.l2 * float(x @ x)
            jac += self.l2 * x
        return values, jac

    def jacobian(self, x: Float) -> Float:
        return self.value_and_jacobian(x)[1]

    def sample(self, x: Float, batch_size: int, rng: np.random.Generator) -> tuple[Float, Float]:
        batch_size = check_int("batch_size", batch_size)
        m = self.num_tasks
        idx = (rng.random((m, batch_size)) * self.counts[:, None]).astype(np.int64)
        rows = np.take_along_axis(self.designs, idx[..., None], axis=1)  # (M, B, d)
        ys = np.take_along_axis(self.targets, idx, axis=1)  # (M, B)
        resid = rows @ x - ys
        values = 0.5 * np.mean(resid**2, axis=1) + 0.5 * self.l2 * float(x @ x)
        grads = np.einsum("mb,mbi->mi", resid, rows) / batch_size + self.l2 * x
        return values, grads

    def cvxpy_losses(self, cp: Any, x: Any) -> list[Any]:
        out = []
        for i in range(self.num_tasks):
            n = int(self.counts[i])
            xi, yi = self.designs[i, :n], self.targets[i, :n]
            out.append(cp.sum_squares(xi @ x - yi) / (2 * n) + 0.5 * self.l2 * cp.sum_squares(x))
        return out


@dataclass(frozen=True)
class RegressionFamily:
    """Population model of linear-regression tasks (the Section 5 generator).

    Task ``i`` draws ``a ~ N(0, Sigma_i)`` and ``y = a' theta_i + noise_i * eps``; its
    population loss ``E[(a'x - y)^2]/2 = 0.5 (x - theta_i)' Sigma_i (x - theta_i) +
    noise_i^2/2`` is a :class:`QuadraticTasks` (``population()``); ``empirical(n)`` draws
    ``n`` samples per task and returns the :class:`LeastSquaresTasks` on them. ``noise`` is
    one level for every task or one per task (``(M,)``); ``eigenvalue_range`` holds the
    exact ``(mu, smoothness)`` of the population tasks.
    """

    covariances: Float  # (M, d, d)
    parameters: Float  # (M, d)
    noise: float | Float
    eigenvalue_range: tuple[float, float]

    @property
    def noise_levels(self) -> Float:
        """The label-noise standard deviation of every task, ``(M,)``."""
        out: Float = np.broadcast_to(
            np.asarray(self.noise, dtype=np.float64), (self.num_tasks,)
        ).copy()
        return out

    @property
    def num_tasks(self) -> int:
        return int(self.parameters.shape[0])

    @property
    def dim(self) -> int:
        return int(self.parameters.shape[1])

    def population(self) -> QuadraticTasks:
        offsets = 0.5 * self.noise_levels**2
        return QuadraticTasks(
            self.covariances, self.parameters, offsets, eigenvalue_range=self.eigenvalue_range
        )

    def sample_task(
        self, task: int, num_samples: int, rng: np.random.Generator
    ) -> tuple[Float, Float]:
        """``num_samples`` rows ``(X, y)`` of one task."""
        num_samples = check_int("num_samples", num_samples)
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task must be in [0, {self.num_tasks - 1}], got {task}")
        chol = np.linalg.cholesky(self.covariances[task])
        a = rng.standard_normal((num_samples, self.dim)) @ chol.T
        noise = float(self.noise_levels[task])
        y = a @ self.parameters[task] + noise * rng.standard_normal(num_samples)
        return a, y

    def empirical(self, num_samples: int, seed: int = 0, l2: float = 0.0) -> LeastSquaresTasks:
        rng = np.random.default_rng(seed)
        pairs = [self.sample_task(i, num_samples, rng) for i in range(self.num_tasks)]
        return LeastSquaresTasks([p[0] for p in pairs], [p[1] for p in pairs], l2=l2)


def regression_family(
    num_tasks: int,
    dim: int,
    *,
    mu: float = 0.5,
    smoothness: float = 5.0,
    task_spread: float = 1.0,
    noise: float = 0.5,
    seed: int = 0,
) -> RegressionFamily:
    """Linear-regression tasks that share a parameter up to task-specific deviations.

    ``theta_i = theta_0 + task_spread * delta_i`` with ``theta_0, delta_i ~ N(0, I/d)``;
    ``Sigma_i`` random with eigenvalues log-uniform in ``[mu, smoothness]``.
    """
    num_tasks = check_int("num_tasks", num_tasks)
    dim = check_int("dim", dim)
    mu, smoothness = _check_family_constants(mu, smoothness)
    check_real("task_spread", task_spread)
    check_real("noise", noise)
    rng = np.random.default_rng(seed)
    q = _orthogonal_stack(rng, num_tasks, dim)
    lam = _spectra(rng, num_tasks, dim, mu, smoothness)
    cov = np.einsum("mij,mj,mkj->mik", q, lam, q)
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    theta0 = rng.standard_normal(dim) / math.sqrt(dim)
    theta = theta0 + task_spread * rng.standard_normal((num_tasks, dim)) / math.sqrt(dim)
    return RegressionFamily(cov, theta, float(noise), (float(mu), float(smoothness)))


def _covariances(
    rng: np.random.Generator, num_tasks: int, dim: int, mu: float, smoothness: float
) -> Float:
    """``Q_i diag(lambda_i) Q_i'`` with Haar ``Q_i`` and the spectra of :func:`_spectra`."""
    q = _orthogonal_stack(rng, num_tasks, dim)
    lam = _spectra(rng, num_tasks, dim, mu, smoothness)
    cov = np.einsum("mij,mj,mkj->mik", q, lam, q)
    out: Float = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    return out


def _check_family_constants(mu: float, smoothness: float) -> tuple[float, float]:
    mu, smoothness = float(mu), float(smoothness)
    if not (0 < mu <= smoothness < math.inf):
        raise ValueError(f"need 0 < mu <= smoothness < inf, got mu={mu}, smoothness={smoothness}")
    return mu, smoothness


def outlier_family(
    num_tasks: int,
    dim: int,
    *,
    num_outliers: int = 1,
    outlier_distance: float = 3.0,
    cluster_spread: float = 0.3,
    mu: float = 0.5,
    smoothness: float = 5.0,
    noise: float = 0.5,
    seed: int = 0,
) -> RegressionFamily:
    """A cluster of similar tasks plus ``num_outliers`` far-away tasks (Section 5's case
    where minimax pre-training can pay off).

    ``theta_0 ~ N(0, I/d)``; the ``M - num_outliers`` cluster tasks have ``theta_i = theta_0 +
    cluster_spread * delta_i`` with ``delta_i ~ N(0, I/d)``; outlier ``k`` has ``theta =
    theta_0 + outlier_distance * u_k`` with ``u_k`` a uniform random unit vector (so it sits
    at exactly ``outlier_distance`` from ``theta_0``). The outliers come last. The average-
    risk point sits near the cluster (weight ``(M - k)/M``), the minimax point between the
    cluster and the outliers, much nearer the hardest downstream task (an outlier vertex).
    Covariances as in :func:`regression_family` (exact ``mu``, ``smoothness``).
    """
    num_tasks = check_int("num_tasks", num_tasks)
    dim = check_int("dim", dim)
    num_outliers = check_int("num_outliers", num_outliers)
    if num_outliers >= num_tasks:
        raise ValueError(
            f"num_outliers must be in [1, num_tasks - 1] = [1, {num_tasks - 1}], got {num_outliers}"
        )
    mu, smoothness = _check_family_constants(mu, smoothness)
    outlier_distance = check_real("outlier_distance", outlier_distance)
    cluster_spread = check_real("cluster_spread", cluster_spread)
    noise = check_real("noise", noise)
    rng = np.random.default_rng(seed)
    cov = _covariances(rng, num_tasks, dim, mu, smoothness)
    theta0 = rng.standard_normal(dim) / math.sqrt(dim)
    cluster = num_tasks - num_outliers
    theta = np.empty((num_tasks, dim))
    theta[:cluster] = theta0 + cluster_spread * rng.standard_normal((cluster, dim)) / math.sqrt(dim)
    u = rng.standard_normal((num_outliers, dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    theta[cluster:] = theta0 + outlier_distance * u
    return RegressionFamily(cov, theta, noise, (mu, smoothness))


def heterogeneous_family(
    num_tasks: int,
    dim: int,
    *,
    noise_range: tuple[float, float] = (0.1, 1.5),
    curvature_range: tuple[float, float] = (1.0, 8.0),
    mu: float = 0.5,
    smoothness: float = 5.0,
    task_spread: float = 1.0,
    seed: int = 0,
) -> RegressionFamily:
    """Tasks of heterogeneous difficulty: label noise and curvature differ across tasks.

    Task ``i`` has noise level ``sigma_i`` and curvature scale ``kappa_i``, each spread
    log-uniformly over its range with both end points attained (``M >= 2``) and randomly
    paired; ``Sigma_i = kappa_i Q_i diag(lambda_i) Q_i'`` with the spectra of
    :func:`regression_family` in ``[mu, smoothness]``, so the exact constants are ``(mu
    kappa_min, smoothness kappa_max)``; ``theta_i = theta_0 + task_spread * delta_i`` as in
    the i.i.d. family. A noisy task has a high loss floor ``sigma_i^2/2`` (the minimax point
    leans toward it), a curved one a large excess risk per unit distance.
    """
    num_tasks = check_int("num_tasks", num_tasks)
    dim = check_int("dim", dim)
    mu, smoothness = _check_family_constants(mu, smoothness)
    task_spread = check_real("task_spread", task_spread)
    ranges = {"noise_range": noise_range, "curvature_range": curvature_range}
    for name, (lo, hi) in ranges.items():
        if not (0 < float(lo) <= float(hi) < math.inf):
            raise ValueError(f"{name} must satisfy 0 < low <= high < inf, got {(lo, hi)}")
    rng = np.random.default_rng(seed)
    cov = _covariances(rng, num_tasks, dim, mu, smoothness)
    theta0 = rng.standard_normal(dim) / math.sqrt(dim)
    theta = theta0 + task_spread * rng.standard_normal((num_tasks, dim)) / math.sqrt(dim)
    grid = np.linspace(0.0, 1.0, num_tasks) if num_tasks > 1 else np.zeros(1)

    def spread(lo: float, hi: float) -> Float:
        out: Float = float(lo) * (float(hi) / float(lo)) ** rng.permutation(grid)
        return out

    noise = spread(*noise_range)
    kappa = spread(*curvature_range)
    k_lo, k_hi = float(kappa.min()), float(kappa.max())
    return RegressionFamily(
        cov * kappa[:, None, None], theta, noise, (mu * k_lo, smoothness * k_hi)
    )


class LogisticTasks:
    """``L_i(x) = mean_k log(1 + exp(-y_ik a_ik' x)) + (l2/2) ||x||^2``, labels in {-1, +1}.

    Constants: ``mu = l2``; ``smoothness = max_i lambda_max(A_i'A_i)/(4 n_i) + l2``
    (the logistic loss has curvature at most 1/4).
    """

    def __init__(
        self, features: Sequence[ArrayLike], labels: Sequence[ArrayLike], l2: float
    ) -> None:
        a, counts = _padded("features", features, 2)
        y, y_counts = _padded("labels", labels, 1)
        if len(features) != len(labels) or np.any(counts != y_counts):
            raise ValueError("features and labels must have the same number of rows per task")
        for i, n in enumerate(counts):
            if not np.all(np.isin(y[i, :n], (-1.0, 1.0))):
                raise ValueError(f"labels[{i}] must contain only -1 and +1")
        l2 = float(l2)
        if not (math.isfinite(l2) and l2 > 0):
            raise ValueError(f"l2 must be a finite number > 0 (it is mu), got {l2!r}")
        nmax = a.shape[1]
        self.features: Float = a
        self.labels: Float = y
        self.counts: NDArray[np.int64] = counts
        self.l2: float = l2
        self._mask = (np.arange(nmax)[None, :] < counts[:, None]).astype(np.float64)
        self._inv_n = 1.0 / counts.astype(np.float64)
        gram_max = max(
            float(np.linalg.eigvalsh(a[i, :n].T @ a[i, :n])[-1]) / n for i, n in enumerate(counts)
        )
        self.mu: float = l2
        self.smoothness: float = 0.25 * gram_max + l2

    @property
    def num_tasks(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[2])

    def _margins(self, x: Float) -> Float:
        out: Float = self.labels * (self.features @ x)  # (M, n_max)
        return out

    def losses(self, x: Float) -> Float:
        per = np.logaddexp(0.0, -self._margins(x)) * self._mask
        out: Float = per.sum(axis=1) * self._inv_n + 0.5 * self.l2 * float(x @ x)
        return out

    def jacobian(self, x: Float) -> Float:
        return self.value_and_jacobian(x)[1]

    def value_and_jacobian(self, x: Float) -> tuple[Float, Float]:
        z = self._margins(x)
        values = (np.logaddexp(0.0, -z) * self._mask).sum(axis=1) * self._inv_n
        coef = -self.labels * _sigmoid(-z) * self._mask * self._inv_n[:, None]
        grads = np.einsum("mn,mni->mi", coef, self.features) + self.l2 * x
        return values + 0.5 * self.l2 * float(x @ x), grads

    def hessians(self, x: Float) -> Float:
        s = _sigmoid(self._margins(x))
        curv = s * (1.0 - s) * self._mask * self._inv_n[:, None]
        h: Float = np.einsum("mn,mni,mnj->mij", curv, self.features, self.features)
        out: Float = h + self.l2 * np.eye(self.dim)
        return out

    def lipschitz(self, center: Float, radius: float) -> float:
        """The smaller of :func:`generic_lipschitz` and ``max ||a|| + l2 (||center|| + radius)``."""
        center = np.asarray(center, dtype=np.float64)
        row_bound = float(np.max(np.linalg.norm(self.features, axis=2)))
        direct = row_bound + self.l2 * (float(np.linalg.norm(center)) + radius)
        return min(direct, generic_lipschitz(self, center, radius))

    def sample(self, x: Float, batch_size: int, rng: np.random.Generator) -> tuple[Float, Float]:
        batch_size = check_int("batch_size", batch_size)
        idx = (rng.random((self.num_tasks, batch_size)) * self.counts[:, None]).astype(np.int64)
        rows = np.take_along_axis(self.features, idx[..., None], axis=1)
        ys = np.take_along_axis(self.labels, idx, axis=1)
        z = ys * (rows @ x)
        values = np.mean(np.logaddexp(0.0, -z), axis=1) + 0.5 * self.l2 * float(x @ x)
        coef = -ys * _sigmoid(-z) / batch_size
        grads = np.einsum("mb,mbi->mi", coef, rows) + self.l2 * x
        return values, grads

    def cvxpy_losses(self, cp: Any, x: Any) -> list[Any]:
        out = []
        for i in range(self.num_tasks):
            n = int(self.counts[i])
            ai, yi = self.features[i, :n], self.labels[i, :n]
            out.append(
                cp.sum(cp.logistic(-cp.multiply(yi, ai @ x))) / n
                + 0.5 * self.l2 * cp.sum_squares(x)
            )
        return out


def _sigmoid(z: Float) -> Float:
    out: Float = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def logistic_tasks(
    num_tasks: int,
    dim: int,
    num_samples: int = 100,
    *,
    l2: float = 0.1,
    task_spread: float = 1.0,
    seed: int = 0,
) -> LogisticTasks:
    """Random logistic-regression tasks: features ``N(0, I/d)`` shifted per task, labels from
    per-task parameters ``theta_i = theta_0 + task_spread * delta_i`` through the logistic link."""
    num_tasks = check_int("num_tasks", num_tasks)
    dim = check_int("dim", dim)
    num_samples = check_int("num_samples", num_samples)
    rng = np.random.default_rng(seed)
    theta0 = rng.standard_normal(dim) * 2.0
    feats, labels = [], []
    for _ in range(num_tasks):
        theta = theta0 + task_spread * rng.standard_normal(dim) * 2.0
        a = (
            rng.standard_normal((num_samples, dim)) / math.sqrt(dim)
            + rng.standard_normal(dim) * 0.3
        )
        p = _sigmoid(a @ theta)
        y = np.where(rng.random(num_samples) < p, 1.0, -1.0)
        feats.append(a)
        labels.append(y)
    return LogisticTasks(feats, labels, l2=l2)


# --------------------------------------------------------------------------- Section 5


def _check_mixtures(mixtures: ArrayLike, num_tasks: int) -> Float:
    """Rows on the probability simplex over ``num_tasks`` upstream tasks (``ValueError``
    otherwise: nothing is renormalised silently)."""
    lam = _float_array("mixtures", mixtures, 2)
    if lam.shape[1] != num_tasks:
        raise ValueError(
            f"mixtures must have shape (K, num_tasks) = (K, {num_tasks}), got {lam.shape}"
        )
    if lam.shape[0] < 1:
        raise ValueError("mixtures must hold at least one row")
    if np.any(lam < 0):
        raise ValueError("mixtures must be non-negative (rows on the probability simplex)")
    sums = lam.sum(axis=1)
    if not np.allclose(sums, 1.0, rtol=0.0, atol=1e-9):
        worst = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(
            f"every row of mixtures must sum to 1; row {worst} sums to {sums[worst]!r}"
        )
    return lam


def random_mixtures(
    num_tasks: int,
    count: int,
    *,
    concentration: float = 1.0,
    include_vertices: bool = True,
    seed: int = 0,
) -> Float:
    """Downstream mixtures ``lambda_j`` on the simplex over ``num_tasks`` upstream tasks.

    The ``M`` vertices ``e_1..e_M`` first (each upstream task is itself a downstream task)
    when ``include_vertices``, then ``count`` draws from ``Dirichlet(concentration * 1)``:
    small concentrations give mixtures near the vertices, large ones near the average.
    """
    num_tasks = check_int("num_tasks", num_tasks)
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    concentration = float(concentration)
    if not (math.isfinite(concentration) and concentration > 0):
        raise ValueError(f"concentration must be a finite number > 0, got {concentration!r}")
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(np.full(num_tasks, concentration), size=int(count))
    rows = [np.eye(num_tasks)] if include_vertices else []
    out: Float = np.concatenate([*rows, draws.reshape(int(count), num_tasks)], axis=0)
    if out.shape[0] == 0:
        raise ValueError("no mixtures: give count >= 1 or include_vertices=True")
    return out


def downstream_tasks(problem: QuadraticTasks, mixtures: ArrayLike) -> QuadraticTasks:
    """Downstream tasks ``l_j = sum_i lambda_ji L_i`` of quadratic upstream tasks (Section 5).

    A convex combination of quadratics is the quadratic with Hessian ``H_j = sum_i
    lambda_ji A_i``, center ``H_j^{-1} sum_i lambda_ji A_i c_i`` and the offset that makes
    the values agree: ``sum_i lambda_ji (c_i' A_i c_i / 2 + b_i) - c_j' H_j c_j / 2``. Each
    row of ``mixtures`` (shape ``(K, M)``, on the simplex) gives one task of the result.
    Since ``l_j <= max_i L_i`` pointwise, the minimax point bounds every downstream loss.
    """
    if not isinstance(problem, QuadraticTasks):
        raise TypeError(
            f"problem must be a QuadraticTasks (or a subclass), got {type(problem).__name__}"
        )
    lam = _check_mixtures(mixtures, problem.num_tasks)
    a = problem.hessian_stack
    h = np.einsum("km,mij->kij", lam, a)
    h = 0.5 * (h + np.swapaxes(h, 1, 2))
    try:
        np.linalg.cholesky(h)
    except np.linalg.LinAlgError as err:
        raise ValueError(
            "a mixture of the upstream Hessians is singular: downstream tasks need positive "
            "definite sum_i lambda_ji A_i (use strongly convex upstream tasks)"
        ) from err
    linear = lam @ problem._a_c  # sum_i lambda_ji A_i c_i, (K, d)
    centers = np.linalg.solve(h, linear[..., None])[..., 0]
    const = 0.5 * np.einsum("mi,mi->m", problem.centers, problem._a_c) + problem.offsets
    offsets = lam @ const - 0.5 * np.einsum("ki,ki->k", centers, linear)
    return QuadraticTasks(h, centers, offsets, noise_scale=problem.noise_scale)


def sample_mixture(
    family: RegressionFamily, mixture: ArrayLike, num_samples: int, rng: np.random.Generator
) -> tuple[Float, Float]:
    """``num_samples`` rows ``(X, y)`` of the downstream task with mixture ``lambda``.

    Each row picks an upstream task ``i`` with probability ``lambda_i`` and draws ``(a, y)``
    from it, so the population loss is ``sum_i lambda_i L_i`` (the task of
    :func:`downstream_tasks` applied to ``family.population()``).
    """
    lam = _check_mixtures(np.atleast_2d(np.asarray(mixture, dtype=np.float64)), family.num_tasks)
    if lam.shape[0] != 1:
        raise ValueError(f"mixture must be one row of length {family.num_tasks}")
    num_samples = check_int("num_samples", num_samples)
    counts = rng.multinomial(num_samples, lam[0] / lam[0].sum())
    xs, ys = [], []
    for task, n in enumerate(counts):
        if n > 0:
            a, y = family.sample_task(task, int(n), rng)
            xs.append(a)
            ys.append(y)
    order = rng.permutation(num_samples)
    return np.concatenate(xs)[order], np.concatenate(ys)[order]


def sample_mixtures(
    family: RegressionFamily,
    mixtures: ArrayLike,
    num_samples: int,
    repetitions: int,
    rng: np.random.Generator,
) -> tuple[Float, Float]:
    """``repetitions`` independent draws of ``num_samples`` rows of every downstream task.

    The vectorised :func:`sample_mixture`: row ``(j, r, k)`` picks upstream task ``i`` with
    probability ``lambda_ji`` and draws ``(a, y)`` from it. Returns ``X`` ``(K, R, n, d)``
    and ``y`` ``(K, R, n)``. The rows are i.i.d., so any prefix ``[..., :n']`` is itself a
    sample of size ``n'`` (nested samples for a sample-size sweep).
    """
    lam = _check_mixtures(mixtures, family.num_tasks)
    num_samples = check_int("num_samples", num_samples)
    repetitions = check_int("repetitions", repetitions)
    k, d = lam.shape[0], family.dim
    cum = np.cumsum(lam, axis=1)
    cum[:, -1] = np.inf  # rounding never sends a row past the last task
    u = rng.random((k, repetitions, num_samples))
    task = np.empty(u.shape, dtype=np.int64)
    for j in range(k):
        task[j] = np.searchsorted(cum[j], u[j], side="right")
    z = rng.standard_normal((k * repetitions * num_samples, d))
    eps = rng.standard_normal(k * repetitions * num_samples)
    # rows grouped by upstream task: one matrix product per task on a contiguous block
    flat = task.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(family.num_tasks + 1))
    chol = np.linalg.cholesky(family.covariances)
    noise = family.noise_levels
    xs = np.empty_like(z)
    ys = np.empty_like(eps)
    for i in range(family.num_tasks):
        rows = order[bounds[i] : bounds[i + 1]]
        a = z[rows] @ chol[i].T
        xs[rows] = a
        ys[rows] = a @ family.parameters[i] + noise[i] * eps[rows]
    return xs.reshape(k, repetitions, num_samples, d), ys.reshape(k, repetitions, num_samples)
