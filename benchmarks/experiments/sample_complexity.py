"""Section 5: samples a downstream task needs from the minimax vs the average-risk
initialisation.

Upstream: ``M`` linear-regression tasks of :func:`minimax_core.problems.regression_family`,
each learnt from ``n_up`` samples (:class:`~minimax_core.problems.LeastSquaresTasks`); the
minimax point ``x_mm`` (CVXPY) and the average-risk minimiser ``x_avg`` are the two
initialisations. Downstream: the ``M`` upstream tasks themselves and random mixtures
``lambda ~ Dirichlet(1)``; a downstream sample picks an upstream task ``i`` with
probability ``lambda_i`` and draws from it, so the population loss is ``l_j = sum_i
lambda_ji L_i`` (:func:`minimax_core.problems.sample_mixture`).

Fine-tuning: from each initialisation, gradient descent with step ``1/L_emp`` on the
least-squares loss of ``n`` downstream samples, (a) for a fixed budget of steps (early
stopping, the usual fine-tuning protocol) and (b) to convergence (the interpolant or
least-squares solution closest to the initialisation, where GD converges). Both
initialisations see the same samples. Measured: the population excess risk ``l_j(x) -
min l_j`` of every task for every ``n`` on a grid and every repetition (seed).

Samples needed for a target excess risk: the smallest ``n`` from which the mean excess
risk (over repetitions) stays below the target on the rest of the grid (log-log
interpolation at the crossing); reported per task and for the hardest task (the curve of
the worst task per repetition). Targets are fixed fractions of the worst initial excess
risk at the average-risk initialisation (one number for both initialisations).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import minimax_core as mc
from proofs_checks._numerics import optimum_bracket

from ..common import Experiment, Report, given, save_figure, write_json
from ..theory import average_risk_minimiser

NAME = "sample-complexity"
TARGET_FRACTIONS = (0.5, 0.3, 0.1)
VARIANTS = ("early_stopped", "converged")
INITS = ("minimax", "average")
#: relative difference in samples needed below which two initialisations count as tied
TIE = 0.02


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-tasks", type=int, default=8, help="upstream tasks M (default 8)")
    parser.add_argument("--dim", type=int, default=50, help="d (default 50)")
    parser.add_argument(
        "--mixtures", type=int, default=8, help="random downstream mixtures (default 8)"
    )
    parser.add_argument(
        "--upstream-samples", type=int, default=500, help="samples per upstream task"
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 16, quick 5)")
    parser.add_argument("--max-samples", type=int, default=None, help="largest n (default 1000)")
    parser.add_argument(
        "--grid", type=int, default=None, help="points on the n grid (default 10, quick 7)"
    )
    parser.add_argument(
        "--fine-tune-steps", type=int, default=50, help="GD steps of (a) (default 50)"
    )
    parser.add_argument(
        "--task-spread", type=float, default=1.0, help="spread of the task parameters"
    )
    parser.add_argument("--noise", type=float, default=0.5, help="label noise (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="family seed")


def _config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = {
        "num_tasks": args.num_tasks,
        "dim": args.dim,
        "mixtures": args.mixtures,
        "upstream_samples": args.upstream_samples,
        "reps": given(args.reps, 5 if args.quick else 16),
        "max_samples": given(args.max_samples, 1000),
        "grid_points": given(args.grid, 7 if args.quick else 10),
        "fine_tune_steps": args.fine_tune_steps,
        "family": {
            "mu": 0.5,
            "smoothness": 5.0,
            "task_spread": args.task_spread,
            "noise": args.noise,
            "seed": args.seed,
        },
        "target_fractions": list(TARGET_FRACTIONS),
        "min_samples": 5,
    }
    for key in ("num_tasks", "dim", "upstream_samples", "reps", "fine_tune_steps", "grid_points"):
        if cfg[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {cfg[key]}")
    if cfg["mixtures"] < 0:
        raise ValueError(f"--mixtures must be >= 0, got {cfg['mixtures']}")
    if cfg["max_samples"] <= cfg["min_samples"]:
        raise ValueError(f"--max-samples must be > {cfg['min_samples']}, got {cfg['max_samples']}")
    return cfg


def _grid(cfg: dict[str, Any]) -> np.ndarray:
    grid = np.geomspace(cfg["min_samples"], cfg["max_samples"], cfg["grid_points"])
    return np.unique(np.round(grid).astype(np.int64))


def _fine_tune(x0: np.ndarray, xs: np.ndarray, ys: np.ndarray, steps: int | None) -> np.ndarray:
    """GD on ``||X x - y||^2 / (2n)`` from ``x0`` for every problem of the batch ``xs``
    ``(..., n, d)``: ``steps`` steps of size ``1/lambda_max(X'X/n)``, or (``None``) its
    limit ``x0 + X^+ (y - X x0)``, the solution closest to ``x0`` (GD moves only in the
    row space of ``X``), computed through the smaller Gram matrix."""
    n, d = xs.shape[-2], xs.shape[-1]
    xt = np.swapaxes(xs, -1, -2)
    x = np.broadcast_to(x0, (*xs.shape[:-2], d)).copy()
    if steps is None:
        resid = ys - (xs @ x[..., None])[..., 0]
        if n >= d:  # X^+ r = (X'X)^{-1} X' r
            return x + np.linalg.solve(xt @ xs, xt @ resid[..., None])[..., 0]
        return x + (xt @ np.linalg.solve(xs @ xt, resid[..., None]))[..., 0]  # X'(XX')^{-1} r
    h = xt @ xs / n
    b = (xt @ ys[..., None])[..., 0] / n
    step = 1.0 / np.linalg.eigvalsh(h)[..., -1]
    for _ in range(steps):
        x -= step[..., None] * ((h @ x[..., None])[..., 0] - b)
    return x


def _excess(tasks: mc.problems.QuadraticTasks, x: np.ndarray) -> np.ndarray:
    """Population excess risk ``(x - x_j*)' H_j (x - x_j*) / 2`` for ``x`` of shape ``(J, R, d)``."""
    diff = x - tasks.centers[:, None, :]
    out: np.ndarray = 0.5 * np.einsum("jri,jik,jrk->jr", diff, tasks.hessian_stack, diff)
    return out


def samples_needed(grid: np.ndarray, curve: np.ndarray, target: float) -> float | None:
    """Smallest ``n`` from which ``curve`` stays ``<= target`` on the rest of the grid,
    interpolated log-log at the crossing; ``None`` if it ends above the target."""
    above = np.flatnonzero(curve > target)
    if above.size == 0:
        return float(grid[0])
    k = int(above[-1])
    if k == len(grid) - 1:
        return None
    (n0, n1), (c0, c1) = grid[k : k + 2].astype(float), curve[k : k + 2]
    frac = (math.log(target) - math.log(c0)) / (math.log(c1) - math.log(c0))
    return float(math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0))))


