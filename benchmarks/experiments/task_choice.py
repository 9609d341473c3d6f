"""Which upstream tasks? (the paper's open question 2): task split vs minimax advantage.

``python -m benchmarks run task-choice [--quick] [--out DIR]`` writes ``task-choice.json``
and ``task-choice.png``. Two families of upstream-task choices:

- POS-Mask BERT with the UPOS tags grouped at three granularities
  (:data:`deep.apps.pos_bert.tasks.GRANULARITIES`: ``coarse`` 3 tasks, ``default`` 9, ``upos``
  17); downstream: the four built-in suite tasks (probe score: MCC for acceptability,
  accuracy for the others);
- the multi-modal MAE with the modality tasks ``rgb+depth``, ``rgb+semantic`` and all
  three (the left-out modality is never input nor target: :mod:`deep.apps.mae.tasks`);
  downstream from RGB only: classification, segmentation, depth, scored as the relative
  error reduction ``1 - e / ebar_scratch`` (as the ``mae`` experiment does; ``e`` = 1 - acc,
  1 - patch accuracy, RMSE).

For each choice and seed ``k`` (3 seeds), minimax (``softmax(0.5)``) and average-risk
(``uniform``) pre-training start from the same initial weights and see the same batches;
downstream scores come from linear probes of the frozen encoder (the CPU-scale protocol;
the ``pos-bert`` and ``mae`` experiments fine-tune). The worst downstream task is taken per
seed; the paired difference minimax - average of that worst score is reported with a 95%
t-interval over seeds.

The diagnostic's R^2 for a choice: the probe loss of each downstream task fitted against
that choice's upstream losses (:func:`deep.diagnostics.fit_convex_combination`, intercept
and scale) over one shared set of parameter points per family: the 18 pre-trained models of
the family, the 3 initial (from-scratch) models and 4 perturbations (relative noise 0.02 and
0.1 on the seed-0 minimax and average models of the default or all-modality choice): 25
points, the same for every choice of the family. A coarser POS grouping's
losses are token-weighted means of the tags' losses (``PosTasks.combine``) and a modality
subset's are a subset of the columns, so in-sample R^2 can only grow with the finer
choice; the held-out ``r2_cv`` (leave one seed's models out) is the comparison that does
not reward extra columns.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..common import Experiment, Report, write_json

NAME = "task-choice"
METHODS = ("minimax", "average")
MAE_SUBSETS: dict[str, tuple[str, ...]] = {
    "rgb+depth": ("rgb", "depth"),
    "rgb+semantic": ("rgb", "semantic"),
    "rgb+depth+semantic": ("rgb", "depth", "semantic"),
}

POS_PROFILES: dict[str, dict[str, Any]] = {
    "quick": dict(words_per_document=4000, vocab_size=3000, max_len=64, steps=80,
                  batch_size=32, lr=1e-3, max_train=200, max_dev=200, seeds=3),
    "full": dict(words_per_document=None, vocab_size=5000, max_len=64, steps=600,
                 batch_size=32, lr=1e-3, max_train=1000, max_dev=400, seeds=5),
}  # fmt: skip
MAE_PROFILES: dict[str, dict[str, Any]] = {
    "quick": dict(image=32, patch_size=8, dim=48, depth=2, heads=4, decoder_dim=48,
                  num_pretrain=768, num_train=256, num_test=256, steps=100, batch_size=32,
                  seeds=3),
    "full": dict(image=32, patch_size=4, dim=64, depth=3, heads=4, decoder_dim=32,
                 num_pretrain=2048, num_train=1024, num_test=512, steps=600, batch_size=64,
                 seeds=5),
}  # fmt: skip


def paired_interval(diff: Any, confidence: float = 0.95) -> dict[str, float]:
    """Mean of paired differences and its two-sided t-interval (NaN half-width for n < 2)."""
    from scipy import stats

    d = np.asarray(diff, dtype=np.float64)
    n = d.size
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": n}
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def _fits(
    upstream: np.ndarray, downstream: dict[str, np.ndarray], groups: list[str]
) -> dict[str, Any]:
    from deep.diagnostics import fit_convex_combination

    return {
        name: fit_convex_combination(upstream, y, intercept=True, scale=True, groups=groups)
        for name, y in downstream.items()
    }


def _choice_summary(
    scores: dict[str, dict[str, list[float]]], fits: dict[str, Any], upstream_names: list[str]
) -> dict[str, Any]:
    """Worst task per seed for each method, the paired difference, and the fits."""
    worst = {m: np.min(np.array([scores[m][t] for t in scores[m]]), axis=0) for m in METHODS}
    tasks = list(scores["average"])
    worst_task = tasks[int(np.argmin([np.mean(scores["average"][t]) for t in tasks]))]
    return {
        "upstream_tasks": upstream_names,
        "scores": scores,
        "worst_per_seed": {m: worst[m].tolist() for m in METHODS},
        "advantage": paired_interval(worst["minimax"] - worst["average"]),
        "worst_task_of_average": worst_task,
        "fits": {k: f.to_json() for k, f in fits.items()},
        "r2_mean": float(np.mean([f.r2 for f in fits.values()])),
        "r2_cv_mean": float(np.mean([f.r2_cv for f in fits.values()])),
        "r2_cv_worst_task": float(fits[worst_task].r2_cv),
    }


# ----------------------------------------------------------------------------- POS-BERT


def pos_family(profile: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """Every granularity x method x seed: probe scores, and the diagnostic's fits."""
    import torch

    from deep.apps.pos_bert.suite import build_suite
    from deep.apps.pos_bert.tasks import GRANULARITIES

    from .task_fit import (
        encode_text_task,
        perturbation_points,
        pos_data,
        pos_pretrain,
        pos_template,
        pos_upstream_by_tag,
        text_probe,
    )

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    data = pos_data(profile)
    tok = data.hf_tokenizer()
    probes = [
        encode_text_task(t, tok, profile["max_len"])
        for t in build_suite(
            data.corpus, max_train=profile["max_train"], max_dev=profile["max_dev"]
        )
    ]
    seeds = list(range(profile["seeds"]))
    tag_rows: list[tuple[np.ndarray, np.ndarray]] = []
    losses: dict[str, list[float]] = {p.name: [] for p in probes}
    groups: list[str] = []

    def evaluate(model: Any, group: str) -> dict[str, float]:
        tag_rows.append(pos_upstream_by_tag(model, data))
        out = {}
        for p in probes:
            loss, score = text_probe(model.mlm.bert, p)
            losses[p.name].append(loss)
            out[p.name] = score
        groups.append(group)
        return out

    scores: dict[str, dict[str, dict[str, list[float]]]] = {
        g: {m: {p.name: [] for p in probes} for m in METHODS} for g in GRANULARITIES
    }
    for seed in seeds:
        evaluate(pos_template(data, "tiny", seed), f"seed-{seed}")
        for g, tasks in GRANULARITIES.items():
            for method in METHODS:
                model = pos_pretrain(data, tasks, method, profile, seed=seed)
                for name, score in evaluate(model, f"seed-{seed}").items():
                    scores[g][method][name].append(score)
                if seed == seeds[0] and g == "default":
                    for k, m in enumerate(perturbation_points(model, 1, seed=10 + len(groups))[0]):
                        if k % 2 == 0:  # sigma 0.02 and 0.1 of one direction per method
                            evaluate(m, f"perturbation-{method}")
    tag_losses = np.array([r[0] for r in tag_rows])
    counts = tag_rows[0][1]
    downstream = {k: np.array(v) for k, v in losses.items()}
    choices = {}
    for g, tasks in GRANULARITIES.items():
        upstream = np.array([tasks.combine(row, counts) for row in tag_losses])
        keep = np.all(np.isfinite(upstream), axis=0)  # a task with no held-out token
        names = [n for n, k in zip(tasks.names, keep, strict=True) if k]
        fits = _fits(upstream[:, keep], downstream, groups)
        choices[g] = _choice_summary(scores[g], fits, names)
        choices[g]["num_tasks"] = tasks.num_tasks
        choices[g]["dropped_tasks"] = [n for n, k in zip(tasks.names, keep, strict=True) if not k]
    return {
        "choices": choices,
        "points": len(groups),
        "point_groups": groups,
        "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------- MAE


def mae_family(profile: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """Every modality subset x method x seed: normalised probe scores and the fits."""
    import torch

    from deep.apps.mae.pipeline import heldout_losses

    from .task_fit import mae_pretrain, mae_setup, mae_template, perturbation_points, scene_probes

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    setup = mae_setup(profile)
    seeds = list(range(profile["seeds"]))
    upstream_rows: list[list[float]] = []
    losses: dict[str, list[float]] = {"classification": [], "segmentation": [], "depth": []}
    groups: list[str] = []

    def evaluate(model: Any, group: str) -> dict[str, float]:
        upstream_rows.append(heldout_losses(model, setup["heldout"]))
        res = scene_probes(model, setup["probe"])
        for k, (loss, _) in res.items():
            losses[k].append(loss)
        groups.append(group)
        return {k: e for k, (_, e) in res.items()}

    errors: dict[str, dict[str, dict[str, list[float]]]] = {
        s: {m: {k: [] for k in losses} for m in METHODS} for s in MAE_SUBSETS
    }
    scratch: dict[str, list[float]] = {k: [] for k in losses}
    for seed in seeds:
        for k, e in evaluate(mae_template(setup, seed), f"seed-{seed}").items():
            scratch[k].append(e)
        for s, mods in MAE_SUBSETS.items():
            for method in METHODS:
                model = mae_pretrain(setup, method, profile, seed=seed, modalities=mods)
                for k, e in evaluate(model, f"seed-{seed}").items():
                    errors[s][method][k].append(e)
                if seed == seeds[0] and s == "rgb+depth+semantic":
                    for j, m in enumerate(perturbation_points(model, 1, seed=20 + len(groups))[0]):
                        if j % 2 == 0:
                            evaluate(m, f"perturbation-{method}")
    ebar = {k: float(np.mean(v)) for k, v in scratch.items()}
    upstream_all = np.array(upstream_rows)
    downstream = {k: np.array(v) for k, v in losses.items()}
    from deep.apps.mae.model import MODALITIES

    choices = {}
    for s, mods in MAE_SUBSETS.items():
        cols = [MODALITIES.index(m) for m in mods]
        fits = _fits(upstream_all[:, cols], downstream, groups)
        scores = {
            m: {k: [1.0 - e / ebar[k] for e in errors[s][m][k]] for k in losses} for m in METHODS
        }
        choices[s] = _choice_summary(scores, fits, list(mods))
        choices[s]["num_tasks"] = len(mods)
        choices[s]["errors"] = errors[s]
    return {
        "choices": choices,
        "scratch_error": ebar,
        "points": len(groups),
        "point_groups": groups,
        "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------- report


def _table(family: dict[str, Any], scale: float = 100.0) -> str:
    lines = [
        "| choice | tasks | worst task, minimax | worst task, average | minimax - average "
        "(95% CI) | R² (mean over downstream) | R² held out (mean) | R² held out (worst task) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c in family["choices"].items():
        a = c["advantage"]
        mm = np.mean(c["worst_per_seed"]["minimax"]) * scale
        av = np.mean(c["worst_per_seed"]["average"]) * scale
        lines.append(
            f"| {name} | {len(c['upstream_tasks'])} | {mm:.1f} | {av:.1f} | "
            f"{a['mean'] * scale:+.1f} [{a['low'] * scale:+.1f}, {a['high'] * scale:+.1f}] | "
            f"{c['r2_mean']:.3f} | {c['r2_cv_mean']:.3f} | "
            f"{c['r2_cv_worst_task']:.3f} ({c['worst_task_of_average']}) |"
        )
    return "\n".join(lines) + "\n"


def _association(families: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Spearman correlation between held-out R^2 and the paired minimax advantage, within
    each family and over all choices (with so few choices, a description, not a test)."""
    from scipy import stats

    out: dict[str, Any] = {}
    xs, ys = [], []
    for fam, f in families.items():
        x = [c["r2_cv_mean"] for c in f["choices"].values()]
        y = [c["advantage"]["mean"] for c in f["choices"].values()]
        xs += x
        ys += y
        rho = stats.spearmanr(x, y).statistic if len(x) > 2 else math.nan
        out[fam] = {"r2_cv_mean": x, "advantage": y, "spearman": float(rho)}
    if len(xs) > 2:
        out["all"] = {"spearman": float(stats.spearmanr(xs, ys).statistic), "n": len(xs)}
    return out


def _figure(families: dict[str, dict[str, Any]], path: Path) -> Path:
    from deep.plotting import new_figure, save_figure

    fig = new_figure(figsize=(12, 4.4))
    axes = fig.subplots(1, 2)
    labels, means, lows, highs, colors = [], [], [], [], []
    for i, (fam, f) in enumerate(families.items()):
        for name, c in f["choices"].items():
            a = c["advantage"]
            labels.append(f"{fam}\n{name}")
            means.append(a["mean"])
            lows.append(a["mean"] - a["low"])
            highs.append(a["high"] - a["mean"])
            colors.append(f"C{i}")
    x = np.arange(len(labels))
    axes[0].bar(x, means, color=colors, yerr=[lows, highs], capsize=3)
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_xticks(x, labels, fontsize=7)
    axes[0].set_ylabel("worst-task score: minimax - average (95% CI)")
    axes[0].set_title("paired minimax advantage on the worst downstream task")
    for i, f in enumerate(families.values()):
        for name, c in f["choices"].items():
            axes[1].errorbar(
                c["r2_cv_mean"],
                c["advantage"]["mean"],
                yerr=[
                    [c["advantage"]["mean"] - c["advantage"]["low"]],
                    [c["advantage"]["high"] - c["advantage"]["mean"]],
                ],
                fmt="o",
                color=f"C{i}",
                capsize=3,
            )
            axes[1].annotate(name, (c["r2_cv_mean"], c["advantage"]["mean"]), fontsize=7)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xlabel("diagnostic: held-out R² (mean over downstream tasks)")
    axes[1].set_ylabel("minimax - average (worst task)")
    axes[1].set_title("does a better fit predict a bigger minimax advantage?")
    axes[1].grid(True, alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--families",
        default="pos-bert,mae",
        help="comma-separated subset of pos-bert, mae (default: both)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes (one per family; default min(2, CPUs))",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per choice (>= 3)")


FAMILIES = ("pos-bert", "mae")


def run(args: argparse.Namespace) -> Report:
    profile = "quick" if args.quick else "full"
    chosen = tuple(f.strip() for f in args.families.split(",") if f.strip())
    if not chosen or any(f not in FAMILIES for f in chosen):
        raise ValueError(f"--families must be a non-empty subset of {FAMILIES}, got {chosen}")
    if args.seeds is not None and args.seeds < 3:
        raise ValueError(f"--seeds must be >= 3 (paired intervals need them), got {args.seeds}")
    workers = args.workers if args.workers is not None else min(2, os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    jobs = {
        "pos-bert": (pos_family, dict(POS_PROFILES[profile])),
        "mae": (mae_family, dict(MAE_PROFILES[profile])),
    }
    if args.seeds is not None:
        for _, p in jobs.values():
            p["seeds"] = args.seeds
    t0 = time.perf_counter()
    families: dict[str, dict[str, Any]] = {}
    if workers > 1 and len(chosen) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(
            max_workers=min(workers, len(chosen)), mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            futures = {f: pool.submit(jobs[f][0], jobs[f][1]) for f in chosen}
            families = {f: fut.result() for f, fut in futures.items()}
    else:
        import torch

        before = torch.get_num_threads()
        try:
            families = {f: jobs[f][0](jobs[f][1]) for f in chosen}
        finally:
            torch.set_num_threads(before)
    seconds = time.perf_counter() - t0
    association = _association(families)
    out: Path = args.out
    payload = {
        "experiment": NAME,
        "profile": profile,
        "families": families,
        "association": association,
        "seconds": seconds,
        "workers": workers,
    }
    json_path = write_json(out / f"{NAME}.json", payload)
    png = _figure(families, out / f"{NAME}.png")
    sections = []
    for fam, f in families.items():
        table = _table(f)
        print(f"{fam} ({f['points']} diagnostic points, {f['seconds']:.0f} s):\n{table}")
        sections.append(f"**{fam}** ({f['points']} diagnostic points):\n\n{table}")
    verdict = ", ".join(
        f"{fam}: Spearman {a['spearman']:+.2f}" for fam, a in association.items() if fam != "all"
    )
    if "all" in association:
        verdict += f"; all {association['all']['n']} choices: {association['all']['spearman']:+.2f}"
    md = (
        f"![task choice]({png.name})\n\nUpstream-task choice vs minimax advantage on the worst "
        "downstream task (scores x100, paired over seeds) and the diagnostic's R². "
        f"`python -m benchmarks run {NAME}{' --quick' if args.quick else ''}`, "
        f"{seconds:.0f} s.\n\n"
        + "\n".join(sections)
        + f"\nHeld-out R² vs advantage (rank correlation, as measured): {verdict}.\n"
    )
    print(md)
    headline = {
        f"{fam}:{name}:advantage": c["advantage"]["mean"]
        for fam, f in families.items()
        for name, c in f["choices"].items()
    }
    return Report(json_path, (png,), md, headline)


EXPERIMENT = Experiment(
    name=NAME,
    summary="which upstream tasks? POS granularity and MAE modality subsets: minimax "
    "advantage on the worst downstream task vs the convex-combination diagnostic",
    run=run,
    add_arguments=add_arguments,
)
