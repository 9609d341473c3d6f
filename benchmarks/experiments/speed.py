"""Convex speed: ``method="auto"`` against CVXPY + Clarabel and the first-order methods.

On ``random_quadratic(M, d, mu=1, smoothness=L, seed)`` for (M, d) in (10, 50), (50, 200),
(100, 500) (``--quick`` stops at (50, 200)) and L in (10, 100), measured in one run,
single-threaded (BLAS limited to one thread):

- CVXPY (epigraph form with ``quad_form``) + Clarabel at tolerances 1e-9: wall time of the
  whole call (model build + compile + solve) and its optimum;
- ``auto`` (the interior-point method for quadratic tasks) and, beside it, its first-order
  engine (``algorithm="gradient_mapping"``, the path for tasks without Hessians): wall
  time (median of repeats) and relative error ``(F(x) - F_best)/|F_best|`` where
  ``F_best`` is the better of the CVXPY point and the auto point;
- the time to a relative gap ``(F(x_t) - F_best)/|F_best| <= 1e-3`` of softmax GD (fixed
  step ``1/(L + G^2/tau)``, Armijo, and Armijo with temperature continuation), the
  subgradient method and Group DRO, with a cap on steps and on wall time (the gap is read
  at the iterate each method hands its callback). Softmax uses ``tau = 1e-3 |F_best| /
  (2 log M)``, so that its smoothing bias ``tau log M`` is half the target;
- one evaluation of all ``M`` losses and gradients (the floor: every method needs at
  least one).

Direct anchors (no modelling layer; :func:`minimax_core.reference.conic_form` builds the
second-order-cone form once with scipy.sparse, :func:`~minimax_core.reference.solve_conic`
calls the solver): Clarabel, QOCO, ECOS and SCS (those installed; ``pip install
'taskrobust[bench]'``) on ``L = 10`` for (M, d) in (5, 20), (10, 50), (20, 100), (50, 200),
(100, 500) (``--quick``: the first two). The repeats of auto and of every solver are
interleaved (contention from other processes hits all alike); each entry is the best of
the repeats, in wall time and in CPU time of the process (``time.process_time``: on a
shared machine the wall time also counts waiting for a core, which inflates runs longer
than a scheduler slice). A solver whose predicted CPU time (its time at the previous size
scaled by ``M d^3``) exceeds ``--anchor-cap`` is not run. Relative error: ``(F(x) - F*)/|F*|`` with ``F*`` from auto at ``tol=1e-12``
(certified).

Warm start (sizes up to (50, 200)): a sequence of ten related problems (each centre moved
by 1e-2 per problem) solved by ``minimax_core.exact.minimize`` cold (from 0) and warm (from
the previous solution's ``x`` and ``weights``): CPU time per solve, iterations, and the
largest relative difference of the optima (both certified to 1e-8).

Ratios written to the JSON and printed: speed-up of auto over CVXPY and over each direct
solver, auto time in gradient evaluations, and every method's time over auto's. A scaling sweep draws auto's
time against d (M fixed) and against M (d fixed) on log-log axes, with CVXPY where it
finishes in under a minute.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import minimax_core as mc
from deep.plotting import new_figure, save_figure

from ..common import Experiment, Report, single_threaded, timed, write_json

NAME = "speed"
SIZES = ((10, 50), (50, 200), (100, 500))
SMOOTHNESS = (10.0, 100.0)
TARGET = 1e-3  # relative gap for the first-order methods
CVXPY_SCALING_LIMIT = 60.0  # seconds: CVXPY is drawn in the sweep only below this
ANCHOR_SIZES = ((5, 20), (10, 50), (20, 100), (50, 200), (100, 500))
ANCHOR_SMOOTHNESS = 10.0
WARM_SEQUENCE = 10  # related problems per warm-start sequence (centres moved step by step)
WARM_MOVE = 1e-2  # standard deviation of each move of every centre
WARM_MAX_SIZE = 10_000  # M * d: warm starts are measured up to (50, 200)

FIRST_ORDER: dict[str, tuple[str, Callable[[float, int], dict[str, Any]]]] = {
    "softmax (fixed step)": (
        "softmax",
        lambda tau, m: {"temperature": tau, "line_search": "fixed"},
    ),
    "softmax (Armijo)": ("softmax", lambda tau, m: {"temperature": tau, "line_search": "armijo"}),
    "softmax (Armijo + continuation)": (
        "softmax",
        lambda tau, m: {
            "temperature": 1.0,
            "final_temperature": tau,
            "line_search": "armijo",
        },
    ),
    "subgradient": ("subgradient", lambda tau, m: {}),
    "group_dro": ("group_dro", lambda tau, m: {}),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--step-cap", type=int, default=None, help="first-order steps (default 50000, quick 20000)"
    )
    parser.add_argument(
        "--time-cap",
        type=float,
        default=None,
        help="seconds per first-order run (default 20, quick 5)",
    )
    parser.add_argument(
        "--no-scaling", action="store_true", help="skip the scaling sweep (table only)"
    )
    parser.add_argument(
        "--anchor-cap",
        type=float,
        default=None,
        help="seconds: a direct solver predicted slower than this is not run (default 60, quick 5)",
    )
    parser.add_argument(
        "--anchor-repeats", type=int, default=None, help="repeats (default 7, quick 5)"
    )
    parser.add_argument(
        "--anchors-only",
        action="store_true",
        help="only the direct-anchor table (no CVXPY, first-order methods or sweep)",
    )


def _problem(m: int, d: int, smoothness: float, seed: int) -> mc.problems.QuadraticTasks:
    return mc.problems.random_quadratic(m, d, mu=1.0, smoothness=smoothness, seed=seed)


def _gradient_time(problem: mc.problems.QuadraticTasks) -> float:
    """Median time of one ``value_and_jacobian`` (enough repeats for about 0.2 s)."""
    x = np.zeros(problem.dim)
    once, _ = timed(lambda: problem.value_and_jacobian(x), repeat=3)
    repeat = int(min(max(0.2 / max(once, 1e-7), 5), 2000))
    seconds, _ = timed(lambda: problem.value_and_jacobian(x), repeat=repeat)
    return seconds


def _repeats(seconds: float) -> int:
    return 5 if seconds < 0.05 else 3 if seconds < 1.0 else 1


def _auto(problem: Any, algorithm: str | None = None) -> tuple[float, mc.Result]:
    """Median wall time of ``minimize_max(problem)`` (default ``method="auto"``)."""
    options = {} if algorithm is None else {"algorithm": algorithm}
    seconds, res = timed(lambda: mc.minimize_max(problem, **options))
    if _repeats(seconds) > 1:
        seconds, res = timed(lambda: mc.minimize_max(problem, **options), _repeats(seconds))
    return seconds, res


def _time_to_target(
    problem: Any, method: str, options: dict[str, Any], best: float, step_cap: int, cap: float
) -> dict[str, Any]:
    """Wall time until the callback sees ``(F(x_t) - best)/|best| <= TARGET``."""
    state = {"gap": math.inf, "steps": 0, "reached": False}
    start = time.perf_counter()

    def callback(it: mc.Iterate) -> bool:
        gap = (it.fun - best) / abs(best)
        state["gap"] = min(state["gap"], gap)
        state["steps"] = it.step
        if gap <= TARGET:
            state["reached"] = True
            return True
        return time.perf_counter() - start > cap

    res = mc.minimize_max(
        problem, method=method, steps=step_cap, tol=1e-30, callback=callback, **options
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds if state["reached"] else None,
        "elapsed": seconds,
        "reached": state["reached"],
        "steps": state["steps"],
        "nfev": res.nfev,
        "best_relative_gap": state["gap"],
        "message": res.message if not state["reached"] else "target reached",
    }


def _one_size(
    m: int, d: int, smoothness: float, seed: int, step_cap: int, cap: float, bar: Any
) -> dict[str, Any]:
    problem = _problem(m, d, smoothness, seed)
    grad_seconds = _gradient_time(problem)
    start = time.perf_counter()
    ref = mc.reference.solve_cvxpy(problem)
    cvxpy_seconds = time.perf_counter() - start
    bar.update()
    auto_seconds, auto = _auto(problem)
    gm_seconds, gm = _auto(problem, "gradient_mapping")
    bar.update()
    candidates = [auto.fun, gm.fun] + ([ref.fun] if math.isfinite(ref.fun) else [])
    best = min(candidates)
    row: dict[str, Any] = {
        "num_tasks": m,
        "dim": d,
        "smoothness": smoothness,
        "gradient_seconds": grad_seconds,
        "cvxpy": {
            "seconds": cvxpy_seconds,
            "compile_seconds": ref.info["compile_seconds"],
            "solve_seconds": ref.info["solve_seconds"],
            "fun": ref.fun,
            "relative_error": (ref.fun - best) / abs(best),
            "status": ref.message,
        },
        "auto": _auto_row(auto, auto_seconds, best, grad_seconds),
        "auto_gradient_mapping": _auto_row(gm, gm_seconds, best, grad_seconds),
        "best_fun": best,
        "speedup_auto_vs_cvxpy": cvxpy_seconds / auto_seconds,
        "auto_gradient_evaluations": auto_seconds / grad_seconds,
        "first_order": {},
    }
    tau = TARGET * abs(best) / (2.0 * math.log(m))
    for label, (method, make) in FIRST_ORDER.items():
        out = _time_to_target(problem, method, make(tau, m), best, step_cap, cap)
        out["options"] = make(tau, m)
        out["ratio_to_auto"] = None if out["seconds"] is None else out["seconds"] / auto_seconds
        row["first_order"][label] = out
        bar.update()
    return row


def _auto_row(res: mc.Result, seconds: float, best: float, grad: float) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "fun": res.fun,
        "relative_error": (res.fun - best) / abs(best),
        "relative_certificate": (res.certificate or math.inf) / abs(res.fun),
        "success": res.success,
        "nit": res.nit,
        "nfev": res.nfev,
        "active_tasks": int(np.count_nonzero(res.weights)),
        "gradient_evaluations": seconds / grad,
        "algorithm": res.info.get("algorithm"),
    }


def installed_solvers() -> list[str]:
    """The direct conic solvers importable here (their packages are optional)."""
    import importlib.util

    return [s for s in mc.reference.CONIC_SOLVERS if importlib.util.find_spec(s) is not None]


def _clocked(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and CPU seconds of one call, and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _anchor_row(
    m: int,
    d: int,
    seed: int,
    solvers: list[str],
    repeats: int,
    skip: dict[str, str],
    bar: Any,
) -> dict[str, Any]:
    """auto and each direct solver on one size, repeats interleaved, best of each."""
    problem = _problem(m, d, ANCHOR_SMOOTHNESS, seed)
    optimum = mc.minimize_max(problem, tol=1e-12)
    best = optimum.fun
    form = mc.reference.conic_form(problem)
    names = ["auto", *solvers]
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    last: dict[str, Any] = {}
    for rep in range(repeats):
        for name in names:
            if name in skip:
                continue
            if rep > 0 and name != "auto" and min(cpu[name]) > 2.0:
                continue  # slow: one run is the measurement (the spread is small next to it)
            if name == "auto":
                w, c, out = _clocked(lambda: mc.minimize_max(problem))
            else:
                w, c, out = _clocked(lambda: mc.reference.solve_conic(form, name))  # noqa: B023
            wall[name].append(w)
            cpu[name].append(c)
            last[name] = out
        bar.update()
    auto = last["auto"]
    row: dict[str, Any] = {
        "num_tasks": m,
        "dim": d,
        "smoothness": ANCHOR_SMOOTHNESS,
        "optimum": best,
        "optimum_certificate": optimum.certificate,
        "build_seconds": form.build_seconds,
        "auto": {
            "wall_seconds": min(wall["auto"]),
            "cpu_seconds": min(cpu["auto"]),
            "repeats": len(wall["auto"]),
            "nit": auto.nit,
            "success": auto.success,
            "relative_error": (auto.fun - best) / abs(best),
        },
        "solvers": {},
    }
    for name in solvers:
        if name in skip:
            row["solvers"][name] = {"skipped": skip[name]}
            continue
        sol = last[name]
        fun = float(np.max(problem.losses(sol.x))) if np.all(np.isfinite(sol.x)) else math.nan
        row["solvers"][name] = {
            "wall_seconds": min(wall[name]),
            "cpu_seconds": min(cpu[name]),
            "repeats": len(wall[name]),
            "status": sol.status,
            "optimal": sol.optimal,
            "iterations": sol.iterations,
            "relative_error": (fun - best) / abs(best),
            "ratio_wall": min(wall[name]) / min(wall["auto"]),
            "ratio_cpu": min(cpu[name]) / min(cpu["auto"]),
        }
    return row


def _anchors(
    sizes: tuple[tuple[int, int], ...], seed: int, repeats: int, cap: float, bar: Any
) -> dict[str, Any]:
    """The direct-anchor table: every installed solver while its predicted time <= cap."""
    solvers = installed_solvers()
    rows: list[dict[str, Any]] = []
    for m, d in sizes:
        skip: dict[str, str] = {}
        if rows:
            prev = rows[-1]
            growth = (m * d**3) / (prev["num_tasks"] * prev["dim"] ** 3)
            for name in solvers:
                entry = prev["solvers"][name]
                if "skipped" in entry:
                    skip[name] = entry["skipped"]
                elif entry["cpu_seconds"] * growth > cap:
                    skip[name] = (
                        f"predicted {entry['cpu_seconds'] * growth:.0f} CPU s > cap {cap:g} s"
                    )
        row = _anchor_row(m, d, seed, solvers, repeats, skip, bar)
        if m * d <= WARM_MAX_SIZE:
            row["warm_start"] = _warm_start(m, d, seed, repeats)
        rows.append(row)
    missing = [s for s in mc.reference.CONIC_SOLVERS if s not in solvers]
    return {"solvers": solvers, "not_installed": missing, "cap_seconds": cap, "rows": rows}


def _warm_start(m: int, d: int, seed: int, repeats: int) -> dict[str, Any]:
    """A sequence of related problems (the centres move by ``WARM_MOVE`` per problem):
    ``exact.minimize`` cold (from 0) against warm (``x0``, ``weights0`` of the previous
    solution); CPU time per solve, best of ``repeats``, and the mean iterations."""
    from minimax_core import exact

    first = _problem(m, d, ANCHOR_SMOOTHNESS, seed)
    rng = np.random.default_rng(seed + 1)
    sequence = [first]
    for _ in range(WARM_SEQUENCE - 1):
        centers = sequence[-1].centers + WARM_MOVE * rng.standard_normal(first.centers.shape)
        sequence.append(mc.problems.QuadraticTasks(first.hessian_stack, centers, first.offsets))

    def run(warm: bool) -> tuple[float, list[Any]]:
        cpu, prev, out = time.process_time(), None, []
        for problem in sequence:
            if warm and prev is not None:
                prev = exact.minimize(problem, prev.x, tol=1e-8, weights0=prev.weights)
            else:
                prev = exact.minimize(problem, np.zeros(d), tol=1e-8)
            out.append(prev)
        return time.process_time() - cpu, out

    cold_cpu, warm_cpu = math.inf, math.inf
    for _ in range(repeats):
        seconds, cold = run(False)
        cold_cpu = min(cold_cpu, seconds)
        seconds, warm = run(True)
        warm_cpu = min(warm_cpu, seconds)
    return {
        "sequence": WARM_SEQUENCE,
        "move": WARM_MOVE,
        "cold_cpu_per_solve": cold_cpu / WARM_SEQUENCE,
        "warm_cpu_per_solve": warm_cpu / WARM_SEQUENCE,
        "speedup_cpu": cold_cpu / warm_cpu,
        "cold_mean_nit": float(np.mean([r.nit for r in cold])),
        "warm_mean_nit": float(np.mean([r.nit for r in warm])),
        "all_certified": bool(all(r.success for r in cold + warm)),
        "max_relative_difference": max(
            abs(w.fun - c.fun) / abs(c.fun) for c, w in zip(cold, warm, strict=True)
        ),
    }


def _warm_table(anchors: dict[str, Any]) -> str:
    rows = [r for r in anchors["rows"] if "warm_start" in r]
    if not rows:
        return ""
    lines = [
        "| M, d | cold CPU / solve | warm CPU / solve | speed-up | iterations cold -> warm "
        "| max rel. difference |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        w = r["warm_start"]
        lines.append(
            f"| {r['num_tasks']}, {r['dim']} | {_fmt_seconds(w['cold_cpu_per_solve'])} | "
            f"{_fmt_seconds(w['warm_cpu_per_solve'])} | {w['speedup_cpu']:.2f}x | "
            f"{w['cold_mean_nit']:.1f} -> {w['warm_mean_nit']:.1f} | "
            f"{w['max_relative_difference']:.1e} |"
        )
    return "\n".join(lines)


def _anchor_table(anchors: dict[str, Any]) -> str:
    solvers = anchors["solvers"]
    head = "| M, d | auto (wall / CPU) | " + " | ".join(
        f"{s} (wall / CPU) | {s} / auto (wall, CPU) | {s} rel. error" for s in solvers
    )
    lines = [head + " |", "|" + "---|" * (2 + 3 * len(solvers))]
    for r in anchors["rows"]:
        a = r["auto"]
        cells = [
            f"{r['num_tasks']}, {r['dim']}",
            f"{_fmt_seconds(a['wall_seconds'])} / {_fmt_seconds(a['cpu_seconds'])}",
        ]
        for s in solvers:
            e = r["solvers"][s]
            if "skipped" in e:
                cells += ["not run", e["skipped"], "-"]
                continue
            cells += [
                f"{_fmt_seconds(e['wall_seconds'])} / {_fmt_seconds(e['cpu_seconds'])}",
                f"{e['ratio_wall']:.1f}x, {e['ratio_cpu']:.1f}x",
                f"{e['relative_error']:.1e}" + ("" if e["optimal"] else f" ({e['status']})"),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_anchors(anchors: dict[str, Any], path: Path) -> Path:
    fig = new_figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    rows = anchors["rows"]
    labels = [f"{r['num_tasks']}x{r['dim']}" for r in rows]
    xs = np.arange(len(rows))
    for ax, key, title in (
        (axes[0], "wall_seconds", "wall time"),
        (axes[1], "cpu_seconds", "CPU time of the process"),
    ):
        ax.semilogy(xs, [r["auto"][key] for r in rows], "o-", color="black", label="auto")
        for s in anchors["solvers"]:
            pts = [
                (x, r["solvers"][s][key])
                for x, r in zip(xs, rows, strict=True)
                if key in r["solvers"][s]
            ]
            if pts:
                ax.semilogy(*zip(*pts, strict=True), "s--", label=f"{s} (direct)")
        ax.set_xticks(xs, labels)
        ax.set_xlabel("M x d (random_quadratic, L = 10)")
        ax.set_ylabel("seconds, one thread, best of repeats")
        ax.set_title(f"auto vs conic solvers called directly: {title}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _scaling(quick: bool, seed: int, bar: Any) -> dict[str, Any]:
    """auto (both engines) and CVXPY (while under a minute) against d and against M."""
    dims = (25, 50, 100, 200) if quick else (25, 50, 100, 200, 400, 800)
    tasks = (5, 10, 25, 50, 100) if quick else (5, 10, 25, 50, 100, 200, 400)
    sweeps: dict[str, Any] = {}
    for axis, sizes in (("dim", [(50, d) for d in dims]), ("num_tasks", [(m, 100) for m in tasks])):
        rows, cvxpy_ok = [], True
        for m, d in sizes:
            problem = _problem(m, d, 10.0, seed)
            auto_seconds, auto = _auto(problem)
            gm_seconds, _ = _auto(problem, "gradient_mapping")
            row: dict[str, Any] = {
                "num_tasks": m,
                "dim": d,
                "auto_seconds": auto_seconds,
                "gradient_mapping_seconds": gm_seconds,
                "gradient_seconds": _gradient_time(problem),
                "auto_success": auto.success,
                "cvxpy_seconds": None,
            }
            # CVXPY time grows about 8x per doubling beyond small sizes: stop once the
            # last run took over an eighth of the limit (quick: a fortieth)
            if cvxpy_ok:
                start = time.perf_counter()
                mc.reference.solve_cvxpy(problem)
                row["cvxpy_seconds"] = time.perf_counter() - start
                cvxpy_ok = row["cvxpy_seconds"] < CVXPY_SCALING_LIMIT / (40 if quick else 8)
            rows.append(row)
            bar.update()
        sweeps[axis] = rows
    return sweeps


def run(args: argparse.Namespace) -> Report:
    sizes = SIZES[:2] if args.quick else SIZES
    step_cap = args.step_cap or (20000 if args.quick else 50000)
    cap = args.time_cap or (5.0 if args.quick else 20.0)
    anchor_cap = args.anchor_cap or (5.0 if args.quick else 60.0)
    anchor_repeats = args.anchor_repeats or (5 if args.quick else 7)
    if anchor_cap <= 0 or anchor_repeats < 1:
        raise ValueError("--anchor-cap must be > 0 and --anchor-repeats >= 1")
    anchor_sizes = ANCHOR_SIZES[:2] if args.quick else ANCHOR_SIZES
    out: Path = args.out
    full = not args.anchors_only
    scaling_runs = 0 if (args.no_scaling or not full) else (9 if args.quick else 13)
    table_runs = len(sizes) * len(SMOOTHNESS) * (2 + len(FIRST_ORDER)) if full else 0
    total = table_runs + scaling_runs + len(anchor_sizes) * anchor_repeats
    rows = []
    with single_threaded(), tqdm(total=total, desc=NAME) as bar:
        mc.minimize_max(_problem(3, 4, 10.0, args.seed))  # first-call setup
        anchors = _anchors(anchor_sizes, args.seed, anchor_repeats, anchor_cap, bar)
        if full:
            mc.reference.solve_cvxpy(_problem(3, 4, 10.0, args.seed))  # imports
            for m, d in sizes:
                for smoothness in SMOOTHNESS:
                    rows.append(_one_size(m, d, smoothness, args.seed, step_cap, cap, bar))
        scaling = {} if (args.no_scaling or not full) else _scaling(args.quick, args.seed, bar)
    targets = {**(_targets(rows) if rows else {}), **_anchor_targets(anchors)}
    payload = {
        "experiment": NAME,
        "config": {
            "sizes": sizes if full else [],
            "smoothness": SMOOTHNESS,
            "mu": 1.0,
            "seed": args.seed,
            "target_relative_gap": TARGET,
            "step_cap": step_cap,
            "time_cap_seconds": cap,
            "threads": 1,
            "anchor_sizes": anchor_sizes,
            "anchor_repeats": anchor_repeats,
            "anchor_cap_seconds": anchor_cap,
        },
        "rows": rows,
        "anchors": anchors,
        "scaling": scaling,
        "targets": targets,
    }
    json_path = write_json(out / f"{NAME}.json", payload)
    if full:
        pngs = [_plot_table(rows, out / f"{NAME}.png")]
        pngs.append(_plot_anchors(anchors, out / f"{NAME}_anchors.png"))
    else:
        pngs = [_plot_anchors(anchors, out / f"{NAME}.png")]
    if scaling:
        pngs.append(_plot_scaling(scaling, out / f"{NAME}_scaling.png"))
    anchor_table = _anchor_table(anchors)
    print(anchor_table)
    warm_table = _warm_table(anchors)
    if warm_table:
        print(warm_table)
    table = _markdown_table(rows) if rows else ""
    if table:
        print(table)
    for key, value in targets.items():
        print(f"  {key}: {value}")
    anchor_png = f"{NAME}_anchors.png" if full else f"{NAME}.png"
    not_installed = ", ".join(anchors["not_installed"]) or "none"
    md = (
        (f"![speed]({NAME}.png)\n\n" if full else "")
        + f"![anchors]({anchor_png})\n\n"
        + (f"![scaling]({NAME}_scaling.png)\n\n" if scaling else "")
        + "**Direct anchors** (second-order-cone form built once, solver called without "
        "CVXPY, one thread; repeats interleaved, best of each; wall and CPU time of the "
        f"process; not installed: {not_installed}):\n\n"
        + anchor_table
        + "\n\n"
        + (
            "**Warm start** (a sequence of related problems, centres moved by "
            f"{WARM_MOVE:g} per problem; `exact.minimize` from 0 vs from the previous `x` and "
            "`weights`; CPU time per solve, best of the repeats):\n\n" + warm_table + "\n\n"
            if warm_table
            else ""
        )
        + (
            "Single-threaded wall times on `random_quadratic(M, d, mu=1, smoothness=L)`. "
            "`auto` is the interior-point method (certificate <= 1e-8 relative); `gm` its "
            "first-order engine for tasks without Hessians. First-order columns: time to a "
            f"relative gap of {TARGET:g} (capped at {step_cap} steps or {cap:g} s: `>` marks "
            "a cap, with the best gap reached).\n\n" + table + "\n\n"
            if table
            else ""
        )
        + "Targets: "
        + ", ".join(f"{k} = {v}" for k, v in targets.items())
        + "\n"
    )
    headline = {
        f"speedup_{r['num_tasks']}x{r['dim']}_L{r['smoothness']:g}": r["speedup_auto_vs_cvxpy"]
        for r in rows
    }
    for r in anchors["rows"]:
        entry = r["solvers"].get("clarabel", {})
        if "ratio_cpu" in entry:
            headline[f"clarabel_over_auto_cpu_{r['num_tasks']}x{r['dim']}"] = entry["ratio_cpu"]
    return Report(json_path, tuple(pngs), md, headline)


def _anchor_targets(anchors: dict[str, Any]) -> dict[str, Any]:
    """Item 2 of issue 17: at (10, 50) and below, auto at least 30x faster than Clarabel
    called directly (both clocks reported)."""
    small = [
        r["solvers"]["clarabel"]
        for r in anchors["rows"]
        if r["num_tasks"] * r["dim"] <= 500 and "ratio_cpu" in r["solvers"].get("clarabel", {})
    ]
    if not small:
        return {}
    wall = min(e["ratio_wall"] for e in small)
    cpu = min(e["ratio_cpu"] for e in small)
    return {
        "min_clarabel_over_auto_at_10x50_and_below_wall": wall,
        "min_clarabel_over_auto_at_10x50_and_below_cpu": cpu,
        "auto_30x_faster_than_clarabel_at_10x50_and_below": bool(min(wall, cpu) >= 30),
        "auto_worst_relative_error_in_anchor_table": max(
            r["auto"]["relative_error"] for r in anchors["rows"]
        ),
    }


def _targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, measured: accuracy, speed-up, cost in gradient evaluations."""
    big = [r for r in rows if (r["num_tasks"], r["dim"]) in ((50, 200), (100, 500))]
    largest = [r for r in rows if (r["num_tasks"], r["dim"]) == (100, 500)]
    worst_error = max(max(r["auto"]["relative_error"], 0.0) for r in rows)
    out: dict[str, Any] = {
        "auto_worst_relative_error": worst_error,
        "auto_within_1e-8": bool(worst_error <= 1e-8 and all(r["auto"]["success"] for r in rows)),
        "min_speedup_at_50x200_and_100x500": min(r["speedup_auto_vs_cvxpy"] for r in big)
        if big
        else None,
    }
    if out["min_speedup_at_50x200_and_100x500"] is not None:
        out["speedup_ge_100"] = bool(out["min_speedup_at_50x200_and_100x500"] >= 100)
    if largest:
        worst = max(r["auto_gradient_evaluations"] for r in largest)
        out["auto_gradient_evaluations_at_100x500"] = worst
        out["auto_le_300_gradient_evaluations"] = bool(worst <= 300)
    return out


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"


