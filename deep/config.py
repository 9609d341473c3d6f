"""The configuration of a :func:`deep.pretrain` run, validated once.

- :class:`PretrainConfig`: the hyperparameters and run options of ``pretrain``'s keyword
  arguments (every field checked and normalised on construction; a bad value is an error
  naming the parameter and its allowed range);
- :class:`RunRecord`: the JSON-able description of a run written to ``config.json`` and to
  every checkpoint's ``meta.json`` (checkpoint format 2), which a resume compares with the
  new run;
- :data:`CHANGEABLE` / :data:`ALLOWABLE_CHANGES`: the options ``allow_changes`` may name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .objective import IGNORE_INDEX
from .optim import LrSchedule, check_lr_schedule, check_precision

__all__ = [
    "ALLOWABLE_CHANGES",
    "CHANGEABLE",
    "PretrainConfig",
    "RunRecord",
    "check_positive_int",
    "check_real",
]

CHANGEABLE: dict[str, str] = {  # pretrain option -> the RunRecord field it sets
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
"""The options a resume may change when ``allow_changes`` names them, and the
:class:`RunRecord` field each one sets."""
ALLOWABLE_CHANGES = (*CHANGEABLE, "betas", "optimizer")
"""Options :func:`deep.pretrain`'s ``allow_changes`` may name ("optimizer": every
hyperparameter of the optimizer's parameter groups)."""


