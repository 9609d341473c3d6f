"""Faults of a training step and the graceful stop of :func:`deep.pretrain`.

A step can fail in four ways (:class:`FaultCode`): task ids outside ``[0, num_tasks)``, a
batch with no item of any task, a non-finite task loss, or a non-finite gradient with
finite losses. The loop detects them without a host sync where it must not wait:

- :func:`fault_code` reads the all-reduced per-task sums/counts/invalid-id count on the
  host (every step on CPU); :func:`record_fault` does the same on the device, keeping the
  first ``(step, code, task)`` in a 3-vector that is read at the next check;
- the gradient is checked through its global norm (:func:`gradient_norm`, the one clipping
  computes, finite iff every entry is); :func:`record_gradient_fault` keeps it on the
  device, and :func:`optimizer_step` passes the flag as ``found_inf`` so that a fused
  optimizer skips the update on the device;
- on the error path :func:`gradient_origin` re-runs the step under anomaly detection to name
  the backward operation where the first NaN arose, :func:`fault_message` writes the error
  and :func:`raise_fault` raises it (``FloatingPointError`` for numbers, ``ValueError`` for
  ids).

:class:`StopRequest` turns SIGINT/SIGTERM into a flag the loop reads at a step boundary.
"""

from __future__ import annotations

import enum
import math
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "FaultCode",
    "StopRequest",
    "TaskLoss",
    "call_task_loss",
    "fault_code",
    "fault_message",
    "gradient_norm",
    "gradient_origin",
    "nonfinite_parameters",
    "optimizer_step",
    "raise_fault",
    "record_fault",
    "record_gradient_fault",
]

TaskLoss = Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]]
_ENGINE = frozenset(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    for name in ("faults.py", "pretrain.py")
)
"""The engine's own files: never the origin a gradient fault names."""


class FaultCode(enum.IntEnum):
    """What went wrong at a step (the values are stored in checkpoints' running sums)."""

    NONE = 0
    IDS = 1  # task ids outside [0, num_tasks) (and not ignore_index)
    EMPTY = 2  # every item has task id ignore_index
    NONFINITE = 3  # a task's mean loss is NaN or Inf
    GRADIENT = 4  # the gradient norm is not finite while every loss is


# --------------------------------------------------------------------------- detection


def fault_code(host: Sequence[float], num_tasks: int) -> tuple[FaultCode, int]:
    """``(code, first non-finite task)`` from the all-reduced stats read back to the host:
    ``host = [sums (M), counts (M), invalid ids, ...]``."""
    M = num_tasks
    if host[2 * M] > 0:
        return FaultCode.IDS, -1
    if sum(host[M : 2 * M]) == 0:
        return FaultCode.EMPTY, -1
    for i, value in enumerate(host[:M]):
        if not math.isfinite(value):
            return FaultCode.NONFINITE, i
    return FaultCode.NONE, -1


def record_fault(
    fault: torch.Tensor, stats: torch.Tensor, num_tasks: int, step: int
) -> torch.Tensor:
    """:func:`fault_code` on the device: keep the first ``(step, code, task)``, no host sync."""
    M = num_tasks
    nonfinite = ~torch.isfinite(stats[:M])
    code = torch.where(
        stats[2 * M] > 0,
        int(FaultCode.IDS),
        torch.where(
            stats[M : 2 * M].sum() == 0,
            int(FaultCode.EMPTY),
            torch.where(nonfinite.any(), int(FaultCode.NONFINITE), 0),
        ),
    )
    record = torch.stack([torch.full_like(code, step), code, nonfinite.long().argmax()])
    return torch.where((fault[0] < 0) & (code > 0), record, fault)


def gradient_norm(params: Sequence[torch.Tensor], grad_clip: float | None) -> torch.Tensor:
    """The global gradient norm ``||g||_2`` before clipping (clipping to ``grad_clip`` if set).

    It is finite iff every gradient entry is (short of ``||g||^2`` overflowing), so it is
    also the step's fused finiteness check. No host sync: the result stays on the device.
    """
    if grad_clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    grads = [p.grad for p in params if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads, foreach=True)


