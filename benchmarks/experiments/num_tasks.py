"""How the softmax approximation's quality and cost change with the number of tasks ``M``.

The paper leaves this open. For ``M`` from 2 to 1000 tasks of ``random_quadratic(M, d,
mu=1, smoothness=10)`` (several problem seeds) we measure:

- quality: the exact error ``F(x_tau) - F*`` of the smoothing at fixed temperatures
  against the bound ``tau log M``, and against ``tau log k_eff`` where ``k_eff =
  exp(entropy of softmax(L(x_tau)/tau))`` is the effective number of tasks the weights
  spread over;
- structure: the number of active tasks at the optimum (CVXPY multipliers above
  ``1e-6``), at most ``d + 1`` by Caratheodory's theorem whatever ``M`` is;
- cost: iterations to reach ``eps`` (a fixed fraction of the initial gap) with ``tau =
  eps / (2 log M)``: the theorem's count with its guaranteed step, and the measured count
  with the oracle step ``1/(L + G_*^2/tau)``; and the wall time of one softmax step
  (``O(M d^2)``), measured on one thread.
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
from minimax_core.weights import smoothed_max
from proofs_checks.numerics import minimize_smoothed, softmax_weights
from proofs_checks.softmax_rate import theory_step_size
from proofs_checks.subgradient_rate import loglog_slope

from ..common import Experiment, Report, given, single_threaded, write_json
from ..theory import iterations_to_gap, quadratic_instance

NAME = "num-tasks"
FULL_TASKS = (2, 5, 10, 20, 50, 100, 200, 500, 1000)
QUICK_TASKS = (2, 10, 100, 1000)
TEMPERATURES = (0.1, 0.01)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks", type=int, nargs="+", default=None, help="values of M (default 2..1000)"
    )
    parser.add_argument("--dim", type=int, default=20, help="d (default 20)")
    parser.add_argument(
        "--seeds", type=int, default=None, help="problem seeds (default 3, quick 1)"
    )
    parser.add_argument(
        "--budget", type=int, default=None, help="step budget (default 20000, quick 5000)"
    )
    parser.add_argument(
        "--eps-fraction", type=float, default=0.05, help="eps / initial gap (default 0.05)"
    )


def _config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = {
        "tasks": list(given(args.tasks, QUICK_TASKS if args.quick else FULL_TASKS)),
        "dim": args.dim,
        "seeds": given(args.seeds, 1 if args.quick else 3),
        "budget": given(args.budget, 5000 if args.quick else 20000),
        "eps_fraction": args.eps_fraction,
        "temperatures": list(TEMPERATURES),
        "mu": 1.0,
        "smoothness": 10.0,
    }
    if min(cfg["tasks"]) < 2:
        raise ValueError(f"--tasks must all be >= 2, got {cfg['tasks']}")
    for key in ("dim", "seeds", "budget"):
        if cfg[key] < 1:
            raise ValueError(f"--{key} must be >= 1, got {cfg[key]}")
    if not 0 < cfg["eps_fraction"] < 1:
        raise ValueError(f"--eps-fraction must be in (0, 1), got {cfg['eps_fraction']}")
    return cfg


def _seconds_per_step(problem: Any, tau: float, steps: int = 200) -> float:
    with single_threaded():
        start = time.perf_counter()
        mc.minimize_max(
            problem,
            method="softmax",
            temperature=tau,
            step_size=1e-6,
            line_search="fixed",
            steps=steps,
            tol=1e-300,
        )
        return (time.perf_counter() - start) / steps


def _measure(m: int, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    inst = quadratic_instance(m, cfg["dim"], mu=cfg["mu"], smoothness=cfg["smoothness"], seed=seed)
    problem, bracket, x0, v0, f_star = inst.problem, inst.bracket, inst.x0, inst.v0, inst.f_star
    initial_gap = inst.initial_gap
    eps = cfg["eps_fraction"] * initial_gap
    g_star = inst.gradient_at_optimum()
    row: dict[str, Any] = {
        "num_tasks": m,
        "seed": seed,
        "F_star": f_star,
        "active_tasks": int(np.sum(bracket.weights > 1e-6)),
        "initial_gap": initial_gap,
        "eps": eps,
    }
    for tau in cfg["temperatures"]:
        smooth = minimize_smoothed(problem, tau, x0=bracket.x)
        w = softmax_weights(problem.losses(smooth.x), tau)
        entropy = float(-np.sum(w[w > 0] * np.log(w[w > 0])))
        row[f"limit_gap_tau={tau:g}"] = float(np.max(problem.losses(smooth.x))) - f_star
        row[f"effective_tasks_tau={tau:g}"] = math.exp(entropy)
    tau = eps / (2.0 * math.log(m))
    smooth = minimize_smoothed(problem, tau, x0=bracket.x)
    _, l_tau, g_bound = theory_step_size(problem, tau, x0)
    rate = mc.bounds.softmax_linear_rate(problem.mu, l_tau)
    gap0_tau = smoothed_max(v0, tau) - smooth.value
    oracle_step = 1.0 / mc.bounds.smoothed_smoothness(problem.smoothness, g_star, tau)
    row.update(
        {
            "theory_temperature": tau,
            "iterations_theorem": mc.bounds.softmax_iterations_at_temperature(
                eps, tau, gap0_tau, rate, m
            ),
            "iterations_oracle_step": iterations_to_gap(
                problem, tau, oracle_step, f_star, eps, cfg["budget"]
            ),
            "lipschitz_bound": g_bound,
            "gradient_at_optimum": g_star,
            "seconds_per_step": _seconds_per_step(problem, tau),
        }
    )
    return row


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows]
    if any(v is None for v in vals):
        return None  # censored for at least one seed
    return float(np.median(vals))


def run(args: argparse.Namespace) -> Report:
    cfg = _config(args)
    jobs = [(m, s) for m in cfg["tasks"] for s in range(cfg["seeds"])]
    rows = [_measure(m, s, cfg) for m, s in tqdm(jobs, desc=NAME)]
    keys = [
        "active_tasks",
        "iterations_theorem",
        "iterations_oracle_step",
        "seconds_per_step",
        *(f"limit_gap_tau={t:g}" for t in TEMPERATURES),
        *(f"effective_tasks_tau={t:g}" for t in TEMPERATURES),
    ]
    table = []
    for m in cfg["tasks"]:
        group = [r for r in rows if r["num_tasks"] == m]
        entry: dict[str, Any] = {"num_tasks": m}
        entry.update({k: _median(group, k) for k in keys})
        for t in TEMPERATURES:
            entry[f"limit_over_bound_tau={t:g}"] = entry[f"limit_gap_tau={t:g}"] / (t * math.log(m))
        table.append(entry)
    ms = np.array(cfg["tasks"], dtype=float)
    big = ms >= 50
    time_slope = (
        loglog_slope(ms, [e["seconds_per_step"] for e in table], 50, ms.max())
        if big.sum() >= 3
        else float(
            np.polyfit(np.log(ms[-2:]), np.log([e["seconds_per_step"] for e in table[-2:]]), 1)[0]
        )
    )
    summary = {
        "max_active_tasks": max(e["active_tasks"] for e in table),
        "dim_plus_one": cfg["dim"] + 1,
        "limit_over_bound_at_max_M": {
            f"tau={t:g}": table[-1][f"limit_over_bound_tau={t:g}"] for t in TEMPERATURES
        },
        "limit_over_bound_at_min_M": {
            f"tau={t:g}": table[0][f"limit_over_bound_tau={t:g}"] for t in TEMPERATURES
        },
        "seconds_per_step_slope_large_M": time_slope,
        "theorem_iterations_ratio_max_over_min_M": table[-1]["iterations_theorem"]
        / table[0]["iterations_theorem"],
    }
    out: Path = args.out
    payload = {"experiment": NAME, "config": cfg, "summary": summary, "table": table, "runs": rows}
    json_path = write_json(out / f"{NAME}.json", payload)
    png = _plot(table, cfg, out / f"{NAME}.png")
    for e in table:
        print(
            f"  M={e['num_tasks']:>5}: active {e['active_tasks']:.0f}, F(x_tau)-F* / (tau log M) "
            f"{e['limit_over_bound_tau=0.1']:.3f} (tau=0.1), iterations theorem "
            f"{e['iterations_theorem']:.3g}, oracle step {e['iterations_oracle_step']}, "
            f"{1e6 * e['seconds_per_step']:.0f} us/step"
        )
    print(f"  time per step vs M, log-log slope {time_slope:.2f}")
    lo, hi = table[0], table[-1]
    md = (
        f"![{NAME}]({NAME}.png)\n\n"
        f"From M={lo['num_tasks']} to M={hi['num_tasks']} tasks in R^{cfg['dim']}, at most "
        f"{summary['max_active_tasks']:.0f} tasks are active at the optimum (Caratheodory: <= d+1 = "
        f"{cfg['dim'] + 1}), and the smoothing's real error F(x_tau) - F* (tau=0.1) grows from "
        f"{lo['limit_gap_tau=0.1']:.2g} to {hi['limit_gap_tau=0.1']:.2g} while the bound tau log M "
        f"grows from {0.1 * math.log(lo['num_tasks']):.2g} to {0.1 * math.log(hi['num_tasks']):.2g} "
        f"(share of the bound {lo['limit_over_bound_tau=0.1']:.2f} -> "
        f"{hi['limit_over_bound_tau=0.1']:.2f}). With tau = eps/(2 log M) the theorem's iteration "
        f"count grows {summary['theorem_iterations_ratio_max_over_min_M']:.1f}x, the measured count "
        f"with the oracle step goes from {_fmt(lo['iterations_oracle_step'])} to "
        f"{_fmt(hi['iterations_oracle_step'])}, and one step's wall time grows with log-log slope "
        f"{time_slope:.2f} in M at the largest M (fixed overhead dominates small M).\n"
    )
    return Report(json_path, (png,), md, summary)


def _fmt(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.0f}"


def _plot(table: list[dict[str, Any]], cfg: dict[str, Any], path: Path) -> Path:
    ms = np.array([e["num_tasks"] for e in table], dtype=float)
    fig = new_figure(figsize=(13, 9))
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    for t, color in zip(TEMPERATURES, ("tab:blue", "tab:purple"), strict=True):
        ax.loglog(
            ms,
            [e[f"limit_gap_tau={t:g}"] for e in table],
            "o-",
            color=color,
            label=f"F(x_tau) - F*, tau={t:g}",
        )
        ax.loglog(ms, t * np.log(ms), "--", color=color, lw=1, label=f"bound tau log M, tau={t:g}")
    ax.set_xlabel("number of tasks M")
    ax.set_ylabel("smoothing error (loss units)")
    ax.set_title("quality of the approximation")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.semilogx(
        ms, [e["active_tasks"] for e in table], "o-", color="k", label="active tasks at x* (CVXPY)"
    )
    for t, color in zip(TEMPERATURES, ("tab:blue", "tab:purple"), strict=True):
        ax.semilogx(
            ms,
            [e[f"effective_tasks_tau={t:g}"] for e in table],
            "s--",
            color=color,
            label=f"exp(entropy of weights), tau={t:g}",
        )
    ax.axhline(cfg["dim"] + 1, color="tab:red", ls=":", label="d + 1")
    ax.set_xlabel("number of tasks M")
    ax.set_ylabel("number of tasks")
    ax.set_title("tasks that matter at the optimum")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    ax.loglog(
        ms,
        [e["iterations_theorem"] for e in table],
        "o--",
        color="k",
        label="theorem's count (guaranteed step)",
    )
    oracle = [e["iterations_oracle_step"] for e in table]
    ok = np.array([v is not None for v in oracle])
    ax.loglog(
        ms[ok],
        [v for v in oracle if v is not None],
        "o-",
        color="tab:green",
        label="measured, oracle step",
    )
    if (~ok).any():
        ax.loglog(
            ms[~ok],
            np.full((~ok).sum(), cfg["budget"]),
            "o",
            mfc="none",
            color="tab:green",
            label="oracle step: not reached in budget",
        )
    ax.set_xlabel("number of tasks M")
    ax.set_ylabel(f"iterations to eps = {cfg['eps_fraction']:g} x initial gap")
    ax.set_title("iterations with tau = eps / (2 log M)")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    ax.loglog(
        ms,
        [1e6 * e["seconds_per_step"] for e in table],
        "o-",
        color="tab:orange",
        label="measured (one thread)",
    )
    ax.set_xlabel("number of tasks M")
    ax.set_ylabel("wall time per softmax step (microseconds)")
    ax.set_title("cost of one step (M gradients in R^d)")
    ax.legend(fontsize=8)
    for a in axes.flat:
        a.grid(True, which="both", alpha=0.3)
    fig.suptitle(
        f"softmax GD as the number of tasks grows (random quadratics in R^{cfg['dim']}, median over {cfg['seeds']} seed(s))"
    )
    fig.tight_layout()
    return save_figure(fig, path)


EXPERIMENT = Experiment(
    name=NAME,
    summary="softmax approximation quality and cost as M grows from 2 to 1000 tasks",
    run=run,
    add_arguments=add_arguments,
    quickstart_order=30,
)
