"""PyTorch engine for task-robust (minimax) pre-training.

``deep.task_means`` turns per-item losses and task ids into per-task means with one
scatter; ``deep.pretrain`` trains any ``nn.Module`` on ``sum_i w_i L_i`` with the weights of
a :mod:`minimax_core.weights` rule (AMP, accumulation, torchrun/DDP, atomic checkpoints,
JSONL logs); ``deep.plot_history`` draws a run. Composable pieces: :func:`ema` (running loss
estimate), :func:`group_size_adjusted`, :func:`excess_loss`, :func:`mix_uniform`.

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

Importing ``deep`` imports torch; :mod:`minimax_core` never does.
"""

from __future__ import annotations

from . import checkpoint, data, distributed, logs, objective
from .checkpoint import CheckpointError, find_latest, load_checkpoint
from .logs import read_log
from .objective import (
    IGNORE_INDEX,
    EstimateState,
    LossEstimator,
    ema,
    excess_loss,
    group_size_adjusted,
    mix_uniform,
    per_token_cross_entropy,
    present_weights,
    task_means,
    task_sums,
)
from .optim import lr_factor
from .plotting import plot_history
from .pretrain import PretrainResult, pretrain

__all__ = [
    "IGNORE_INDEX",
    "CheckpointError",
    "EstimateState",
    "LossEstimator",
    "PretrainResult",
    "checkpoint",
    "data",
    "distributed",
    "ema",
    "excess_loss",
    "find_latest",
    "group_size_adjusted",
    "load_checkpoint",
    "logs",
    "lr_factor",
    "mix_uniform",
    "objective",
    "per_token_cross_entropy",
    "plot_history",
    "present_weights",
    "pretrain",
    "read_log",
    "task_means",
    "task_sums",
]
