"""``plot_history``: per-task losses and weights over training, to PNG.

Library figures are built with ``matplotlib.figure.Figure`` (no pyplot): they never select or
switch a backend (a notebook keeps its own), never enter pyplot's figure registry and need no
closing. :func:`history_figure` returns the Figure; :func:`save_figure` writes any figure
atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["history_figure", "new_figure", "plot_history", "save_figure"]


def new_figure(**kwargs: Any) -> Any:
    """A ``matplotlib.figure.Figure(**kwargs)``, outside pyplot (no backend is chosen)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``fig`` as PNG (or the format of ``path``'s suffix) atomically; returns the path."""
    import io

    from .io import atomic_write_bytes

    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    if getattr(fig.canvas, "manager", None) is not None:  # made by pyplot: release it there
        import matplotlib.pyplot as plt

        plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _load_history(source: Any) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """A history dict from a result, a history mapping, a ``log.jsonl`` or a log folder."""
    from .logs import read_log

    names = None
    if hasattr(source, "history") and hasattr(source, "config"):  # a PretrainResult
        names = list(source.config.get("task_names", [])) or None
        source = source.history
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        config = (path if path.is_dir() else path.parent) / "config.json"
        if config.is_file():
            import json

            names = json.loads(config.read_text(encoding="utf-8")).get("task_names")
        return read_log(path), names
    if not isinstance(source, Mapping):
        raise TypeError(
            "plot_history needs a PretrainResult, a history dict, a log.jsonl path or a log "
            f"folder, got {type(source).__name__}"
        )
    history = {k: np.asarray(v) for k, v in source.items()}
    for key in ("step", "task_losses", "weights"):
        if key not in history:
            raise ValueError(f"the history has no {key!r} entry")
    return history, names


def plot_history(
    source: Any,
    out_png: str | os.PathLike[str],
    *,
    task_names: Sequence[str] | None = None,
    title: str | None = None,
    loss_label: str = "per-task mean loss (nats)",
) -> Path:
    """:func:`history_figure` written to ``out_png`` atomically; returns the path."""
    fig = history_figure(source, task_names=task_names, title=title, loss_label=loss_label)
    return save_figure(fig, out_png)


def history_figure(
    source: Any,
    *,
    task_names: Sequence[str] | None = None,
    title: str | None = None,
    loss_label: str = "per-task mean loss (nats)",
) -> Any:
    """Per-task losses (top) and task weights (bottom) against the optimizer step: a Figure.

    ``source`` is a :class:`deep.PretrainResult`, its ``history`` dict, a ``log.jsonl`` file,
    or the ``log_dir`` holding one. ``loss_label`` names the loss axis (give the unit of your
    loss if it is not a cross-entropy in nats).
    """
    import matplotlib

    history, saved_names = _load_history(source)
    steps = np.asarray(history["step"], dtype=float)
    losses = np.atleast_2d(np.asarray(history["task_losses"], dtype=float))
    weights = np.atleast_2d(np.asarray(history["weights"], dtype=float))
    if steps.size == 0:
        raise ValueError("the history is empty: nothing to plot")
    num_tasks = losses.shape[1]
    names = list(task_names or saved_names or [f"task{i}" for i in range(num_tasks)])
    if len(names) != num_tasks:
        raise ValueError(f"task_names must have {num_tasks} names, got {len(names)}")

    cmap = matplotlib.colormaps["tab10" if num_tasks <= 10 else "tab20"]
    colors = cmap(np.arange(num_tasks) % 20)
    fig = new_figure(figsize=(8, 6.5))
    ax_loss, ax_w = fig.subplots(2, 1, sharex=True)
    for i in range(num_tasks):
        ax_loss.plot(steps, losses[:, i], color=colors[i], lw=1.4, label=names[i])
    if "worst_loss" in history and np.any(np.isfinite(history["worst_loss"])):
        ax_loss.plot(steps, history["worst_loss"], "k--", lw=1.0, label="worst task")
    ax_loss.set_ylabel(loss_label)
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(loc="upper right", fontsize=8, ncol=max(1, (num_tasks + 1) // 8))
    ax_w.stackplot(steps, np.nan_to_num(weights).T, colors=colors, labels=names, alpha=0.85)
    ax_w.set_ylim(0.0, 1.0)
    ax_w.set_xlabel("optimizer step")
    ax_w.set_ylabel("task weight $w_i$ (stacked, sums to 1)")
    ax_w.grid(alpha=0.3)
    ax_loss.set_title(title or "Task-robust pre-training: per-task losses and weights")
    fig.tight_layout()
    return fig
