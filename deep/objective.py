"""Per-task means and the weighted objective of task-robust pre-training (torch).

A model's loss on one batch is a set of per-item losses ``l_k`` (per token, per patch or per
example) with integer task ids ``t_k`` in ``[0, M)``. The per-task means are

    L_i = (sum_{k: t_k = i} l_k) / n_i,        n_i = #{k: t_k = i},

computed with one scatter (:func:`task_means`). A weight rule from
:mod:`minimax_core.weights` maps a detached loss estimate ``Lhat`` (``(M,)``) to weights on
the simplex, and the step descends along ``grad sum_i w_i L_i``: one backward.

Absent tasks. A task with ``n_i = 0`` in a batch has no loss and no gradient there. It gets
weight 0 and the other weights are renormalised, ``w_i <- w_i 1[n_i > 0] / sum_j w_j 1[n_j > 0]``;
if that sum is 0 (a hardmax-like rule whose worst task is absent) the present tasks share the
weight equally. The rule still sees a value for an absent task: the estimator's last
estimate for it (or, for a task never seen yet, the mean of the present tasks' losses), so a
stateful rule such as Group DRO's exponentiated gradient keeps its belief about that task.

The loss estimator (:func:`minimax_core.weights.ema`) and the rule wrappers
(:func:`~minimax_core.weights.mix_uniform`, :func:`~minimax_core.weights.excess_loss`,
:func:`~minimax_core.weights.group_size_adjusted`, composed by
:func:`~minimax_core.weights.chain`) are framework-agnostic and live in
:mod:`minimax_core.weights`, beside the rules they wrap. Nothing here synchronises an accelerator with the host except
:func:`task_means`'s optional range check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minimax_core.validation import check_int

__all__ = [
    "IGNORE_INDEX",
    "per_token_cross_entropy",
    "present_weights",
    "task_means",
    "task_sums",
]

IGNORE_INDEX = -100
"""Task id of items that belong to no task (as ``ignore_index`` in ``F.cross_entropy``)."""


# --------------------------------------------------------------------------- per-task means


def _check_items(values: torch.Tensor, task_ids: torch.Tensor, num_tasks: int) -> None:
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be a torch.Tensor of per-item losses, got {type(values)!r}")
    if not isinstance(task_ids, torch.Tensor):
        raise TypeError(f"task_ids must be a torch.Tensor of task ids, got {type(task_ids)!r}")
    if not values.is_floating_point():
        raise TypeError(f"values must have a floating dtype, got {values.dtype}")
    if task_ids.is_floating_point() or task_ids.is_complex() or task_ids.dtype == torch.bool:
        raise TypeError(f"task_ids must have an integer dtype, got {task_ids.dtype}")
    if values.shape != task_ids.shape:
        raise ValueError(
            "values and task_ids must have the same shape (one task id per item), got "
            f"{tuple(values.shape)} and {tuple(task_ids.shape)}"
        )
    if values.device != task_ids.device:
        raise ValueError(
            f"values and task_ids must be on the same device, got {values.device} and "
            f"{task_ids.device}"
        )
    check_int("num_tasks", num_tasks)


def task_sums(
    values: torch.Tensor,
    task_ids: torch.Tensor,
    num_tasks: int,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-task sums and counts with one scatter, and the number of invalid ids; no sync.

    Returns ``(sums, counts, invalid)``: ``sums[i] = sum_{t_k = i} l_k`` (differentiable in
    ``values``), ``counts[i] = n_i`` (same float dtype) and ``invalid``, a 0-d tensor counting
    ids outside ``[0, num_tasks)`` that are not ``ignore_index``. Invalid ids are left out of
    every sum, so the caller must check ``invalid`` (the training loop does) before trusting
    the sums. Losses are accumulated in float32 (float64 stays float64).
    """
    _check_items(values, task_ids, num_tasks)
    values = values.reshape(-1)
    ids = task_ids.reshape(-1).long()
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()
    valid = (ids >= 0) & (ids < num_tasks)
    invalid = ((~valid) & (ids != ignore_index)).sum()
    # ignored and invalid items go to an extra bin M that is dropped
    bins = torch.where(valid, ids, num_tasks)
    pairs = torch.stack((values, torch.ones_like(values)), dim=1)
    acc = pairs.new_zeros(num_tasks + 1, 2).index_add_(0, bins, pairs)
    return acc[:num_tasks, 0], acc[:num_tasks, 1].detach(), invalid


def task_means(
    values: torch.Tensor,
    task_ids: torch.Tensor,
    num_tasks: int,
    *,
    ignore_index: int = IGNORE_INDEX,
    check_range: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task means ``L_i = sum_{t_k = i} l_k / n_i`` and counts ``n_i`` (int64), one scatter.

    ``values`` and ``task_ids`` have the same shape (any shape; items are flattened). Items
    with id ``ignore_index`` are left out; any other id outside ``[0, num_tasks)`` raises
    ``ValueError`` when ``check_range`` (the default; on an accelerator the check reads one
    number back to the host). A task with no item has mean 0 and count 0. The means are
    differentiable in ``values``.
    """
    sums, counts, invalid = task_sums(values, task_ids, num_tasks, ignore_index=ignore_index)
    if check_range and int(invalid) > 0:
        ids = task_ids.reshape(-1)
        bad = ids[((ids < 0) | (ids >= num_tasks)) & (ids != ignore_index)]
        raise ValueError(
            f"task_ids must lie in [0, num_tasks) = [0, {num_tasks}) (or equal ignore_index="
            f"{ignore_index}); got {int(invalid)} out of range, e.g. {bad[:5].tolist()}"
        )
    means = sums / counts.clamp_min(1.0)
    return means, counts.long()


def per_token_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    task_ids: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy and task ids for masked-token objectives (MLM, MAE labels).

    ``logits`` is ``(..., V)``, ``labels`` and ``task_ids`` are ``(...)``. Tokens whose label is
    ``ignore_index`` get loss 0 and task id ``ignore_index`` (they count for no task), so no
    boolean indexing (and no host sync) is needed. Returns flat ``(values, ids)`` ready for
    :func:`task_means` or as the return value of a ``task_loss`` for :func:`deep.pretrain`.
    """
    if logits.shape[:-1] != labels.shape or labels.shape != task_ids.shape:
        raise ValueError(
            "logits must be (..., V) with labels and task_ids of shape (...), got "
            f"{tuple(logits.shape)}, {tuple(labels.shape)} and {tuple(task_ids.shape)}"
        )
    flat_labels = labels.reshape(-1)
    values = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        flat_labels,
        reduction="none",
        ignore_index=ignore_index,
    )
    ids = torch.where(flat_labels == ignore_index, ignore_index, task_ids.reshape(-1))
    return values, ids


def present_weights(weights: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``w_i 1[n_i > 0] / sum_j w_j 1[n_j > 0]``; uniform over present tasks if that sum is 0.

    If no task is present the result is all zeros. No host sync.
    """
    present = (counts > 0).to(weights.dtype)
    masked = weights * present
    total = masked.sum()
    share = present / present.sum().clamp_min(1.0)
    return torch.where(total > 0, masked / torch.where(total > 0, total, 1.0), share)
