"""Does a downstream loss fit a convex combination of the upstream task losses?

Section 5 of the paper assumes that the loss of downstream task ``j`` is a convex
combination of the upstream task losses, ``l_j(theta) = sum_i lambda_ji L_i(theta)`` with
``lambda_j`` on the simplex; the minimax guarantee rests on it. This module measures how
well that holds for a given model and data.

**The fit** (:func:`fit_convex_combination`). With the losses measured at ``T`` parameter
points ``theta_1..theta_T`` (checkpoints along training, perturbations of one point), the
upstream losses ``U`` ``(T, M)`` and the downstream losses ``y`` ``(T,)``::

    min_{lambda in simplex, c}  (1/T) sum_t (y_t - c - U_t lambda)^2        (c = 0 unless intercept)

Expanding, ``(1/T) ||y - U lambda||^2 = lambda' (U'U/T) lambda - 2 (U'y/T)' lambda + const``,
so ``lambda`` solves the simplex QP ``min 0.5 lambda' Q lambda - l' lambda`` with
``Q = 2 U'U/T`` and ``l = 2 U'y/T`` (:func:`minimax_core.simplex_qp.solve_simplex_qp`). With
an intercept the best ``c`` for any ``lambda`` is ``ybar - Ubar lambda``, so centring the
columns of ``U`` and ``y`` removes ``c`` and the QP is the same on the centred data.

``scale=True`` fits ``y ~ c + s U lambda`` with a scale ``s >= 0`` as well: ``w = s lambda >= 0``
is a non-negative least-squares problem (``scipy.optimize.nnls``), ``s = sum w`` and
``lambda = w / s``. Use it when the downstream loss is in other units than the upstream ones
(a classifier's cross-entropy against masked-token cross-entropies): the weights still say
with which upstream tasks the downstream loss moves. If the best ``s`` is 0 (``y`` moves
against every column) the weights are undetermined and reported as uniform with ``s = 0``.

**How good the fit is.**

- ``r2 = 1 - sum (y - yhat)^2 / sum (y - ybar)^2`` on the ``T`` points of the fit
  (in-sample). Without an intercept it can be negative: the constrained fit may be worse
  than the mean. In-sample ``r2`` can only grow when columns are added (a finer task split
  nests a coarser one), whatever ``y`` is, so compare splits by:
- ``r2_cv``: the same ratio with each point's prediction made by the fit on the *other*
  points (``folds``-fold cross-validation with seeded folds, or leave-one-group-out with
  ``groups``, e.g. one group per training run so that neighbouring checkpoints of a run
  cannot vouch for each other). It is the honest number: a ``y`` unrelated to ``U`` gets
  ``r2_cv <= 0`` up to noise, however many columns there are.
- ``residual_rms = sqrt(mean (y - yhat)^2)`` in the units of ``y``.
- ``weights_low``, ``weights_high``: percentile bootstrap interval of each weight
  (``bootstrap`` resamples of the ``T`` points with replacement, refitted; ``seed``). A
  weight is identified only if the (centred) columns are linearly independent; collinear
  columns share their weight arbitrarily (their sum is identified) and show it as wide
  intervals.

Validity: ``U`` and ``y`` must be finite, ``U`` two-dimensional with ``T >= M + 1`` rows.

**Collecting the losses** (:func:`collect_losses`): evaluate caller-given upstream and
downstream loss functions at a list of parameter points: ``deep.pretrain`` checkpoints
(a ``step_XXXXXXXX`` folder, or a checkpoint root, which stands for all its checkpoints,
oldest first), Hugging Face model folders (``save_pretrained``; loaded with
``hf_class.from_pretrained``) or models in memory. :func:`linear_probe`'s ``loss`` is the
usual downstream loss at a parameter point: the held-out loss of the best linear head on the
frozen features there; its ``predictions`` give the probe's score (e.g. the accuracy of a
linear probe, as the MAE experiment reports it).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from minimax_core.simplex_qp import solve_simplex_qp

__all__ = [
    "CollectedLosses",
    "ConvexFit",
    "ProbeResult",
    "collect_losses",
    "fit_convex_combination",
    "linear_probe",
]


# ----------------------------------------------------------------------------- the fit


@dataclass(frozen=True)
class ConvexFit:
    """Result of :func:`fit_convex_combination` (arrays are read-only).

    ``weights`` ``(M,)`` on the simplex; ``intercept`` (0 without one); ``scale`` (1 unless
    fitted); ``r2`` in-sample, ``r2_cv`` cross-validated (NaN if ``y`` is constant);
    ``residual_rms``; ``weights_low``/``weights_high`` the bootstrap interval at level
    ``confidence`` (NaN with ``bootstrap=0``); ``fitted`` the in-sample predictions.
    """

    weights: np.ndarray
    intercept: float
    scale: float
    r2: float
    r2_cv: float
    residual_rms: float
    weights_low: np.ndarray
    weights_high: np.ndarray
    confidence: float
    num_points: int
    fitted: np.ndarray

    def predict(self, upstream: Any) -> np.ndarray:
        """``c + s U lambda`` for new upstream losses ``U`` ``(n, M)``."""
        u = np.asarray(upstream, dtype=np.float64)
        if u.ndim != 2 or u.shape[1] != self.weights.shape[0]:
            raise ValueError(
                f"upstream must have shape (n, {self.weights.shape[0]}), got {u.shape}"
            )
        out: np.ndarray = self.intercept + self.scale * (u @ self.weights)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": self.weights.tolist(),
            "weights_low": self.weights_low.tolist(),
            "weights_high": self.weights_high.tolist(),
            "confidence": self.confidence,
            "intercept": self.intercept,
            "scale": self.scale,
            "r2": self.r2,
            "r2_cv": self.r2_cv,
            "residual_rms": self.residual_rms,
            "num_points": self.num_points,
        }


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def _check_inputs(upstream: Any, downstream: Any) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(upstream, dtype=np.float64)
    y = np.asarray(downstream, dtype=np.float64)
    if u.ndim != 2 or u.shape[1] < 1:
        raise ValueError(
            f"upstream must be a (T, M) array (T parameter points, M >= 1 upstream tasks), "
            f"got shape {u.shape}"
        )
    t, m = u.shape
    if y.shape != (t,):
        raise ValueError(
            f"downstream must have shape (T,) = ({t},) to match upstream {u.shape}, got {y.shape}"
        )
    if t < m + 1:
        raise ValueError(
            f"need T >= M + 1 parameter points to fit M = {m} weights, got T = {t}: measure "
            "the losses at more checkpoints or perturbations"
        )
    bad_u = ~np.isfinite(u)
    if bad_u.any():
        rows, cols = np.nonzero(bad_u)
        raise ValueError(
            f"upstream has {int(bad_u.sum())} non-finite value(s) (NaN or Inf), first at "
            f"point {int(rows[0])}, task {int(cols[0])}"
        )
    bad_y = ~np.isfinite(y)
    if bad_y.any():
        raise ValueError(
            f"downstream has {int(bad_y.sum())} non-finite value(s) (NaN or Inf), first at "
            f"point {int(np.flatnonzero(bad_y)[0])}"
        )
    return u, y


class _Solution(NamedTuple):
    weights: np.ndarray
    intercept: float
    scale: float


def _solve(u: np.ndarray, y: np.ndarray, intercept: bool, scale: bool) -> _Solution:
    """Least squares over the simplex (optionally with intercept and/or scale)."""
    m = u.shape[1]
    if intercept:
        u_mean, y_mean = u.mean(axis=0), float(y.mean())
        uc, yc = u - u_mean, y - y_mean
    else:
        u_mean, y_mean = np.zeros(m), 0.0
        uc, yc = u, y
    # a common factor does not move the minimiser; it keeps the QP's numbers near 1
    norm = max(float(np.max(np.abs(uc))), float(np.max(np.abs(yc))), 1e-300)
    a, b = uc / norm, yc / norm
    if scale:
        from scipy.optimize import nnls

        w, _ = nnls(a, b)
        s = float(w.sum())
        lam = w / s if s > 0 else np.full(m, 1.0 / m)
    else:
        t = u.shape[0]
        res = solve_simplex_qp(2.0 * a.T @ a / t, 2.0 * a.T @ b / t)
        lam, s = res.weights, 1.0
    c = y_mean - s * float(u_mean @ lam) if intercept else 0.0
    return _Solution(lam, c, s)


def _predict(sol: _Solution, u: np.ndarray) -> np.ndarray:
    out: np.ndarray = sol.intercept + sol.scale * (u @ sol.weights)
    return out


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    total = float(np.sum((y - y.mean()) ** 2))
    if total <= 1e-300 * max(1.0, float(np.sum(y**2))):
        return math.nan
    return 1.0 - float(np.sum((y - pred) ** 2)) / total


def _folds(t: int, folds: int, groups: Any, seed: int) -> np.ndarray:
    """A fold label per point: the given groups, or ``folds`` seeded random folds."""
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (t,):
            raise ValueError(f"groups must have shape (T,) = ({t},), got {g.shape}")
        labels = np.unique(g, return_inverse=True)[1]
        if labels.max() < 1:
            raise ValueError("groups must contain at least two distinct groups")
        return np.asarray(labels)
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= t:
        raise ValueError(f"folds must be an integer in [2, T] = [2, {t}], got {folds!r}")
    order = np.random.default_rng([seed, 1]).permutation(t)
    labels = np.empty(t, dtype=np.int64)
    labels[order] = np.arange(t) % folds
    return labels


def fit_convex_combination(
    upstream: Any,
    downstream: Any,
    *,
    intercept: bool = False,
    scale: bool = False,
    folds: int = 5,
    groups: Any = None,
    bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> ConvexFit:
    """Fit ``downstream ~ [c +] [s *] upstream @ lambda`` with ``lambda`` on the simplex.

    Parameters
    ----------
    upstream: ``(T, M)`` upstream task losses at ``T`` parameter points (``T >= M + 1``).
    downstream: ``(T,)`` downstream losses at the same points.
    intercept: fit a constant ``c`` too.
    scale: fit a factor ``s >= 0`` too (see the module docstring).
    folds: cross-validation folds for ``r2_cv`` (ignored with ``groups``); in ``[2, T]``.
    groups: ``(T,)`` labels; ``r2_cv`` then leaves one group out at a time.
    bootstrap: resamples for the weight intervals (0: none, intervals NaN).
    confidence: level of the intervals, in ``(0, 1)``.
    seed: seeds the folds and the bootstrap.
    """
    u, y = _check_inputs(upstream, downstream)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap must be an integer >= 0, got {bootstrap!r}")
    if not (isinstance(confidence, int | float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    t, m = u.shape
    sol = _solve(u, y, intercept, scale)
    fitted = _predict(sol, u)

    labels = _folds(t, folds, groups, seed)
    cv_pred = np.empty(t)
    for k in np.unique(labels):
        test = labels == k
        part = _solve(u[~test], y[~test], intercept, scale)
        cv_pred[test] = _predict(part, u[test])

    low = high = np.full(m, math.nan)
    if bootstrap:
        rng = np.random.default_rng([seed, 2])
        draws = np.empty((bootstrap, m))
        for b in range(bootstrap):
            idx = rng.integers(0, t, size=t)
            draws[b] = _solve(u[idx], y[idx], intercept, scale).weights
        alpha = 0.5 * (1.0 - confidence)
        low, high = np.quantile(draws, [alpha, 1.0 - alpha], axis=0)
    return ConvexFit(
        weights=_frozen(sol.weights),
        intercept=float(sol.intercept),
        scale=float(sol.scale),
        r2=_r2(y, fitted),
        r2_cv=_r2(y, cv_pred),
        residual_rms=float(np.sqrt(np.mean((y - fitted) ** 2))),
        weights_low=_frozen(low),
        weights_high=_frozen(high),
        confidence=float(confidence),
        num_points=t,
        fitted=_frozen(fitted),
    )


# ----------------------------------------------------------------------------- probes


class ProbeResult(NamedTuple):
    """``loss`` on the dev rows (cross-entropy in nats, or mean squared error) and the dev
    ``predictions`` (class indices, or values)."""

    loss: float
    predictions: np.ndarray


def linear_probe(
    train_x: Any,
    train_y: Any,
    dev_x: Any,
    dev_y: Any,
    *,
    num_labels: int,
    l2: float = 1e-3,
    steps: int = 100,
) -> ProbeResult:
    """The best linear head on frozen features, scored on dev rows (a loss of the features).

    Features (arrays or CPU tensors) are cast to float64 and standardised with the training
    statistics. ``num_labels >= 2``: multinomial logistic regression minimising
    ``mean CE + l2 ||W||^2`` by L-BFGS (at most ``steps`` iterations, from zero:
    deterministic); the loss is the mean dev cross-entropy (nats), the predictions the
    arg-max classes (their accuracy: :func:`deep.apps.evaluation.accuracy`).
    ``num_labels == 1``: ridge regression ``min mean (x'w + b - y)^2 + l2 ||w||^2`` in closed
    form; the loss is the dev mean squared error.
    """
    xa = torch.as_tensor(np.asarray(train_x), dtype=torch.float64)
    xb = torch.as_tensor(np.asarray(dev_x), dtype=torch.float64)
    if xa.ndim != 2 or xb.ndim != 2 or xa.shape[1] != xb.shape[1]:
        raise ValueError(
            f"train_x and dev_x must be (n, d) arrays of one width, got {tuple(xa.shape)} "
            f"and {tuple(xb.shape)}"
        )
    ya = torch.as_tensor(np.asarray(train_y))
    yb = torch.as_tensor(np.asarray(dev_y))
    if ya.shape != (xa.shape[0],) or yb.shape != (xb.shape[0],):
        raise ValueError("train_y and dev_y must have one entry per row of train_x and dev_x")
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be an integer >= 1, got {num_labels!r}")
    if not (math.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    mean, std = xa.mean(0), xa.std(0).clamp_min(1e-6)
    a, b = (xa - mean) / std, (xb - mean) / std
    if num_labels == 1:
        ones_a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
        reg = l2 * len(a) * torch.eye(ones_a.shape[1], dtype=a.dtype)
        reg[-1, -1] = 0.0
        coef = torch.linalg.solve(ones_a.T @ ones_a + reg, ones_a.T @ ya.double())
        pred = torch.cat([b, torch.ones(len(b), 1, dtype=b.dtype)], 1) @ coef
        return ProbeResult(float((pred - yb.double()).square().mean()), pred.numpy())
    labels_a, labels_b = ya.long(), yb.long()
    if int(labels_a.min()) < 0 or int(max(labels_a.max(), labels_b.max())) >= num_labels:
        raise ValueError(f"labels must be class indices in [0, {num_labels})")
    w = torch.zeros(a.shape[1], num_labels, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ w + bias, labels_a) + l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        logits = b @ w + bias
        loss = float(torch.nn.functional.cross_entropy(logits, labels_b))
        return ProbeResult(loss, logits.argmax(dim=1).numpy())


# ----------------------------------------------------------------------------- collecting


class CollectedLosses(NamedTuple):
    """``points``: a name per parameter point (its path, or ``model[i]``); ``upstream``
    ``(T, M)``; ``downstream`` ``(T, J)`` with the names ``downstream_names``."""

    points: tuple[str, ...]
    upstream: np.ndarray
    downstream: np.ndarray
    downstream_names: tuple[str, ...]

    def column(self, name: str) -> np.ndarray:
        """The ``(T,)`` losses of downstream task ``name``."""
        if name not in self.downstream_names:
            raise ValueError(f"no downstream task {name!r}; have {list(self.downstream_names)}")
        out: np.ndarray = self.downstream[:, self.downstream_names.index(name)]
        return out


Point = str | os.PathLike[str] | torch.nn.Module


def _expand(points: Sequence[Point]) -> list[Point]:
    """Checkpoint roots (folders of ``step_*`` checkpoints) become their checkpoints."""
    from .checkpoint import list_checkpoints

    out: list[Point] = []
    for p in points:
        if isinstance(p, torch.nn.Module):
            out.append(p)
            continue
        path = Path(p)
        if not path.exists():
            raise ValueError(f"parameter point {path} does not exist")
        if (path / "meta.json").is_file() or (path / "config.json").is_file():
            out.append(path)
            continue
        found = list_checkpoints(path)
        if not found:
            raise ValueError(
                f"parameter point {path} is neither a deep.pretrain checkpoint (meta.json), "
                "a checkpoint root (step_XXXXXXXX folders), nor a Hugging Face model folder "
                "(config.json)"
            )
        out.extend(found)
    return out


def _load(point: Point, model: torch.nn.Module | None, hf_class: Any) -> torch.nn.Module:
    if isinstance(point, torch.nn.Module):
        return point
    path = Path(point)
    if (path / "meta.json").is_file():
        from .checkpoint import load_checkpoint, load_model_weights

        if model is None:
            raise ValueError(
                f"{path} is a deep.pretrain checkpoint, which stores weights only: pass "
                "model= (a module of the same architecture) to load it into"
            )
        fresh = copy.deepcopy(model)
        load_model_weights(fresh, load_checkpoint(path))
        return fresh
    if hf_class is None:
        from transformers import AutoModel

        hf_class = AutoModel
    loaded: torch.nn.Module = hf_class.from_pretrained(str(path))
    return loaded


def collect_losses(
    points: Sequence[Point],
    upstream: Callable[[torch.nn.Module], Any],
    downstream: Callable[[torch.nn.Module], Any] | Mapping[str, Callable[[torch.nn.Module], Any]],
    *,
    model: torch.nn.Module | None = None,
    hf_class: Any = None,
    device: str | torch.device | None = None,
) -> CollectedLosses:
    """Evaluate upstream and downstream losses at every parameter point.

    ``points``: ``deep.pretrain`` checkpoint folders or roots (loaded into a copy of
    ``model``), Hugging Face model folders (``hf_class.from_pretrained``; default
    ``transformers.AutoModel``) or modules. ``upstream(m)`` returns the ``M`` upstream task
    losses of model ``m`` (the same ``M`` at every point); ``downstream`` is one function
    ``m -> loss`` or a mapping ``name -> function``. Each model is put in eval mode (and on
    ``device`` if given) before the functions see it; they decide about gradients (a probe
    fits a head). Every value must be finite. Feed the result to
    :func:`fit_convex_combination`: ``fit_convex_combination(c.upstream, c.column(name))``.
    """
    if not points:
        raise ValueError("points must name at least one parameter point")
    funcs = dict(downstream) if isinstance(downstream, Mapping) else {"downstream": downstream}
    if not funcs:
        raise ValueError("downstream must be a function or a non-empty mapping of functions")
    names: list[str] = []
    ups: list[np.ndarray] = []
    downs: list[list[float]] = []
    for i, point in enumerate(_expand(points)):
        net = _load(point, model, hf_class)
        name = f"model[{i}]" if isinstance(point, torch.nn.Module) else str(point)
        if device is not None:
            net = net.to(device)
        net.eval()
        raw = upstream(net)
        u = np.asarray(
            raw.detach().cpu() if torch.is_tensor(raw) else raw, dtype=np.float64
        ).reshape(-1)
        if ups and u.shape != ups[0].shape:
            raise ValueError(
                f"upstream gave {u.size} losses at {name} but {ups[0].size} at {names[0]}"
            )
        if not np.all(np.isfinite(u)):
            raise ValueError(f"upstream losses at {name} are not all finite: {u.tolist()}")
        row = []
        for key, fn in funcs.items():
            value = fn(net)
            value = float(value.detach().cpu()) if torch.is_tensor(value) else float(value)
            if not math.isfinite(value):
                raise ValueError(f"downstream loss {key!r} at {name} is not finite: {value}")
            row.append(value)
        names.append(name)
        ups.append(u)
        downs.append(row)
    return CollectedLosses(
        tuple(names), np.stack(ups), np.asarray(downs, dtype=np.float64), tuple(funcs)
    )
