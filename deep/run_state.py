"""The state of a :func:`deep.pretrain` run, to tensors and back, and the checks on resume.

A checkpoint (:mod:`deep.checkpoint`) holds, besides the model and the optimizer:

- the weight rule's and the loss estimator's states (NamedTuples of numbers, ``None``,
  tensors and numpy arrays): :func:`state_to_tensors` splits one into JSON fields and named
  tensors, :func:`state_from_tensors` puts it back, checking every field against a template
  (kind, and a tensor's shape and dtype) so that a malformed checkpoint is a
  :class:`~deep.checkpoint.CheckpointError` naming the field, never a crash later;
- the loop's device-side running sums (:class:`Running`), stored the same way;
- each rank's Python, numpy, torch (and CUDA) RNG states (:func:`rng_state`);
- the :class:`~deep.config.RunRecord` of the run, which :func:`check_resume` compares with
  the new run's before anything is loaded.

The same two functions save and restore the rule state of :mod:`deep.hf`'s Trainer callback.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import ALLOWABLE_CHANGES, CHANGEABLE, RunRecord

__all__ = [
    "Restored",
    "Running",
    "check_optimizer",
    "check_resume",
    "checkpoint_payload",
    "load_optimizer",
    "restore",
    "rng_from_checkpoint",
    "rng_state",
    "running_init",
    "set_rng_state",
    "state_from_tensors",
    "state_to_tensors",
]


# --------------------------------------------------------------------------- running sums


class Running(NamedTuple):
    """Device-side running sums of the loop (no host sync until they are read at a logging
    step)."""

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


def running_init(num_tasks: int, device: torch.device) -> Running:
    """Zero sums (float64; float32 on MPS, which has no float64), no fault, no stop."""
    acc = torch.float32 if device.type == "mps" else torch.float64
    zeros = torch.zeros(num_tasks, dtype=acc, device=device)
    return Running(
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


# --------------------------------------------------------------------------- states <-> tensors


def state_to_tensors(prefix: str, state: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A NamedTuple state as JSON fields and named tensors (``"{prefix}.{field}"``)."""
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


def state_from_tensors(
    prefix: str,
    template: Any,
    meta: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    device: torch.device,
    path: Path,
) -> Any:
    """The inverse of :func:`state_to_tensors`; each field must have the template's kind (and
    a tensor its shape and dtype), else a :class:`deep.checkpoint.CheckpointError` names it."""
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


# --------------------------------------------------------------------------- RNG states


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's Python, numpy (legacy global), torch CPU and, on CUDA, device RNG
    states, JSON-able except the torch ones (byte tensors)."""
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


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore the states of :func:`rng_state`."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, np_keys, pos, has_gauss, cached = state["numpy"]
    np_state = (name, np.asarray(np_keys, dtype=np.uint32), pos, has_gauss, cached)
    np.random.set_state(np_state)  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def rng_from_checkpoint(
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


# --------------------------------------------------------------------------- checks on resume


def _raise_changes(path: Path, changes: Sequence[tuple[str, str]]) -> None:
    if changes:
        names = tuple(dict.fromkeys(name for name, _ in changes))
        raise ckpt.CheckpointError(
            f"checkpoint {path} was written with other options: "
            f"{'; '.join(text for _, text in changes)}. Resuming would continue on another "
            f"trajectory; to resume with the new values, pass allow_changes={names!r}"
        )


def check_resume(
    meta: Mapping[str, Any], record: RunRecord, path: Path, allowed: frozenset[str]
) -> None:
    """Refuse a resume whose run differs from the checkpoint's: always for the options that
    shape the state (tasks, rule, estimator, world size, accumulation), and for the others
    (:data:`deep.config.CHANGEABLE`) unless ``allowed`` names them. A field absent from an
    old checkpoint is not compared."""
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
        if saved.get(key) != getattr(record, key):
            raise ckpt.CheckpointError(
                f"checkpoint {path} does not match this run: {key} was {saved.get(key)!r}, "
                f"now {getattr(record, key)!r}"
            )
    changes = []
    for option, key in CHANGEABLE.items():
        if option == "steps" and record.schedule not in ("cosine", "linear"):
            continue  # the learning rate does not depend on the total steps
        now = getattr(record, key)
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


def check_optimizer(
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
                name = key if key in ALLOWABLE_CHANGES else "optimizer"
                text = f"optimizer {key} (parameter group {i}) was {old.get(key)!r}, now {value!r}"
                changes.append((name, text))
    _raise_changes(path, changes)


def load_optimizer(opt: torch.optim.Optimizer, state: Mapping[str, Any], path: Path) -> None:
    """Load the optimizer state, keeping this run's hyperparameters (equal to the
    checkpoint's unless :func:`check_optimizer` allowed a change)."""
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