def record_gradient_fault(fault: torch.Tensor, norm: torch.Tensor, step: int) -> torch.Tensor:
    """Keep the first ``(step, code, task)`` fault; a non-finite ``norm`` is a gradient fault."""
    bad = ~torch.isfinite(norm.to(torch.float64))
    record = torch.full_like(fault, step)  # fills, not a host-to-device copy (no sync)
    record[1], record[2] = int(FaultCode.GRADIENT), -1
    return torch.where((fault[0] < 0) & bad, record, fault)


def optimizer_step(opt: torch.optim.Optimizer, halt: torch.Tensor | None) -> None:
    """``opt.step()``; with ``halt`` (a device flag), an optimizer that accepts ``found_inf``
    (fused Adam, AdamW, SGD) skips the update on the device when the flag is set, with no
    host sync. Other optimizers update regardless: the loop stops at the next check, and no
    checkpoint is written after a fault."""
    if halt is None or not getattr(opt, "_step_supports_amp_scaling", False):
        opt.step()
        return
    opt.found_inf = halt.to(torch.float32)  # type: ignore[attr-defined]
    try:
        opt.step()
    finally:
        del opt.found_inf  # type: ignore[attr-defined]


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers holding a NaN or Inf (one host read)."""
    named = [*model.named_parameters(), *model.named_buffers()]
    floats = [(n, t) for n, t in named if t.is_floating_point()]
    if not floats:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in floats]).tolist()
    return [n for (n, _), ok in zip(floats, finite, strict=True) if not ok]


def call_task_loss(
    task_loss: TaskLoss, model: nn.Module, batch: Any, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``task_loss(model, batch)``, checked: two tensors, floating-point per-item losses that
    require grad, at least one item; an error names the step and the fix."""
    out = task_loss(model, batch)
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise TypeError(
            "task_loss(model, batch) must return (per_item_losses, task_ids), two tensors; at "
            f"step {step} it returned {type(out).__name__}"
        )
    values, ids = out
    if values is None or not isinstance(values, torch.Tensor):
        raise TypeError(
            f"task_loss returned no loss tensor at step {step} (got {type(values).__name__}); a "
            "model that returns no loss needs labels, or compute the loss from its logits"
        )
    if not (values.is_floating_point() or values.is_complex()):
        raise TypeError(
            f"task_loss returned losses of dtype {values.dtype} at step {step}; losses must be "
            "floating point (an integer tensor has no gradient): compute them with a float loss "
            "such as F.cross_entropy(..., reduction='none')"
        )
    if values.ndim == 0:
        raise ValueError(
            f"task_loss returned a scalar loss at step {step}; it must return one loss per item "
            "(e.g. F.cross_entropy(..., reduction='none')) and their task ids"
        )
    if values.numel() == 0:
        raise ValueError(f"empty batch at step {step}: task_loss returned 0 items")
    if not values.requires_grad:
        raise ValueError(
            f"the losses from task_loss at step {step} do not require grad: they were detached, "
            "computed under torch.no_grad(), or the model has no trainable parameter"
        )
    return values, ids


# --------------------------------------------------------------------------- reporting


