"""The trade-off the smoothing makes: accuracy ``F(x_tau) - F*`` against the cost of
reaching a target ``eps``, as functions of the temperature ``tau``.

On ``random_quadratic(M, d, mu=1, smoothness=10)`` from ``x_0 = 0``, for each ``tau`` on a
geometric grid:

- the exact limit ``F(x_tau) - F*`` of softmax GD (``x_tau = argmin F_tau`` by Newton)
  against the bound ``tau log M``, with its fitted log-log slope;
- iterations until ``F(x_t) - F* <= eps`` (``eps`` a fixed fraction of the initial gap):
  measured with the guaranteed step ``1/(L + G^2/tau)``, measured with the oracle step
  ``1/(L + G_*^2/tau)`` (``G_*`` the largest task gradient at ``x*``), and the theorem's
  count ``log(gap_0^tau / (eps - tau log M)) / -log(1 - mu/L_tau)`` (finite only for
  ``tau log M < eps``). Runs stop at a step budget; a run that did not reach ``eps`` is
  reported as censored (``null`` in the JSON, an open marker at the budget in the plot).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import minimax_core as mc
from deep.plotting import new_figure, save_figure
from minimax_core.weights import smoothed_max
from proofs_checks.numerics import minimize_smoothed
from proofs_checks.softmax_rate import theory_step_size
from proofs_checks.subgradient_rate import loglog_slope

from ..common import Experiment, Report, given, write_json
from ..theory import iterations_to_gap, quadratic_instance

NAME = "temperature"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-tasks", type=int, default=10, help="M (default 10)")
    parser.add_argument("--dim", type=int, default=20, help="d (default 20)")
    parser.add_argument(
        "--temperatures", type=int, default=None, help="grid size (default 13, quick 7)"
    )
    parser.add_argument(
        "--budget", type=int, default=None, help="step budget per run (default 50000, quick 5000)"
    )
    parser.add_argument(
        "--eps-fraction",
        type=float,
        default=0.02,
        help="target eps as a fraction of the initial gap F(x_0) - F* (default 0.02)",
    )
    parser.add_argument("--seed", type=int, default=0, help="problem seed")


def _config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = {
        "num_tasks": args.num_tasks,
        "dim": args.dim,
        "num_temperatures": given(args.temperatures, 7 if args.quick else 13),
        "budget": given(args.budget, 5000 if args.quick else 50000),
        "eps_fraction": args.eps_fraction,
        "problem_seed": args.seed,
        "mu": 1.0,
        "smoothness": 10.0,
        "temperature_range": (1e-3, 10.0),
    }
    for key in ("num_tasks", "dim", "num_temperatures", "budget"):
        if cfg[key] < 1 or (key == "num_tasks" and cfg[key] < 2):
            raise ValueError(f"{key} must be >= {2 if key == 'num_tasks' else 1}, got {cfg[key]}")
    if not 0 < cfg["eps_fraction"] < 1:
        raise ValueError(f"--eps-fraction must be in (0, 1), got {cfg['eps_fraction']}")
    return cfg


def run(args: argparse.Namespace) -> Report:
    cfg = _config(args)
    m, d = cfg["num_tasks"], cfg["dim"]
    inst = quadratic_instance(
        m, d, mu=cfg["mu"], smoothness=cfg["smoothness"], seed=cfg["problem_seed"]
    )
    problem, bracket, x0, v0, f_star = inst.problem, inst.bracket, inst.x0, inst.v0, inst.f_star
    initial_gap = inst.initial_gap
    eps = cfg["eps_fraction"] * initial_gap
    g_star = inst.gradient_at_optimum()
    taus = np.geomspace(*cfg["temperature_range"], cfg["num_temperatures"])
    rows = []
    for tau in tqdm(taus, desc=NAME):
        tau = float(tau)
        smooth = minimize_smoothed(problem, tau, x0=bracket.x)
        limit = float(np.max(problem.losses(smooth.x))) - f_star
        eta, l_tau, g_bound = theory_step_size(problem, tau, x0)
        oracle_step = 1.0 / mc.bounds.smoothed_smoothness(problem.smoothness, g_star, tau)
        bound = mc.bounds.smoothed_gap_bound(tau, m)
        rate = mc.bounds.softmax_linear_rate(problem.mu, l_tau)
        gap0_tau = smoothed_max(v0, tau) - smooth.value
        theory = mc.bounds.softmax_iterations_at_temperature(eps, tau, gap0_tau, rate, m)
        reachable = limit < eps
        rows.append(
            {
                "temperature": tau,
                "limit_gap": limit,
                "smoothing_bound": bound,
                "limit_over_bound": limit / bound,
                "theory_step": eta,
                "oracle_step": oracle_step,
                "lipschitz_bound": g_bound,
                "iterations_theory_bound": theory,
                "iterations_theory_step": (
                    iterations_to_gap(problem, tau, eta, f_star, eps, cfg["budget"])
                    if reachable
                    else None
                ),
                "iterations_oracle_step": (
                    iterations_to_gap(problem, tau, oracle_step, f_star, eps, cfg["budget"])
                    if reachable
                    else None
                ),
                "limit_below_eps": reachable,
            }
        )
    limits = np.array([r["limit_gap"] for r in rows])
    slope = loglog_slope(taus, limits, taus[0], taus[-1] / 10.0)
    oracle = [(r["iterations_oracle_step"], r["temperature"]) for r in rows]
    reached = [(n, t) for n, t in oracle if n is not None]
    best = min(reached) if reached else (None, None)
    summary = {
        "eps": eps,
        "crossing_temperature": _crossing(taus, limits, eps),
        "initial_gap": initial_gap,
        "limit_slope_small_tau": slope,
        "median_limit_over_bound": float(np.median([r["limit_over_bound"] for r in rows])),
        "theory_temperature": eps / (2.0 * math.log(m)),
        "best_temperature_oracle_step": best[1],
        "best_iterations_oracle_step": best[0],
        "reached_with_theory_step": sum(r["iterations_theory_step"] is not None for r in rows),
        "gradient_bound_at_optimum": g_star,
    }
    out: Path = args.out
    payload = {
        "experiment": NAME,
        "config": cfg,
        "problem": {"family": "random_quadratic", "seed": cfg["problem_seed"], "x0": "zeros"},
        "optimum": {"F_star": f_star, "certified_lower": bracket.lower},
        "summary": summary,
        "rows": rows,
    }
    json_path = write_json(out / f"{NAME}.json", payload)
    png = _plot(rows, summary, cfg, out / f"{NAME}.png")
    for r in rows:
        print(
            f"  tau {r['temperature']:.2e}: F(x_tau)-F* {r['limit_gap']:.2e} "
            f"(bound {r['smoothing_bound']:.2e}); iterations to eps: theory bound "
            f"{r['iterations_theory_bound']}, theory step {r['iterations_theory_step']}, "
            f"oracle step {r['iterations_oracle_step']}"
        )
    print(
        f"  limit slope (small tau) {slope:.3f}; F(x_tau)-F* / (tau log M) median "
        f"{summary['median_limit_over_bound']:.3f}"
    )
    md = (
        f"![{NAME}]({NAME}.png)\n\n"
        f"Left: the smoothing's exact error F(x_tau) - F* grows linearly in tau (log-log "
        f"slope {slope:.2f}) and sits at about {summary['median_limit_over_bound']:.2f} of "
        f"the bound tau log M on `random_quadratic(M={m}, d={d})`. Right: to reach eps = "
        f"{cfg['eps_fraction']:g} x the initial gap, tau must be small enough for the limit "
        "to fall below eps, and below that the cost grows like 1/tau; with the oracle step "
        f"the fastest temperature is tau = {_fmt(best[1])} ({_fmt(best[0])} iterations), "
        f"the guaranteed step reaches eps within the {cfg['budget']}-step budget at "
        f"{summary['reached_with_theory_step']} of {len(rows)} temperatures, and the "
        "theorem's count is larger still by orders of magnitude.\n"
    )
    headline = {
        "limit_slope": slope,
        "median_limit_over_bound": summary["median_limit_over_bound"],
        "best_temperature_oracle_step": best[1],
    }
    return Report(json_path, (png,), md, headline)


def _crossing(taus: np.ndarray, limits: np.ndarray, eps: float) -> float | None:
    """The temperature where ``F(x_tau) - F*`` crosses ``eps`` (log-log interpolation
    between the first grid point above ``eps`` and the one before); ``None`` if it never
    does on the grid."""
    above = np.flatnonzero(limits >= eps)
    if above.size == 0:
        return None
    k = int(above[0])
    if k == 0:
        return float(taus[0])
    lt, ll = np.log(taus[k - 1 : k + 1]), np.log(limits[k - 1 : k + 1])
    return float(np.exp(lt[0] + (math.log(eps) - ll[0]) * (lt[1] - lt[0]) / (ll[1] - ll[0])))


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "none"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plot(
    rows: list[dict[str, Any]], summary: dict[str, Any], cfg: dict[str, Any], path: Path
) -> Path:
    taus = np.array([r["temperature"] for r in rows])
    fig = new_figure(figsize=(13, 5))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.loglog(taus, [r["limit_gap"] for r in rows], "o-", label="F(x_tau) - F* (exact limit)")
    ax1.loglog(taus, [r["smoothing_bound"] for r in rows], "k--", label="bound tau log M")
    ax1.axhline(summary["eps"], color="tab:red", lw=1, ls=":", label="target eps")
    ax1.set_xlabel("temperature tau (loss units)")
    ax1.set_ylabel("F(x_tau) - F*  (loss units)")
    ax1.set_title("accuracy of the smoothing")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend()
    budget = cfg["budget"]
    series = (
        ("iterations_theory_bound", "theorem's count (guaranteed step)", "k", "--"),
        ("iterations_theory_step", "measured, guaranteed step 1/(L+G^2/tau)", "tab:blue", "-"),
        ("iterations_oracle_step", "measured, oracle step 1/(L+G*^2/tau)", "tab:green", "-"),
    )
    for key, label, color, ls in series:
        vals = [r[key] for r in rows]
        ok = np.array([v is not None for v in vals])
        y = np.array([v if v is not None else np.nan for v in vals], dtype=float)
        ax2.loglog(taus[ok], y[ok], marker="o", color=color, ls=ls, label=label)
        if key != "iterations_theory_bound":
            cens = (~ok) & np.array([r["limit_below_eps"] for r in rows])
            if cens.any():
                ax2.loglog(
                    taus[cens],
                    np.full(cens.sum(), budget),
                    marker="o",
                    mfc="none",
                    ls="none",
                    color=color,
                    label=f"{label.split(',')[1].strip()}: not reached in budget",
                )
    crossing = summary["crossing_temperature"]
    if crossing is not None:
        ax2.axvspan(crossing, taus.max(), color="0.85", label="F(x_tau) - F* > eps")
    ax2.axvline(summary["theory_temperature"], color="tab:red", ls=":", label="tau = eps/(2 log M)")
    ax2.set_xlabel("temperature tau (loss units)")
    ax2.set_ylabel("iterations to F(x_t) - F* <= eps")
    ax2.set_title(f"cost of reaching eps = {summary['eps']:.2g}")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8, loc="center right")
    return save_figure(fig, path)


EXPERIMENT = Experiment(
    name=NAME,
    summary="softmax smoothing trade-off: exact error F(x_tau)-F* vs tau log M, and "
    "iterations to reach eps vs temperature",
    run=run,
    add_arguments=add_arguments,
    quickstart_order=20,
)
