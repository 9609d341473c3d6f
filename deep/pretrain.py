"""``deep.pretrain``: the training loop of task-robust pre-training.

One readable loop in the spirit of nanoGPT's ``train.py``. Each optimizer step draws
``accumulation_steps`` micro-batches; for each one

1. ``values, ids = task_loss(model, batch)``: one forward, per-item losses and task ids;
2. per-task sums and counts with one scatter (:func:`deep.objective.task_sums`); under
   torchrun they are all-reduced, so every rank sees the global batch's numbers;
3. the estimator turns the step's per-task means so far into a detached estimate ``Lhat``,
   and the weight rule maps it to ``w`` (absent tasks: weight 0, the rest renormalised);
4. one backward of ``sum_i w_i L_i`` (scaled by ``world_size / accumulation_steps`` so that
   DDP's gradient average equals the gradient on the global batch).

Then gradient clipping, the optimizer step, and the learning-rate schedule. No step of this
reads a device value back to the host, except the finiteness check on CPU and in
``on_nonfinite="skip"`` mode (see ``check_every``); logging reads once per ``log_every``.

Gradient accumulation. The weights of micro-batch ``k`` come from the rule applied to the
per-task means of micro-batches ``1..k`` of the step (the weights cannot wait for later
micro-batches without a second forward), and the rule's state advances once per step with
the means of the whole step. With ``accumulation_steps = 1`` this is exactly
``w_t = rule(L(x_t))``, ``x_{t+1} = x_t - eta_t sum_i w_ti grad L_i(x_t)``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from minimax_core.weights import WeightRule

from . import checkpoint as ckpt
from .data import BatchStream, move_to_device
from .distributed import Context, setup
from .logs import (
    JsonlLog,
    empty_history,
    tensorboard_write,
    tensorboard_writer,
    write_json_atomic,
)
from .objective import IGNORE_INDEX, EstimateState, LossEstimator, ema, present_weights, task_sums
from .optim import LrSchedule, adamw, autocast_dtype, check_lr_schedule, lr_factor

__all__ = ["PretrainResult", "lr_factor", "pretrain"]

TaskLoss = Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]]

_FAULT_IDS, _FAULT_EMPTY, _FAULT_NONFINITE, _FAULT_GRADIENT = 1, 2, 3, 4


@dataclass(frozen=True)
class PretrainResult:
    """What :func:`pretrain` returns.

    ``history``: numpy arrays with one row per logging step (keys in
    :data:`deep.logs.HISTORY_KEYS`; per-task entries are ``(n_logged, M)``); ``task_losses``
    are the per-task means over the items since the previous logging step and ``weights`` the
    mean of the step weights over those steps (with ``log_every=1``: each step's values).
    ``mean_weights``: the weights averaged over all applied steps. ``steps``: optimizer steps
    done (including ``skipped_steps``). ``stopped_early``: the data ran out before ``steps``.
    """

    model: nn.Module
    history: dict[str, np.ndarray]
    mean_weights: np.ndarray
    steps: int
    skipped_steps: int
    rule_state: Any
    estimator_state: EstimateState
    checkpoint: Path | None
    log_path: Path | None
    wall_seconds: float
    stopped_early: bool = False
    config: dict[str, Any] = field(default_factory=dict)


class _Running(NamedTuple):
    """Device-side running sums (no host sync until they are read at a logging step)."""

    weight_sum: torch.Tensor  # (M,) sum of applied step weights
    applied_steps: int
    interval_sums: torch.Tensor  # (M,) per-task loss sums since the last log
    interval_counts: torch.Tensor  # (M,)
    interval_weights: torch.Tensor  # (M,)
    interval_loss: torch.Tensor  # () sum of step objectives
    interval_steps: int
    fault: torch.Tensor  # (3,) int64: first faulty step (or -1), fault code, task
    stop: torch.Tensor  # () > 0 once any rank asked to stop
    grad_norm: torch.Tensor  # () last pre-clipping gradient norm (NaN if not computed)


def _running_init(num_tasks: int, device: torch.device) -> _Running:
    acc = torch.float32 if device.type == "mps" else torch.float64
    zeros = torch.zeros(num_tasks, dtype=acc, device=device)
    return _Running(
        weight_sum=zeros,
        applied_steps=0,
        interval_sums=zeros,
        interval_counts=zeros,
        interval_weights=zeros,
        interval_loss=torch.zeros((), dtype=acc, device=device),
        interval_steps=0,
        fault=torch.tensor([-1, 0, -1], dtype=torch.int64, device=device),
        stop=torch.zeros((), dtype=acc, device=device),
        grad_norm=torch.full((), float("nan"), dtype=acc, device=device),
    )


# --------------------------------------------------------------------------- options


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _real(name: str, value: Any, low: float, allow_low: bool, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = math.isfinite(value) and (value >= low if allow_low else value > low) and value <= high
    if not ok:
        bound = f">= {low}" if allow_low else f"> {low}"
        upper = "" if math.isinf(high) else f" and <= {high}"
        raise ValueError(f"{name} must be a finite number {bound}{upper}, got {value!r}")
    return value


# --------------------------------------------------------------------------- state <-> files


def _state_parts(prefix: str, state: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A NamedTuple state as JSON fields and named tensors."""
    if not (isinstance(state, tuple) and hasattr(state, "_asdict")):
        raise TypeError(f"cannot checkpoint a {prefix} of type {type(state).__name__}")
    fields: dict[str, Any] = {}
    tensors: dict[str, torch.Tensor] = {}
    for name, value in state._asdict().items():
        key = f"{prefix}.{name}"
        if value is None or isinstance(value, bool | int | float | str):
            fields[name] = value
        elif isinstance(value, torch.Tensor):
            tensors[key] = value
            fields[name] = {"tensor": key}
        elif isinstance(value, np.ndarray):
            tensors[key] = torch.from_numpy(np.ascontiguousarray(value))
            fields[name] = {"ndarray": key}
        else:
            raise TypeError(
                f"cannot checkpoint field {name!r} of the {prefix} ({type(value).__name__}): "
                "states must hold numbers, None, tensors or numpy arrays"
            )
    return fields, tensors


def _state_from_parts(
    prefix: str,
    template: Any,
    meta: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    device: torch.device,
    path: Path,
) -> Any:
    """The inverse of :func:`_state_parts`; each field must have the template's kind (and a
    tensor its shape and dtype), else a :class:`deep.checkpoint.CheckpointError` names it."""
    fields = meta.get(prefix)
    if not isinstance(fields, Mapping):
        raise ckpt.CheckpointError(f"checkpoint {path}: meta.json field {prefix!r} is malformed")
    values: dict[str, Any] = {}
    for name, like in template._asdict().items():
        key = f"{prefix}.{name}"
        if name not in fields:
            raise ckpt.CheckpointError(f"checkpoint {path}: the state has no field {key!r}")
        value = fields[name]

        def bad(expected: str, got: Any = value, key: str = key) -> ckpt.CheckpointError:
            return ckpt.CheckpointError(
                f"checkpoint {path}: meta.json field {key!r} must be {expected}, got {got!r}"
            )

        if isinstance(value, Mapping):
            kind = "tensor" if "tensor" in value else "ndarray"
            if value.get(kind) not in tensors:
                raise bad("a reference to a stored tensor")
            stored = tensors[value[kind]]
            if isinstance(like, torch.Tensor | np.ndarray):
                dtype = (
                    like.dtype if isinstance(like, torch.Tensor) else torch.from_numpy(like).dtype
                )
                if tuple(stored.shape) != tuple(like.shape) or stored.dtype != dtype:
                    raise bad(
                        f"a {dtype} tensor of shape {tuple(like.shape)}",
                        f"{stored.dtype} of shape {tuple(stored.shape)}",
                    )
            values[name] = stored.to(device) if kind == "tensor" else stored.numpy()
        elif isinstance(like, torch.Tensor | np.ndarray):
            raise bad("a reference to a stored tensor")
        elif isinstance(like, bool):
            if not isinstance(value, bool):
                raise bad("true or false")
            values[name] = value
        elif isinstance(like, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad("an integer")
            values[name] = value
        elif isinstance(like, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad("a number")
            values[name] = float(value)
        elif isinstance(like, str) and not isinstance(value, str):
            raise bad("a string")
        elif value is not None and not isinstance(value, bool | int | float | str):
            raise bad("a number, a string or null")
        else:
            values[name] = value
    return template._replace(**values)


def _rng_from(
    meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], rank: int, path: Path
) -> dict[str, Any]:
    """Rank ``rank``'s RNG states from a checkpoint, each tried on a throwaway generator so
    that a malformed one is a :class:`deep.checkpoint.CheckpointError`, not a crash later."""
    try:
        state = dict(meta["rng"][rank])
        state["torch"] = tensors[f"rng.{rank}.torch"]
        if f"rng.{rank}.cuda" in tensors:
            state["cuda"] = tensors[f"rng.{rank}.cuda"]
        version, keys, gauss = state["python"]
        random.Random().setstate((version, tuple(keys), gauss))
        name, np_keys, pos, has_gauss, cached = state["numpy"]
        np_state = (name, np.asarray(np_keys, dtype=np.uint32), pos, has_gauss, cached)
        np.random.RandomState().set_state(np_state)
        torch.Generator().set_state(state["torch"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise ckpt.CheckpointError(
            f"checkpoint {path}: meta.json field 'rng' (rank {rank}) is malformed: {err!r}"
        ) from err
    return state


def _rng_state(device: torch.device) -> dict[str, Any]:
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]  # noqa: NPY002
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore the states of :func:`_rng_state`."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, np_keys, pos, has_gauss, cached = state["numpy"]
    np_state = (name, np.asarray(np_keys, dtype=np.uint32), pos, has_gauss, cached)
    np.random.set_state(np_state)  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------- interruption


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop stops at the next step boundary with a checkpoint.

    A second signal interrupts at once. The handler is installed only in the main thread, and
    only for a signal whose disposition is the default or a Python handler: an ignored signal
    (``SIG_IGN``, as under ``nohup`` or a job runner) stays ignored, and a handler installed
    outside Python is left alone. On exit the previous dispositions come back.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
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


# --------------------------------------------------------------------------- the loop


def _history_arrays(history: Mapping[str, list[Any]], num_tasks: int) -> dict[str, np.ndarray]:
    out = {}
    for key, values in history.items():
        per_task = key in ("task_losses", "weights", "counts")
        shape = (len(values), num_tasks) if per_task else (len(values),)
        dtype = np.int64 if key == "step" else np.float64
        out[key] = np.asarray(values, dtype=dtype).reshape(shape)
    return out


def _log_entry(
    packed: Sequence[float], num_tasks: int, n_steps: int, step: int, skipped: int
) -> dict[str, Any]:
    """One history row from the packed interval sums (see the logging block of the loop)."""
    M = num_tasks
    sums, counts = np.asarray(packed[:M]), np.asarray(packed[M : 2 * M])
    present = counts > 0
    task_losses = np.where(present, sums / np.maximum(counts, 1.0), np.nan)
    return {
        "step": step,
        "loss": packed[3 * M] / n_steps if n_steps else float("nan"),
        "mean_loss": float(sums.sum() / counts.sum()) if present.any() else float("nan"),
        "worst_loss": float(np.max(task_losses[present])) if present.any() else float("nan"),
        "task_losses": task_losses,
        "weights": np.asarray(packed[2 * M : 3 * M]) / max(n_steps, 1),
        "counts": counts,
        "grad_norm": packed[3 * M + 1],
        "skipped_steps": skipped,
    }


def _postfix(entry: Mapping[str, Any], names: Sequence[str]) -> dict[str, str]:
    losses = entry["task_losses"]
    out = {"loss": f"{entry['loss']:.4g}"}
    if np.any(np.isfinite(losses)):
        worst = int(np.nanargmax(losses))
        out["worst"] = f"{names[worst]}={losses[worst]:.4g}"
    if entry.get("tokens_per_second"):
        out["tok/s"] = f"{entry['tokens_per_second']:.3g}"
    else:
        out["items/s"] = f"{entry['items_per_second']:.3g}"
    return out


def _fault_code(host: Sequence[float], num_tasks: int) -> tuple[int, int]:
    """``(code, first non-finite task)`` from the all-reduced stats read back to the host."""
    M = num_tasks
    if host[2 * M] > 0:
        return _FAULT_IDS, -1
    if sum(host[M : 2 * M]) == 0:
        return _FAULT_EMPTY, -1
    for i, value in enumerate(host[:M]):
        if not math.isfinite(value):
            return _FAULT_NONFINITE, i
    return 0, -1


def _record_fault(
    fault: torch.Tensor, stats: torch.Tensor, num_tasks: int, step: int
) -> torch.Tensor:
    """:func:`_fault_code` on the device: keep the first ``(step, code, task)``, no host sync."""
    M = num_tasks
    nonfinite = ~torch.isfinite(stats[:M])
    code = torch.where(
        stats[2 * M] > 0,
        _FAULT_IDS,
        torch.where(
            stats[M : 2 * M].sum() == 0,
            _FAULT_EMPTY,
            torch.where(nonfinite.any(), _FAULT_NONFINITE, 0),
        ),
    )
    record = torch.stack([torch.full_like(code, step), code, nonfinite.long().argmax()])
    return torch.where((fault[0] < 0) & (code > 0), record, fault)


def _gradient_norm(params: Sequence[torch.Tensor], grad_clip: float | None) -> torch.Tensor:
    """The global gradient norm ``||g||_2`` before clipping (clipping to ``grad_clip`` if set).

    It is finite iff every gradient entry is (short of ``||g||^2`` overflowing), so it is
    also the step's fused finiteness check. No host sync: the result stays on the device.
    """
    if grad_clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    grads = [p.grad for p in params if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads, foreach=True)


def _record_gradient_fault(fault: torch.Tensor, norm: torch.Tensor, step: int) -> torch.Tensor:
    """Keep the first ``(step, code, task)`` fault; a non-finite ``norm`` is a gradient fault."""
    bad = ~torch.isfinite(norm.to(torch.float64))
    record = torch.full_like(fault, step)  # fills, not a host-to-device copy (no sync)
    record[1], record[2] = _FAULT_GRADIENT, -1
    return torch.where((fault[0] < 0) & bad, record, fault)


def _optimizer_step(opt: torch.optim.Optimizer, halt: torch.Tensor | None) -> None:
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


def _gradient_origin(
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
                own = os.sep + "torch" + os.sep, os.path.basename(__file__)
                frames = [f for f in frames if not any(part in f[0] for part in own)]
                if frames:
                    file, line, function = frames[-1]
                    where = f", whose forward is at {file}:{line} (in {function})"
            return f"{found.group(1)}{where}"
    return ""


def _nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers holding a NaN or Inf (one host read)."""
    named = [*model.named_parameters(), *model.named_buffers()]
    floats = [(n, t) for n, t in named if t.is_floating_point()]
    if not floats:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in floats]).tolist()
    return [n for (n, _), ok in zip(floats, finite, strict=True) if not ok]


def _call_task_loss(
    task_loss: TaskLoss, model: nn.Module, batch: Any, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
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


def _fault_message(
    code: int,
    step: int,
    task: int,
    names: Sequence[str],
    means: Sequence[float] | None,
    origin: str = "",
) -> str:
    """The error for a fault; ``means`` are the step's per-task means when known, ``origin``
    the backward operation of a gradient fault (:func:`_gradient_origin`) when known."""
    if code == _FAULT_IDS:
        return (
            f"task_loss returned task ids outside [0, num_tasks) = [0, {len(names)}) at step "
            f"{step}; ids must lie in that range or equal ignore_index"
        )
    if code == _FAULT_EMPTY:
        return f"empty batch at step {step}: every item has task id ignore_index (no task present)"
    if code == _FAULT_GRADIENT:
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


def pretrain(
    model: nn.Module,
    batches: Iterable[Any] | Callable[[int], Iterable[Any]],
    *,
    num_tasks: int,
    task_loss: TaskLoss,
    rule: WeightRule,
    steps: int,
    optimizer: torch.optim.Optimizer | Callable[[nn.Module], torch.optim.Optimizer] | None = None,
    lr: float | None = None,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    warmup_steps: int = 0,
    lr_schedule: LrSchedule = "cosine",
    min_lr_ratio: float = 0.1,
    grad_clip: float | None = 1.0,
    accumulation_steps: int = 1,
    estimator: LossEstimator | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    compile: bool | Mapping[str, Any] = False,
    seed: int | None = 0,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    keep_checkpoints: int | None = 2,
    resume: str | os.PathLike[str] | bool | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    log_every: int = 10,
    tensorboard: bool = False,
    progress: bool = True,
    on_nonfinite: str = "raise",
    check_every: int | None = None,
    task_names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
    ddp_options: Mapping[str, Any] | None = None,
    allow_changes: Iterable[str] | bool = (),
) -> PretrainResult:
    """Pre-train ``model`` on ``num_tasks`` tasks with the weights of ``rule``.

    Args:
        model: any ``nn.Module`` (a ``transformers`` model included); moved to ``device``.
        batches: a re-iterable, an iterator/generator, or ``position -> iterable``; tensors in a
            batch (nested dicts/lists/tuples/dataclasses) are moved to ``device``. Under
            torchrun each rank's ``batches`` yields that rank's share of the global batch. How
            resume restores the data position: :mod:`deep.data`.
        task_loss: ``task_loss(model, batch) -> (losses, task_ids)``, one forward; ``losses``
            per item (requires grad), ``task_ids`` integers in ``[0, num_tasks)`` of the same
            shape, or ``ignore_index`` for items of no task. Under DDP/compile ``model`` is the
            wrapper: call it, do not read attributes from it.
        rule: a :mod:`minimax_core.weights` rule (``uniform()`` is the average-risk baseline),
            possibly wrapped by :func:`deep.mix_uniform` and friends.
        steps: optimizer steps in total (a resumed run continues up to ``steps``).
        optimizer: an optimizer over ``model``'s parameters or ``model -> optimizer``; default
            AdamW (fused on CUDA) with ``lr`` (default ``1e-4``), ``weight_decay`` on matrices
            only, ``betas``. With your own optimizer its learning rates are the peaks.
        warmup_steps, lr_schedule, min_lr_ratio: see :func:`deep.optim.lr_factor`.
        grad_clip: clip the global gradient norm to this (``None``: no clipping).
        accumulation_steps: micro-batches per optimizer step (see the module docstring).
        estimator: loss estimate the rule sees (default :func:`deep.ema` with ``decay=0``).
        device: default ``cuda:LOCAL_RANK`` if CUDA is available, else CPU.
        precision: ``"auto"`` (bf16 autocast on CUDA with bf16 support, else float32),
            ``"bf16"`` or ``"fp32"``.
        compile: ``True`` or ``torch.compile`` keyword arguments.
        seed: seeds torch with ``seed + rank`` at the start of a fresh run (``None``: leave
            the RNGs alone).
        checkpoint_dir, checkpoint_every, keep_checkpoints: write a checkpoint every
            ``checkpoint_every`` steps, at the end, and on SIGINT/SIGTERM (at the next step
            boundary); keep the newest ``keep_checkpoints`` (``None``: all). See
            :mod:`deep.checkpoint`. The graceful stop is installed only when ``pretrain`` runs
            in the main thread, and only for a signal with the default or a Python handler:
            a signal the process ignores (``SIG_IGN``, e.g. under ``nohup``) stays ignored
            during and after the run.
        resume: a checkpoint directory, a folder of them (the newest is used), or ``True`` for
            the newest in ``checkpoint_dir``. On CPU the resumed run is bit-for-bit the
            uninterrupted one.
        log_dir, log_every, tensorboard, progress: ``log.jsonl`` (one line per ``log_every``
            steps), ``config.json`` and ``mean_weights.json`` (also in ``checkpoint_dir``) in
            ``log_dir``; TensorBoard events if asked (needs the ``tensorboard`` package); a
            tqdm bar on rank 0.
        on_nonfinite: what a NaN/Inf loss, or a non-finite gradient norm with finite losses,
            does: ``"raise"`` stops (``FloatingPointError``) naming the step and, for a loss,
            the task, for a gradient (with ``check_every=1``) the backward operation where the
            first NaN arose (the task cannot be told: one item's NaN reaches every task's
            gradient through ``0 * inf``); ``"skip"`` drops the step (no update, counted in
            ``skipped_steps``). The gradient is checked through its global norm (the one
            clipping computes), before the update.
        check_every: read the finiteness and task-id checks back every this many steps
            (default: every step on CPU and with ``"skip"``, else every ``log_every`` steps,
            so that accelerators never wait). A fault found late still names its step; from
            the faulty step on, an optimizer that accepts ``found_inf`` (the default fused
            AdamW on CUDA) skips its updates on the device, so the model keeps the weights
            from before the fault. No checkpoint is ever written after a fault or with
            non-finite weights.
        task_names: names for logs and plots (default ``task0``, ``task1``, ...).
        ignore_index: the task id of items that belong to no task.
        ddp_options: keyword arguments for ``DistributedDataParallel``.
        allow_changes: on resume, the options that may differ from the checkpoint's run
            (``"lr"``, ``"steps"``, ``"seed"``, ``"lr_schedule"``, ``"warmup_steps"``,
            ``"min_lr_ratio"``, ``"weight_decay"``, ``"betas"``, ``"grad_clip"``,
            ``"precision"``, ``"on_nonfinite"``, ``"ignore_index"``, ``"task_names"``, or
            ``"optimizer"`` for any hyperparameter of the optimizer's parameter groups), or
            ``True`` for all of them. A change not named is refused with a
            :class:`deep.checkpoint.CheckpointError` that names it (``steps`` only counts
            where the schedule depends on it). The task count, rule, estimator, world size and
            accumulation steps can never change.
    """
    num_tasks = _positive_int("num_tasks", num_tasks)
    steps = _positive_int("steps", steps)
    if not callable(task_loss):
        raise TypeError(
            f"task_loss must be callable (model, batch) -> (losses, task_ids), got {task_loss!r}"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from .objective import _check_rule

    rule = _check_rule(rule)
    estimator = ema(0.0) if estimator is None else estimator
    if not (
        callable(getattr(estimator, "init", None)) and callable(getattr(estimator, "update", None))
    ):
        raise TypeError(
            f"estimator must be a deep.LossEstimator such as deep.ema(), got {estimator!r}"
        )
    weight_decay = _real("weight_decay", weight_decay, 0.0, True)
    warmup_steps = _positive_int("warmup_steps", warmup_steps, 0)
    if warmup_steps > steps:
        raise ValueError(f"warmup_steps must be <= steps = {steps}, got {warmup_steps}")
    lr_schedule = check_lr_schedule(lr_schedule)
    min_lr_ratio = _real("min_lr_ratio", min_lr_ratio, 0.0, True, 1.0)
    if grad_clip is not None:
        grad_clip = _real("grad_clip", grad_clip, 0.0, False)
    accumulation_steps = _positive_int("accumulation_steps", accumulation_steps)
    log_every = _positive_int("log_every", log_every)
    if on_nonfinite not in ("raise", "skip"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
    if checkpoint_every is not None:
        checkpoint_every = _positive_int("checkpoint_every", checkpoint_every)
        if checkpoint_dir is None:
            raise ValueError("checkpoint_every needs checkpoint_dir")
    if keep_checkpoints is not None:
        keep_checkpoints = _positive_int("keep_checkpoints", keep_checkpoints)
    if seed is not None:
        seed = _positive_int("seed", seed, 0)
    if resume is True and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir (or pass the checkpoint's path)")
    if task_names is None:
        names = [f"task{i}" for i in range(num_tasks)]
    else:
        names = [str(n) for n in task_names]
        if len(names) != num_tasks:
            raise ValueError(
                f"task_names must have num_tasks = {num_tasks} names, got {len(names)}"
            )
    if isinstance(optimizer, torch.optim.Optimizer) and lr is not None:
        raise ValueError(
            "pass lr or an optimizer instance, not both (its learning rates are the peaks)"
        )
    peak_lr = _real("lr", 1e-4 if lr is None else lr, 0.0, False)
    if tensorboard and log_dir is None:
        raise ValueError("tensorboard=True needs log_dir")

    ctx = setup(device)
    try:
        immediate = ctx.device.type == "cpu" or on_nonfinite == "skip"
        if check_every is None:
            check_every = 1 if immediate else log_every
        check_every = _positive_int("check_every", check_every)
        if on_nonfinite == "skip" and check_every != 1:
            raise ValueError(
                "on_nonfinite='skip' needs check_every=1 (each step is checked before its update)"
            )
        options = _Options(
            num_tasks=num_tasks,
            steps=steps,
            peak_lr=peak_lr,
            weight_decay=weight_decay,
            betas=(float(betas[0]), float(betas[1])),
            warmup_steps=warmup_steps,
            schedule=lr_schedule,
            min_lr_ratio=min_lr_ratio,
            grad_clip=grad_clip,
            accumulation_steps=accumulation_steps,
            precision=precision,
            compile=compile,
            seed=seed,
            checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
            checkpoint_every=checkpoint_every,
            keep_checkpoints=keep_checkpoints,
            resume=resume,
            log_dir=None if log_dir is None else Path(log_dir),
            log_every=log_every,
            tensorboard=tensorboard,
            progress=progress,
            on_nonfinite=on_nonfinite,
            check_every=check_every,
            names=tuple(names),
            ignore_index=ignore_index,
            ddp_options=dict(ddp_options or {}),
            allow_changes=_allowed_changes(allow_changes),
        )
        return _train(ctx, model, batches, task_loss, rule, estimator, optimizer, options)
    finally:
        ctx.close()


@dataclass(frozen=True)
class _Options:
    """The validated options of :func:`pretrain` (see its docstring)."""

    num_tasks: int
    steps: int
    peak_lr: float
    weight_decay: float
    betas: tuple[float, float]
    warmup_steps: int
    schedule: LrSchedule
    min_lr_ratio: float
    grad_clip: float | None
    accumulation_steps: int
    precision: str
    compile: bool | Mapping[str, Any]
    seed: int | None
    checkpoint_dir: Path | None
    checkpoint_every: int | None
    keep_checkpoints: int | None
    resume: Any
    log_dir: Path | None
    log_every: int
    tensorboard: bool
    progress: bool
    on_nonfinite: str
    check_every: int
    names: tuple[str, ...]
    ignore_index: int
    ddp_options: dict[str, Any]
    allow_changes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _RunConfig:
    """The JSON-able description of a run, stored in checkpoints and ``config.json``."""

    num_tasks: int
    steps: int
    rule: str
    rule_params: dict[str, float]
    estimator: str
    estimator_params: dict[str, float]
    base_lrs: list[float]
    weight_decay: float
    warmup_steps: int
    schedule: str
    min_lr_ratio: float
    grad_clip: float | None
    accumulation_steps: int
    world_size: int
    precision: str
    seed: int | None
    on_nonfinite: str
    ignore_index: int
    task_names: list[str]
    torch_version: str = torch.__version__


_CHANGEABLE: dict[str, str] = {  # pretrain option -> the _RunConfig field it sets
    "steps": "steps",
    "lr": "base_lrs",
    "weight_decay": "weight_decay",
    "warmup_steps": "warmup_steps",
    "lr_schedule": "schedule",
    "min_lr_ratio": "min_lr_ratio",
    "grad_clip": "grad_clip",
    "precision": "precision",
    "seed": "seed",
    "on_nonfinite": "on_nonfinite",
    "ignore_index": "ignore_index",
    "task_names": "task_names",
}
_ALLOWABLE = (*_CHANGEABLE, "betas", "optimizer")
"""Options :func:`pretrain`'s ``allow_changes`` may name ("optimizer": every hyperparameter
of the optimizer's parameter groups)."""


def _allowed_changes(value: Any) -> frozenset[str]:
    if value is True:
        return frozenset(_ALLOWABLE)
    if value is False or value is None:
        return frozenset()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(
            f"allow_changes must be True or a collection of option names, got {value!r}"
        )
    names = list(value)
    unknown = [n for n in names if n not in _ALLOWABLE]
    if unknown:
        raise ValueError(
            f"allow_changes names unknown options {unknown}; allowed: {', '.join(_ALLOWABLE)}"
        )
    return frozenset(names)


def _raise_changes(path: Path, changes: Sequence[tuple[str, str]]) -> None:
    if changes:
        names = tuple(dict.fromkeys(name for name, _ in changes))
        raise ckpt.CheckpointError(
            f"checkpoint {path} was written with other options: "
            f"{'; '.join(text for _, text in changes)}. Resuming would continue on another "
            f"trajectory; to resume with the new values, pass allow_changes={names!r}"
        )


def _check_resume(
    meta: Mapping[str, Any], config: _RunConfig, path: Path, allowed: frozenset[str]
) -> None:
    """Refuse a resume whose run differs from the checkpoint's: always for the options that
    shape the state (tasks, rule, estimator, world size, accumulation), and for the others
    (:data:`_CHANGEABLE`) unless ``allowed`` names them. A field absent from an old
    checkpoint is not compared."""
    saved = meta.get("config")
    if not isinstance(saved, Mapping):
        raise ckpt.CheckpointError(f"checkpoint {path}: meta.json field 'config' is malformed")
    for key in (
        "num_tasks",
        "rule",
        "rule_params",
        "estimator",
        "estimator_params",
        "world_size",
        "accumulation_steps",
    ):
        if saved.get(key) != getattr(config, key):
            raise ckpt.CheckpointError(
                f"checkpoint {path} does not match this run: {key} was {saved.get(key)!r}, "
                f"now {getattr(config, key)!r}"
            )
    changes = []
    for option, key in _CHANGEABLE.items():
        if option == "steps" and config.schedule not in ("cosine", "linear"):
            continue  # the learning rate does not depend on the total steps
        now = getattr(config, key)
        if key in saved and saved[key] != now and option not in allowed:
            changes.append((option, f"{option} was {saved[key]!r}, now {now!r}"))
    _raise_changes(path, changes)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


_NOT_HYPERPARAMETERS = ("params", "lr", "initial_lr")


def _check_optimizer(
    opt: torch.optim.Optimizer, state: Mapping[str, Any], path: Path, allowed: frozenset[str]
) -> None:
    """A hyperparameter of a parameter group (betas, weight decay, ...; not the learning
    rate, which the schedule sets) that differs from the checkpoint's is refused unless
    ``allowed`` names it (or "optimizer"). Reads only: nothing is loaded yet."""
    saved = state.get("param_groups")
    if not isinstance(saved, list) or len(saved) != len(opt.param_groups):
        return  # loading reports the mismatch
    changes = []
    for i, (group, old) in enumerate(zip(opt.param_groups, saved, strict=True)):
        for key, value in group.items():
            if key in _NOT_HYPERPARAMETERS or not isinstance(old, Mapping):
                continue
            if not _same(old.get(key), value) and not {key, "optimizer"} & allowed:
                name = key if key in _ALLOWABLE else "optimizer"
                text = f"optimizer {key} (parameter group {i}) was {old.get(key)!r}, now {value!r}"
                changes.append((name, text))
    _raise_changes(path, changes)


def _load_optimizer(opt: torch.optim.Optimizer, state: Mapping[str, Any], path: Path) -> None:
    """Load the optimizer state, keeping this run's hyperparameters (equal to the
    checkpoint's unless :func:`_check_optimizer` allowed a change)."""
    fresh = [
        {k: v for k, v in g.items() if k not in _NOT_HYPERPARAMETERS} for g in opt.param_groups
    ]
    try:
        opt.load_state_dict(dict(state))
    except (ValueError, KeyError, RuntimeError) as err:
        raise ckpt.CheckpointError(
            f"checkpoint {path} does not match the optimizer: {err}"
        ) from err
    for group, new in zip(opt.param_groups, fresh, strict=True):
        group.update(new)


def _train(
    ctx: Context,
    model: nn.Module,
    batches: Any,
    task_loss: TaskLoss,
    rule: WeightRule,
    estimator: LossEstimator,
    optimizer: Any,
    options: _Options,
) -> PretrainResult:
    o = options
    num_tasks, steps, K = o.num_tasks, o.steps, o.accumulation_steps
    warmup_steps, schedule, min_lr_ratio, grad_clip = (
        o.warmup_steps,
        o.schedule,
        o.min_lr_ratio,
        o.grad_clip,
    )
    checkpoint_dir, checkpoint_every, log_dir, log_every = (
        o.checkpoint_dir,
        o.checkpoint_every,
        o.log_dir,
        o.log_every,
    )
    check_every, on_nonfinite, names, seed = o.check_every, o.on_nonfinite, list(o.names), o.seed
    device, M = ctx.device, num_tasks
    autocast_to = autocast_dtype(o.precision, device)
    raw_model = model.to(device)
    raw_model.train()
    if optimizer is None:
        opt = adamw(
            raw_model, lr=o.peak_lr, weight_decay=o.weight_decay, betas=o.betas, device=device
        )
    elif isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
    elif callable(optimizer):
        opt = optimizer(raw_model)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer(model) must return a torch.optim.Optimizer, got {type(opt).__name__}"
            )
    else:
        raise TypeError(
            f"optimizer must be None, a torch.optim.Optimizer or model -> optimizer, got {optimizer!r}"
        )
    base_lrs = [float(g["lr"]) for g in opt.param_groups]
    config = _RunConfig(
        num_tasks=M,
        steps=steps,
        rule=rule.name,
        rule_params=dict(rule.params),
        estimator=estimator.name,
        estimator_params=dict(estimator.params),
        base_lrs=base_lrs,
        weight_decay=o.weight_decay,
        warmup_steps=warmup_steps,
        schedule=schedule if isinstance(schedule, str) else "callable",
        min_lr_ratio=min_lr_ratio,
        grad_clip=grad_clip,
        accumulation_steps=K,
        world_size=ctx.world_size,
        precision="bf16" if autocast_to is not None else "fp32",
        seed=seed,
        on_nonfinite=on_nonfinite,
        ignore_index=o.ignore_index,
        task_names=names,
    )

    if ctx.is_main and checkpoint_dir is not None:  # what a killed writer left behind
        ckpt.clean_stale(checkpoint_dir)

    # ---- state: fresh or from a checkpoint
    rule_state = rule.init(M)
    est_state = estimator.init(M)
    running = _running_init(M, device)
    history = {k: list(v) for k, v in empty_history(M).items()}
    step, skipped, position, last_log_step = 0, 0, 0, 0
    immediate = check_every == 1
    loaded: ckpt.Checkpoint | None = None
    if o.resume is not None and o.resume is not False:
        source = checkpoint_dir if o.resume is True else Path(o.resume)
        assert source is not None
        loaded = ckpt.load_checkpoint(source)
        _check_resume(loaded.meta, config, loaded.path, o.allow_changes)
        # every field is checked before the model or the optimizer is touched
        meta, tensors, where = loaded.meta, loaded.tensors, loaded.path
        step = ckpt.meta_int(meta, "step", where)
        skipped = ckpt.meta_int(meta, "skipped_steps", where, maximum=step)
        position = ckpt.meta_int(meta, "position", where, step * K, step * K + K - 1)
        last_log_step = ckpt.meta_int(meta, "last_log_step", where, maximum=step)
        rule_state = _state_from_parts("rule_state", rule_state, meta, tensors, device, where)
        est_state = _state_from_parts("estimator_state", est_state, meta, tensors, device, where)
        running = _state_from_parts("running", running, meta, tensors, device, where)
        for key in history:
            if f"history.{key}" not in tensors:
                raise ckpt.CheckpointError(f"checkpoint {where} has no tensor 'history.{key}'")
            history[key] = list(tensors[f"history.{key}"].numpy())
        rng = _rng_from(meta, tensors, ctx.rank, where)
        _check_optimizer(opt, loaded.optimizer_state, where, o.allow_changes)
        ckpt.load_model_weights(raw_model, loaded)
        _load_optimizer(opt, loaded.optimizer_state, where)
    if seed is not None:  # also on resume: data replays start from the same RNG state
        torch.manual_seed(seed + ctx.rank)
    stream = BatchStream(batches, position)
    if loaded is not None:  # after the replay, which may have drawn random numbers
        _set_rng_state(rng, device)

    train_model: nn.Module = raw_model
    if o.compile:
        train_model = torch.compile(
            raw_model, **(o.compile if isinstance(o.compile, Mapping) else {})
        )
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        train_model = DDP(train_model, device_ids=ids, **o.ddp_options)
    params = [p for group in opt.param_groups for p in group["params"]]

    # ---- outputs
    log: JsonlLog | None = None
    writer: Any = None
    if ctx.is_main and log_dir is not None:
        log = JsonlLog(
            log_dir / "log.jsonl", keep_through_step=step if loaded is not None else None
        )
        write_json_atomic(log_dir / "config.json", asdict(config))
        if o.tensorboard:
            writer = tensorboard_writer(log_dir)
    bar: Any = None
    if ctx.is_main and o.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
    last_checkpoint = loaded.path if loaded is not None else None

    def check_faults(
        fault: Sequence[float], means: Sequence[float] | None = None, origin: str = ""
    ) -> None:
        first_step, code, task = (int(v) for v in fault)
        if first_step < 0 or code == 0:
            return
        message = _fault_message(code, first_step, task, names, means, origin)
        if code in (_FAULT_NONFINITE, _FAULT_GRADIENT):
            raise FloatingPointError(message)
        raise ValueError(message)

    def save(at_step: int) -> Path | None:
        """Collective: every rank's RNG state goes to rank 0, which writes the checkpoint."""
        nonlocal last_checkpoint
        check_faults(running.fault.tolist())
        damaged = _nonfinite_parameters(raw_model)
        if damaged:
            raise FloatingPointError(
                f"refusing to write the checkpoint of step {at_step}: non-finite values in "
                f"{', '.join(damaged[:5])}{' ...' if len(damaged) > 5 else ''}"
            )
        rngs = ctx.gather_to_main(_rng_state(device))
        path = None
        if ctx.is_main and checkpoint_dir is not None:
            assert rngs is not None
            meta: dict[str, Any] = {
                "config": asdict(config),
                "skipped_steps": skipped,
                "position": stream.position,
                "last_log_step": last_log_step,
            }
            tensors: dict[str, torch.Tensor] = {}
            for prefix, state in (
                ("rule_state", rule_state),
                ("estimator_state", est_state),
                ("running", running),
            ):
                meta[prefix], parts = _state_parts(prefix, state)
                tensors.update(parts)
            for key, array in _history_arrays(history, M).items():
                tensors[f"history.{key}"] = torch.from_numpy(array)
            meta["rng"] = []
            for r, state in enumerate(rngs):
                meta["rng"].append({"python": state["python"], "numpy": state["numpy"]})
                tensors[f"rng.{r}.torch"] = state["torch"]
                if "cuda" in state:
                    tensors[f"rng.{r}.cuda"] = state["cuda"]
            path = ckpt.write_checkpoint(
                checkpoint_dir,
                step=at_step,
                model=raw_model,
                optimizer_state=opt.state_dict(),
                tensors=tensors,
                meta=meta,
                keep=o.keep_checkpoints,
            )
            last_checkpoint = path
        ctx.barrier()
        return path

    def autocast() -> Any:
        if autocast_to is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=autocast_to)

    diagnose = immediate and on_nonfinite == "raise"
    stops = _StopRequest() if checkpoint_dir is not None else None
    start_time = time.perf_counter()
    interval_start, interval_tokens = start_time, 0
    stopped_early = False
    flags = {False: torch.zeros(1, device=device), True: torch.ones(1, device=device)}
    with stops if stops is not None else contextlib.nullcontext():
        while step < steps:
            factor = lr_factor(
                step,
                steps=steps,
                warmup_steps=warmup_steps,
                lr_schedule=schedule,
                min_lr_ratio=min_lr_ratio,
            )
            for group, base in zip(opt.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor
            skip_step = agreed_stop = False
            step_batches: list[Any] = []  # kept to name the task of a gradient fault
            step_sums: torch.Tensor | None = None
            step_counts: torch.Tensor | None = None
            for micro in range(K):
                batch = stream.next()
                if batch is None:
                    stopped_early = True
                    break
                if skip_step:
                    continue  # still draw the step's batches: the data position stays aligned
                batch = move_to_device(batch, device)
                if diagnose:
                    step_batches.append(batch)
                if isinstance(batch, Mapping) and isinstance(batch.get("input_ids"), torch.Tensor):
                    interval_tokens += batch["input_ids"].numel() * ctx.world_size
                deferred_sync = ctx.distributed and micro < K - 1
                with train_model.no_sync() if deferred_sync else contextlib.nullcontext():  # type: ignore[operator]
                    with autocast():
                        values, ids = _call_task_loss(task_loss, train_model, batch, step + 1)
                    local_sums, local_counts, invalid = task_sums(
                        values, ids, M, ignore_index=o.ignore_index
                    )
                    # one all-reduce: per-task sums and counts, invalid ids, stop requests
                    asked = stops is not None and stops.signum is not None
                    dtype = local_sums.dtype
                    stats = torch.cat(
                        [
                            local_sums.detach(),
                            local_counts,
                            invalid.to(dtype).view(1),
                            flags[asked].to(dtype),
                        ]
                    )
                    ctx.all_reduce_(stats)
                    g_sums, g_counts = stats[:M], stats[M : 2 * M]
                    if immediate:  # read back now (free on CPU): stop before the update
                        host = stats.tolist()
                        agreed_stop = host[-1] > 0
                        code, task = _fault_code(host, M)
                        if code == _FAULT_NONFINITE and on_nonfinite == "skip":
                            skip_step = True
                            opt.zero_grad(set_to_none=True)
                            continue
                        if code:
                            sums, counts = host[:M], host[M : 2 * M]
                            seen = [v / max(n, 1.0) for v, n in zip(sums, counts, strict=True)]
                            check_faults([step + 1, code, task], seen)
                    else:  # remember the first fault on the device; read it at the next check
                        running = running._replace(
                            fault=_record_fault(running.fault, stats, M, step + 1),
                            stop=running.stop + stats[-1],
                        )
                        g_sums = torch.nan_to_num(g_sums, nan=0.0, posinf=0.0, neginf=0.0)
                    step_sums = g_sums if step_sums is None else step_sums + g_sums
                    step_counts = g_counts if step_counts is None else step_counts + g_counts
                    means = step_sums / step_counts.clamp_min(1.0)
                    estimate, est_next = estimator.update(means, step_counts, est_state)
                    w_raw, rule_next = rule.update(estimate, rule_state)
                    w = present_weights(w_raw, g_counts)
                    scale = ctx.world_size / K
                    objective = (w * local_sums / g_counts.clamp_min(1.0)).sum() * scale
                    objective.backward()
            if stopped_early:
                warnings.warn(
                    f"batches ran out after {stream.position} micro-batches; stopping after "
                    f"step {step} of {steps}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                opt.zero_grad(set_to_none=True)
                break
            step += 1
            halt: torch.Tensor | None = None
            if not skip_step:  # the gradient check: the norm clipping computes anyway
                norm = _gradient_norm(params, grad_clip)
                if immediate:  # read back now (free on CPU): stop or skip before the update
                    if not math.isfinite(float(norm)):
                        opt.zero_grad(set_to_none=True)
                        if on_nonfinite == "raise":
                            origin = _gradient_origin(
                                raw_model, step_batches, task_loss, M, autocast
                            )
                            check_faults([step, _FAULT_GRADIENT, -1], origin=origin)
                        skip_step = True
                else:  # remember it on the device; from the first fault on, updates are skipped
                    recorded = _record_gradient_fault(running.fault, norm, step)
                    running = running._replace(fault=recorded)
                    halt = recorded[0] >= 0
            if skip_step:
                skipped += 1
            else:
                grad_norm = norm.to(running.grad_norm.device, running.grad_norm.dtype)
                _optimizer_step(opt, halt)
                opt.zero_grad(set_to_none=True)
                est_state, rule_state = est_next, rule_next
                w_step = w if K == 1 else present_weights(w_raw, step_counts)
                step_loss = (w_step * step_sums / step_counts.clamp_min(1.0)).sum()
                running = running._replace(
                    weight_sum=running.weight_sum + w_step,
                    applied_steps=running.applied_steps + 1,
                    interval_sums=running.interval_sums + step_sums,
                    interval_counts=running.interval_counts + step_counts,
                    interval_weights=running.interval_weights + w_step,
                    interval_loss=running.interval_loss + step_loss,
                    interval_steps=running.interval_steps + 1,
                    grad_norm=grad_norm,
                )
            if bar is not None:
                bar.update(1)

            # ---- checks and logs: one host read per log_every (or check_every) steps
            logging_now = step % log_every == 0 or step == steps
            if logging_now or step % check_every == 0:
                acc = running.interval_loss.dtype
                packed = torch.cat(
                    [
                        running.interval_sums,
                        running.interval_counts,
                        running.interval_weights,
                        running.interval_loss.view(1),
                        running.grad_norm.view(1).to(acc),
                        running.stop.view(1),
                        running.fault.to(acc),
                    ]
                ).tolist()
                check_faults(packed[3 * M + 3 :])
                agreed_stop = agreed_stop or packed[3 * M + 2] > 0
            if logging_now:
                now = time.perf_counter()
                elapsed = max(now - interval_start, 1e-12)
                entry = _log_entry(packed, M, running.interval_steps, step, skipped)
                entry["lr"] = base_lrs[0] * factor
                entry["items_per_second"] = float(np.sum(entry["counts"])) / elapsed
                entry["tokens_per_second"] = interval_tokens / elapsed if interval_tokens else None
                entry["steps_per_second"] = (step - last_log_step) / elapsed
                entry["elapsed_seconds"] = now - start_time
                for key in history:
                    history[key].append(entry[key])
                if log is not None:
                    log.write(entry)
                if writer is not None:
                    tensorboard_write(writer, entry, names)
                if bar is not None:
                    bar.set_postfix(_postfix(entry, names), refresh=False)
                zeros = torch.zeros_like(running.interval_sums)
                running = running._replace(
                    interval_sums=zeros,
                    interval_counts=zeros,
                    interval_weights=zeros,
                    interval_loss=torch.zeros_like(running.interval_loss),
                    interval_steps=0,
                )
                interval_start, interval_tokens, last_log_step = now, 0, step

            # ---- interruption (all ranks agree on the step) and periodic checkpoints
            if not ctx.distributed:
                agreed_stop = stops is not None and stops.signum is not None
            if agreed_stop and stops is not None:
                path = save(step)
                if bar is not None:
                    bar.close()
                if log is not None:
                    log.close()
                message = f"interrupted after step {step}; checkpoint written to {path or last_checkpoint}"
                if stops.signum == signal.SIGTERM:
                    print(f"deep.pretrain: {message}", file=sys.stderr, flush=True)
                    raise SystemExit(128 + signal.SIGTERM)
                raise KeyboardInterrupt(message)
            if checkpoint_every is not None and step % checkpoint_every == 0 and step < steps:
                save(step)

    # ---- the end
    fault = running.fault.tolist()
    check_faults(fault)
    if checkpoint_dir is not None:
        save(step)
    if bar is not None:
        bar.close()
    mean_weights = (running.weight_sum / max(running.applied_steps, 1)).cpu().numpy()
    summary = {
        "task_names": names,
        "mean_weights": mean_weights,
        "applied_steps": running.applied_steps,
        "skipped_steps": skipped,
        "rule": rule.name,
        "rule_params": dict(rule.params),
    }
    for folder in (log_dir, checkpoint_dir):  # the time-averaged weights, as JSON
        if ctx.is_main and folder is not None:
            write_json_atomic(folder / "mean_weights.json", summary)
    if log is not None:
        log.close()
    if writer is not None:
        writer.close()
    return PretrainResult(
        model=raw_model,
        history=_history_arrays(history, M),
        mean_weights=mean_weights,
        steps=step,
        skipped_steps=skipped,
        rule_state=rule_state,
        estimator_state=est_state,
        checkpoint=last_checkpoint if checkpoint_dir is not None else None,
        log_path=None if log_dir is None else log_dir / "log.jsonl",
        wall_seconds=time.perf_counter() - start_time,
        stopped_early=stopped_early,
        config=asdict(config),
    )