def gradient_origin(
    model: nn.Module,
    batches: Sequence[Any],
    task_loss: TaskLoss,
    num_tasks: int,
    autocast: Callable[[], Any],
) -> str:
    """Where the first NaN of the backward arises: the step re-run under
    ``torch.autograd.detect_anomaly`` (error path only), as "``FooBackward0``, whose forward
    is at file:line (in function)", or "" if the re-run has no NaN (e.g. other dropout)."""
    params = [p for p in model.parameters() if p.requires_grad]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autograd.detect_anomaly(check_nan=True):
                for batch in batches:
                    with autocast():
                        values, ids = task_loss(model, batch)
                    valid = (ids >= 0) & (ids < num_tasks)
                    torch.autograd.grad(values[valid].sum(), params, allow_unused=True)
        except RuntimeError as err:
            found = re.search(r"Function '(\w+)' returned nan", str(err))
            if found is None:
                return ""
            where = ""
            for warning in caught:
                text = str(warning.message)
                if "Traceback of forward call" not in text:
                    continue
                frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', text)
                torch_dir = os.sep + "torch" + os.sep
                frames = [f for f in frames if torch_dir not in f[0] and f[0] not in _ENGINE]
                if frames:
                    file, line, function = frames[-1]
                    where = f", whose forward is at {file}:{line} (in {function})"
            return f"{found.group(1)}{where}"
    return ""


def fault_message(
    code: int,
    step: int,
    task: int,
    names: Sequence[str],
    means: Sequence[float] | None,
    origin: str = "",
) -> str:
    """The error for a fault; ``means`` are the step's per-task means when known, ``origin``
    the backward operation of a gradient fault (:func:`gradient_origin`) when known."""
    if code == FaultCode.IDS:
        return (
            f"task_loss returned task ids outside [0, num_tasks) = [0, {len(names)}) at step "
            f"{step}; ids must lie in that range or equal ignore_index"
        )
    if code == FaultCode.EMPTY:
        return f"empty batch at step {step}: every item has task id ignore_index (no task present)"
    if code == FaultCode.GRADIENT:
        source = (
            f"the first NaN of the backward comes from {origin}"
            if origin
            else "run with check_every=1 (the default on CPU) to have the operation named"
        )
        return (
            f"non-finite gradient at step {step} while every task's loss is finite (a NaN or "
            f"Inf entry, or entries so large, beyond ~1e19, that the norm overflows); {source}. "
            "Which task cannot be told: a 0 * inf in the backward spreads one item's NaN to "
            "every task's gradient. No update was applied at this step. Look for an operation "
            "with an infinite derivative (sqrt or log at 0, a norm of 0), lower the learning "
            "rate, or pass on_nonfinite='skip'"
        )
    label = names[task] if 0 <= task < len(names) else str(task)
    detail = "has a NaN or Inf mean loss"
    if means is not None:
        bad = [f"{names[i]} = {m}" for i, m in enumerate(means) if not math.isfinite(m)]
        detail = f"has mean loss {means[task]} (non-finite: {', '.join(bad)})"
    return (
        f"non-finite loss at step {step}: task {task} ({label}) {detail}. Lower the learning "
        "rate, check the data, or pass on_nonfinite='skip'"
    )


def raise_fault(
    fault: Sequence[float],
    names: Sequence[str],
    means: Sequence[float] | None = None,
    origin: str = "",
) -> None:
    """Raise the error of a recorded ``(first step, code, task)`` (nothing if none):
    ``FloatingPointError`` for a non-finite loss or gradient, ``ValueError`` for ids."""
    first_step, code, task = (int(v) for v in fault)
    if first_step < 0 or code == FaultCode.NONE:
        return
    message = fault_message(code, first_step, task, names, means, origin)
    if code in (FaultCode.NONFINITE, FaultCode.GRADIENT):
        raise FloatingPointError(message)
    raise ValueError(message)


# --------------------------------------------------------------------------- interruption


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop stops at the next step boundary with a checkpoint.

    A second signal interrupts at once. The handler is installed only in the main thread, and
    only for a signal whose disposition is the default or a Python handler: an ignored signal
    (``SIG_IGN``, as under ``nohup`` or a job runner) stays ignored, and a handler installed
    outside Python is left alone. On exit the previous dispositions come back.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a signal arrived."""
        return self.signum is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(sig)
                if previous is signal.SIG_DFL or callable(previous):
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.__exit__()
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\ndeep.pretrain: got {signal.Signals(signum).name}; finishing this step and writing "
            "a checkpoint (send it again to abort at once)",
            file=sys.stderr,
            flush=True,
        )
