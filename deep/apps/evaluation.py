"""Evaluation: the downstream metrics and the worst-case report over seeds and methods.

**Metrics** (GLUE's official ones; numpy, scipy for ``spearman`` only; predictions and labels
as 1-D arrays, lists or CPU tensors):

- ``acc``: fraction of exact matches;
- ``f1``: binary F1 of class 1, ``2 TP / (2 TP + FP + FN)`` (0 when there is no positive);
- ``mcc``: Matthews correlation from the confusion matrix ``C`` (rows true, columns
  predicted), ``(c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t))`` with ``c = trace C``,
  ``s = sum C``, ``t``/``p`` the true/predicted class counts; 0 when a factor is 0
  (a constant prediction), as scikit-learn does;
- ``pearson``/``spearman``: correlation of predictions and targets (0 for a constant).

**The worst-case report** (:func:`summarize`): per-task scores over seeds for each
pre-training method. Modality-agnostic: it sees only numbers. The input is, for each pre-training method, each
downstream task's score for each seed (seed ``s`` of every task must come from the same
pre-trained model or the same run, so that a per-seed worst case makes sense)::

    scores = {"minimax": {"CoLA": [0.31, 0.29, 0.33], "SST-2": [0.86, 0.87, 0.85]},
              "average": {"CoLA": [0.24, 0.27, 0.22], "SST-2": [0.87, 0.86, 0.87]}}
    report = summarize(scores, metrics={"CoLA": "mcc", "SST-2": "acc"})

For method ``m`` with per-seed scores ``s_{t,k}`` (task ``t``, seed ``k``, ``K`` seeds):

- ``{metric}_task:{t}``: ``mean_k s_{t,k}`` (and its sample standard deviation, ``ddof=1``);
- ``{metric}_macro``: the mean over seeds of ``a_k = mean_t s_{t,k}``, the macro average over
  tasks (every task counts once, whatever its size);
- ``{metric}_wg``: the mean over seeds of ``w_k = min_t s_{t,k}`` (``max_t`` where lower is
  better), the worst task *of each run*, as WILDS reports worst-group accuracy. It is at most
  the smallest per-task mean, and the task with the smallest mean is ``worst_task``.

Keys follow WILDS (``acc_wg``) with ``task:`` in place of ``group:``. WILDS's ``acc_avg`` is
the accuracy pooled over all examples; the report sees only per-task scores, so it gives the
macro average under its own name (``_macro``) and no ``_avg`` key. When the
tasks use different metrics (GLUE: Matthews correlation for CoLA, accuracy for SST-2), each
task key carries its own metric and the aggregate keys use ``score`` (the GLUE convention
of averaging each task's own metric). Every metric must point the same way (all higher-is-
better or all lower-is-better); a worst case over mixed directions is not defined.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "METRICS",
    "MethodSummary",
    "WorstCaseReport",
    "accuracy",
    "binary_f1",
    "compute_metrics",
    "markdown_table",
    "matthews_corrcoef",
    "pearson",
    "plot_report",
    "spearman",
    "summarize",
]


# --------------------------------------------------------------------------- metrics


def _array(values: Any) -> np.ndarray:
    """``values`` as a numpy array (a torch tensor is detached and copied to the CPU)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _pair(preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = _array(preds), _array(labels)
    if p.shape != y.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(
            f"predictions and labels must be non-empty 1-D arrays of one shape, got "
            f"{p.shape} and {y.shape}"
        )
    return p, y


def accuracy(preds: Any, labels: Any) -> float:
    """Fraction of exact matches, ``mean(preds == labels)`` (float64)."""
    p, y = _pair(preds, labels)
    return float(np.mean(p == y))


def binary_f1(preds: Any, labels: Any) -> float:
    """F1 of the positive class 1: ``2 TP / (2 TP + FP + FN)``; 0 with no positive at all."""
    p, y = _pair(preds, labels)
    tp = float(np.sum((p == 1) & (y == 1)))
    fp = float(np.sum((p == 1) & (y != 1)))
    fn = float(np.sum((p != 1) & (y == 1)))
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom > 0 else 0.0


def matthews_corrcoef(preds: Any, labels: Any) -> float:
    """Matthews correlation (multi-class form of Gorodkin 2004); 0 for a constant prediction."""
    p, y = _pair(preds, labels)
    classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = classes.size
    yi, pi = inverse[: y.size], inverse[y.size :]
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (yi, pi), 1.0)
    t, pc = confusion.sum(axis=1), confusion.sum(axis=0)
    c, s = np.trace(confusion), confusion.sum()
    cov_yp = c * s - t @ pc
    cov_pp = s * s - pc @ pc
    cov_yy = s * s - t @ t
    if cov_pp == 0 or cov_yy == 0:
        return 0.0
    return float(cov_yp / math.sqrt(cov_pp * cov_yy))


