"""The POS-Mask BERT experiment: pre-train with each method and seed, fine-tune every
downstream task from every checkpoint, summarise the worst case.

Seed ``k`` pairs everything: the pre-training of every method starts from the same
initial weights and sees the same masked batches, and every downstream task is fine-tuned
with seed ``k`` from that method's seed-``k`` checkpoint, so the per-seed worst task of
:mod:`deep.apps.evaluation` compares like with like. Used by ``python -m benchmarks run pos-bert``
and by ``gpu/pos_bert_large.py``.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..evaluation import WorstCaseReport, summarize
from ..finetune import FinetuneConfig
from ..text import TextTask, finetune, read_glue_task
from .pipeline import (
    METHODS,
    DataConfig,
    PosBertData,
    PretrainConfig,
    prepare_data,
    pretrain_pos_bert,
)
from .suite import SUITE_TASKS, build_suite

__all__ = [
    "ExperimentConfig",
    "ExperimentResult",
    "downstream_tasks",
    "pretraining_figure",
    "pretraining_markdown",
    "run_experiment",
]


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one run needs. ``checkpoint_dir``: keep the pre-trained checkpoints there
    (default: a temporary folder, removed at the end). ``workers``: processes for the
    pre-training and fine-tuning runs; ``threads``: torch threads per process (None: leave).
    ``finetune`` defaults to a mean-pooled head: masked-LM pre-training never trains
    ``[CLS]`` (see :mod:`deep.apps.text`)."""

    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(pooling="mean"))
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    suite_tasks: tuple[str, ...] = SUITE_TASKS
    max_train: int = 2000
    max_dev: int = 500
    glue_dir: str | None = None
    glue_tasks: tuple[str, ...] = ()
    glue_max_train: int | None = None
    glue_max_dev: int | None = None
    checkpoint_dir: str | None = None
    workers: int = 1
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {self.workers!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {self.methods}")
        if self.glue_tasks and not self.glue_dir:
            raise ValueError("glue_tasks needs glue_dir (a folder in the GLUE layout)")
        if not self.suite_tasks and not self.glue_tasks:
            raise ValueError("no downstream task: give suite_tasks or glue_tasks")


class ExperimentResult(NamedTuple):
    """``payload``: everything measured, JSON-able; ``report``: the worst-case summary."""

    payload: dict[str, Any]
    report: WorstCaseReport


def downstream_tasks(config: ExperimentConfig, data: PosBertData) -> tuple[TextTask, ...]:
    """The built-in suite from the corpus, then the GLUE tasks read from ``glue_dir``."""
    tasks: list[TextTask] = []
    if config.suite_tasks:
        tasks += build_suite(
            data.corpus,
            tasks=config.suite_tasks,
            max_train=config.max_train,
            max_dev=config.max_dev,
        )
    for name in config.glue_tasks:
        assert config.glue_dir is not None
        tasks.append(
            read_glue_task(
                config.glue_dir,
                name,
                max_train=config.glue_max_train,
                max_dev=config.glue_max_dev,
            )
        )
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"two downstream tasks have the same name: {names}")
    return tuple(tasks)


