"""Quick convex report: softmax-weighted GD vs subgradient vs average risk vs Group DRO.

On a built-in quadratic problem, every method of :func:`minimax_core.minimize_max` runs
with its defaults (and the paper's fixed step, and Group DRO's former rule, as explicit
options) and is compared with the CVXPY + Clarabel optimum: gap ``F(x_t) - F*`` per step,
log-log.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import minimax_core as mc
from deep.plotting import new_figure, save_figure

from ..common import Experiment, Report, given, write_json

METHODS: tuple[tuple[str, str, dict[str, object]], ...] = (
    ("softmax (default)", "softmax", {}),
    (
        "softmax, paper's fixed step, tau=0.1",
        "softmax",
        {"temperature": 0.1, "line_search": "fixed"},
    ),
    ("subgradient (default)", "subgradient", {}),
    ("average (default)", "average", {}),
    ("group_dro (default)", "group_dro", {}),
    ("group_dro, former rule", "group_dro", {"step_rule": "strongly_convex"}),
    ("auto (exact)", "auto", {}),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-tasks", type=int, default=None, help="M (default 20, quick 10)")
    parser.add_argument("--dim", type=int, default=None, help="d (default 100, quick 50)")
    parser.add_argument(
        "--steps", type=int, default=None, help="budget per method (default: each method's own)"
    )
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> Report:
    m = given(args.num_tasks, 10 if args.quick else 20)
    d = given(args.dim, 50 if args.quick else 100)
    steps = args.steps
    for flag, value, low in (("--num-tasks", m, 1), ("--dim", d, 1), ("--steps", steps, 1)):
        if value is not None and value < low:
            raise ValueError(f"{flag} must be an integer >= {low}, got {value}")
    if args.seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {args.seed}")
    problem = mc.problems.random_quadratic(
        num_tasks=m, dim=d, mu=1.0, smoothness=10.0, seed=args.seed
    )
    ref = mc.reference.solve_cvxpy(problem)
    if not ref.success:
        raise RuntimeError(f"the CVXPY reference did not solve the problem: {ref.message}")
    rows = []
    for label, method, options in METHODS:
        res = mc.minimize_max(problem, method=method, steps=steps, **options)  # type: ignore[arg-type]
        f_start = float(np.max(problem.losses(np.zeros(d))))
        rows.append(
            {
                "method": method,
                "label": label,
                "options": options,
                "gap": res.fun - ref.fun,
                "relative_gap": (res.fun - ref.fun) / (f_start - ref.fun),
                "nit": res.nit,
                "message": res.message,
                "history_step": res.history["step"],
                "history_gap": res.history["fun"] - ref.fun,
            }
        )
    out: Path = args.out
    payload = {
        "experiment": "quickstart",
        "problem": {
            "family": "random_quadratic",
            "num_tasks": m,
            "dim": d,
            "mu": 1.0,
            "smoothness": 10.0,
            "seed": args.seed,
        },
        "steps": steps,
        "cvxpy": {"fun": ref.fun, "status": ref.message, "wall_seconds": ref.info["wall_seconds"]},
        "methods": rows,
    }
    json_path = write_json(out / "quickstart.json", payload)
    png_path = _plot(rows, out / "quickstart.png", m, d)
    for r in rows:
        print(
            f"  {r['label']:<38} gap {r['gap']:+.3e} (relative {r['relative_gap']:+.1e}) "
            f"after {r['nit']} steps"
        )
    table = "\n".join(
        f"| {r['label']} | {r['gap']:.2e} | {r['relative_gap']:.1e} | {r['nit']} |" for r in rows
    )
    md = (
        f"![quickstart](quickstart.png)\n\n"
        f"Gap to the CVXPY optimum ({ref.fun:.6f}) per step for each method on "
        f"`random_quadratic(M={m}, d={d}, mu=1, smoothness=10)`; the relative gap divides by "
        "`F(x0) - F*`. With default options softmax GD (Armijo steps with momentum and "
        "temperature continuation), the subgradient method (20000 steps at its O(1/T) rate) and "
        "Group DRO (steps 1/smoothness) approach the optimum; average risk converges to its own "
        "point, not the min-max one; the paper's fixed step 1/(L + G^2/tau) and Group DRO's "
        "former projected 2/(mu (t+1)) rule, kept as explicit options, make far less progress; "
        "the exact solver (`auto`) reaches the optimum in a few Newton steps.\n\n"
        "| method | final gap | relative gap | steps |\n|---|---|---|---|\n" + table + "\n"
    )
    return Report(json_path, (png_path,), md, {r["label"]: r["gap"] for r in rows})


def _plot(rows: list[dict], path: Path, m: int, d: int) -> Path:
    fig = new_figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for r in rows:
        steps = np.maximum(np.asarray(r["history_step"]), 1)
        gap = np.maximum(np.asarray(r["history_gap"]), 1e-16)
        ax.loglog(steps, gap, label=r["label"], lw=1.8)
    ax.set_xlabel("iteration t (gradient steps; Newton steps for auto)")
    ax.set_ylabel("gap F(x_t) - F*  (loss units)")
    ax.set_title(f"min-max of {m} quadratic tasks in R^{d}: gap to the CVXPY optimum")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


EXPERIMENT = Experiment(
    name="quickstart",
    summary="convex report: softmax GD vs subgradient vs average risk vs Group DRO against CVXPY",
    run=run,
    add_arguments=add_arguments,
    quickstart_order=0,
)