def run(args: argparse.Namespace) -> Report:
    cfg = _config(args)
    fam_cfg = cfg["family"]
    m, d = cfg["num_tasks"], cfg["dim"]
    family = mc.problems.regression_family(
        m,
        d,
        mu=fam_cfg["mu"],
        smoothness=fam_cfg["smoothness"],
        task_spread=fam_cfg["task_spread"],
        noise=fam_cfg["noise"],
        seed=fam_cfg["seed"],
    )
    upstream = family.empirical(cfg["upstream_samples"], seed=fam_cfg["seed"] + 1)
    quad = mc.problems.QuadraticTasks(upstream.hessian_stack, upstream.centers, upstream.offsets)
    bracket = optimum_bracket(quad)
    x_avg = average_risk_minimiser(quad)
    inits = {"minimax": bracket.x, "average": x_avg}
    mixtures = np.concatenate(
        [
            np.eye(m),
            mc.problems.random_mixtures(
                m, cfg["mixtures"], include_vertices=False, seed=fam_cfg["seed"] + 2
            ).reshape(-1, m),
        ]
    )
    tasks = mc.problems.downstream_tasks(family.population(), mixtures)
    num_down, reps, grid = tasks.num_tasks, cfg["reps"], _grid(cfg)
    rng = np.random.default_rng(fam_cfg["seed"] + 3)
    n_max = int(grid[-1])
    xs = np.empty((num_down, reps, n_max, d))
    ys = np.empty((num_down, reps, n_max))
    for j in range(num_down):
        for r in range(reps):
            xs[j, r], ys[j, r] = mc.problems.sample_mixture(family, mixtures[j], n_max, rng)
    initial = {
        name: _excess(tasks, np.broadcast_to(x, (num_down, 1, d)))[:, 0]
        for name, x in inits.items()
    }
    distance = {name: np.linalg.norm(tasks.centers - x, axis=1) for name, x in inits.items()}
    # excess[variant][init]: (len(grid), J, R)
    excess = {v: {name: np.empty((len(grid), num_down, reps)) for name in INITS} for v in VARIANTS}
    for k, n in enumerate(tqdm(grid, desc=NAME)):
        for v in VARIANTS:
            steps = cfg["fine_tune_steps"] if v == "early_stopped" else None
            for name, x0 in inits.items():
                x = _fine_tune(x0, xs[:, :, :n], ys[:, :, :n], steps)
                excess[v][name][k] = _excess(tasks, x)
    targets = [f * float(initial["average"].max()) for f in TARGET_FRACTIONS]
    covering = _covering_prediction(tasks, distance, targets)
    results = _summarise(grid, excess, targets)
    out: Path = args.out
    payload = {
        "experiment": NAME,
        "config": cfg,
        "sample_grid": grid,
        "targets": targets,
        "upstream": {
            "F_star": bracket.upper,
            "F_at_average": float(np.max(quad.losses(x_avg))),
            "distance_between_inits": float(np.linalg.norm(bracket.x - x_avg)),
        },
        "downstream": {
            "mixtures": mixtures,
            "initial_excess": initial,
            "distance_to_optimum": distance,
            "worst_initial_excess": {k: float(v.max()) for k, v in initial.items()},
            "covering_prediction": covering,
        },
        "results": results,
        "summary": {
            "hardest_task_samples_ratio": {
                v: {f"{r['target']:.4g}": r["hardest_ratio"] for r in results[v]["targets"]}
                for v in VARIANTS
            },
            "hardest_task_verdict": {
                v: {
                    f"{r['target']:.4g}": _verdict(r["hardest_ratio"])
                    for r in results[v]["targets"]
                }
                for v in VARIANTS
            },
            "tie_tolerance": TIE,
            "covering_predicted_ratio": {
                f"{c['target']:.4g}": c["predicted_ratio"] for c in covering
            },
            "worst_task_excess_ratio_by_n": {
                v: dict(
                    zip(grid.tolist(), results[v]["worst_task_ratio"]["mean"].tolist(), strict=True)
                )
                for v in VARIANTS
            },
        },
        "mean_excess": {v: {i: excess[v][i].mean(axis=2) for i in INITS} for v in VARIANTS},
    }
    json_path = write_json(out / f"{NAME}.json", payload)
    png = _plot(grid, excess, results, targets, cfg, out / f"{NAME}.png")
    for v in VARIANTS:
        for t, res in zip(targets, results[v]["targets"], strict=True):
            print(
                f"  {v:<13} target {t:.3g}: hardest task needs minimax {_fmt(res['hardest']['minimax'])}, "
                f"average {_fmt(res['hardest']['average'])} samples (ratio {_fmt(res['hardest_ratio'])}); "
                f"minimax needs fewer on {res['tasks_minimax_fewer']}/{num_down} tasks, more on "
                f"{res['tasks_minimax_more']}"
            )
    main = results["early_stopped"]["targets"][-1]
    conv = results["converged"]["targets"][-1]
    small = {v: float(results[v]["worst_task_ratio"]["mean"][0]) for v in VARIANTS}
    verdict = _verdict(main["hardest_ratio"])
    md = (
        f"![{NAME}]({NAME}.png)\n\n"
        f"Worst-task population excess risk after fine-tuning on n downstream samples "
        f"({num_down} downstream tasks from {m} regression tasks in R^{d}, mean +- s.e. over "
        f"{reps} repetitions): with fewer samples than parameters the minimax initialisation "
        f"gives the worst task {small['early_stopped']:.2f}x the excess risk of the average-risk "
        f"initialisation (n = {grid[0]}, {cfg['fine_tune_steps']} GD steps; "
        f"{small['converged']:.2f}x with GD to convergence). To reach the target "
        f"{targets[-1]:.3g} the hardest task needs {_fmt(main['hardest']['minimax'])} vs "
        f"{_fmt(main['hardest']['average'])} samples with {cfg['fine_tune_steps']} steps "
        f"({_fmt(conv['hardest']['minimax'])} vs {_fmt(conv['hardest']['average'])} to "
        f"convergence; the covering argument predicts a ratio of "
        f"{covering[-1]['predicted_ratio']:.2f})"
        + {
            "fewer": ": fewer samples from the minimax initialisation, as Section 5 predicts.\n",
            "more": ": MORE samples from the minimax initialisation, against Section 5's "
            "prediction.\n",
            "same": f": the same within {100 * TIE:.0f}%, not fewer, because targets below the "
            "interpolation peak at n = d are reached only with n > d, where least squares has a "
            "unique solution and fine-tuning forgets its initialisation.\n",
            "unknown": ": at least one initialisation never reaches it on the grid.\n",
        }[verdict]
    )
    headline: dict[str, Any] = {
        f"{v} target {t:.3g}": res["hardest_ratio"]
        for v in VARIANTS
        for t, res in zip(targets, results[v]["targets"], strict=True)
    }
    headline.update({f"{v} worst-task ratio at n={grid[0]}": small[v] for v in VARIANTS})
    return Report(json_path, (png,), md, headline)


