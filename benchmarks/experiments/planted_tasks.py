"""Planted-task language: does minimax pre-training help the worst downstream task when the
downstream tasks are, by construction, mixtures of the upstream ones? (Non-convex, a BERT.)

A seeded grammar (:mod:`deep.apps.planted.language`) emits sequences whose every token carries
one of 8 categories of designed difficulty (frequent unigram categories, topic-dependent
"topic" categories, a high-entropy category with floor log 400, and two rare long-range
agreement categories); upstream task ``c`` is masked-token prediction on category ``c``.
A 2-layer BERT MLM is pre-trained per method (same data order, masks and initialisation per
seed), then fine-tuned on planted mixtures (simplex vertices and Dirichlet mixtures: loss
``sum_c lambda_c L_c`` exactly) and on two classification tasks tied to the agreement
categories, for a sweep of budgets (steps) and samples. Reported: per method the held-out
worst upstream excess loss, the worst downstream task per seed, paired minimax - average
differences with 95% t-intervals, and the dynamics of the weights (plus a temperature
sweep).

Profiles (CPU time measured for quick, estimated from it for full; 2 workers):

=======  =====  =====  =======================  ==============  ==========  ==============
profile  seeds  steps  pre-trained / fine-tuned  samples         budgets     2 quiet cores
=======  =====  =====  =======================  ==============  ==========  ==============
quick    5      400    5 / 3 methods             128             0, 10, 40   ~5.5 min
full     8      600    6 / 3 methods             32, 256         0-80        ~28 min
=======  =====  =====  =======================  ==============  ==========  ==============

Quick: 635 CPU-s over its 5 seeds (127 s each), measured on a loaded machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..common import Experiment, Report, given, write_json

NAME = "planted-tasks"

PROFILES: dict[str, dict[str, Any]] = {
    "quick": dict(
        seeds=5, steps=400, methods=("minimax", "average", "mlm", "hardmax", "group_dro"),
        finetune_methods=("minimax", "average", "mlm"), samples=(128,), budgets=(0, 10, 40),
        mixtures=2, temperatures=(0.1,), heldout=512, finetune_heldout=256,
    ),
    "full": dict(
        seeds=8, steps=600,
        methods=("minimax", "average", "mlm", "hardmax", "group_dro", "minimax_raw"),
        finetune_methods=("minimax", "average", "mlm"),
        samples=(32, 256), budgets=(0, 10, 40, 80), mixtures=4,
        temperatures=(0.1, 0.2, 1.0, 2.0), heldout=1024, finetune_heldout=512,
    ),
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="derives the per-run seeds")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (>= 5)")
    parser.add_argument("--steps", type=int, default=None, help="pre-training steps")
    parser.add_argument(
        "--workers", type=int, default=2, help="processes (one torch thread each; default 2)"
    )
    parser.add_argument(
        "--temperature", type=float, default=0.5, help="minimax softmax temperature (nats)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the per-seed results in OUT/planted-tasks-seeds/ of a run with the same "
        "configuration; run only the missing seeds",
    )


def build_config(args: argparse.Namespace) -> tuple[str, Any, list[int], int]:
    from deep.apps.planted.downstream import FinetuneBudgets
    from deep.apps.planted.experiment import PlantedConfig, derive_seeds

    profile = "quick" if args.quick else "full"
    p = PROFILES[profile]
    n_seeds = given(args.seeds, p["seeds"])
    if n_seeds < 5:
        raise ValueError(f"--seeds must be >= 5 (paired intervals need them), got {n_seeds}")
    workers = args.workers
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    cfg = PlantedConfig(
        pretrain_steps=given(args.steps, p["steps"]),
        temperature=args.temperature,
        methods=p["methods"],
        finetune_methods=p["finetune_methods"],
        samples=p["samples"],
        finetune=FinetuneBudgets(budgets=p["budgets"], heldout=p["finetune_heldout"]),
        mixtures=p["mixtures"],
        temperatures=p["temperatures"],
        heldout=p["heldout"],
        **({"shape": p["shape"]} if "shape" in p else {}),
    )
    return profile, cfg, derive_seeds(args.seed, n_seeds), workers


def _fmt_ci(d: dict[str, Any], digits: int = 3) -> str:
    lo, hi = d["ci"]
    return f"{d['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def paired_table(payload: dict[str, Any]) -> str:
    rows = [
        "| kind | budget | samples | worst: minimax - average [95% CI] | mean: minimax - average |",
        "|---|---:|---:|---|---|",
    ]
    for r in payload["paired"]:
        rows.append(
            f"| {r['kind']} | {r['budget']} | {r['samples']} | {_fmt_ci(r['worst_diff'])} | "
            f"{_fmt_ci(r['mean_diff'])} |"
        )
    return "\n".join(rows) + "\n"


def upstream_table(payload: dict[str, Any], names: list[str], floors: list[float]) -> str:
    head = "| method | worst excess [95% CI] | " + " | ".join(names) + " |"
    rows = [head, "|---|---|" + "---:|" * len(names)]
    rows.append("| floor (nats) | | " + " | ".join(f"{f:.2f}" for f in floors) + " |")
    for m, u in payload["upstream"].items():
        lo, hi = u["worst_task_loss"]["ci"]
        cells = " | ".join(f"{u['task_excess'][n]:.3f}" for n in names)
        rows.append(f"| {m} | {u['worst_task_loss']['mean']:.3f} [{lo:.3f}, {hi:.3f}] | {cells} |")
    return "\n".join(rows) + "\n"


def _reading(diff: dict[str, Any]) -> str:
    lo, hi = diff["ci"]
    if hi < 0:
        return "minimax better"
    if lo > 0:
        return "minimax worse"
    return "tie (CI contains 0)"


def verdict(payload: dict[str, Any]) -> str:
    """Plain-words reading of the paired intervals (computed, not assumed)."""
    up = payload["upstream_paired"]["worst_diff"]
    lines = [
        f"Upstream: worst held-out category excess, minimax - average = {_fmt_ci(up)} nats: "
        f"{_reading(up)}."
    ]
    for kind in ("mixture", "classification"):
        rows = [r for r in payload["paired"] if r["kind"] == kind]
        groups: dict[str, list[str]] = {}
        for r in rows:
            groups.setdefault(_reading(r["worst_diff"]), []).append(
                f"k={r['budget']}/n={r['samples']}"
            )
        parts = [f"{word} at {', '.join(cells)}" for word, cells in groups.items()]
        lines.append(f"Downstream {kind} (worst task): " + "; ".join(parts) + ".")
    return "\n".join(lines)


def figure(payload: dict[str, Any], runs: list[dict[str, Any]], path: Path) -> Path:
    from deep.plotting import new_figure, save_figure

    kinds = sorted({r["kind"] for r in payload["downstream"]})
    fig = new_figure(figsize=(16, 13))
    axes = fig.subplots(3, 3)
    colors = {m: f"C{i}" for i, m in enumerate(payload["upstream"])}
    # (1, 2) worst downstream vs budget per method, CI bands, largest samples
    for ax, kind in zip(axes[0, :2], kinds, strict=False):
        rows = [r for r in payload["downstream"] if r["kind"] == kind]
        n_max = max(r["samples"] for r in rows)
        for m in sorted({r["method"] for r in rows}):
            sel = sorted(
                (r for r in rows if r["method"] == m and r["samples"] == n_max),
                key=lambda r: r["budget"],
            )
            b = np.array([r["budget"] for r in sel])
            mu = np.array([r["worst"]["mean"] for r in sel])
            lo = np.array([r["worst"]["ci"][0] for r in sel])
            hi = np.array([r["worst"]["ci"][1] for r in sel])
            ax.plot(b, mu, "o-", color=colors[m], label=m)
            ax.fill_between(b, lo, hi, color=colors[m], alpha=0.15)
        ax.set_xlabel("fine-tuning steps")
        ax.set_ylabel(
            "worst task: " + ("excess loss (nats)" if kind == "mixture" else "error rate")
        )
        ax.set_title(f"{kind}: worst downstream task ({n_max} samples), 95% CI")
        ax.legend(fontsize=8)
    # (3) paired differences
    ax = axes[0, 2]
    labels, mus, los, his = [], [], [], []
    for r in payload["paired"]:
        labels.append(f"{r['kind'][:5]} k={r['budget']} n={r['samples']}")
        mus.append(r["worst_diff"]["mean"])
        los.append(r["worst_diff"]["mean"] - r["worst_diff"]["ci"][0])
        his.append(r["worst_diff"]["ci"][1] - r["worst_diff"]["mean"])
    y = np.arange(len(labels))
    ax.errorbar(mus, y, xerr=[los, his], fmt="o", color="k")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_title("paired worst-task difference, minimax - average (<0: minimax better)")
    # (4) upstream per-category excess per method
    ax = axes[1, 0]
    names = payload["categories"]
    width = 0.8 / len(payload["upstream"])
    for i, (m, u) in enumerate(payload["upstream"].items()):
        ax.bar(
            np.arange(len(names)) + i * width,
            [u["task_excess"][n] for n in names],
            width,
            color=colors[m],
            label=m,
        )
    ax.set_xticks(np.arange(len(names)) + 0.4, names, rotation=30, fontsize=8)
    ax.set_ylabel("held-out excess loss over the floor (nats)")
    ax.set_title("upstream categories after pre-training (mean over seeds)")
    ax.legend(fontsize=7)
    # (5) worst upstream excess over training (training batches), mean over seeds
    ax = axes[1, 1]
    for m in payload["upstream"]:
        curves = [r["dynamics"][m].get("worst_excess") for r in runs]
        if curves[0] is None:
            continue
        steps = runs[0]["dynamics"][m]["step"]
        ax.plot(steps, np.mean(curves, axis=0), color=colors[m], label=m)
    for j, tau in enumerate(runs[0]["sweep"]):
        curves = [r["sweep"][tau]["worst_excess"] for r in runs]
        ax.plot(
            runs[0]["sweep"][tau]["step"],
            np.mean(curves, axis=0),
            ls=":",
            color=f"C{6 + j}",
            label=f"minimax tau={float(tau):g}",
        )
    ax.set_xlabel("pre-training step")
    ax.set_ylabel("worst category excess (training batches)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("dynamics: worst upstream task")
    # (6) weight entropy over training
    ax = axes[1, 2]
    for m in payload["upstream"]:
        curves = [r["dynamics"][m].get("weight_entropy") for r in runs]
        if curves[0] is None or m in ("average",):
            continue
        ax.plot(runs[0]["dynamics"][m]["step"], np.mean(curves, axis=0), color=colors[m], label=m)
    ax.axhline(np.log(len(names)), color="grey", lw=0.8, ls="--", label="uniform")
    ax.set_xlabel("pre-training step")
    ax.set_ylabel("entropy of the step weights (window mean)")
    ax.legend(fontsize=7)
    ax.set_title("dynamics: weights")
    # (7, 8) per-category excess over training, average and minimax; (9) minimax weights
    for ax, m in zip(axes[2, :2], ("average", "minimax"), strict=True):
        curves = np.mean([r["dynamics"][m]["task_excess"] for r in runs], axis=0)
        steps = runs[0]["dynamics"][m]["step"]
        for c, n in enumerate(names):
            ax.plot(steps, np.maximum(curves[:, c], 1e-3), label=n, color=f"C{c}")
        ax.set_yscale("log")
        ax.set_xlabel("pre-training step")
        ax.set_ylabel("category excess (training batches)")
        ax.set_title(f"{m}: per-category excess over the floor")
        ax.legend(fontsize=7, ncol=2)
    ax = axes[2, 2]
    w = np.mean([r["dynamics"]["minimax"]["weights"] for r in runs], axis=0)
    ax.stackplot(runs[0]["dynamics"]["minimax"]["step"], w.T, labels=names)
    ax.set_xlabel("pre-training step")
    ax.set_ylabel("weight (window mean, mean over seeds)")
    ax.set_title("minimax weights over training")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path)


def dynamics_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method (and sweep temperature), means over seeds: the entropy of the step weights
    in the last window, how often the argmax of the step weights changes over the run, the
    mean total variation ``|w_t - w_{t-1}|_1 / 2`` between consecutive steps (oscillation),
    and the first window where the worst training excess is at most half its first value."""

    def one(dyns: list[dict[str, Any]]) -> dict[str, Any]:
        half = []
        for d in dyns:
            w = np.asarray(d["worst_excess"])
            below = np.nonzero(w <= w[0] / 2)[0]
            half.append(float(d["step"][below[0]]) if below.size else float("nan"))
        return {
            "final_weight_entropy": float(np.mean([d["weight_entropy"][-1] for d in dyns])),
            "argmax_switches": float(np.mean([d["argmax_switches"] for d in dyns])),
            "weight_tv_per_step": float(np.mean([d["weight_tv"] for d in dyns])),
            "steps_to_halve_worst": float(np.nanmean(half)) if np.isfinite(half).any() else None,
            "final_worst_train_excess": float(np.mean([d["worst_excess"][-1] for d in dyns])),
        }

    out: dict[str, Any] = {}
    for m, d in runs[0]["dynamics"].items():
        if "worst_excess" in d:
            out[m] = one([r["dynamics"][m] for r in runs])
    for tau in runs[0]["sweep"]:
        out[f"minimax(tau={float(tau):g})"] = one([r["sweep"][tau] for r in runs])
    return out


