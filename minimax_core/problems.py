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
them), and :class:`LogisticTasks` (L2-regularised logistic regression on samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "LeastSquaresTasks",
    "LogisticTasks",
    "QuadraticTasks",
    "RegressionFamily",
    "TaskSet",
    "check_problem",
    "downstream_tasks",
    "generic_lipschitz",
    "logistic_tasks",
    "random_mixtures",
    "random_quadratic",
    "regression_family",
    "sample_mixture",
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


def _check_nonneg(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _check_pos_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def generic_lipschitz(problem: Any, center: Float, radius: float) -> float:
    """``max_i ||grad L_i(center)|| + smoothness * radius``.

    Valid for any ``smoothness``-smooth tasks: ``||grad L_i(x)|| <= ||grad L_i(c)|| +
    smoothness ||x - c||`` on the ball ``||x - c|| <= radius``.
    """
    g = problem.jacobian(np.asarray(center, dtype=np.float64))
    return float(np.max(np.linalg.norm(g, axis=1)) + problem.smoothness * radius)


class QuadraticTasks:
    """``L_i(x) = 0.5 (x - c_i)' A_i (x - c_i) + b_i`` with symmetric PSD ``A_i``.

    Arrays: ``hessians`` ``(M, d, d)``, ``centers`` ``(M, d)``, ``offsets`` ``(M,)``. The
    constants ``mu = min_i lambda_min(A_i)`` and ``smoothness = max_i lambda_max(A_i)`` are
    computed from the eigenvalues unless ``eigenvalue_range=(mu, smoothness)`` is given by a
    generator that knows them exactly.

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
            lo, hi = (float(v) for v in eigenvalue_range)
            if not 0.0 <= lo <= hi:
                raise ValueError(
                    f"eigenvalue_range must satisfy 0 <= mu <= smoothness, got {eigenvalue_range}"
                )
        self.hessian_stack: Float = a
        self.centers: Float = c
        self.offsets: Float = b
        self.mu: float = lo
        self.smoothness: float = hi
        self.noise_scale: float = _check_nonneg("noise_scale", noise_scale)
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
        batch_size = _check_pos_int("batch_size", batch_size)
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
    num_tasks = _check_pos_int("num_tasks", num_tasks)
    dim = _check_pos_int("dim", dim)
    mu, smoothness = float(mu), float(smoothness)
    if not (math.isfinite(mu) and mu > 0):
        raise ValueError(f"mu must be a finite number > 0, got {mu!r}")
    if not (math.isfinite(smoothness) and smoothness >= mu):
        raise ValueError(f"smoothness must be a finite number >= mu = {mu}, got {smoothness!r}")
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
        l2 = _check_nonneg("l2", l2)
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
        batch_size = _check_pos_int("batch_size", batch_size)
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

    Task ``i`` draws ``a ~ N(0, Sigma_i)`` and ``y = a' theta_i + noise * eps``; its
    population loss ``E[(a'x - y)^2]/2 = 0.5 (x - theta_i)' Sigma_i (x - theta_i) + noise^2/2``
    is a :class:`QuadraticTasks` (``population()``); ``empirical(n)`` draws ``n`` samples per
    task and returns the :class:`LeastSquaresTasks` on them.
    """

    covariances: Float  # (M, d, d)
    parameters: Float  # (M, d)
    noise: float
    eigenvalue_range: tuple[float, float]

    @property
    def num_tasks(self) -> int:
        return int(self.parameters.shape[0])

    @property
    def dim(self) -> int:
        return int(self.parameters.shape[1])

    def population(self) -> QuadraticTasks:
        offsets = np.full(self.num_tasks, 0.5 * self.noise**2)
        return QuadraticTasks(
            self.covariances, self.parameters, offsets, eigenvalue_range=self.eigenvalue_range
        )

    def sample_task(
        self, task: int, num_samples: int, rng: np.random.Generator
    ) -> tuple[Float, Float]:
        """``num_samples`` rows ``(X, y)`` of one task."""
        num_samples = _check_pos_int("num_samples", num_samples)
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task must be in [0, {self.num_tasks - 1}], got {task}")
        chol = np.linalg.cholesky(self.covariances[task])
        a = rng.standard_normal((num_samples, self.dim)) @ chol.T
        y = a @ self.parameters[task] + self.noise * rng.standard_normal(num_samples)
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
    num_tasks = _check_pos_int("num_tasks", num_tasks)
    dim = _check_pos_int("dim", dim)
    if not (0 < mu <= smoothness < math.inf):
        raise ValueError(f"need 0 < mu <= smoothness < inf, got mu={mu}, smoothness={smoothness}")
    _check_nonneg("task_spread", task_spread)
    _check_nonneg("noise", noise)
    rng = np.random.default_rng(seed)
    q = _orthogonal_stack(rng, num_tasks, dim)
    lam = _spectra(rng, num_tasks, dim, mu, smoothness)
    cov = np.einsum("mij,mj,mkj->mik", q, lam, q)
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    theta0 = rng.standard_normal(dim) / math.sqrt(dim)
    theta = theta0 + task_spread * rng.standard_normal((num_tasks, dim)) / math.sqrt(dim)
    return RegressionFamily(cov, theta, float(noise), (float(mu), float(smoothness)))


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
        batch_size = _check_pos_int("batch_size", batch_size)
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
    num_tasks = _check_pos_int("num_tasks", num_tasks)
    dim = _check_pos_int("dim", dim)
    num_samples = _check_pos_int("num_samples", num_samples)
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
    num_tasks = _check_pos_int("num_tasks", num_tasks)
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
    num_samples = _check_pos_int("num_samples", num_samples)
    counts = rng.multinomial(num_samples, lam[0] / lam[0].sum())
    xs, ys = [], []
    for task, n in enumerate(counts):
        if n > 0:
            a, y = family.sample_task(task, int(n), rng)
            xs.append(a)
            ys.append(y)
    order = rng.permutation(num_samples)
    return np.concatenate(xs)[order], np.concatenate(ys)[order]
