"""Section 5: downstream samples the hardest task needs from the minimax vs the average-risk
start, with fine-tuning as the theory has it (a limited budget around the start).

Upstream: ``M`` linear-regression tasks of one of three families of
:mod:`minimax_core.problems` -- ``iid`` (:func:`~minimax_core.problems.regression_family`),
``outlier`` (a cluster plus one far task, :func:`~minimax_core.problems.outlier_family`)
and ``heterogeneous`` (noise levels and curvatures differ,
:func:`~minimax_core.problems.heterogeneous_family`) -- each learnt from ``n_up`` samples.
The starts: the minimax point of the empirical tasks (``minimize_max(method="auto")``,
exact) and the average-risk minimiser. Downstream: the ``M`` upstream tasks and random
``Dirichlet(1)`` mixtures; a downstream sample picks upstream task ``i`` with probability
``lambda_i``, so the population loss is ``l_j = sum_i lambda_ji L_i``.

Fine-tuning (:mod:`minimax_core.finetune`, all exact spectral forms of one ``eigh``): ``k``
GD steps at ``1/L_f`` (``k`` in 1, 2, 5, 10, 20, 50), GD to convergence, the limit of
projected GD on ``B(x0, R)`` (``R`` a fraction of the spread of the upstream task optima)
and ridge toward the start (``strength`` a fraction of the upstream tasks' mean
curvature). Both starts see the same samples (paired); the sample sizes are nested prefixes
of one draw per repetition.

Measured: the population excess risk of the hardest downstream task (the largest over
tasks, per repetition), averaged over repetitions, on a grid of ``n``. Samples needed for
a target: the smallest ``n`` from which that mean stays below the target (log-log
interpolation at the crossing; :func:`samples_needed`); ``null`` when a start never gets
there on the grid. Targets, per family and budget: geometric points ``lo^(1-q) hi^q``,
``q`` in (0.2, 0.5, 0.8), between ``lo`` = what the better start reaches at the largest
``n`` (so each target is reachable by at least one start; the ERM floor, the converged
excess at that ``n``, is reported alongside) and ``hi`` = the lower of the two curves at
the smallest ``n`` (so no target is met by both at once). The ratio is minimax / average
samples (interpolated; the rows report them rounded up to integers); it is ``null`` when
either side is ``null`` (a censored comparison: the row says which start failed).
``ratio_ci``: paired bootstrap over repetitions (percentiles 2.5 and 97.5), ``null`` when
the ratio is ``null`` or more than 2.5% of the bootstrap replicates have a censored side
(an unbounded end).

Prediction: the covering argument of Section 5 (fine-tuning stays in ``B(x_j*, r_j)``,
excess ``<= t`` within ``eps_j = sqrt(2 t / L_j)``, samples ``~ d log(1 + 2 r_j / eps_j)``
for the hardest task ``j``) predicts the ratio of those terms. Over many random families of
mixed kinds we compare it with the measured ratio at a fixed small budget (``k`` GD steps,
target reachable by both starts) and report the Spearman correlation.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

import minimax_core as mc
from deep.plotting import new_figure, save_figure

from ..common import Experiment, Report, given, write_json
from ..theory import average_risk_minimiser

NAME = "sample-complexity"
FAMILIES = ("iid", "outlier", "heterogeneous")
INITS = ("minimax", "average")
STEP_BUDGETS = (1, 2, 5, 10, 20, 50)
#: ball radii as fractions of the RMS spread of the upstream task optima around their mean
RADIUS_FRACTIONS = (0.5, 1.0, 2.0)
#: ridge strengths as fractions of the upstream tasks' mean curvature ``mean_i tr(A_i)/d``
RIDGE_FRACTIONS = (1.0, 0.3, 0.1)
#: where the targets sit between ``lo`` (q = 0) and ``hi`` (q = 1), geometrically
TARGET_LEVELS = (0.2, 0.5, 0.8)
#: bootstrap replicates of ``ratio_ci``
BOOTSTRAP = 400


@dataclass(frozen=True)
class Budget:
    """One fine-tuning mode and its budget (``None`` for ``converged``)."""

    mode: str  # "steps" | "converged" | "ball" | "ridge"
    value: float | None

    @property
    def label(self) -> str:
        if self.mode == "converged":
            return "converged"
        if self.mode == "steps":
            return f"{int(self.value or 0)} steps"
        return f"{self.mode} {self.value:.3g}"


@dataclass(frozen=True)
class Setup:
    """A family, its downstream tasks and the two starts."""

    family: mc.problems.RegressionFamily
    tasks: mc.problems.QuadraticTasks
    mixtures: np.ndarray
    starts: dict[str, np.ndarray]
    radius_scale: float
    curvature_scale: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-tasks", type=int, default=8, help="upstream tasks M (default 8)")
    parser.add_argument("--dim", type=int, default=None, help="d (default 40, quick 20)")
    parser.add_argument(
        "--mixtures", type=int, default=8, help="random downstream mixtures (default 8)"
    )
    parser.add_argument(
        "--upstream-samples",
        type=int,
        default=None,
        help="samples per upstream task (default 500, quick 200)",
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 16, quick 8)")
    parser.add_argument(
        "--max-samples", type=int, default=None, help="largest n (default 1000, quick 400)"
    )
    parser.add_argument(
        "--grid", type=int, default=None, help="points on the n grid (default 12, quick 9)"
    )
    parser.add_argument(
        "--families", nargs="+", default=list(FAMILIES), choices=FAMILIES, help="families"
    )
    parser.add_argument(
        "--prediction-families",
        type=int,
        default=None,
        help="random families of the prediction study (default 60, quick 36)",
    )
    parser.add_argument(
        "--prediction-steps", type=int, default=2, help="GD budget of the prediction study"
    )
    parser.add_argument("--seed", type=int, default=0, help="family seed")


def _config(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    cfg = {
        "num_tasks": args.num_tasks,
        "dim": given(args.dim, 20 if quick else 40),
        "mixtures": args.mixtures,
        "upstream_samples": given(args.upstream_samples, 200 if quick else 500),
        "reps": given(args.reps, 8 if quick else 16),
        "max_samples": given(args.max_samples, 400 if quick else 1000),
        "grid_points": given(args.grid, 9 if quick else 12),
        "families": list(args.families),
        "prediction_families": given(args.prediction_families, 36 if quick else 60),
        "prediction_steps": args.prediction_steps,
        "prediction_reps": 4 if quick else 8,
        "seed": args.seed,
        "step_budgets": list(STEP_BUDGETS),
        "radius_fractions": list(RADIUS_FRACTIONS),
        "ridge_fractions": list(RIDGE_FRACTIONS),
        "target_levels": list(TARGET_LEVELS),
        "bootstrap": BOOTSTRAP,
        "min_samples": 5,
    }
    for key in ("num_tasks", "dim", "upstream_samples", "reps", "grid_points", "prediction_steps"):
        if cfg[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {cfg[key]}")
    if cfg["num_tasks"] < 2:
        raise ValueError(
            f"--num-tasks must be >= 2 (a family with an outlier), got {cfg['num_tasks']}"
        )
    if cfg["reps"] < 2:
        raise ValueError(f"--reps must be >= 2 (the bootstrap needs two), got {cfg['reps']}")
    if cfg["mixtures"] < 0:
        raise ValueError(f"--mixtures must be >= 0, got {cfg['mixtures']}")
    if cfg["prediction_families"] < 0:
        raise ValueError(f"--prediction-families must be >= 0, got {cfg['prediction_families']}")
    if cfg["upstream_samples"] < cfg["dim"]:
        raise ValueError(
            f"--upstream-samples must be >= dim = {cfg['dim']} (full-rank upstream tasks), "
            f"got {cfg['upstream_samples']}"
        )
    if cfg["max_samples"] <= cfg["min_samples"]:
        raise ValueError(f"--max-samples must be > {cfg['min_samples']}, got {cfg['max_samples']}")
    return cfg


def sample_grid(cfg: dict[str, Any]) -> np.ndarray:
    grid = np.geomspace(cfg["min_samples"], cfg["max_samples"], cfg["grid_points"])
    return np.unique(np.round(grid).astype(np.int64))


def make_family(
    kind: str, num_tasks: int, dim: int, seed: int, **params: Any
) -> mc.problems.RegressionFamily:
    """The family ``kind`` with its default parameters (overridden by ``params``)."""
    if kind == "iid":
        return mc.problems.regression_family(num_tasks, dim, seed=seed, **params)
    if kind == "outlier":
        return mc.problems.outlier_family(num_tasks, dim, seed=seed, **params)
    if kind == "heterogeneous":
        return mc.problems.heterogeneous_family(num_tasks, dim, seed=seed, **params)
    raise ValueError(f"family must be one of {FAMILIES}, got {kind!r}")


def random_family_params(kind: str, rng: np.random.Generator, num_tasks: int) -> dict[str, Any]:
    """Random parameters of a family of the prediction study (the family's own ranges)."""
    if kind == "iid":
        return {"task_spread": float(rng.uniform(0.3, 2.0)), "noise": float(rng.uniform(0.2, 1.0))}
    if kind == "outlier":
        return {
            "num_outliers": int(rng.integers(1, max(2, num_tasks // 3) + 1)),
            "outlier_distance": float(rng.uniform(1.0, 4.0)),
            "cluster_spread": float(rng.uniform(0.1, 1.0)),
            "noise": float(rng.uniform(0.2, 1.0)),
        }
    return {
        "noise_range": (0.1, float(rng.uniform(0.3, 2.0))),
        "curvature_range": (1.0, float(rng.uniform(1.5, 10.0))),
        "task_spread": float(rng.uniform(0.3, 2.0)),
    }


def prepare(
    family: mc.problems.RegressionFamily, cfg: dict[str, Any], seed: int, num_mixtures: int
) -> Setup:
    """Fit the upstream tasks on samples, find both starts, build the downstream tasks."""
    m = family.num_tasks
    upstream = family.empirical(cfg["upstream_samples"], seed=seed + 1)
    quad = mc.problems.QuadraticTasks(upstream.hessian_stack, upstream.centers, upstream.offsets)
    res = mc.minimize_max(quad, method="auto")
    if not res.success:
        raise RuntimeError(f"the minimax start did not converge: {res.message}")
    starts = {"minimax": np.asarray(res.x), "average": average_risk_minimiser(quad)}
    parts = [np.eye(m)]
    if num_mixtures > 0:
        parts.append(
            mc.problems.random_mixtures(m, num_mixtures, include_vertices=False, seed=seed + 2)
        )
    mixtures = np.concatenate(parts)
    tasks = mc.problems.downstream_tasks(family.population(), mixtures)
    spread = upstream.centers - upstream.centers.mean(axis=0)
    radius_scale = float(np.sqrt(np.mean(np.sum(spread**2, axis=1))))
    curvature_scale = float(np.mean(np.einsum("mii->m", quad.hessian_stack)) / quad.dim)
    return Setup(family, tasks, mixtures, starts, radius_scale, curvature_scale)


def budgets_for(setup: Setup, cfg: dict[str, Any]) -> list[Budget]:
    out = [Budget("steps", float(k)) for k in cfg["step_budgets"]]
    out.append(Budget("converged", None))
    out += [Budget("ball", f * setup.radius_scale) for f in cfg["radius_fractions"]]
    out += [Budget("ridge", f * setup.curvature_scale) for f in cfg["ridge_fractions"]]
    return out


def excess_risk(tasks: mc.problems.QuadraticTasks, x: np.ndarray) -> np.ndarray:
    """Population excess risk ``(x - x_j*)' H_j (x - x_j*) / 2`` for ``x`` ``(J, R, d)``."""
    diff = x - tasks.centers[:, None, :]
    out: np.ndarray = 0.5 * np.einsum("jri,jik,jrk->jr", diff, tasks.hessian_stack, diff)
    return out


def _fine_tuned(fit: mc.finetune.SpectralFit, budget: Budget) -> np.ndarray:
    if budget.mode == "steps":
        return fit.gd(int(budget.value or 0))
    if budget.mode == "converged":
        return fit.gd(None)
    if budget.mode == "ball":
        return fit.ball(float(budget.value or 0.0))
    return fit.ridge(float(budget.value or 0.0))


def hardest_task_curves(
    setup: Setup, xs: np.ndarray, ys: np.ndarray, grid: np.ndarray, budgets: list[Budget]
) -> dict[Budget, dict[str, np.ndarray]]:
    """``curves[budget][start]``: the hardest downstream task's excess risk, ``(grid, R)``."""
    reps = xs.shape[1]
    out = {b: {i: np.empty((len(grid), reps)) for i in INITS} for b in budgets}
    for k, n in enumerate(grid):
        first = mc.finetune.spectral_fit(setup.starts["minimax"], xs[:, :, :n], ys[:, :, :n])
        for name, x0 in setup.starts.items():
            fit = first.with_start(x0)  # one eigh per sample size for both starts
            for b in budgets:
                out[b][name][k] = excess_risk(setup.tasks, _fine_tuned(fit, b)).max(axis=0)
    return out


def samples_needed_batch(grid: np.ndarray, curves: np.ndarray, target: float) -> np.ndarray:
    """:func:`samples_needed` for every row of ``curves`` ``(B, G)``; ``nan`` for ``None``."""
    above = curves > target
    size = curves.shape[-1]
    last = size - 1 - np.argmax(above[:, ::-1], axis=1)  # last index above the target
    out = np.full(len(curves), float(grid[0]))
    cross = above.any(axis=1)
    out[cross & (last == size - 1)] = np.nan
    inner = np.flatnonzero(cross & (last < size - 1))
    if inner.size:
        k = last[inner]
        n0, n1 = np.log(grid[k].astype(float)), np.log(grid[k + 1].astype(float))
        c0, c1 = np.log(curves[inner, k]), np.log(curves[inner, k + 1])
        out[inner] = np.exp(n0 + (math.log(target) - c0) / (c1 - c0) * (n1 - n0))
    return out


def samples_needed(grid: np.ndarray, curve: np.ndarray, target: float) -> float | None:
    """Smallest ``n`` from which ``curve`` stays ``<= target`` on the rest of the grid,
    interpolated log-log at the crossing; ``None`` if it ends above the target."""
    value = float(samples_needed_batch(grid, np.asarray(curve, dtype=float)[None], target)[0])
    return None if math.isnan(value) else value


def placed_targets(mean_curves: dict[str, np.ndarray], levels: list[float]) -> list[float]:
    """Targets between what the better start reaches at the largest ``n`` and the lower
    curve at the smallest ``n`` (see the module docstring); none when there is no room."""
    lo = min(float(c[-1]) for c in mean_curves.values())
    hi = min(float(c[0]) for c in mean_curves.values())
    if not (lo > 0 and hi > lo * 1.05):
        return []
    return [lo ** (1.0 - q) * hi**q for q in levels]


def ratio_with_interval(
    grid: np.ndarray,
    curves: dict[str, np.ndarray],
    target: float,
    boot: np.ndarray,
) -> dict[str, Any]:
    """Samples of each start, their ratio and the paired bootstrap interval (``boot``:
    ``(B, R)`` resampled repetition indices)."""
    need = {i: samples_needed(grid, curves[i].mean(axis=1), target) for i in INITS}
    mm, avg = need["minimax"], need["average"]
    ratio = mm / avg if mm is not None and avg is not None else None
    interval = None
    if ratio is not None:
        reps_mm = curves["minimax"][:, boot].mean(axis=2).T  # (B, grid)
        reps_avg = curves["average"][:, boot].mean(axis=2).T
        a = samples_needed_batch(grid, reps_mm, target)
        b = samples_needed_batch(grid, reps_avg, target)
        ok = ~(np.isnan(a) | np.isnan(b))
        values, censored = a[ok] / b[ok], int(np.sum(~ok))
        if censored <= 0.025 * len(boot):
            lo, hi = np.percentile(values, [2.5, 97.5])
            interval = [float(lo), float(hi)]
    return {"samples": need, "ratio": ratio, "ratio_ci": interval}


def covering_prediction(setup: Setup, target: float) -> dict[str, Any]:
    """Section 5's covering argument at excess target ``t``: ``log N_j = d log(1 + 2 r_j /
    eps_j)`` with ``r_j = ||x0 - x_j*||`` and ``eps_j = sqrt(2 t / L_j)``; the hardest task
    has the largest ``log N``; the predicted ratio is minimax / average of that term."""
    tasks = setup.tasks
    smooth = np.linalg.eigvalsh(tasks.hessian_stack)[:, -1]
    eps = np.sqrt(2.0 * target / smooth)
    log_n = {}
    for name, x0 in setup.starts.items():
        r = np.linalg.norm(tasks.centers - x0, axis=1)
        log_n[name] = np.array(
            [
                mc.bounds.covering_number_log(float(a), float(e), tasks.dim)
                for a, e in zip(r, eps, strict=True)
            ]
        )
    worst = {k: float(v.max()) for k, v in log_n.items()}
    return {
        "log_covering_hardest": worst,
        "predicted_ratio": worst["minimax"] / worst["average"],
        "distance_to_hardest": {
            k: float(np.linalg.norm(tasks.centers[int(np.argmax(v))] - setup.starts[k]))
            for k, v in log_n.items()
        },
    }


def _study_family(
    kind: str, cfg: dict[str, Any], grid: np.ndarray, rng: np.random.Generator
) -> dict[str, Any]:
    seed = cfg["seed"]
    family = make_family(kind, cfg["num_tasks"], cfg["dim"], seed)
    setup = prepare(family, cfg, seed, cfg["mixtures"])
    budgets = budgets_for(setup, cfg)
    xs, ys = mc.problems.sample_mixtures(
        family, setup.mixtures, int(grid[-1]), cfg["reps"], np.random.default_rng(seed + 3)
    )
    curves = hardest_task_curves(setup, xs, ys, grid, budgets)
    boot = rng.integers(0, cfg["reps"], size=(cfg["bootstrap"], cfg["reps"]))
    erm_floor = float(curves[Budget("converged", None)]["minimax"][-1].mean())
    rows, per_budget = [], []
    for b in budgets:
        means = {i: curves[b][i].mean(axis=1) for i in INITS}
        targets = placed_targets(means, cfg["target_levels"])
        entries = []
        for t in targets:
            got = ratio_with_interval(grid, curves[b], t, boot)
            rows.append(
                {
                    "family": kind,
                    "fine_tune": b.mode,
                    "budget": int(b.value)
                    if b.mode == "steps" and b.value is not None
                    else b.value,
                    "target": t,
                    "samples_minimax": _as_int(got["samples"]["minimax"]),
                    "samples_average": _as_int(got["samples"]["average"]),
                    "ratio": got["ratio"],
                    "ratio_ci": got["ratio_ci"],
                }
            )
            entries.append({**got, "target": t, "prediction": covering_prediction(setup, t)})
        per_budget.append(
            {
                "mode": b.mode,
                "budget": b.value,
                "label": b.label,
                "mean_curve": means,
                "targets": entries,
            }
        )
    distance = {k: np.linalg.norm(setup.tasks.centers - x, axis=1) for k, x in setup.starts.items()}
    detail = {
        "family": kind,
        "radius_scale": setup.radius_scale,
        "curvature_scale": setup.curvature_scale,
        "erm_floor_at_max_samples": erm_floor,
        "distance_between_starts": float(
            np.linalg.norm(setup.starts["minimax"] - setup.starts["average"])
        ),
        "distance_to_downstream_optima": distance,
        "budgets": per_budget,
    }
    return {"rows": rows, "detail": detail}


def _as_int(value: float | None) -> int | None:
    return None if value is None else math.ceil(value - 1e-9)


def prediction_study(cfg: dict[str, Any], grid: np.ndarray) -> list[dict[str, Any]]:
    """Random families of mixed kinds (cycled), fixed GD budget: predicted vs measured ratio.

    The target of each family: ``sqrt(a b)`` with ``a`` the larger of the two curves' ends
    at the largest ``n`` and ``b = max(lower curve at the smallest n, 1.1 a)``, so both
    starts reach it (no censoring) and it lies between the plateaus and the start.
    """
    rows = []
    kinds = FAMILIES
    rng = np.random.default_rng(cfg["seed"] + 1000)
    budget = Budget("steps", float(cfg["prediction_steps"]))
    for k in range(cfg["prediction_families"]):
        kind = kinds[k % len(kinds)]
        seed = cfg["seed"] + 10_000 + k
        params = random_family_params(kind, rng, cfg["num_tasks"])
        family = make_family(kind, cfg["num_tasks"], cfg["dim"], seed, **params)
        setup = prepare(family, cfg, seed, max(cfg["mixtures"] // 2, 1))
        xs, ys = mc.problems.sample_mixtures(
            family,
            setup.mixtures,
            int(grid[-1]),
            cfg["prediction_reps"],
            np.random.default_rng(seed + 3),
        )
        curves = hardest_task_curves(setup, xs, ys, grid, [budget])[budget]
        means = {i: curves[i].mean(axis=1) for i in INITS}
        a = max(float(c[-1]) for c in means.values())
        b = max(min(float(c[0]) for c in means.values()), 1.1 * a)
        target = math.sqrt(a * b)
        need = {i: samples_needed(grid, means[i], target) for i in INITS}
        mm, avg = need["minimax"], need["average"]
        if mm is None or avg is None:  # cannot happen: the target is above both curves' ends
            raise RuntimeError(f"prediction family {k}: a start missed target {target:.3g}")
        pred = covering_prediction(setup, target)
        rows.append(
            {
                "family": kind,
                "seed": seed,
                "predicted_ratio": pred["predicted_ratio"],
                "measured_ratio": mm / avg,
                "params": params,
                "target": target,
                "samples": need,
                "distance_to_hardest": pred["distance_to_hardest"],
            }
        )
    return rows


def run(args: argparse.Namespace) -> Report:
    cfg = _config(args)
    grid = sample_grid(cfg)
    rng = np.random.default_rng(cfg["seed"] + 7)
    rows: list[dict[str, Any]] = []
    details = []
    for kind in cfg["families"]:
        got = _study_family(kind, cfg, grid, rng)
        rows += got["rows"]
        details.append(got["detail"])
    study = prediction_study(cfg, grid)
    contract_rows = [
        {k: r[k] for k in ("family", "seed", "predicted_ratio", "measured_ratio")} for r in study
    ]
    spearman = _spearman(study)
    by_family = {kind: _spearman([r for r in study if r["family"] == kind]) for kind in FAMILIES}
    out: Path = args.out
    payload = {
        "experiment": NAME,
        "config": cfg,
        "dim": cfg["dim"],
        "sample_grid": grid,
        "results": rows,
        "prediction": contract_rows,
        "spearman": spearman,
        "spearman_by_family": by_family,
        "prediction_details": study,
        "families": details,
    }
    json_path = write_json(out / f"{NAME}.json", payload)
    png = _plot(details, study, spearman, grid, cfg, out / f"{NAME}.png")
    table = _table(rows)
    print(table)
    print(
        f"  prediction study: {len(study)} families, Spearman {_fmt(spearman)} (within kinds: "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in by_family.items())
        + ")"
    )
    md = _markdown(rows, study, spearman, cfg, table, details, grid)
    md += (
        "\nSpearman within each kind: "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in by_family.items())
        + ".\n"
    )
    headline: dict[str, Any] = {"spearman": spearman, "spearman_by_family": by_family}
    for kind in cfg["families"]:
        best = _best_ratio(rows, kind, "steps", max_budget=5)
        headline[f"{kind}: lowest ratio at <= 5 GD steps"] = best
    return Report(json_path, (png,), md, headline)


def _spearman(study: list[dict[str, Any]]) -> float | None:
    """Spearman rank correlation of predicted and measured ratios (``None`` below 3 rows)."""
    if len(study) < 3:
        return None
    pred = [r["predicted_ratio"] for r in study]
    meas = [r["measured_ratio"] for r in study]
    return float(stats.spearmanr(pred, meas).statistic)


def _best_ratio(
    rows: list[dict[str, Any]], kind: str, mode: str, max_budget: float
) -> float | None:
    vals = [
        r["ratio"]
        for r in rows
        if r["family"] == kind
        and r["fine_tune"] == mode
        and r["ratio"] is not None
        and (r["budget"] is None or r["budget"] <= max_budget)
    ]
    return min(vals) if vals else None


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "null" if value is None else format(value, spec)


def _cell(row: dict[str, Any]) -> str:
    if row["ratio"] is None:
        side = "minimax" if row["samples_minimax"] is None else "average"
        if row["samples_minimax"] is None and row["samples_average"] is None:
            side = "both"
        return f"null ({side} > grid)"
    ci = row["ratio_ci"]
    return f"{row['ratio']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else " [ci censored]")


def _table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one line per family and budget, one column per target level."""
    lines = [
        "| family | fine-tuning | budget | ratio at target 1 (lowest) | target 2 | target 3 |",
        "|---|---|---|---|---|---|",
    ]
    keyed: dict[tuple[str, str, Any], list[dict[str, Any]]] = {}
    for r in rows:
        keyed.setdefault((r["family"], r["fine_tune"], r["budget"]), []).append(r)
    for (fam, mode, budget), group in keyed.items():
        cells = [_cell(r) for r in sorted(group, key=lambda r: r["target"])]
        cells += ["-"] * (3 - len(cells))
        b = "-" if budget is None else (f"{int(budget)}" if mode == "steps" else f"{budget:.3g}")
        lines.append(f"| {fam} | {mode} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown(
    rows: list[dict[str, Any]],
    study: list[dict[str, Any]],
    spearman: float | None,
    cfg: dict[str, Any],
    table: str,
    details: list[dict[str, Any]],
    grid: np.ndarray,
) -> str:
    summary = []
    below_d = {
        d["family"]: next(
            e["mean_curve"]["minimax"][0] / e["mean_curve"]["average"][0]
            for e in d["budgets"]
            if e["mode"] == "converged"
        )
        for d in details
    }
    for kind in cfg["families"]:
        best = _best_ratio(rows, kind, "steps", max_budget=5)
        conv = [
            r["ratio"]
            for r in rows
            if r["family"] == kind
            and r["fine_tune"] == "converged"
            and r["ratio"] is not None
            and min(r["samples_minimax"], r["samples_average"]) > cfg["dim"]
        ]
        summary.append(
            f"- **{kind}**: lowest minimax/average ratio at <= 5 GD steps {_fmt(best)}; "
            f"converged fine-tuning, targets needing more than d = {cfg['dim']} samples: "
            + (", ".join(f"{v:.3f}" for v in conv) if conv else "none")
            + f"; converged with n = {grid[0]} < d (interpolation nearest the start): "
            f"hardest-task excess ratio {below_d[kind]:.2f}"
        )
    worse = sum(1 for r in study if r["measured_ratio"] > 1.05)
    return (
        f"![{NAME}]({NAME}.png)\n\n"
        f"Downstream samples the hardest task needs from the minimax start divided by those "
        f"from the average-risk start (< 1: minimax needs fewer; paired bootstrap 95% "
        f"interval over {cfg['reps']} repetitions; `null` = a start never reaches the target "
        f"on the grid n <= {cfg['max_samples']}; d = {cfg['dim']}, M = {cfg['num_tasks']}).\n\n"
        + "\n".join(summary)
        + f"\n- prediction study: {len(study)} random families, "
        f"{cfg['prediction_steps']} GD steps; Spearman(predicted, measured) = {_fmt(spearman)}; "
        f"minimax needed > 5% more samples on {worse} of them.\n\n" + table + "\n"
    )


def _plot(
    details: list[dict[str, Any]],
    study: list[dict[str, Any]],
    spearman: float | None,
    grid: np.ndarray,
    cfg: dict[str, Any],
    path: Path,
) -> Path:
    colors = {"minimax": "tab:red", "average": "tab:blue"}
    fig = new_figure(figsize=(19, 5.6))
    axes = fig.subplots(1, 3)
    ax = axes[0]
    shown = next((d for d in details if d["family"] == "outlier"), details[0])
    for entry in shown["budgets"]:
        if entry["label"] not in ("2 steps", "converged"):
            continue
        ls = "-" if entry["mode"] == "steps" else "--"
        for i in INITS:
            ax.plot(
                grid,
                entry["mean_curve"][i],
                ls=ls,
                marker="o",
                ms=3,
                color=colors[i],
                label=f"{i} start, {entry['label']}",
            )
    ax.axvline(cfg["dim"], color="0.6", lw=1, label="n = d")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="downstream samples n",
        ylabel="excess risk of the hardest downstream task",
        title=f"{shown['family']} family: the start matters on a budget",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    markers = {"iid": "o", "outlier": "s", "heterogeneous": "^"}
    for d in details:
        xs_, ys_, lo_, hi_ = [], [], [], []
        for pos, entry in enumerate(e for e in d["budgets"] if e["mode"] in ("steps", "converged")):
            mid = [t for t in entry["targets"] if t["ratio"] is not None]
            if not mid:
                continue
            pick = mid[len(mid) // 2]
            xs_.append(pos)
            ys_.append(pick["ratio"])
            ci = pick["ratio_ci"] or [pick["ratio"], pick["ratio"]]
            lo_.append(pick["ratio"] - ci[0])
            hi_.append(ci[1] - pick["ratio"])
        ax.errorbar(
            xs_,
            ys_,
            yerr=[lo_, hi_],
            marker=markers.get(d["family"], "o"),
            capsize=3,
            label=d["family"],
        )
    labels = [*(str(k) for k in cfg["step_budgets"]), "conv."]
    ax.set_xticks(range(len(labels)), labels)
    ax.axhline(1.0, color="k", lw=1)
    ax.set(
        yscale="log",
        xlabel="GD steps of fine-tuning",
        ylabel="samples minimax / average (hardest task)",
        title="ratio at the middle reachable target (95% bootstrap CI)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[2]
    for kind in FAMILIES:
        pts = [(r["predicted_ratio"], r["measured_ratio"]) for r in study if r["family"] == kind]
        if pts:
            p, m = zip(*pts, strict=True)
            ax.scatter(p, m, marker=markers[kind], label=kind)
    if study:
        pred = [r["predicted_ratio"] for r in study]
        span = [min(pred) * 0.97, max(pred) * 1.03]
        ax.plot(span, span, color="0.5", lw=1, label="measured = predicted")
        ax.set_xlim(*span)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="covering prediction d log(1+2r/eps): minimax / average",
        ylabel=f"measured samples ratio ({cfg['prediction_steps']} GD steps)",
        title=f"does the theory predict it? Spearman {_fmt(spearman)} ({len(study)} families)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"Section 5 sample complexity: {cfg['num_tasks']} upstream regression tasks in "
        f"R^{cfg['dim']}, {cfg['reps']} repetitions"
    )
    fig.tight_layout()
    return save_figure(fig, path)


EXPERIMENT = Experiment(
    name=NAME,
    summary="Section 5: downstream samples the hardest task needs from the minimax vs the "
    "average-risk start, with budgeted fine-tuning, three task families and the covering "
    "argument's prediction",
    run=run,
    add_arguments=add_arguments,
    quickstart_order=50,
)
