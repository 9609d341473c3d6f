"""One fine-tuning configuration for every application (text and images).

:class:`FinetuneConfig` holds a fine-tuning run's budget, optimiser and evaluation settings;
:func:`deep.apps.text.finetune` (BERT on a :class:`~deep.apps.text.TextTask`) and
:func:`deep.apps.mae.downstream.finetune` (an RGB backbone on an image task) both read it.
The defaults are the text recipe (GLUE-style: 3 epochs, AdamW at ``1e-4``, 10% warm-up);
:data:`IMAGE_FINETUNE` is the image recipe.

Budget: ``steps`` optimiser steps when given, else ``epochs`` passes over the training set,
``ceil(n / batch_size)`` steps each (``max(1, round(epochs * ceil(n / batch_size)))``); the
first ``int(warmup_ratio * total)`` steps warm the learning rate up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deep.optim import check_precision

__all__ = ["IMAGE_FINETUNE", "POOLINGS", "FinetuneConfig"]

POOLINGS = ("cls", "mean")


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning hyper-parameters (see the module docstring for the budget).

    Shared: ``steps``/``epochs`` (budget), ``batch_size``, ``lr`` (peak), ``weight_decay``,
    ``warmup_ratio``, ``eval_batch_size``. Text only: ``max_len`` (tokens per example),
    ``device`` (default: CUDA when available), ``precision`` (``"auto"``: bf16 autocast on
    a CUDA device that supports it; ``"bf16"``; ``"fp32"``), ``pooling`` (what the
    classifier reads: ``"cls"``, BERT's pooler on ``[CLS]``, or ``"mean"``, the mean of the
    last hidden states over the attended tokens). Images only: ``freeze_backbone`` (train
    the head alone, on the frozen backbone's tokens: a linear probe of the task).
    """

    steps: int | None = None
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    eval_batch_size: int = 256
    max_len: int = 128
    device: str | None = None
    precision: str = "auto"
    pooling: str = "cls"
    freeze_backbone: bool = False

    def __post_init__(self) -> None:
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1
        ):
            raise ValueError(f"steps must be an integer >= 1 or None, got {self.steps!r}")
        if not (isinstance(self.epochs, int | float) and self.epochs > 0):
            raise ValueError(f"epochs must be > 0, got {self.epochs!r}")
        for name in ("batch_size", "max_len", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        check_precision(self.precision)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")

    def total_steps(self, num_train: int) -> int:
        """Optimiser steps of a run on ``num_train`` examples: ``steps``, else ``epochs``
        passes of ``ceil(num_train / batch_size)`` steps (at least 1)."""
        if self.steps is not None:
            return self.steps
        return max(1, round(self.epochs * math.ceil(num_train / self.batch_size)))


IMAGE_FINETUNE = FinetuneConfig(
    steps=200, batch_size=64, lr=1e-3, weight_decay=0.05, warmup_ratio=0.05
)
"""The image recipe (:func:`deep.apps.mae.downstream.finetune`): 200 steps of AdamW at
``1e-3``, weight decay 0.05, 5% warm-up, then cosine decay to 0."""
