"""Figures and tables of the multi-modal MAE experiment.

``*_figure`` functions return a ``matplotlib.figure.Figure`` (built outside pyplot: no backend
is chosen or switched); ``plot_*`` write it atomically and return the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deep.plotting import new_figure, save_figure

from .model import MODALITIES
from .pipeline import PipelineResult

__all__ = [
    "losses_figure",
    "plot_losses",
    "plot_reconstructions",
    "raw_metrics_table",
    "reconstructions_figure",
]

_RAW = (
    ("cls_linear_acc", "cls linear acc", 100.0, True),
    ("cls_finetune_acc", "cls fine-tune acc", 100.0, True),
    ("segmentation_miou", "segmentation mIoU", 100.0, True),
    ("depth_rmse", "depth RMSE (m)", 1.0, False),
    ("depth_delta1", "depth δ<1.25", 100.0, True),
)


def raw_metrics_table(result: PipelineResult) -> str:
    """Markdown: raw downstream metrics, mean ± std over seeds, per method."""
    heads = [label for _, label, _, _ in _RAW]
    lines = ["| method | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for method, rows in result.metrics.items():
        cells = []
        for key, _, scale, _ in _RAW:
            v = np.array([r[key] for r in rows]) * scale
            sd = f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else ""
            cells.append(f"{v.mean():.2f}{sd}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_losses(result: PipelineResult, path: Path) -> Path:
    """:func:`losses_figure` written to ``path`` atomically."""
    return save_figure(losses_figure(result), path)


def plot_reconstructions(result: PipelineResult, path: Path, max_scenes: int = 3) -> Path:
    """:func:`reconstructions_figure` written to ``path`` atomically."""
    return save_figure(reconstructions_figure(result, max_scenes), path)


def losses_figure(result: PipelineResult) -> Any:
    """Per-modality pre-training loss over steps (mean over seeds, band = min..max) for
    every method, and the weights the minimax method gave each modality."""
    methods = list(result.histories)
    fig = new_figure(figsize=(4.0 * (len(MODALITIES) + 1), 3.6))
    axes = fig.subplots(1, len(MODALITIES) + 1)
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for method in methods:
        runs = result.histories[method]
        if not runs:
            continue
        step = runs[0]["step"]
        losses = np.stack([r["task_losses"] for r in runs])  # (S, n, M)
        weights = np.stack([r["weights"] for r in runs])
        for i in range(len(MODALITIES)):
            ax = axes[i]
            mean = losses[:, :, i].mean(0)
            ax.plot(step, mean, color=colors[method], label=method)
            ax.fill_between(
                step,
                losses[:, :, i].min(0),
                losses[:, :, i].max(0),
                color=colors[method],
                alpha=0.2,
            )
        for i, m in enumerate(MODALITIES):
            style = "-" if method == "minimax" else ":"
            axes[-1].plot(
                step, weights[:, :, i].mean(0), ls=style, color=f"C{i + 2}", label=f"{method}: {m}"
            )
    for i, m in enumerate(MODALITIES):
        axes[i].set_title(f"{m} reconstruction loss")
        axes[i].set_xlabel("pre-training step")
        axes[i].set_ylabel("batch loss on hidden patches")
        axes[i].set_yscale("log")
        axes[i].grid(True, which="both", alpha=0.3)
        axes[i].legend(fontsize=8)
    axes[-1].set_title("task weight per modality")
    axes[-1].set_xlabel("pre-training step")
    axes[-1].set_ylabel("weight w_i (sums to 1)")
    axes[-1].grid(True, alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.suptitle(
        f"per-modality pre-training losses, {len(result.config.seeds)} seeds "
        "(line: mean; band: min-max)"
    )
    fig.tight_layout()
    return fig


def reconstructions_figure(result: PipelineResult, max_scenes: int = 3) -> Any:
    """Rows: scenes x modalities; columns: masked input, each method's reconstruction
    (first seed), ground truth."""
    import matplotlib

    methods = [m for m in result.reconstructions if m != "scratch"]
    first = result.reconstructions[methods[0]]
    n = min(max_scenes, first["rgb_truth"].shape[0])
    cols = ["masked input", *(f"{m} reconstruction" for m in methods), "ground truth"]
    rows = len(MODALITIES) * n
    fig = new_figure(figsize=(2.0 * len(cols), 2.0 * rows))
    axes = fig.subplots(rows, len(cols), squeeze=False)
    vmax_depth = float(first["depth_truth"].max())
    num_classes = len(result.class_names)
    for s in range(n):
        for i, m in enumerate(MODALITIES):
            r = s * len(MODALITIES) + i
            images = [first[f"{m}_input"][s]]
            images += [result.reconstructions[k][f"{m}_recon"][s] for k in methods]
            images.append(first[f"{m}_truth"][s])
            for c, img in enumerate(images):
                ax = axes[r, c]
                if m == "rgb":
                    rgb = np.transpose(img, (1, 2, 0))
                    shown = np.where(np.isnan(rgb), 0.5, rgb)
                    ax.imshow(np.clip(shown, 0, 1), interpolation="nearest")
                elif m == "depth":
                    ax.imshow(
                        np.ma.masked_invalid(img[0]), cmap="viridis", vmin=0, vmax=vmax_depth,
                        interpolation="nearest",
                    )  # fmt: skip
                else:
                    ax.imshow(
                        np.ma.masked_less(img, 0), cmap="tab10", vmin=0, vmax=max(num_classes, 10) - 1,
                        interpolation="nearest",
                    )  # fmt: skip
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(cols[c], fontsize=9)
                if c == 0:
                    ax.set_ylabel(f"scene {s + 1}\n{m}", fontsize=9)
    from matplotlib.patches import Patch

    cmap = matplotlib.colormaps["tab10"]
    top = max(num_classes, 10) - 1
    handles = [Patch(color=cmap(i / top), label=name) for i, name in enumerate(result.class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8,
               title="semantic classes", title_fontsize=8)  # fmt: skip
    fig.suptitle(
        "reconstructions of hidden patches (grey / blank = hidden in the input; first seed)\n"
        f"depth colour: viridis from 0 to {vmax_depth:.1f} m",
        fontsize=10,
    )
    fig.tight_layout(rect=(0.0, 0.05, 1.0, 0.975))
    return fig
