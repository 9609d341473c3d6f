"""The plain PyTorch training loop that ``deep.pretrain`` is measured against.

It is what a practitioner writes instead of ``deep.pretrain`` (nanoGPT's ``train.py``,
without the task weights): AdamW with decay on matrices only, a cosine learning-rate
factor, bf16 autocast where the device supports it, one backward of the batch's mean loss,
gradient clipping, the step. The optimiser, schedule and precision come from
:mod:`deep.optim`, the same functions ``deep.pretrain`` uses, so that a timing difference is
the task weighting and its bookkeeping alone. Used by ``benchmarks/experiments/
deep_overhead.py`` (CPU) and ``gpu/bert_mfu.py`` (a lent GPU); importing this module imports
torch only when the loop runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["plain_pretrain"]


def plain_pretrain(
    model: Any,
    batches: Sequence[Any],
    *,
    steps: int,
    loss: Callable[[Any, Any], Any],
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    grad_clip: float = 1.0,
    min_lr_ratio: float = 0.1,
    precision: str = "auto",
) -> float:
    """Train ``model`` for ``steps`` steps on ``batches`` (cycled); return the loop's seconds.

    ``loss(model, batch)`` returns the scalar to minimise (one forward, under autocast).
    The learning rate at step ``t`` is ``lr * deep.optim.lr_factor(t)`` (cosine to
    ``min_lr_ratio * lr``, no warm-up); the optimizer is :func:`deep.optim.adamw` on the
    model's device (fused on CUDA), created before the clock starts; on CUDA the device is
    synchronised before and after the loop, so the seconds are the loop's work alone.
    """
    import torch

    from deep.optim import adamw, autocast, autocast_dtype, lr_factor

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not batches:
        raise ValueError("batches must hold at least one batch")
    device = next(model.parameters()).device
    optimizer = adamw(model, lr=lr, weight_decay=weight_decay, device=device)
    dtype = autocast_dtype(precision, device)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    start = time.perf_counter()
    for step in range(steps):
        factor = lr_factor(
            step, steps=steps, warmup_steps=0, lr_schedule="cosine", min_lr_ratio=min_lr_ratio
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        batch = batches[step % len(batches)]
        with autocast(dtype, device):
            value = loss(model, batch)
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - start