def _finished_seeds(folder: Path, seeds: list[int], cfg: Any) -> dict[int, dict[str, Any]]:
    """Per-seed results of an earlier run with the same configuration (``--resume``)."""
    import json

    kept = {}
    for s in seeds:
        path = folder / f"seed-{s}.json"
        if path.exists():
            data = json.loads(path.read_text())
            if data.get("config") == repr(cfg):
                kept[s] = data
    return kept


def run(args: argparse.Namespace) -> Report:
    from deep.apps.planted.experiment import run_seeds, summarize
    from deep.apps.planted.language import build_grammar, default_spec

    profile, cfg, seeds, workers = build_config(args)
    out: Path = args.out
    start = time.perf_counter()
    print(
        f"   profile {profile}: {len(seeds)} seeds, {cfg.pretrain_steps} steps, methods "
        f"{', '.join(cfg.methods)}; {workers} process(es)",
        flush=True,
    )
    done = []

    partial = out / f"{NAME}-seeds"

    def progress(r: dict[str, Any]) -> None:
        """Each finished seed is written at once (a long run that is stopped keeps them)."""
        done.append(r)
        partial.mkdir(parents=True, exist_ok=True)
        write_json(partial / f"seed-{r['seed']}.json", {**r, "config": repr(cfg)})
        print(
            f"   seed {r['seed']} done in {r['seconds']:.0f} s wall, {r['cpu_seconds']:.0f} s CPU "
            f"({len(done)}/{len(seeds)})",
            flush=True,
        )

    kept = _finished_seeds(partial, seeds, cfg) if args.resume else {}
    if kept:
        print(f"   resuming: seeds {sorted(kept)} already done in {partial}", flush=True)
    todo = [s for s in seeds if s not in kept]
    fresh = run_seeds(todo, cfg, workers=workers, progress=progress) if todo else []
    by_seed = {**kept, **{r["seed"]: r for r in fresh}}
    runs = [by_seed[s] for s in seeds]
    grammar = build_grammar(default_spec())
    names = list(grammar.category_names)
    stats = summarize(runs, names)
    floors = np.mean([r["floors"] for r in runs], axis=0).tolist()
    payload: dict[str, Any] = {
        "experiment": NAME,
        "profile": profile,
        "seed": args.seed,
        "seeds": seeds,
        "categories": names,
        "floors": dict(zip(names, floors, strict=True)),
        "metric": {
            "upstream.worst_task_loss": "held-out worst category excess loss L_c - floor_c (nats)",
            "mixture": "held-out excess masked-token loss over the known floor (nats)",
            "classification": "held-out error rate",
        },
        **stats,
        "dynamics": dynamics_summary(runs),
        "weights_see": "excess losses L_c - floor_c (minimax, hardmax, group_dro); raw losses "
        "(minimax_raw)",
        "config": {
            "pretrain": {k: v for k, v in vars(cfg).items() if k != "finetune"},
            "finetune": vars(cfg.finetune),
        },
        "tasks": runs[0]["tasks"],
        "classification_bayes_error": {
            t: float(
                np.mean([row["floor"] for r in runs for row in r["downstream"] if row["task"] == t])
            )
            for t in sorted(
                {row["task"] for row in runs[0]["downstream"] if row["kind"] == "classification"}
            )
        },
        "per_seed": [
            {k: r[k] for k in ("seed", "upstream", "downstream", "seconds", "cpu_seconds")}
            for r in runs
        ],
        "cpu_seconds": float(sum(r["cpu_seconds"] for r in runs)),
        "seconds": time.perf_counter() - start,
        "resumed_seeds": sorted(kept),
    }
    payload["verdict"] = verdict(payload)
    json_path = write_json(out / f"{NAME}.json", payload)
    png = figure(payload, runs, out / f"{NAME}.png")
    up = payload["upstream_paired"]["worst_diff"]
    cmd = f"python -m benchmarks run {NAME}{' --quick' if profile == 'quick' else ''} --seed {args.seed}"
    md = (
        f"![planted tasks]({png.name})\n\n`{cmd}` ({len(seeds)} seeds, {cfg.pretrain_steps} "
        f"pre-training steps, minimax = softmax(tau={cfg.temperature:g}) on excess losses; "
        f"{payload['seconds']:.0f} s).\n\n"
        "Held-out excess loss over the entropy floor per category (mean over seeds):\n\n"
        + upstream_table(payload, names, floors)
        + f"\nWorst upstream excess, minimax - average (paired): {_fmt_ci(up)}.\n\n"
        "Worst downstream task, paired minimax - average (lower is better; mixture: excess "
        "loss in nats, classification: error rate):\n\n"
        + paired_table(payload)
        + "\n"
        + payload["verdict"]
        + "\n"
    )
    print(md, flush=True)
    headline = {
        "upstream_worst_diff": up["mean"],
        **{
            f"{m}:upstream_worst": u["worst_task_loss"]["mean"]
            for m, u in payload["upstream"].items()
        },
    }
    return Report(json_path, (png,), md, headline)


EXPERIMENT = Experiment(
    name=NAME,
    summary="planted-task language: minimax vs average BERT pre-training, worst downstream task",
    run=run,
    add_arguments=add_arguments,
)
