"""PyTorch engine for task-robust (minimax) pre-training.

``deep.task_means`` turns per-item losses and task ids into per-task means with one
scatter; ``deep.pretrain`` trains any ``nn.Module`` on ``sum_i w_i L_i`` with the weights of
a :mod:`minimax_core.weights` rule (AMP, accumulation, torchrun/DDP, atomic checkpoints,
JSONL logs); ``deep.plot_history`` draws a run. The rule wrappers (``excess_loss``,
``mix_uniform``, ``group_size_adjusted``, ``chain``) and the loss estimator ``ema`` are
framework-agnostic and live beside the rules in :mod:`minimax_core.weights`.

Example (a transformers MLM whose masked tokens fall into ``M`` tasks)::

    import deep, minimax_core as mc

    def task_loss(model, batch):  # one forward: per-token losses and their task ids
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return deep.per_token_cross_entropy(logits, batch["labels"], batch["token_task"])

    result = deep.pretrain(model, loader, num_tasks=M, task_loss=task_loss,
                           rule=mc.weights.softmax(0.5), steps=10_000, lr=1e-4, warmup_steps=500,
                           checkpoint_dir="ckpt", checkpoint_every=1000, log_dir="logs")
    deep.plot_history("logs", "history.png")

The same call with ``rule=mc.weights.uniform()`` is the average-risk baseline. Under
``torchrun --nproc_per_node N`` the call is unchanged (DDP, rank 0 writes); resume with
``resume=True``.

The engine's modules: :mod:`~deep.objective` (per-task means, the weighted objective),
:mod:`~deep.pretrain` (the loop), :mod:`~deep.config` (its validated options),
:mod:`~deep.optim` (AdamW grouping, learning-rate factor, precision; shared with
fine-tuning), :mod:`~deep.faults`, :mod:`~deep.run_state`, :mod:`~deep.checkpoint`,
:mod:`~deep.data`, :mod:`~deep.distributed`, :mod:`~deep.logs`, :mod:`~deep.plotting`,
:mod:`~deep.io`, :mod:`~deep.hf` (the Hugging Face ``Trainer``).

Names and submodules load on first use (PEP 562): ``import deep`` imports neither torch nor
scipy, matplotlib, cvxpy or spaCy; ``deep.io``, ``deep.logs`` and ``deep.plotting`` import
no torch; the first use of a torch-based name imports torch. :mod:`minimax_core` never
imports torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the lazy names below, for type checkers and IDEs
    from . import (
        checkpoint,
        config,
        data,
        distributed,
        faults,
        io,
        logs,
        objective,
        optim,
        plotting,
        run_state,
    )
    from .checkpoint import CheckpointError, find_latest, load_checkpoint
    from .config import PretrainConfig
    from .logs import read_log
    from .objective import (
        IGNORE_INDEX,
        per_token_cross_entropy,
        present_weights,
        task_means,
        task_sums,
    )
    from .optim import lr_factor
    from .plotting import plot_history
    from .pretrain import PretrainResult, pretrain

_NAMES = {  # public name -> the submodule that defines it
    "pretrain": "pretrain",
    "PretrainResult": "pretrain",
    "PretrainConfig": "config",
    "task_means": "objective",
    "task_sums": "objective",
    "per_token_cross_entropy": "objective",
    "present_weights": "objective",
    "IGNORE_INDEX": "objective",
    "lr_factor": "optim",
    "plot_history": "plotting",
    "load_checkpoint": "checkpoint",
    "find_latest": "checkpoint",
    "CheckpointError": "checkpoint",
    "read_log": "logs",
}
_SUBMODULES = (
    "checkpoint",
    "config",
    "data",
    "distributed",
    "faults",
    "io",
    "logs",
    "objective",
    "optim",
    "plotting",
    "run_state",
)

__all__ = [
    "IGNORE_INDEX",
    "CheckpointError",
    "PretrainConfig",
    "PretrainResult",
    "checkpoint",
    "config",
    "data",
    "distributed",
    "faults",
    "find_latest",
    "io",
    "load_checkpoint",
    "logs",
    "lr_factor",
    "objective",
    "optim",
    "per_token_cross_entropy",
    "plot_history",
    "plotting",
    "present_weights",
    "pretrain",
    "read_log",
    "run_state",
    "task_means",
    "task_sums",
]


def __getattr__(name: str) -> Any:
    """Load a public name or an engine submodule on first use (PEP 562)."""
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """``deep`` itself. The first import of the submodule ``deep.pretrain`` makes Python set
    the package attribute ``pretrain`` to that module; this keeps the name for the function
    (the submodule stays ``sys.modules["deep.pretrain"]``, and ``from deep.pretrain import
    ...`` works as ever), as the eager ``from .pretrain import pretrain`` used to."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _NAMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