def pearson(preds: Any, labels: Any) -> float:
    p, y = _pair(preds, labels)
    p, y = p.astype(float), y.astype(float)
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(np.corrcoef(p, y)[0, 1])


def spearman(preds: Any, labels: Any) -> float:
    from scipy.stats import rankdata

    p, y = _pair(preds, labels)
    return pearson(rankdata(p.astype(float)), rankdata(y.astype(float)))


METRICS: dict[str, Callable[[Any, Any], float]] = {
    "acc": accuracy,
    "f1": binary_f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(names: Sequence[str], preds: Any, labels: Any) -> dict[str, float]:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; allowed: {sorted(METRICS)}")
    return {n: METRICS[n](preds, labels) for n in names}


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class MethodSummary:
    """One method's statistics over seeds. ``per_seed`` maps every WILDS key to its values."""

    method: str
    mean: dict[str, float]
    std: dict[str, float]
    per_seed: dict[str, tuple[float, ...]]
    worst_task: str
    num_seeds: int


@dataclass(frozen=True)
class WorstCaseReport:
    """Per-method summaries over the same tasks.

    ``metrics[t]`` is task ``t``'s metric name, ``summary_metric`` the name used in the
    aggregate keys, ``higher_is_better`` the shared direction.
    """

    tasks: tuple[str, ...]
    metrics: dict[str, str]
    summary_metric: str
    higher_is_better: bool
    methods: dict[str, MethodSummary]

    def task_key(self, task: str) -> str:
        return f"{self.metrics[task]}_task:{task}"

    @property
    def macro_key(self) -> str:
        return f"{self.summary_metric}_macro"

    @property
    def wg_key(self) -> str:
        return f"{self.summary_metric}_wg"

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form: per method ``mean``/``std``/``per_seed`` dictionaries of WILDS keys."""
        return {
            "tasks": list(self.tasks),
            "metrics": dict(self.metrics),
            "summary_metric": self.summary_metric,
            "higher_is_better": self.higher_is_better,
            "methods": {
                name: {
                    "mean": s.mean,
                    "std": s.std,
                    "per_seed": {k: list(v) for k, v in s.per_seed.items()},
                    "worst_task": s.worst_task,
                    "num_seeds": s.num_seeds,
                }
                for name, s in self.methods.items()
            },
        }

    def best_method(self, key: str) -> str | None:
        """The method with the strictly best mean on ``key``; None on a tie (to 1e-9) for the best."""
        sign = 1.0 if self.higher_is_better else -1.0
        ranked = sorted(self.methods, key=lambda m: -sign * self.methods[m].mean[key])
        if len(ranked) > 1 and math.isclose(
            self.methods[ranked[0]].mean[key],
            self.methods[ranked[1]].mean[key],
            rel_tol=1e-9,
            abs_tol=1e-12,
        ):
            return None
        return ranked[0]


def _check_scores(
    scores: Mapping[str, Mapping[str, Sequence[float]]],
) -> tuple[tuple[str, ...], int]:
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty mapping method -> task -> per-seed scores")
    tasks: tuple[str, ...] | None = None
    num_seeds: int | None = None
    for method, per_task in scores.items():
        if not isinstance(per_task, Mapping) or not per_task:
            raise ValueError(f"scores[{method!r}] must be a non-empty mapping task -> scores")
        names = tuple(per_task)
        if tasks is None:
            tasks = names
        elif set(names) != set(tasks):
            raise ValueError(
                f"scores[{method!r}] has tasks {sorted(names)}, expected the same tasks as "
                f"the first method: {sorted(tasks)}"
            )
        for task, values in per_task.items():
            arr = np.asarray(values, dtype=float)
            if arr.ndim != 1 or arr.size == 0:
                raise ValueError(
                    f"scores[{method!r}][{task!r}] must be a non-empty 1-D sequence of "
                    f"per-seed scores, got shape {arr.shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"scores[{method!r}][{task!r}] has a non-finite value: {values}")
            if num_seeds is None:
                num_seeds = arr.size
            elif arr.size != num_seeds:
                raise ValueError(
                    f"scores[{method!r}][{task!r}] has {arr.size} seeds, the others "
                    f"{num_seeds}: every task of every method needs the same seeds"
                )
    assert tasks is not None and num_seeds is not None
    return tasks, num_seeds


def _std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1); NaN for a single seed."""
    return float(np.std(values, ddof=1)) if values.size > 1 else math.nan


def summarize(
    scores: Mapping[str, Mapping[str, Sequence[float]]],
    metrics: Mapping[str, str] | str,
    *,
    lower_is_better: Collection[str] = (),
    summary_metric: str | None = None,
) -> WorstCaseReport:
    """Mean/std over seeds of every task's score, the average and the worst task, per method.

    ``metrics``: one metric name for every task, or a mapping task -> metric name.
    ``lower_is_better``: metric names where smaller is better (e.g. ``"rmse"``); all the
    tasks' metrics must point the same way. ``summary_metric``: the name in the aggregate
    keys; default the shared metric name, or ``"score"`` when the tasks' metrics differ.
    """
    tasks, num_seeds = _check_scores(scores)
    if isinstance(metrics, str):
        metric_of = dict.fromkeys(tasks, metrics)
    elif isinstance(metrics, Mapping):
        missing = [t for t in tasks if t not in metrics]
        if missing:
            raise ValueError(f"metrics has no metric name for tasks {missing}")
        metric_of = {t: str(metrics[t]) for t in tasks}
    else:
        raise TypeError(f"metrics must be a str or a mapping task -> str, got {type(metrics)}")
    for t, name in metric_of.items():
        if not name or ":" in name or name != name.strip():
            raise ValueError(
                f"metric name for task {t!r} must be non-empty, without ':' or surrounding "
                f"spaces, got {name!r}"
            )
    directions = {m not in set(lower_is_better) for m in metric_of.values()}
    if len(directions) != 1:
        raise ValueError(
            "the tasks' metrics point different ways (some in lower_is_better, some not): "
            "a worst case over them is not defined; negate or transform one kind first"
        )
    higher = directions.pop()
    distinct = sorted(set(metric_of.values()))
    if summary_metric is None:
        summary_metric = distinct[0] if len(distinct) == 1 else "score"
    worst_fn = np.min if higher else np.max

    summaries: dict[str, MethodSummary] = {}
    for method, per_task in scores.items():
        table = np.stack([np.asarray(per_task[t], dtype=float) for t in tasks])  # (T, K)
        per_seed: dict[str, np.ndarray] = {
            f"{metric_of[t]}_task:{t}": table[i] for i, t in enumerate(tasks)
        }
        per_seed[f"{summary_metric}_macro"] = table.mean(axis=0)
        per_seed[f"{summary_metric}_wg"] = worst_fn(table, axis=0)
        task_means = table.mean(axis=1)
        worst_index = int(np.argmin(task_means) if higher else np.argmax(task_means))
        summaries[str(method)] = MethodSummary(
            method=str(method),
            mean={k: float(v.mean()) for k, v in per_seed.items()},
            std={k: _std(v) for k, v in per_seed.items()},
            per_seed={k: tuple(float(x) for x in v) for k, v in per_seed.items()},
            worst_task=tasks[worst_index],
            num_seeds=num_seeds,
        )
    return WorstCaseReport(tasks, metric_of, summary_metric, higher, summaries)


def _cell(mean: float, std: float, scale: float, digits: int, bold: bool) -> str:
    text = f"{mean * scale:.{digits}f}"
    if math.isfinite(std):
        text += f" ± {std * scale:.{digits}f}"
    return f"**{text}**" if bold else text


def markdown_table(report: WorstCaseReport, *, scale: float = 100.0, digits: int = 1) -> str:
    """Methods as rows; every task, the macro average and the worst task (``wg``) as columns.

    Cells are ``mean ± std`` over seeds times ``scale`` (100: percentages); the strictly
    best method of each column is bold (no bold on a tie); the last column names each method's task with the
    lowest (highest, when lower is better) mean.
    """
    keys = [report.task_key(t) for t in report.tasks] + [report.macro_key, report.wg_key]
    heads = [f"{t} ({report.metrics[t]})" for t in report.tasks]
    heads += [f"macro average ({report.summary_metric})", f"worst task ({report.summary_metric})"]
    best = {k: report.best_method(k) for k in keys}
    lines = [
        "| method | " + " | ".join(heads) + " | lowest-mean task |",
        "|---|" + "---|" * (len(heads) + 1),
    ]
    for name, s in report.methods.items():
        cells = [_cell(s.mean[k], s.std[k], scale, digits, best[k] == name) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s.worst_task} |")
    seeds = {s.num_seeds for s in report.methods.values()}.pop()
    note = (
        ("\nmean ± std over " + f"{seeds} seeds" if seeds > 1 else "\none seed (no std)")
        + (f", times {scale:g}" if scale != 1 else "")
        + "; worst task = the per-seed worst task's score averaged over seeds "
        + "(WILDS `_wg`); bold = best method in the column (none on a tie).\n"
    )
    return "\n".join(lines) + "\n" + note


def plot_report(
    report: WorstCaseReport,
    path: Path,
    *,
    title: str = "downstream scores per pre-training method",
    scale: float = 100.0,
) -> Path:
    """Grouped bar plot: one group per task plus ``macro average`` and ``worst task``, one bar per
    method, error bars one standard deviation over seeds; written atomically to ``path``."""
    from deep.plotting import new_figure, save_figure

    keys = [report.task_key(t) for t in report.tasks] + [report.macro_key, report.wg_key]
    labels = [f"{t}\n({report.metrics[t]})" for t in report.tasks]
    labels += [
        f"macro average\n({report.summary_metric})",
        f"worst task\n({report.summary_metric})",
    ]
    methods = list(report.methods)
    width = 0.8 / len(methods)
    x = np.arange(len(keys), dtype=float)
    fig = new_figure(figsize=(max(6.0, 1.2 * len(keys) + 2.0), 4.5))
    ax = fig.subplots()
    for j, name in enumerate(methods):
        s = report.methods[name]
        means = np.array([s.mean[k] for k in keys]) * scale
        stds = np.nan_to_num(np.array([s.std[k] for k in keys]) * scale)
        ax.bar(
            x + (j - (len(methods) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=3,
            label=name,
        )
    ax.axvline(len(report.tasks) - 0.5, color="0.5", lw=0.8, ls="--")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=9)
    unit = " x 100" if scale == 100 else (f" x {scale:g}" if scale != 1 else "")
    arrow = "higher is better" if report.higher_is_better else "lower is better"
    ax.set_ylabel(f"score{unit} ({arrow})")
    ax.set_xlabel("downstream task (metric)")
    ax.set_title(title)
    ax.axhline(0.0, color="black", lw=0.6)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(title="pre-training", fontsize=9)
    return save_figure(fig, path)
