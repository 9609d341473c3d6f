"""Covering number of a ball: ``N(B_r, eps) <= (1 + 2r/eps)^d``.

Statement
---------
The ball ``B_r = {x in R^d : ||x|| <= r}`` has an ``eps``-net (every point of ``B_r``
within ``eps`` of a net point) of at most ``(1 + 2r/eps)^d`` points. The sample-complexity
argument of Section 5 takes a union bound over such a net of the ball ``B(x*, r)`` that
fine-tuning never leaves (:mod:`proofs_checks.implicit_regularization`), which costs
``log N = d log(1 + 2r/eps)`` (:func:`minimax_core.bounds.covering_number_log`): a closer
initialisation (smaller ``r``) needs fewer samples.

Derivation
----------
Take a maximal ``eps``-separated subset ``P`` of ``B_r`` (pairwise distances ``> eps``).
Maximality makes ``P`` an ``eps``-net. The balls of radius ``eps/2`` around its points are
disjoint and lie in ``B_{r + eps/2}``, so ``|P| (eps/2)^d <= (r + eps/2)^d`` by volume,
i.e. ``|P| <= (1 + 2r/eps)^d``.

The check builds ``P`` greedily from many uniform points of ``B_r`` (so ``P`` is maximal
among them, and an ``eps``-net of them) and compares ``|P|`` with the bound, which holds
for every ``eps``-separated set. It also reports the fraction of fresh uniform points the
net covers (close to 1 when the candidate set is dense enough).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

import minimax_core as mc
from minimax_core.validation import check_int, check_real

from ._slack import Slack
from .numerics import Float
from .smoothing_curvature import sample_ball

__all__ = ["check_covering", "greedy_packing"]


def greedy_packing(points: Float, eps: float) -> Float:
    """The points kept by one pass that keeps a point iff it is farther than ``eps`` from
    every point kept so far: an ``eps``-separated set that is an ``eps``-net of ``points``."""
    kept = np.empty_like(points)
    count = 0
    for p in points:
        if count == 0 or np.min(np.sum((kept[:count] - p) ** 2, axis=1)) > eps * eps:
            kept[count] = p
            count += 1
    out: Float = kept[:count].copy()
    return out


def check_covering(
    radius: float, eps: float, dim: int, *, num_candidates: int = 5000, seed: int = 0
) -> Slack:
    """``|P| <= (1 + 2r/eps)^d`` for a greedy maximal ``eps``-separated set ``P`` of
    ``num_candidates`` uniform points of ``B_r``; ``ValueError`` unless ``num_candidates``
    exceeds the bound (otherwise ``|P| <= num_candidates`` holds it whatever the net).

    ``slack`` is ``log bound - log |P|`` (nats, so one scale fits every dimension);
    ``ratio`` is ``|P| / bound``; ``details["coverage"]`` the fraction of 2000 fresh uniform
    points within ``eps`` of the net, ``details["volume_lower_bound"]`` ``(r/eps)^d`` (the
    least size of any ``eps``-net of the whole ball).
    """
    radius = check_real("radius", radius, strict=True)
    eps = check_real("eps", eps, strict=True)
    dim = check_int("dim", dim)
    num_candidates = check_int("num_candidates", num_candidates)
    log_bound = mc.bounds.covering_number_log(radius, eps, dim)
    if log_bound >= math.log(num_candidates):
        raise ValueError(
            f"num_candidates must exceed the bound (1 + 2r/eps)^d = {math.exp(log_bound):.4g}: "
            f"a net of {num_candidates} candidates can never violate it (a vacuous check); "
            "raise num_candidates or eps"
        )
    rng = np.random.default_rng(seed)
    centre = np.zeros(dim)
    net = greedy_packing(sample_ball(rng, centre, radius, num_candidates), eps)
    fresh = sample_ball(rng, centre, radius, 2000)
    nearest, _ = cKDTree(net).query(fresh)
    return Slack(
        statement="N(B_r, eps) <= (1 + 2r/eps)^d",
        slack=log_bound - math.log(len(net)),
        tolerance=0.0,
        ratio=len(net) / math.exp(log_bound),
        details={
            "net_size": len(net),
            "log_bound": log_bound,
            "coverage": float(np.mean(nearest <= eps)),
            "volume_lower_bound": (radius / eps) ** dim,
        },
    )
