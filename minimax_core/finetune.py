"""Downstream fine-tuning from a pre-trained start, the three ways Section 5's theory has it.

A downstream task is learnt from ``n`` samples ``(X, y)`` by least squares

    f(x) = ||X x - y||^2 / (2 n) = 0.5 x' H x - b' x + const,   H = X'X / n,  b = X'y / n,

starting from the pre-trained point ``x0``. The start matters only through how far the
procedure may move from it:

- **budgeted GD** (:func:`gd_steps`): ``k`` steps of gradient descent at ``1/L_f`` with
  ``L_f = lambda_max(H)``; ``k = None`` is the limit, the least-squares solution closest
  to ``x0`` (GD never leaves ``x0 + rowspace(X)``);
- **projected GD on the ball** ``B(x0, R)`` (:func:`projected_gd` runs the iteration,
  :func:`ball` returns its limit exactly);
- **ridge toward the start** (:func:`ridge`): ``argmin f(x) + (strength/2) ||x - x0||^2``,
  one linear solve.

All three are spectral filters of one eigendecomposition ``H = V diag(s) V'``: with ``g0 =
V'(H x0 - b)`` the gradient at the start in the eigenbasis, the result is ``x0 - V (phi(s)
* g0)`` with

    GD, k steps:     phi(s) = (1 - (1 - s/s_max)^k) / s        (k/s_max at s = 0)
    GD, converged:   phi(s) = 1/s on the range of H, 0 on its null space
    ridge:           phi(s) = 1/(s + strength)
    ball of radius R: phi(s) = 1/(s + lam), lam >= 0 the smallest with ||phi g0|| <= R
                     (the trust-region solution; g0 lies in the range of H, so there is
                     no "hard case").

:class:`SpectralFit` holds that decomposition so that an experiment can evaluate every
budget from one ``eigh``. Every function is batched: ``designs`` ``(..., n, d)``, ``targets``
``(..., n)`` and ``x0`` ``(d,)`` or broadcastable to ``(..., d)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .validation import check_int, check_real

__all__ = [
    "SpectralFit",
    "ball",
    "gd_steps",
    "projected_gd",
    "ridge",
    "spectral_fit",
]

Float = NDArray[np.float64]

#: bisection rounds of the trust-region multiplier: the bracket ``[0, ||g||/R]`` shrinks to
#: ``2^-90`` of its width, below float64 resolution of any multiplier that matters
_BISECTION_ROUNDS = 90


def _data(x0: ArrayLike, designs: ArrayLike, targets: ArrayLike) -> tuple[Float, Float, Float]:
    """Validated float arrays: ``x0`` broadcast to the batch ``(..., d)``."""
    xs = np.asarray(designs, dtype=np.float64)
    ys = np.asarray(targets, dtype=np.float64)
    if xs.ndim < 2 or xs.shape[-2] < 1 or xs.shape[-1] < 1:
        raise ValueError(f"designs must have shape (..., n, d) with n, d >= 1, got {xs.shape}")
    if ys.shape != xs.shape[:-1]:
        raise ValueError(
            f"targets must have shape designs.shape[:-1] = {xs.shape[:-1]}, got {ys.shape}"
        )
    start = np.asarray(x0, dtype=np.float64)
    try:
        start = np.broadcast_to(start, (*xs.shape[:-2], xs.shape[-1])).copy()
    except ValueError as err:
        raise ValueError(
            f"x0 must broadcast to (..., d) = {(*xs.shape[:-2], xs.shape[-1])}, got {start.shape}"
        ) from err
    for name, arr in (("designs", xs), ("targets", ys), ("x0", start)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite (no NaN or Inf)")
    return start, xs, ys


def _normal_equations(xs: Float, ys: Float) -> tuple[Float, Float]:
    """``H = X'X/n`` (symmetrised) and ``b = X'y/n``."""
    n = xs.shape[-2]
    xt = np.swapaxes(xs, -1, -2)
    h = xt @ xs / n
    h = 0.5 * (h + np.swapaxes(h, -1, -2))
    b: Float = (xt @ ys[..., None])[..., 0] / n
    return h, b


def _check_steps(steps: int | None) -> int | None:
    """``None`` (run to convergence) or an integer number of steps ``>= 0``."""
    return None if steps is None else check_int("steps", steps, low=0)


@dataclass(frozen=True)
class SpectralFit:
    """One least-squares fine-tuning problem (or a batch) in the eigenbasis of ``H``.

    ``x0`` ``(..., d)``; ``eigenvalues`` ``(..., d)`` ascending; ``eigenvectors`` ``(..., d,
    d)`` (columns); ``gradient`` ``(..., d)``: ``V'(H x0 - b)``, the gradient at the start in
    the eigenbasis. ``smoothness`` ``(...)`` is ``L_f = lambda_max(H)``.
    """

    x0: Float
    eigenvalues: Float
    eigenvectors: Float
    gradient: Float

    @property
    def smoothness(self) -> Float:
        out: Float = self.eigenvalues[..., -1]
        return out

    def _range_mask(self) -> NDArray[np.bool_]:
        """Eigenvalues numerically nonzero (``> d eps s_max``, as ``numpy.linalg.pinv``)."""
        d = self.eigenvalues.shape[-1]
        cutoff = d * np.finfo(np.float64).eps * self.smoothness[..., None]
        out: NDArray[np.bool_] = self.eigenvalues > cutoff
        return out

    def _apply(self, phi: Float) -> Float:
        """``x0 - V (phi * g0)``."""
        out: Float = self.x0 - (self.eigenvectors @ (phi * self.gradient)[..., None])[..., 0]
        return out

    def with_start(self, x0: ArrayLike) -> SpectralFit:
        """The same data from another start, without a new ``eigh``: ``V'(H x0' - b) = g0 +
        diag(s) V'(x0' - x0)``."""
        start = np.broadcast_to(np.asarray(x0, dtype=np.float64), self.x0.shape).copy()
        if not np.all(np.isfinite(start)):
            raise ValueError("x0 must be finite (no NaN or Inf)")
        shift = (np.swapaxes(self.eigenvectors, -1, -2) @ (start - self.x0)[..., None])[..., 0]
        return SpectralFit(
            start, self.eigenvalues, self.eigenvectors, self.gradient + self.eigenvalues * shift
        )

    def gd(self, steps: int | None) -> Float:
        """``steps`` GD steps at ``1/L_f`` (``None``: the limit closest to ``x0``)."""
        steps = _check_steps(steps)
        live = self._range_mask()
        s = np.where(live, self.eigenvalues, 1.0)
        if steps is None:
            return self._apply(np.where(live, 1.0 / s, 0.0))
        if steps == 0:
            return self.x0.copy()
        s_max = np.maximum(self.smoothness, np.finfo(np.float64).tiny)[..., None]
        ratio = np.clip(self.eigenvalues / s_max, 0.0, 1.0)  # 1 - (1 - ratio)^k, stably:
        with np.errstate(divide="ignore"):
            filtered = -np.expm1(steps * np.log1p(-ratio))
        phi = np.where(live, filtered / s, steps / s_max)
        return self._apply(phi)

    def ridge(self, strength: float) -> Float:
        """``argmin f(x) + (strength/2) ||x - x0||^2``."""
        strength = check_real("strength", strength, strict=True)
        return self._apply(1.0 / (np.maximum(self.eigenvalues, 0.0) + strength))

    def multiplier(self, radius: float) -> Float:
        """The trust-region multiplier ``lam >= 0`` of :meth:`ball` (0 where the unconstrained
        limit is inside the ball), found by bisection on the decreasing ``||p(lam)||``."""
        radius = check_real("radius", radius)
        live = self._range_mask()
        s = np.maximum(self.eigenvalues, 0.0)
        g = np.where(live, self.gradient, 0.0)
        free = np.linalg.norm(np.where(live, g / np.where(live, s, 1.0), 0.0), axis=-1)
        inside = free <= radius
        if radius == 0.0:
            return np.where(inside, 0.0, np.inf)
        lo = np.zeros_like(free)
        hi = np.linalg.norm(g, axis=-1) / radius  # ||p(hi)|| <= ||g||/hi = radius
        for _ in range(_BISECTION_ROUNDS):
            mid = 0.5 * (lo + hi)
            norm = np.linalg.norm(g / (s + mid[..., None] + 1e-300), axis=-1)
            outside = norm > radius
            lo = np.where(outside, mid, lo)
            hi = np.where(outside, hi, mid)
        out: Float = np.where(inside, 0.0, hi)
        return out

    def ball(self, radius: float) -> Float:
        """``argmin f`` over ``||x - x0|| <= radius``: the limit of projected GD; where
        several least-squares solutions lie in the ball, the one closest to ``x0``."""
        lam = self.multiplier(radius)[..., None]
        if radius == 0.0:
            return self.x0.copy()
        live = self._range_mask()
        s = np.maximum(self.eigenvalues, 0.0)
        free = np.where(live, 1.0 / np.where(live, s, 1.0), 0.0)
        phi = np.where(lam > 0, 1.0 / (s + np.where(lam > 0, lam, 1.0)), free)
        return self._apply(phi)


def spectral_fit(x0: ArrayLike, designs: ArrayLike, targets: ArrayLike) -> SpectralFit:
    """Eigendecompose ``H = X'X/n`` once for every fine-tuning mode of the batch."""
    start, xs, ys = _data(x0, designs, targets)
    h, b = _normal_equations(xs, ys)
    s, v = np.linalg.eigh(h)
    grad = (h @ start[..., None])[..., 0] - b
    g0 = (np.swapaxes(v, -1, -2) @ grad[..., None])[..., 0]
    return SpectralFit(start, s, v, g0)