# --------------------------------------------------------------------------- save and restore


class Restored(NamedTuple):
    """A run's loop state read back from a checkpoint (see :func:`restore`)."""

    step: int
    skipped: int
    position: int
    last_log_step: int
    rule_state: Any
    estimator_state: Any
    running: Running
    history: dict[str, list[Any]]
    rng: dict[str, Any]


def restore(
    loaded: ckpt.Checkpoint,
    *,
    rule_state: Any,
    estimator_state: Any,
    running: Running,
    history_keys: Sequence[str],
    accumulation_steps: int,
    rank: int,
    device: torch.device,
) -> Restored:
    """Every field of ``loaded`` the loop needs, checked against the fresh states given as
    templates (a malformed field is a :class:`deep.checkpoint.CheckpointError`); nothing is
    modified, so a failure leaves the model and the optimizer untouched."""
    meta, tensors, where, K = loaded.meta, loaded.tensors, loaded.path, accumulation_steps
    step = ckpt.meta_int(meta, "step", where)
    skipped = ckpt.meta_int(meta, "skipped_steps", where, maximum=step)
    position = ckpt.meta_int(meta, "position", where, step * K, step * K + K - 1)
    last_log_step = ckpt.meta_int(meta, "last_log_step", where, maximum=step)
    rule_state = state_from_tensors("rule_state", rule_state, meta, tensors, device, where)
    estimator_state = state_from_tensors(
        "estimator_state", estimator_state, meta, tensors, device, where
    )
    running = state_from_tensors("running", running, meta, tensors, device, where)
    history: dict[str, list[Any]] = {}
    for key in history_keys:
        if f"history.{key}" not in tensors:
            raise ckpt.CheckpointError(f"checkpoint {where} has no tensor 'history.{key}'")
        history[key] = list(tensors[f"history.{key}"].numpy())
    rng = rng_from_checkpoint(meta, tensors, rank, where)
    return Restored(
        step, skipped, position, last_log_step, rule_state, estimator_state, running, history, rng
    )


def checkpoint_payload(
    record: RunRecord,
    *,
    skipped: int,
    position: int,
    last_log_step: int,
    states: Mapping[str, Any],
    history: Mapping[str, np.ndarray],
    rngs: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``meta.json`` fields and tensors of a checkpoint: the run record, loop counters,
    ``states`` (prefix -> NamedTuple state), the history arrays and every rank's RNG
    states (for :func:`deep.checkpoint.write_checkpoint`)."""
    meta: dict[str, Any] = {
        "config": asdict(record),
        "skipped_steps": skipped,
        "position": position,
        "last_log_step": last_log_step,
    }
    tensors: dict[str, torch.Tensor] = {}
    for prefix, state in states.items():
        meta[prefix], parts = state_to_tensors(prefix, state)
        tensors.update(parts)
    for key, array in history.items():
        tensors[f"history.{key}"] = torch.from_numpy(array)
    meta["rng"] = []
    for r, state in enumerate(rngs):
        meta["rng"].append({"python": state["python"], "numpy": state["numpy"]})
        tensors[f"rng.{r}.torch"] = state["torch"]
        if "cuda" in state:
            tensors[f"rng.{r}.cuda"] = state["cuda"]
    return meta, tensors