# --------------------------------------------------------------------------- validators


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_real(name: str, value: Any, low: float, allow_low: bool, high: float = math.inf) -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` if not
    ``allow_low``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = math.isfinite(value) and (value >= low if allow_low else value > low) and value <= high
    if not ok:
        bound = f">= {low}" if allow_low else f"> {low}"
        upper = "" if math.isinf(high) else f" and <= {high}"
        raise ValueError(f"{name} must be a finite number {bound}{upper}, got {value!r}")
    return value


def _allowed_changes(value: Any) -> frozenset[str]:
    if value is True:
        return frozenset(ALLOWABLE_CHANGES)
    if value is False or value is None:
        return frozenset()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(
            f"allow_changes must be True or a collection of option names, got {value!r}"
        )
    names = list(value)
    unknown = [n for n in names if n not in ALLOWABLE_CHANGES]
    if unknown:
        raise ValueError(
            f"allow_changes names unknown options {unknown}; allowed: "
            f"{', '.join(ALLOWABLE_CHANGES)}"
        )
    return frozenset(names)


# --------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class PretrainConfig:
    """The validated options of :func:`deep.pretrain` (see its docstring for each one).

    Construction checks and normalises every field: integers become ``int``, reals
    ``float``, folders :class:`~pathlib.Path`, ``task_names`` a tuple of ``num_tasks`` names
    (default ``task0``, ...), ``allow_changes`` a frozenset (``True``: every name of
    :data:`ALLOWABLE_CHANGES`). ``lr`` is the peak learning rate of the default optimizer.
    ``check_every=None`` is resolved on the device by :meth:`on_device`.
    """

    num_tasks: int
    steps: int
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    lr_schedule: LrSchedule = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    accumulation_steps: int = 1
    precision: str = "auto"
    compile: bool | Mapping[str, Any] = False
    seed: int | None = 0
    checkpoint_dir: Path | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int | None = 2
    resume: Path | bool | None = None
    log_dir: Path | None = None
    log_every: int = 10
    tensorboard: bool = False
    progress: bool = True
    on_nonfinite: str = "raise"
    check_every: int | None = None
    task_names: tuple[str, ...] | None = None
    ignore_index: int = IGNORE_INDEX
    ddp_options: Mapping[str, Any] = field(default_factory=dict)
    allow_changes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("num_tasks", check_positive_int("num_tasks", self.num_tasks))
        put("steps", check_positive_int("steps", self.steps))
        put("weight_decay", check_real("weight_decay", self.weight_decay, 0.0, True))
        put("warmup_steps", check_positive_int("warmup_steps", self.warmup_steps, 0))
        if self.warmup_steps > self.steps:
            raise ValueError(
                f"warmup_steps must be <= steps = {self.steps}, got {self.warmup_steps}"
            )
        check_lr_schedule(self.lr_schedule)
        put("min_lr_ratio", check_real("min_lr_ratio", self.min_lr_ratio, 0.0, True, 1.0))
        if self.grad_clip is not None:
            put("grad_clip", check_real("grad_clip", self.grad_clip, 0.0, False))
        put("accumulation_steps", check_positive_int("accumulation_steps", self.accumulation_steps))
        put("log_every", check_positive_int("log_every", self.log_every))
        if self.on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {self.on_nonfinite!r}")
        if self.checkpoint_every is not None:
            put("checkpoint_every", check_positive_int("checkpoint_every", self.checkpoint_every))
            if self.checkpoint_dir is None:
                raise ValueError("checkpoint_every needs checkpoint_dir")
        if self.keep_checkpoints is not None:
            put("keep_checkpoints", check_positive_int("keep_checkpoints", self.keep_checkpoints))
        if self.seed is not None:
            put("seed", check_positive_int("seed", self.seed, 0))
        if self.resume is True and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir (or pass the checkpoint's path)")
        if self.task_names is None:
            put("task_names", tuple(f"task{i}" for i in range(self.num_tasks)))
        else:
            names = tuple(str(n) for n in self.task_names)
            if len(names) != self.num_tasks:
                raise ValueError(
                    f"task_names must have num_tasks = {self.num_tasks} names, got {len(names)}"
                )
            put("task_names", names)
        put("lr", check_real("lr", self.lr, 0.0, False))
        if self.tensorboard and self.log_dir is None:
            raise ValueError("tensorboard=True needs log_dir")
        put("precision", check_precision(self.precision))
        put("betas", (float(self.betas[0]), float(self.betas[1])))
        for name in ("checkpoint_dir", "log_dir"):
            value = getattr(self, name)
            put(name, None if value is None else Path(value))
        if self.resume is not None and not isinstance(self.resume, bool):
            put("resume", Path(self.resume))
        if self.check_every is not None:
            put("check_every", check_positive_int("check_every", self.check_every))
            if self.on_nonfinite == "skip" and self.check_every != 1:
                raise ValueError(
                    "on_nonfinite='skip' needs check_every=1 (each step is checked before its "
                    "update)"
                )
        put("ddp_options", dict(self.ddp_options or {}))
        put("allow_changes", _allowed_changes(self.allow_changes))

    @property
    def resume_from(self) -> Path | None:
        """The checkpoint (or folder of them) to resume from, or ``None`` for a fresh run."""
        if self.resume is None or self.resume is False:
            return None
        return self.checkpoint_dir if self.resume is True else Path(self.resume)  # type: ignore[arg-type]

    def on_device(self, device: torch.device) -> PretrainConfig:
        """This config with ``check_every`` resolved: every step on CPU and with
        ``on_nonfinite="skip"`` (free there, and needed to skip before the update), else every
        ``log_every`` steps (so that accelerators never wait)."""
        if self.check_every is not None:
            return self
        immediate = device.type == "cpu" or self.on_nonfinite == "skip"
        return replace(self, check_every=1 if immediate else self.log_every)


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class RunRecord:
    """The JSON-able description of a run, stored in checkpoints and ``config.json``.

    Its field names are those of checkpoint format 2 (``schedule`` is the learning-rate
    schedule, ``"callable"`` for a function), so that checkpoints written before and after
    the ``lr_schedule`` rename resume alike."""

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

    @classmethod
    def of(
        cls,
        config: PretrainConfig,
        *,
        rule: Any,
        estimator: Any,
        base_lrs: Sequence[float],
        world_size: int,
        autocast_to: torch.dtype | None,
    ) -> RunRecord:
        """The record of a run with ``config``, its rule and estimator, the optimizer's peak
        learning rates, the world size and the autocast dtype in use."""
        schedule = config.lr_schedule
        return cls(
            num_tasks=config.num_tasks,
            steps=config.steps,
            rule=rule.name,
            rule_params=dict(rule.params),
            estimator=estimator.name,
            estimator_params=dict(estimator.params),
            base_lrs=list(base_lrs),
            weight_decay=config.weight_decay,
            warmup_steps=config.warmup_steps,
            schedule=schedule if isinstance(schedule, str) else "callable",
            min_lr_ratio=config.min_lr_ratio,
            grad_clip=config.grad_clip,
            accumulation_steps=config.accumulation_steps,
            world_size=world_size,
            precision="bf16" if autocast_to is not None else "fp32",
            seed=config.seed,
            on_nonfinite=config.on_nonfinite,
            ignore_index=config.ignore_index,
            task_names=list(config.task_names or ()),
        )