def _covering_prediction(
    tasks: mc.problems.QuadraticTasks, distance: dict[str, np.ndarray], targets: list[float]
) -> list[dict[str, Any]]:
    """What the Section 5 argument predicts: fine-tuning stays in ``B(x_j*, r_j)`` (Prop
    5.3) and excess risk ``<= t`` holds within ``eps_j = sqrt(2 t / L_j)`` of ``x_j*``, so the
    sample bound scales with ``log N = d log(1 + 2 r_j / eps_j)``; the hardest task is the one
    with the largest ``log N``. Returns, per target, that ``log N`` for each initialisation and
    the predicted ratio minimax / average."""
    smooth = np.linalg.eigvalsh(tasks.hessian_stack)[:, -1]
    out = []
    for t in targets:
        eps = np.sqrt(2.0 * t / smooth)
        log_n = {
            i: [
                mc.bounds.covering_number_log(float(r), float(e), tasks.dim)
                for r, e in zip(distance[i], eps, strict=True)
            ]
            for i in INITS
        }
        worst = {i: max(v) for i, v in log_n.items()}
        out.append(
            {
                "target": t,
                "log_covering_per_task": log_n,
                "log_covering_hardest": worst,
                "predicted_ratio": worst["minimax"] / worst["average"],
            }
        )
    return out


