"""Optimiser, learning-rate schedule and precision set-up, shared by pre-training and fine-tuning.

Three small pure pieces, the ones every PyTorch training loop writes (nanoGPT's
``configure_optimizers``, ``get_lr`` and ``ctx``):

- :func:`param_groups` / :func:`adamw`: AdamW with weight decay on matrices and embeddings
  (parameters with ``dim >= 2``) and none on biases and norm scales (``dim < 2``); fused on
  CUDA;
- :func:`lr_factor`: the multiplier of the peak learning rate at a step (linear warm-up, then
  cosine, linear or constant), a pure function of the step, so the step is a schedule's whole
  state (a checkpoint stores nothing else for it);
- :func:`autocast_dtype` / :func:`autocast`: the precision choice (bf16 autocast where the
  device supports it, else float32) and its context manager.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = [
    "LR_SCHEDULES",
    "PRECISIONS",
    "LrSchedule",
    "adamw",
    "autocast",
    "autocast_dtype",
    "check_lr_schedule",
    "check_precision",
    "lr_factor",
    "param_groups",
]

LrSchedule = str | Callable[[int], float]
"""``"cosine"``, ``"linear"``, ``"constant"`` or ``step -> factor``."""
LR_SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "bf16", "fp32")


# --------------------------------------------------------------------------- optimiser


def param_groups(parameters: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``weight_decay`` on tensors with ``dim >= 2`` (matrices,
    embeddings), 0 on the rest (biases, norm scales), as in nanoGPT. Parameters that do not
    require grad are left out; empty groups are dropped; the order within a group is the
    order of ``parameters``."""
    params = [p for p in parameters if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    device: torch.device | str | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` of ``model`` (fused where ``device`` is CUDA).

    Raises ``ValueError`` if no parameter requires grad."""
    groups = param_groups(model.parameters(), weight_decay)
    if not groups:
        raise ValueError("the model has no parameter that requires grad: nothing to train")
    fused = device is not None and torch.device(device).type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


# --------------------------------------------------------------------------- schedule


def check_lr_schedule(lr_schedule: Any) -> LrSchedule:
    """``lr_schedule`` itself if it is one of :data:`LR_SCHEDULES` or a callable."""
    if not (callable(lr_schedule) or lr_schedule in LR_SCHEDULES):
        raise ValueError(
            f"lr_schedule must be 'cosine', 'linear', 'constant' or a callable, got {lr_schedule!r}"
        )
    return lr_schedule  # type: ignore[no-any-return]


def lr_factor(
    step: int, *, steps: int, warmup_steps: int, lr_schedule: LrSchedule, min_lr_ratio: float
) -> float:
    """Learning-rate multiplier at (0-based) ``step``.

    Linear warm-up ``(step + 1) / (warmup_steps + 1)`` for ``step < warmup_steps``; then, with
    ``p = (step - warmup_steps) / (steps - warmup_steps)`` in ``[0, 1)``: ``"cosine"``
    ``r + (1 - r) (1 + cos(pi p)) / 2``, ``"linear"`` ``1 - (1 - r) p``, ``"constant"`` 1, where
    ``r = min_lr_ratio``. A callable ``lr_schedule(step)`` replaces all of this.
    """
    if callable(lr_schedule):
        value = lr_schedule(step)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (math.isfinite(value) and value >= 0)
        ):
            raise ValueError(f"lr_schedule({step}) must return a finite number >= 0, got {value!r}")
        return float(value)
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if lr_schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if lr_schedule == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - (1.0 - min_lr_ratio) * progress  # linear


# --------------------------------------------------------------------------- precision


def check_precision(precision: Any) -> str:
    """``precision`` itself if it is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return str(precision)


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (``None``: float32, no autocast).

    ``"bf16"``: bfloat16; ``"fp32"``: ``None``; ``"auto"``: bfloat16 on a CUDA device that
    supports it, else ``None``."""
    precision = check_precision(precision)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(
    dtype: torch.dtype | None, device: torch.device | str
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op for ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