def _jsonable_config(config: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


# ------------------------------------------------------------------ jobs (in-process or pool)

_STATE: dict[str, Any] = {}


def _init_worker(data: PosBertData, tasks: tuple[TextTask, ...], threads: int | None) -> None:
    """Per process: the data, the downstream tasks and the torch thread count."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    _STATE.clear()
    _STATE.update(data=data, tasks=tasks, tokenizers={})


def _pretrain_job(
    method: str, seed: int, pretrain: PretrainConfig, out_dir: str, progress: bool
) -> Any:
    return pretrain_pos_bert(
        _STATE["data"], method, pretrain, seed=seed, out_dir=Path(out_dir), progress=progress
    )


def _finetune_job(checkpoint: str, task_index: int, config: FinetuneConfig, seed: int) -> Any:
    from transformers import PreTrainedTokenizerFast

    cache = _STATE["tokenizers"]
    if checkpoint not in cache:  # the tokenizer saved with the checkpoint
        cache.clear()
        cache[checkpoint] = PreTrainedTokenizerFast.from_pretrained(checkpoint)
    task = _STATE["tasks"][task_index]
    return finetune(checkpoint, cache[checkpoint], task, config=config, seed=seed)


class _Runner:
    """Runs jobs in this process (``workers == 1``) or in a spawn-started process pool."""

    def __init__(self, workers: int, init_args: tuple[Any, ...]) -> None:
        self.pool = None
        self.saved_threads: int | None = None
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=init_args,
            )
        else:
            import torch

            self.saved_threads = torch.get_num_threads()
            _init_worker(*init_args)

    def map(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> Any:
        """Results in job order, yielded as soon as each (and every earlier one) is done."""
        if self.pool is None:
            for job in jobs:
                yield fn(*job)
        else:
            futures = [self.pool.submit(fn, *job) for job in jobs]
            for f in futures:
                yield f.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        else:
            import torch

            if self.saved_threads is not None:
                torch.set_num_threads(self.saved_threads)
        _STATE.clear()


def run_experiment(
    config: ExperimentConfig,
    *,
    data: PosBertData | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Data (cached), pre-training (methods x seeds), fine-tuning (tasks x methods x seeds).

    With ``config.workers > 1`` the pre-training runs, then the fine-tuning runs, are spread
    over that many processes (each with ``config.threads`` torch threads); the results do
    not depend on it (every run is seeded by itself).
    """
    start = time.perf_counter()
    timing: dict[str, float] = {}
    if data is None:
        data = prepare_data(config.data, progress=progress)
    timing["data_s"] = time.perf_counter() - start
    tasks = downstream_tasks(config, data)
    pos_names = list(config.pretrain.tasks.names)
    log(
        f"   corpus: {len(data.corpus.documents)} documents, {len(data.corpus.sentences)} "
        f"sentences, {data.corpus.num_words} words; {data.train.input_ids.shape[0]} "
        f"pre-training rows of {data.train.input_ids.shape[1]} tokens, vocab {data.vocab_size}"
    )
    own_dir = config.checkpoint_dir is None
    ckpt_root = (
        Path(tempfile.mkdtemp(prefix="pos-bert-")) if own_dir else Path(str(config.checkpoint_dir))
    )
    pretraining: dict[str, dict[str, list[Any]]] = {
        m: {
            "seconds": [],
            "heldout_pos_losses": [],
            "mean_weights": [],
            "curve_step": [],
            "curve_pos_losses": [],
        }
        for m in config.methods
    }
    scores: dict[str, dict[str, list[float]]] = {
        m: {t.name: [] for t in tasks} for m in config.methods
    }
    details: dict[str, dict[str, list[dict[str, Any]]]] = {
        m: {t.name: [] for t in tasks} for m in config.methods
    }
    runner = _Runner(config.workers, (data, tasks, config.threads))
    try:
        t0 = time.perf_counter()
        runs = [(m, seed) for seed in config.seeds for m in config.methods]
        jobs = [(m, seed, config.pretrain, str(ckpt_root), progress and config.workers == 1)
                for m, seed in runs]  # fmt: skip
        checkpoints: dict[tuple[str, int], str] = {}
        for (method, seed), outcome in zip(runs, runner.map(_pretrain_job, jobs), strict=True):
            rec = pretraining[method]
            rec["seconds"].append(outcome.seconds)
            rec["heldout_pos_losses"].append(outcome.heldout_losses)
            rec["mean_weights"].append(outcome.mean_weights)
            rec["curve_step"].append(outcome.pos_history["call"])
            rec["curve_pos_losses"].append(outcome.pos_history["task_losses"])
            checkpoints[(method, seed)] = str(outcome.checkpoint)
            held = ", ".join(
                f"{n} {v:.2f}" for n, v in zip(pos_names, outcome.heldout_losses, strict=True)
            )
            log(
                f"   seed {seed} {method:<8} pre-trained in {outcome.seconds:5.1f} s; "
                f"held-out POS losses: {held}"
            )
        timing["pretrain_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ft_runs = [(m, seed, i) for m, seed in runs for i in range(len(tasks))]
        ft_jobs = [(checkpoints[(m, seed)], i, config.finetune, seed) for m, seed, i in ft_runs]
        for (method, seed, i), res in zip(ft_runs, runner.map(_finetune_job, ft_jobs), strict=True):
            scores[method][tasks[i].name].append(res.score)
            details[method][tasks[i].name].append(
                {"metrics": res.metrics, "steps": res.steps, "seconds": res.seconds}
            )
            if i == len(tasks) - 1:
                line = ", ".join(f"{t.name} {scores[method][t.name][-1]:.3f}" for t in tasks)
                log(f"   seed {seed} {method:<8} fine-tuned: {line}")
        timing["finetune_s"] = time.perf_counter() - t0
    finally:
        runner.close()
        if own_dir:
            shutil.rmtree(ckpt_root, ignore_errors=True)
    timing["total_s"] = time.perf_counter() - start
    report = summarize(scores, {t.name: t.metric for t in tasks})
    payload = {
        "config": _jsonable_config(config),
        "data": {
            "documents": list(data.corpus.documents),
            "sentences": len(data.corpus.sentences),
            "words": data.corpus.num_words,
            "tagger": data.corpus.tagger,
            "pretraining_rows": int(data.train.input_ids.shape[0]),
            "pretraining_tokens": data.train.num_tokens,
            "heldout_tokens": data.heldout.num_tokens,
            "seq_len": int(data.train.input_ids.shape[1]),
            "vocab_size": data.vocab_size,
        },
        "pos_tasks": pos_names,
        "downstream_tasks": [
            {
                "name": t.name,
                "metric": t.metric,
                "num_labels": t.num_labels,
                "train": len(t.train),
                "dev": len(t.dev),
            }
            for t in tasks
        ],
        "pretraining": pretraining,
        "pretraining_summary": pretraining_summary(pretraining, pos_names),
        "downstream": {"scores": scores, "details": details},
        "report": report.to_json(),
        "timing": timing,
    }
    return ExperimentResult(payload, report)


def _sample_std(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if x.size > 1 else float("nan")


def pretraining_summary(
    pretraining: dict[str, dict[str, list[Any]]], pos_names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per method: held-out per-POS losses (mean over seeds), the worst POS loss and the
    gap ``max_i L_i - min_i L_i`` (each computed per seed, then mean and std)."""
    out = {}
    for method, rec in pretraining.items():
        held = np.asarray(rec["heldout_pos_losses"], dtype=float)  # (seeds, M)
        worst = np.nanmax(held, axis=1)
        gap = worst - np.nanmin(held, axis=1)
        out[method] = {
            "heldout_pos_losses": dict(zip(pos_names, np.nanmean(held, axis=0), strict=True)),
            "worst_pos": pos_names[int(np.nanargmax(np.nanmean(held, axis=0)))],
            "worst_pos_loss_mean": float(worst.mean()),
            "worst_pos_loss_std": _sample_std(worst),
            "gap_mean": float(gap.mean()),
            "gap_std": _sample_std(gap),
            "mean_over_pos_mean": float(np.nanmean(held, axis=1).mean()),
        }
    return out


def pretraining_markdown(payload: dict[str, Any]) -> str:
    """Held-out per-POS MLM loss table (nats, mean over seeds) with worst and gap columns."""
    names = payload["pos_tasks"]
    summary = payload["pretraining_summary"]
    head = "| method | " + " | ".join(names) + " | mean | worst POS | gap (max - min) |"
    lines = [head, "|---|" + "---|" * (len(names) + 3)]
    for method, s in summary.items():
        cells = [f"{s['heldout_pos_losses'][n]:.2f}" for n in names]
        lines.append(
            f"| {method} | "
            + " | ".join(cells)
            + f" | {s['mean_over_pos_mean']:.2f} | {s['worst_pos_loss_mean']:.2f} ({s['worst_pos']})"
            + f" | {s['gap_mean']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _smooth(y: np.ndarray, width: int) -> np.ndarray:
    """Trailing moving average over ``width`` windows (NaN-aware), per column."""
    out = np.empty_like(y)
    for i in range(y.shape[0]):
        out[i] = np.nanmean(y[max(0, i - width + 1) : i + 1], axis=0)
    return out


def pretraining_figure(payload: dict[str, Any], path: Path) -> Path:
    """One panel per method: per-POS training loss vs step (mean over seeds, smoothed);
    last panel: worst POS loss and gap between POS tasks vs step for every method."""
    import warnings

    import matplotlib

    from deep.plotting import new_figure, save_figure

    names = payload["pos_tasks"]
    methods = list(payload["pretraining"])
    if any(len(payload["pretraining"][m]["curve_step"][0]) == 0 for m in methods):
        raise ValueError("no per-POS loss was logged (fewer steps than log_every?)")
    fig = new_figure(figsize=(4.2 * (len(methods) + 1), 4.2))
    axes = fig.subplots(1, len(methods) + 1)
    colors = matplotlib.colormaps["tab10"]
    styles = {"minimax": "-", "average": "--", "mlm": ":"}
    smoothed = {}  # method -> (steps, per-POS curves: mean over seeds, smoothed)
    for method in methods:
        rec = payload["pretraining"][method]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            curves = _smooth(
                np.nanmean(np.asarray(rec["curve_pos_losses"], dtype=float), axis=0), 5
            )
        smoothed[method] = (np.asarray(rec["curve_step"][0]), curves)
    ymin, ymax = np.inf, 0.0
    for ax, method in zip(axes, methods, strict=False):
        steps, curves = smoothed[method]
        for j, name in enumerate(names):
            ax.plot(steps, curves[:, j], color=colors(j), lw=1.5, label=name)
        ymax = max(ymax, float(np.nanmax(curves)))
        ymin = min(ymin, float(np.nanmin(curves)))
        ax.set_title(f"{method}: per-POS MLM loss")
        ax.set_xlabel("pre-training step")
        ax.set_ylabel("training loss (nats, smoothed)")
        ax.grid(True, alpha=0.3)
    for ax in axes[: len(methods)]:
        ax.set_ylim(ymin - 0.02 * (ymax - ymin), ymax + 0.02 * (ymax - ymin))  # shared scale
    axes[0].legend(fontsize=8, ncol=2, title="POS task")
    ax = axes[-1]
    for method in methods:
        steps, curves = smoothed[method]
        ls = styles.get(method, "-")
        ax.plot(
            steps, np.nanmax(curves, axis=1), ls, color="C3", lw=1.8, label=f"{method}: worst POS"
        )
        ax.plot(
            steps,
            np.nanmax(curves, axis=1) - np.nanmin(curves, axis=1),
            ls,
            color="C0",
            lw=1.8,
            label=f"{method}: gap max-min",
        )
    ax.set_title("worst POS loss and gap between POS tasks")
    ax.set_xlabel("pre-training step")
    ax.set_ylabel("nats")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"POS-Mask BERT pre-training, mean over {len(payload['config']['seeds'])} seeds",
        fontsize=11,
    )
    fig.tight_layout()
    return save_figure(fig, path)