def _first_order_cell(entry: dict[str, Any]) -> str:
    if entry["reached"]:
        return f"{_fmt_seconds(entry['seconds'])} ({entry['ratio_to_auto']:.0f}x)"
    return f"> {_fmt_seconds(entry['elapsed'])} (gap {entry['best_relative_gap']:.1e})"


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    labels = list(FIRST_ORDER)
    head = (
        "| M, d | L | one gradient eval | CVXPY | auto | auto / CVXPY | auto in grad evals "
        "| auto rel. error | gm | " + " | ".join(labels) + " |"
    )
    sep = "|" + "---|" * (9 + len(labels))
    lines = [head, sep]
    for r in rows:
        cells = [
            f"{r['num_tasks']}, {r['dim']}",
            f"{r['smoothness']:g}",
            _fmt_seconds(r["gradient_seconds"]),
            _fmt_seconds(r["cvxpy"]["seconds"]),
            _fmt_seconds(r["auto"]["seconds"]),
            f"{r['speedup_auto_vs_cvxpy']:.0f}x faster",
            f"{r['auto_gradient_evaluations']:.0f}",
            f"{r['auto']['relative_error']:.1e}",
            _fmt_seconds(r["auto_gradient_mapping"]["seconds"]),
        ] + [_first_order_cell(r["first_order"][k]) for k in labels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_table(rows: list[dict[str, Any]], path: Path) -> Path:
    series: dict[str, list[float]] = {
        "one gradient evaluation": [r["gradient_seconds"] for r in rows],
        "auto (interior point)": [r["auto"]["seconds"] for r in rows],
        "auto engine: gradient mapping": [r["auto_gradient_mapping"]["seconds"] for r in rows],
        "CVXPY + Clarabel": [r["cvxpy"]["seconds"] for r in rows],
    }
    for label in FIRST_ORDER:
        series[f"{label} to {TARGET:g}"] = [r["first_order"][label]["elapsed"] for r in rows]
    capped = {
        f"{label} to {TARGET:g}": [not r["first_order"][label]["reached"] for r in rows]
        for label in FIRST_ORDER
    }
    from matplotlib.patches import Patch

    fig = new_figure(figsize=(11, 6))
    ax = fig.subplots()
    n, k = len(rows), len(series)
    width = 0.8 / k
    xs = np.arange(n)
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    handles = []
    for j, (label, values) in enumerate(series.items()):
        pos = xs - 0.4 + (j + 0.5) * width
        bars = ax.bar(pos, values, width, color=cmap(j % 10))
        for b, is_capped in zip(bars, capped.get(label, [False] * n), strict=True):
            if is_capped:
                b.set_hatch("//")
                b.set_alpha(0.5)
        handles.append(Patch(color=cmap(j % 10), label=label))
    handles.append(Patch(facecolor="white", edgecolor="gray", hatch="//", label="stopped by cap"))
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"M={r['num_tasks']}, d={r['dim']}\nL={r['smoothness']:g}" for r in rows])
    ax.set_ylabel("wall time, one thread (seconds, log scale)")
    ax.set_xlabel("problem: random_quadratic(M, d, mu=1, smoothness=L)")
    ax.set_title(
        f"exact solvers vs CVXPY; first-order methods to a {TARGET:g} relative gap "
        "(hatched: stopped by the cap)"
    )
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(handles=handles, fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return save_figure(fig, path)


def _plot_scaling(scaling: dict[str, Any], path: Path) -> Path:
    fig = new_figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    for ax, (axis, rows) in zip(axes, scaling.items(), strict=True):
        xs = np.array([r[axis] for r in rows], dtype=float)
        ax.loglog(xs, [r["auto_seconds"] for r in rows], "o-", label="auto (interior point)")
        ax.loglog(xs, [r["gradient_mapping_seconds"] for r in rows], "s-", label="gradient mapping")
        ax.loglog(xs, [r["gradient_seconds"] for r in rows], "k:", label="one gradient evaluation")
        cv = [(x, r["cvxpy_seconds"]) for x, r in zip(xs, rows, strict=True) if r["cvxpy_seconds"]]
        if cv:
            ax.loglog(*zip(*cv, strict=True), "^-", color="tab:red", label="CVXPY + Clarabel")
        ax.set_xticks(xs, [str(int(x)) for x in xs])
        ax.minorticks_off()
        fixed = f"M = {rows[0]['num_tasks']}" if axis == "dim" else f"d = {rows[0]['dim']}"
        ax.set_xlabel(("dimension d" if axis == "dim" else "number of tasks M") + f" ({fixed})")
        ax.set_ylabel("wall time, one thread (seconds)")
        ax.set_title(f"time vs {'d' if axis == 'dim' else 'M'} (smoothness 10, mu 1)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


EXPERIMENT = Experiment(
    name=NAME,
    summary="convex speed: auto vs CVXPY + Clarabel and first-order methods (time, ratios)",
    run=run,
    add_arguments=add_arguments,
)
