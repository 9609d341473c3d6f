"""Scaling laws: time and iterations of ``auto`` and of softmax (Armijo + continuation) as
the number of tasks ``M`` and the dimension ``d`` grow, next to the cost model.

Two sweeps, single-threaded (BLAS limited to one thread):

- ``M`` from 10 to 2,000 at ``d = 50``;
- ``d`` from 50 to 2,000 at ``M = 10``.

Two families on each: dense quadratics ``random_quadratic(M, d, mu=1, smoothness=10)``
(where the ``M d^2`` stack fits: up to ``d = 1000``) and least-squares tasks from ``n = 20``
samples per task (rows ``N(0, I/d)``, ``y = X theta_i + 0.3 eps``, ``l2 = 0.1``), which
the interior point uses as samples: no ``d x d`` matrix per task, so ``d = 2,000`` costs
``N d`` memory with ``N = M n``.

Cost model of one interior-point iteration: one pass over the Hessians (``M d^2``; from
samples ``N d^2`` for the weighted Hessian), ``G' D G`` (``M d^2``) and one Cholesky
(``d^3``), so ``time ~ iterations x (M d^2 + d^3)`` (least squares: ``iterations x ((N +
M) d^2 + d^3)``). Softmax: ``time ~ evaluations x M d^2`` (least squares: ``x N d``).
Slopes are least-squares fits of ``log time`` (and ``log iterations``, ``log cost``) on
``log M`` or ``log d`` over the points of each series where auto certified its optimum
(the others, if any, are listed: there auto stopped uncertified); the ratio ``time / cost`` per point shows where
the model holds (flat) and where overheads dominate (small problems). Softmax runs until
its gap to auto's certified optimum ``F*`` is ``1e-3`` of the gap at the start, ``F(x_t)
- F* <= 1e-3 (F(x_0) - F*)`` (a relative gap on ``|F*|`` is met in one step when many
tasks put ``F(0)`` near ``F*``), with ``tau = 1e-3 (F(x_0) - F*) / (2 log M)`` (its bias
``tau log M`` is half the target), capped in steps and in CPU seconds.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import minimax_core as mc
from deep.plotting import new_figure, save_figure

from ..common import Experiment, Report, single_threaded, write_json

NAME = "scaling"
TARGET = 1e-3  # softmax: the gap F(x) - F* reduced to this fraction of F(x0) - F*
SAMPLES_PER_TASK = 20
L2 = 0.1
DENSE_MAX_DIM = 1000  # beyond this the stack of Hessians (M d^2 floats) is not formed

FULL = {"num_tasks": (10, 30, 100, 300, 1000, 2000), "dim": (50, 100, 200, 500, 1000, 2000)}
QUICK = {"num_tasks": (10, 30, 100, 300), "dim": (50, 100, 200, 400)}
DIM_OF_TASK_SWEEP = 50  # d while M grows
TASKS_OF_DIM_SWEEP = 10  # M while d grows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--softmax-cap",
        type=float,
        default=None,
        help="CPU seconds per softmax run (default 10, quick 2)",
    )
    parser.add_argument("--no-softmax", action="store_true", help="auto only")


def least_squares_tasks(m: int, d: int, seed: int) -> mc.problems.LeastSquaresTasks:
    """``m`` least-squares tasks of ``SAMPLES_PER_TASK`` rows ``N(0, I/d)`` each."""
    rng = np.random.default_rng(seed)
    designs = rng.standard_normal((m, SAMPLES_PER_TASK, d)) / math.sqrt(d)
    theta = rng.standard_normal((m, d))
    targets = np.einsum("mni,mi->mn", designs, theta) + 0.3 * rng.standard_normal(
        (m, SAMPLES_PER_TASK)
    )
    return mc.problems.LeastSquaresTasks(list(designs), list(targets), l2=L2)


def _problem(family: str, m: int, d: int, seed: int) -> Any:
    if family == "dense":
        return mc.problems.random_quadratic(m, d, mu=1.0, smoothness=10.0, seed=seed)
    return least_squares_tasks(m, d, seed)


def _cost(family: str, m: int, d: int, iterations: int) -> float:
    if family == "dense":
        return float(iterations) * (m * d * d + d**3)
    n = m * SAMPLES_PER_TASK
    return float(iterations) * ((n + m) * d * d + d**3)


def _softmax_cost(family: str, m: int, d: int, evaluations: int) -> float:
    per = m * d * d if family == "dense" else 2 * m * SAMPLES_PER_TASK * d
    return float(evaluations) * per


def _clocked(fn: Any) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _softmax(problem: Any, best: float, m: int, cap: float) -> dict[str, Any]:
    """Softmax with Armijo + continuation until the gap is ``TARGET`` of the initial gap."""
    initial_gap = float(np.max(problem.losses(np.zeros(problem.dim)))) - best
    goal = TARGET * initial_gap
    tau = goal / (2.0 * math.log(max(m, 2)))
    state = {"reached": False, "steps": 0}
    start = time.perf_counter()
    cpu = time.process_time()

    def callback(it: mc.Iterate) -> bool:
        state["steps"] = it.step
        if it.fun - best <= goal:
            state["reached"] = True
            return True
        return time.process_time() - cpu > cap

    res = mc.minimize_max(
        problem,
        method="softmax",
        temperature=1.0,
        final_temperature=tau,
        line_search="armijo",
        steps=200_000,
        tol=1e-30,
        callback=callback,
    )
    return {
        "wall_seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "reached": state["reached"],
        "steps": state["steps"],
        "nfev": res.nfev,
        "initial_gap": initial_gap,
        "gap_reduction": (float(np.max(problem.losses(res.x))) - best) / initial_gap,
    }


def _point(family: str, m: int, d: int, seed: int, softmax_cap: float | None) -> dict[str, Any]:
    problem = _problem(family, m, d, seed)
    wall, cpu, res = _clocked(lambda: mc.minimize_max(problem))
    if wall < 0.5:  # best of three for the fast ones
        for _ in range(2):
            w, c, res = _clocked(lambda: mc.minimize_max(problem))
            wall, cpu = min(wall, w), min(cpu, c)
    row: dict[str, Any] = {
        "family": family,
        "num_tasks": m,
        "dim": d,
        "auto": {
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "nit": res.nit,
            "success": res.success,
            "relative_certificate": res.info["relative_certificate"],
            "hessian_passes": res.info.get("hessian_passes"),
            "cost": _cost(family, m, d, res.nit),
        },
    }
    row["auto"]["seconds_per_cost"] = cpu / row["auto"]["cost"]
    if softmax_cap is not None and res.success:  # its target needs the certified optimum
        soft = _softmax(problem, res.fun, m, softmax_cap)
        soft["cost"] = _softmax_cost(family, m, d, soft["nfev"])
        row["softmax"] = soft
    return row


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ``log y`` on ``log x`` (``None`` with fewer than 2 points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    lx, ly = np.array(pts).T
    return float(np.polyfit(lx, ly, 1)[0])


def _slopes(all_rows: list[dict[str, Any]], axis: str) -> dict[str, Any]:
    """Slopes over the points where auto succeeded (a stalled run's time is not a solve
    time, and softmax's target needs the certified optimum)."""
    rows = [r for r in all_rows if r["auto"]["success"]]
    xs = [float(r[axis]) for r in rows]
    auto = [r["auto"] for r in rows]
    out: dict[str, Any] = {
        "points": len(rows),
        "auto_failed_at": [r[axis] for r in all_rows if not r["auto"]["success"]],
        "auto_cpu_time": _slope(xs, [a["cpu_seconds"] for a in auto]),
        "auto_wall_time": _slope(xs, [a["wall_seconds"] for a in auto]),
        "auto_iterations": _slope(xs, [float(a["nit"]) for a in auto]),
        "auto_cost_model": _slope(xs, [a["cost"] for a in auto]),
        # the upper half of the sweep, where the arithmetic (not the overhead) dominates
        "auto_cpu_time_upper_half": _slope(
            xs[len(xs) // 2 :], [a["cpu_seconds"] for a in auto[len(xs) // 2 :]]
        ),
        "auto_cost_model_upper_half": _slope(
            xs[len(xs) // 2 :], [a["cost"] for a in auto[len(xs) // 2 :]]
        ),
    }
    soft = [(x, r["softmax"]) for x, r in zip(xs, rows, strict=True) if "softmax" in r]
    reached = [(x, s) for x, s in soft if s["reached"]]
    if reached:
        out["softmax_cpu_time"] = _slope(
            [x for x, _ in reached], [s["cpu_seconds"] for _, s in reached]
        )
        out["softmax_steps"] = _slope(
            [x for x, _ in reached], [float(s["steps"]) for _, s in reached]
        )
        out["softmax_cost_model"] = _slope([x for x, _ in reached], [s["cost"] for _, s in reached])
        out["softmax_points_reached"] = len(reached)
    return out


def run(args: argparse.Namespace) -> Report:
    grid = QUICK if args.quick else FULL
    softmax_cap = None if args.no_softmax else (args.softmax_cap or (2.0 if args.quick else 10.0))
    if softmax_cap is not None and not softmax_cap > 0:
        raise ValueError(f"--softmax-cap must be > 0, got {softmax_cap}")
    plan: list[tuple[str, str, int, int]] = []
    for axis, values in grid.items():
        for family in ("dense", "least_squares"):
            for v in values:
                m, d = (v, DIM_OF_TASK_SWEEP) if axis == "num_tasks" else (TASKS_OF_DIM_SWEEP, v)
                if family == "dense" and d > DENSE_MAX_DIM:
                    continue
                plan.append((axis, family, m, d))
    sweeps: dict[str, dict[str, list[dict[str, Any]]]] = {a: {} for a in grid}
    with single_threaded(), tqdm(total=len(plan), desc=NAME) as bar:
        mc.minimize_max(mc.problems.random_quadratic(3, 4, seed=0))  # first-call setup
        for axis, family, m, d in plan:
            row = _point(family, m, d, args.seed, softmax_cap)
            sweeps[axis].setdefault(family, []).append(row)
            bar.update()
    slopes = {
        axis: {family: _slopes(rows, axis) for family, rows in by_family.items()}
        for axis, by_family in sweeps.items()
    }
    payload = {
        "experiment": NAME,
        "config": {
            "grid": grid,
            "fixed": {
                "dim_of_task_sweep": DIM_OF_TASK_SWEEP,
                "tasks_of_dim_sweep": TASKS_OF_DIM_SWEEP,
            },
            "dense": "random_quadratic(M, d, mu=1, smoothness=10)",
            "least_squares": {"samples_per_task": SAMPLES_PER_TASK, "l2": L2},
            "dense_max_dim": DENSE_MAX_DIM,
            "softmax_target_gap_reduction": TARGET,
            "softmax_cap_seconds": softmax_cap,
            "seed": args.seed,
            "threads": 1,
            "cost_model": "auto: iterations x (M d^2 + d^3) (least squares: ((N + M) d^2 + "
            "d^3)); softmax: evaluations x M d^2 (least squares: 2 N d)",
        },
        "sweeps": sweeps,
        "slopes": slopes,
    }
    out: Path = args.out
    json_path = write_json(out / f"{NAME}.json", payload)
    png = _plot(sweeps, slopes, out / f"{NAME}.png")
    table = _markdown(sweeps, slopes)
    print(table)
    md = (
        f"![scaling]({NAME}.png)\n\nSingle-threaded CPU time of the process (the wall time, "
        "in the JSON, also counts waiting for a core on a shared machine). Slopes: "
        "log-log least squares over each series; `cost` is the model `iterations x (M d^2 "
        "+ d^3)` (least squares from samples: `((N + M) d^2 + d^3)`).\n\n" + table + "\n"
    )
    headline = {
        f"{axis}_{family}_auto_slope": s.get("auto_cpu_time")
        for axis, by_family in slopes.items()
        for family, s in by_family.items()
    }
    return Report(json_path, (png,), md, headline)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _markdown(sweeps: dict[str, Any], slopes: dict[str, Any]) -> str:
    lines = [
        "| sweep | family | sizes | auto time slope (CPU) | upper half | iterations slope "
        "| cost-model slope | upper half | softmax time slope | softmax steps slope "
        "| softmax reached | auto not certified at |",
        "|" + "---|" * 12,
    ]
    for axis, by_family in sweeps.items():
        for family, rows in by_family.items():
            s = slopes[axis][family]
            sizes = ", ".join(str(r[axis]) for r in rows)
            soft = [r["softmax"] for r in rows if "softmax" in r]
            lines.append(
                f"| {'M' if axis == 'num_tasks' else 'd'} | {family} | {sizes} | "
                f"{_fmt(s['auto_cpu_time'])} | {_fmt(s['auto_cpu_time_upper_half'])} | "
                f"{_fmt(s['auto_iterations'])} | {_fmt(s['auto_cost_model'])} | "
                f"{_fmt(s['auto_cost_model_upper_half'])} | {_fmt(s.get('softmax_cpu_time'))} | "
                f"{_fmt(s.get('softmax_steps'))} | "
                f"{sum(x['reached'] for x in soft)}/{len(soft)} | "
                f"{', '.join(str(v) for v in s['auto_failed_at']) or '-'} |"
            )
    lines.append("")
    lines.append(
        "| sweep | family | M | d | auto CPU | iterations | CPU / cost (ns) | softmax CPU | softmax steps |"
    )
    lines.append("|" + "---|" * 9)
    for axis, by_family in sweeps.items():
        for family, rows in by_family.items():
            for r in rows:
                a = r["auto"]
                soft = r.get("softmax")
                soft_cells = (
                    ["-", "-"]
                    if soft is None
                    else [
                        f"{soft['cpu_seconds']:.3g} s" + ("" if soft["reached"] else " (cap)"),
                        str(soft["steps"]),
                    ]
                )
                failed = (
                    "" if a["success"] else f" (not certified: {a['relative_certificate']:.1e})"
                )
                lines.append(
                    f"| {'M' if axis == 'num_tasks' else 'd'} | {family} | {r['num_tasks']} | "
                    f"{r['dim']} | {a['cpu_seconds']:.3g} s{failed} | {a['nit']} | "
                    f"{a['seconds_per_cost'] * 1e9:.3g} | " + " | ".join(soft_cells) + " |"
                )
    return "\n".join(lines)


def _plot(sweeps: dict[str, Any], slopes: dict[str, Any], path: Path) -> Path:
    fig = new_figure(figsize=(12, 5))
    axes = fig.subplots(1, 2)
    styles = {"dense": ("tab:blue", "o"), "least_squares": ("tab:green", "s")}
    for ax, (axis, by_family) in zip(axes, sweeps.items(), strict=True):
        for family, all_rows in by_family.items():
            rows = [r for r in all_rows if r["auto"]["success"]]
            color, marker = styles[family]
            xs = np.array([r[axis] for r in rows], dtype=float)
            s = slopes[axis][family]
            cpu = np.array([r["auto"]["cpu_seconds"] for r in rows])
            cost = np.array([r["auto"]["cost"] for r in rows])
            ax.loglog(xs, cpu, marker + "-", color=color,
                      label=f"auto, {family} (slope {_fmt(s['auto_cpu_time'])})")  # fmt: skip
            # the cost model, scaled to the largest point (where it should hold)
            ax.loglog(xs, cost * cpu[-1] / cost[-1], ":", color=color,
                      label=f"cost model, {family} (slope {_fmt(s['auto_cost_model'])})")  # fmt: skip
            soft = [(x, r["softmax"]) for x, r in zip(xs, rows, strict=True) if "softmax" in r]
            if soft:
                ax.loglog([x for x, _ in soft], [v["cpu_seconds"] for _, v in soft],
                          marker + "--", color=color, alpha=0.5, mfc="none",
                          label=f"softmax Armijo+cont., {family} "
                          f"(slope {_fmt(s.get('softmax_cpu_time'))})")  # fmt: skip
                capped = [(x, v["cpu_seconds"]) for x, v in soft if not v["reached"]]
                if capped:
                    ax.loglog(*zip(*capped, strict=True), "x", color="red", ms=9)
        ax.set_xlabel(
            "number of tasks M (d = 50)" if axis == "num_tasks" else "dimension d (M = 10)"
        )
        ax.set_ylabel("CPU seconds, one thread")
        ax.set_title(f"time vs {'M' if axis == 'num_tasks' else 'd'} (red x: softmax capped)")
        ax.text(0.02, 0.98, f"softmax: gap to {TARGET:g} of the initial gap", transform=ax.transAxes,
                va="top", fontsize=7)  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


EXPERIMENT = Experiment(
    name=NAME,
    summary="scaling laws: auto and softmax time/iterations vs M and d, log-log slopes "
    "next to the cost model iterations x (M d^2 + d^3)",
    run=run,
    add_arguments=add_arguments,
)
