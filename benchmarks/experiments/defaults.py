"""Defaults that make progress: every first-order method with its default options on a
seeded grid of random quadratics (``L/mu <= 100``, ``M <= 50``, ``d <= 100``).

For each problem: the exact optimum ``F*`` (``method="auto"``), the start ``F(x0)`` (at
``x0 = 0``) and, per method, the relative gap ``(F(x) - F*) / (F(x0) - F*)`` after the
method's default budget. The methods that target ``min max`` (softmax, subgradient,
group_dro) must reach ``<= 1e-2`` and never end above their start; ``average`` targets
``argmin mean_i L_i``, so its row gives its own relative gap
``(mean L(x) - min mean L) / (mean L(x0) - min mean L)`` and, for reference, its min-max gap.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np

import minimax_core as mc
from deep.plotting import new_figure, save_figure

from ..common import Experiment, Report, given, write_json

MINIMAX_METHODS = ("softmax", "subgradient", "group_dro")
TARGET = 1e-2

FULL_GRID = {"num_tasks": (2, 10, 50), "dim": (2, 20, 100), "condition": (1.0, 10.0, 100.0)}
QUICK_GRID = {"num_tasks": (3, 20), "dim": (5, 30), "condition": (10.0, 100.0)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 1)")


def _average_gap(problem: mc.problems.QuadraticTasks, x: np.ndarray, x0: np.ndarray) -> float:
    """``(mean L(x) - min mean L) / (mean L(x0) - min mean L)`` (closed-form minimiser)."""
    a = problem.hessian_stack
    x_star = np.linalg.solve(a.sum(axis=0), np.einsum("mij,mj->i", a, problem.centers))
    best = float(problem.losses(x_star).mean())
    start = float(problem.losses(x0).mean())
    return (float(problem.losses(x).mean()) - best) / max(start - best, 1e-300)


def evaluate(problem: mc.problems.QuadraticTasks) -> dict[str, Any]:
    """Relative gaps of every first-order method with default options on ``problem``."""
    x0 = np.zeros(problem.dim)
    f_start = float(np.max(problem.losses(x0)))
    f_star = mc.minimize_max(problem, method="auto").fun
    scale = max(f_start - f_star, 1e-300)
    row: dict[str, Any] = {"f_start": f_start, "f_star": f_star}
    for method in (*MINIMAX_METHODS, "average"):
        t0 = time.perf_counter()
        res = mc.minimize_max(problem, method=method)
        row[method] = {
            "relative_gap": (res.fun - f_star) / scale,
            "fun": res.fun,
            "nit": res.nit,
            "nfev": res.nfev,
            "status": res.status,
            "seconds": time.perf_counter() - t0,
        }
        if method == "average":
            row[method]["own_relative_gap"] = _average_gap(problem, res.x, x0)
    return row


def run(args: argparse.Namespace) -> Report:
    seeds = given(args.seeds, 1)
    if seeds < 1:
        raise ValueError(f"--seeds must be an integer >= 1, got {seeds}")
    grid = QUICK_GRID if args.quick else FULL_GRID
    rows = []
    for m, d, kappa in itertools.product(grid["num_tasks"], grid["dim"], grid["condition"]):
        for seed in range(seeds):
            if m == 1 and d == 1 and kappa != 1.0:
                continue
            problem = mc.problems.random_quadratic(m, d, mu=1.0, smoothness=kappa, seed=seed)
            row = {"num_tasks": m, "dim": d, "condition": kappa, "seed": seed}
            row.update(evaluate(problem))
            rows.append(row)
            gaps = "  ".join(f"{k} {row[k]['relative_gap']:.1e}" for k in MINIMAX_METHODS)
            print(f"  M={m:<3} d={d:<4} L/mu={kappa:<6g} seed={seed}  {gaps}", flush=True)
    worst = {k: max(r[k]["relative_gap"] for r in rows) for k in MINIMAX_METHODS}
    worst["average (own objective)"] = max(r["average"]["own_relative_gap"] for r in rows)
    out: Path = args.out
    payload = {
        "experiment": "defaults",
        "target_relative_gap": TARGET,
        "grid": grid,
        "seeds": seeds,
        "worst_relative_gap": worst,
        "all_within_target": all(v <= TARGET for v in worst.values()),
        "rows": rows,
    }
    json_path = write_json(out / "defaults.json", payload)
    png_path = _plot(rows, out / "defaults.png")
    return Report(json_path, (png_path,), _markdown(rows, worst), worst)


def _markdown(rows: list[dict[str, Any]], worst: dict[str, float]) -> str:
    head = (
        "| M | d | L/mu | seed | F(x0) - F* | softmax | subgradient | group_dro "
        "| average (own / min-max) |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['num_tasks']} | {r['dim']} | {r['condition']:g} | {r['seed']} "
        f"| {r['f_start'] - r['f_star']:.3g} | "
        + " | ".join(f"{r[k]['relative_gap']:.1e}" for k in MINIMAX_METHODS)
        + f" | {r['average']['own_relative_gap']:.1e} / {r['average']['relative_gap']:.1e} |"
        for r in rows
    ]
    summary = ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
    return (
        "![defaults](defaults.png)\n\n"
        "Relative gap `(F(x) - F*) / (F(x0) - F*)` of each method with its default options "
        f"(target <= {TARGET:g}) on `random_quadratic(M, d, mu=1, smoothness=L/mu, seed)`, "
        "`x0 = 0`. Worst over the grid: " + summary + ". `average` targets the average-risk "
        "minimiser: its own gap on `mean_i L_i` first, its min-max gap second.\n\n"
        + head
        + "\n".join(lines)
        + "\n"
    )


def _plot(rows: list[dict[str, Any]], path: Path) -> Path:
    fig = new_figure(figsize=(7, 4.2))
    ax = fig.subplots()
    labels = [f"{r['num_tasks']}x{r['dim']}, {r['condition']:g}" for r in rows]
    xs = np.arange(len(rows))
    for j, method in enumerate(MINIMAX_METHODS):
        gaps = np.array([max(r[method]["relative_gap"], 1e-16) for r in rows])
        ax.semilogy(xs + 0.15 * (j - 1), gaps, "o", ms=4, label=method)
    own = np.array([max(r["average"]["own_relative_gap"], 1e-16) for r in rows])
    ax.semilogy(xs + 0.3, own, "x", ms=4, color="0.4", label="average (own objective)")
    ax.axhline(TARGET, color="k", ls="--", lw=1.0, label=f"target {TARGET:g}")
    ax.set_xticks(xs, labels, rotation=90, fontsize=6)
    ax.set_xlabel("problem: M x d, L/mu")
    ax.set_ylabel("(F(x) - F*) / (F(x0) - F*)")
    ax.set_title("default options, default budgets: relative gap per problem")
    ax.grid(True, which="both", axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


EXPERIMENT = Experiment(
    name="defaults",
    summary="every first-order method with default options on a grid of random quadratics",
    run=run,
    add_arguments=add_arguments,
)