def gd_steps(x0: ArrayLike, designs: ArrayLike, targets: ArrayLike, steps: int | None) -> Float:
    """``steps`` GD steps at ``1/L_f`` on ``||X x - y||^2/(2n)`` from ``x0`` (exact spectral
    form); ``steps=None`` gives the limit ``x0 + X^+ (y - X x0)``, the solution closest to
    ``x0``. Prop 5.3: ``||x_k - x*|| <= ||x0 - x*||`` when ``H`` is positive definite."""
    return spectral_fit(x0, designs, targets).gd(steps)


def ridge(x0: ArrayLike, designs: ArrayLike, targets: ArrayLike, strength: float) -> Float:
    """``argmin ||X x - y||^2/(2n) + (strength/2) ||x - x0||^2 = x0 + (H + strength I)^{-1}
    (b - H x0)``: one linear solve per problem of the batch."""
    strength = check_real("strength", strength, strict=True)
    start, xs, ys = _data(x0, designs, targets)
    h, b = _normal_equations(xs, ys)
    d = xs.shape[-1]
    rhs = b - (h @ start[..., None])[..., 0]
    step = np.linalg.solve(h + strength * np.eye(d), rhs[..., None])[..., 0]
    out: Float = start + step
    return out


def ball(x0: ArrayLike, designs: ArrayLike, targets: ArrayLike, radius: float) -> Float:
    """``argmin ||X x - y||^2/(2n)`` subject to ``||x - x0|| <= radius`` (the limit of
    :func:`projected_gd`), exact through the trust-region multiplier: ``x = x0 - (H + lam
    I)^{-1} (H x0 - b)`` with ``lam = 0`` if that is inside the ball, else ``||x - x0|| =
    radius``."""
    return spectral_fit(x0, designs, targets).ball(radius)


def projected_gd(
    x0: ArrayLike, designs: ArrayLike, targets: ArrayLike, radius: float, steps: int
) -> Float:
    """``steps`` steps of projected GD at ``1/L_f`` on the ball ``B(x0, radius)``:
    ``x <- x0 + P(x - grad f(x)/L_f - x0)`` with ``P`` the projection on ``B(0, radius)``."""
    radius = check_real("radius", radius)
    steps = check_int("steps", steps, low=0)  # no None here: ball() is the limit
    start, xs, ys = _data(x0, designs, targets)
    h, b = _normal_equations(xs, ys)
    step = 1.0 / np.maximum(np.linalg.eigvalsh(h)[..., -1], np.finfo(np.float64).tiny)
    x = start.copy()
    for _ in range(steps):
        x = x - step[..., None] * ((h @ x[..., None])[..., 0] - b)
        delta = x - start
        norm = np.linalg.norm(delta, axis=-1, keepdims=True)
        x = start + delta * np.minimum(1.0, radius / np.maximum(norm, 1e-300))
    return x