def _summarise(
    grid: np.ndarray, excess: dict[str, dict[str, np.ndarray]], targets: list[float]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v, per_init in excess.items():
        worst = {i: per_init[i].max(axis=1) for i in INITS}  # (grid, R): worst task per rep
        curves = {
            i: {
                "worst_task_mean": worst[i].mean(axis=1),
                "worst_task_sem": worst[i].std(axis=1, ddof=1) / math.sqrt(worst[i].shape[1])
                if worst[i].shape[1] > 1
                else np.zeros(len(grid)),
                "per_task_mean": per_init[i].mean(axis=2).T,  # (J, grid)
            }
            for i in INITS
        }
        paired = worst["minimax"] / worst["average"]  # same samples for both inits
        ratio_curve = {
            "mean": paired.mean(axis=1),
            "sem": paired.std(axis=1, ddof=1) / math.sqrt(paired.shape[1])
            if paired.shape[1] > 1
            else np.zeros(len(grid)),
        }
        rows = []
        for t in targets:
            hardest = {i: samples_needed(grid, curves[i]["worst_task_mean"], t) for i in INITS}
            per_task = {
                i: [samples_needed(grid, c, t) for c in curves[i]["per_task_mean"]] for i in INITS
            }
            pairs = list(zip(per_task["minimax"], per_task["average"], strict=True))
            fewer = sum(1 for a, b in pairs if _less(a, b))
            more = sum(1 for a, b in pairs if _less(b, a))
            ratio = (
                hardest["minimax"] / hardest["average"]
                if hardest["minimax"] is not None and hardest["average"] is not None
                else None
            )
            rows.append(
                {
                    "target": t,
                    "hardest": hardest,
                    "hardest_ratio": ratio,
                    "per_task": per_task,
                    "tasks_minimax_fewer": fewer,
                    "tasks_minimax_more": more,
                }
            )
        out[v] = {"curves": curves, "worst_task_ratio": ratio_curve, "targets": rows}
    return out


def _less(a: float | None, b: float | None) -> bool:
    """``a`` clearly below ``b``: by more than ``TIE`` relative (smaller differences count as
    ties); ``None`` means "not reached on the grid" (larger than any number)."""
    if a is None:
        return False
    return b is None or a < b * (1.0 - TIE)


def _verdict(ratio: float | None) -> str:
    """``fewer``/``more``/``same`` samples from the minimax init (``TIE`` relative)."""
    if ratio is None:
        return "unknown"
    if ratio < 1.0 - TIE:
        return "fewer"
    return "more" if ratio > 1.0 + TIE else "same"


def _fmt(value: float | None) -> str:
    return "> grid" if value is None else f"{value:.3g}"


def _plot(
    grid: np.ndarray,
    excess: dict[str, dict[str, np.ndarray]],
    results: dict[str, Any],
    targets: list[float],
    cfg: dict[str, Any],
    path: Path,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"minimax": "tab:red", "average": "tab:blue"}
    titles = {
        "early_stopped": f"fine-tuning: {cfg['fine_tune_steps']} GD steps",
        "converged": "fine-tuning: GD to convergence",
    }
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.3))
    for ax, v in zip(axes[:2], VARIANTS, strict=True):
        for i in INITS:
            c = results[v]["curves"][i]
            ax.errorbar(
                grid,
                c["worst_task_mean"],
                yerr=c["worst_task_sem"],
                marker="o",
                ms=4,
                capsize=3,
                color=colors[i],
                label=f"{i} init, worst task",
            )
        for t, ls in zip(targets, ("-.", ":", "--"), strict=True):
            ax.axhline(t, color="k", ls=ls, lw=1, label=f"target {t:.3g}")
        ax.axvline(cfg["dim"], color="0.6", lw=1, label="n = d")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("downstream samples n")
        ax.set_ylabel("population excess risk of the worst task (loss units)")
        ax.set_title(titles[v])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[2]
    for v, marker in zip(VARIANTS, ("o", "s"), strict=True):
        rc = results[v]["worst_task_ratio"]
        ax.errorbar(
            grid,
            rc["mean"],
            yerr=rc["sem"],
            marker=marker,
            ms=4,
            capsize=3,
            label=titles[v].replace("fine-tuning: ", ""),
        )
    ax.axhline(1.0, color="k", lw=1)
    ax.axvline(cfg["dim"], color="0.6", lw=1, label="n = d")
    ax.set_xscale("log")
    ax.set_xlabel("downstream samples n")
    ax.set_ylabel("worst-task excess risk, minimax / average init (ratio)")
    ax.set_title("where the initialisation matters (paired samples; < 1: minimax better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"Section 5 sample complexity: {cfg['num_tasks']} upstream regression tasks in R^{cfg['dim']}, "
        f"{excess['converged']['minimax'].shape[1]} downstream tasks, {cfg['reps']} repetitions"
    )
    fig.tight_layout()
    return save_figure(fig, path)


EXPERIMENT = Experiment(
    name=NAME,
    summary="Section 5: downstream samples needed to reach a target excess risk from the "
    "minimax vs the average-risk initialisation",
    run=run,
    add_arguments=add_arguments,
    quickstart_order=50,
)
