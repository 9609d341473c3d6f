"""Per-task means, loss estimates and the weighted objective of task-robust pre-training.

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

Composable pieces (each small and pure; none is a flag inside the loop):

=====================================  ================================================
piece                                   effect
=====================================  ================================================
:func:`ema` (an estimator)              ``Lhat_i <- decay Lhat_i + (1 - decay) L_i`` where
                                        task ``i`` is present; ``decay = 0`` (the default)
                                        is the batch mean itself
:func:`group_size_adjusted` (rule)      rule sees ``L_i + C / sqrt(n_i)`` (Sagawa et al.
                                        2020, ``n_i`` the training-set size of group ``i``)
:func:`excess_loss` (rule)              rule sees ``max(L_i - Lref_i, 0)`` (DoReMi, Xie et
                                        al. 2023): a task that is hard for a reference
                                        model too does not take all the weight
:func:`mix_uniform` (rule)              ``w <- (1 - epsilon) w + epsilon / M``
=====================================  ================================================

The rule wrappers return a :class:`minimax_core.weights.WeightRule`, so they nest and also work
with the numpy solvers of :mod:`minimax_core`. Nothing here synchronises an accelerator with
the host except :func:`task_means`'s optional range check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import array_api_compat
import numpy as np
import torch
import torch.nn.functional as F

from minimax_core.weights import WeightRule, WeightState

__all__ = [
    "IGNORE_INDEX",
    "EstimateState",
    "LossEstimator",
    "ema",
    "excess_loss",
    "group_size_adjusted",
    "mix_uniform",
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
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")


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


# --------------------------------------------------------------------------- estimators


class EstimateState(NamedTuple):
    """State of a loss estimator: ``estimate`` (``(M,)``, 0 where unseen), ``seen`` (bool)."""

    step: int
    num_tasks: int
    estimate: torch.Tensor | None = None
    seen: torch.Tensor | None = None


class LossEstimator(NamedTuple):
    """A pure ``(init, update)`` pair: ``Lhat, state = update(means, counts, state)``.

    ``update`` gets the batch's per-task means and counts (absent tasks have count 0) and
    returns the full ``(M,)`` estimate the weight rule sees.
    """

    init: Callable[[int], EstimateState]
    update: Callable[
        [torch.Tensor, torch.Tensor, EstimateState], tuple[torch.Tensor, EstimateState]
    ]
    name: str
    params: dict[str, float]


def _estimator_init(num_tasks: int) -> EstimateState:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    return EstimateState(step=0, num_tasks=num_tasks)


def ema(decay: float = 0.0) -> LossEstimator:
    """Running per-task loss estimate for noisy batches.

    For a present task ``i``: ``Lhat_i <- decay Lhat_i + (1 - decay) L_i`` (its first
    observation sets ``Lhat_i = L_i``, so there is no start-up bias); an absent task keeps its
    estimate; a task never seen reads the mean of the present tasks' losses. ``decay`` in
    ``[0, 1)``; ``decay = 0`` is the batch's means (the default estimator of
    :func:`deep.pretrain`).
    """
    if isinstance(decay, bool) or not isinstance(decay, int | float):
        raise TypeError(f"decay must be a real number in [0, 1), got {type(decay).__name__}")
    decay = float(decay)
    if not (0.0 <= decay < 1.0):
        raise ValueError(f"decay must lie in [0, 1), got {decay!r}")

    def update(
        means: torch.Tensor, counts: torch.Tensor, state: EstimateState
    ) -> tuple[torch.Tensor, EstimateState]:
        if tuple(means.shape) != (state.num_tasks,) or means.shape != counts.shape:
            raise ValueError(
                f"means and counts must have shape (num_tasks,) = ({state.num_tasks},), got "
                f"{tuple(means.shape)} and {tuple(counts.shape)}"
            )
        present = counts > 0
        if state.estimate is None or state.seen is None:
            previous, seen = torch.zeros_like(means), torch.zeros_like(present)
        else:
            previous, seen = state.estimate.to(means.dtype), state.seen
        blended = decay * previous + (1.0 - decay) * means if decay > 0.0 else means
        estimate = torch.where(present, torch.where(seen, blended, means), previous)
        seen = seen | present
        present_f = present.to(means.dtype)
        fill = (means * present_f).sum() / present_f.sum().clamp_min(1.0)
        visible = torch.where(seen, estimate, fill)
        return visible, EstimateState(state.step + 1, state.num_tasks, estimate, seen)

    return LossEstimator(_estimator_init, update, "ema", {"decay": decay})


# --------------------------------------------------------------------------- rule wrappers


def _constant_like(values: np.ndarray, like: Any, cache: dict[Any, Any], name: str) -> Any:
    """``values`` (the wrapper's argument ``name``) as an array of the losses ``like``'s
    namespace, dtype and device (converted once), after checking that the shapes agree."""
    if tuple(like.shape) != values.shape:
        raise ValueError(
            f"losses must have shape {values.shape} like {name}, got {tuple(like.shape)}"
        )
    xp = array_api_compat.array_namespace(like)
    device = array_api_compat.device(like)
    key = (xp.__name__, str(device), str(like.dtype))
    if key not in cache:
        cache[key] = xp.asarray(values, dtype=like.dtype, device=device)
    return cache[key]


def _task_vector(name: str, values: Sequence[float] | Any, positive: bool) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a sequence of real numbers, one per task") from err
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a 1-d sequence with one value per task, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    if positive and not np.all(arr > 0):
        raise ValueError(f"{name} must be > 0 for every task, got {arr.tolist()}")
    return arr


def _wrapped_init(rule: WeightRule, size: int | None, what: str) -> Callable[[int], WeightState]:
    def init(num_tasks: int) -> WeightState:
        state = rule.init(num_tasks)
        if size is not None and size != num_tasks:
            raise ValueError(f"{what} has {size} entries but num_tasks = {num_tasks}")
        return state

    return init


def _prefixed(prefix: str, rule: WeightRule, extra: dict[str, float]) -> dict[str, float]:
    return {**rule.params, **{f"{prefix}.{k}": v for k, v in extra.items()}}


def _check_rule(rule: Any) -> WeightRule:
    if not (callable(getattr(rule, "init", None)) and callable(getattr(rule, "update", None))):
        raise TypeError(
            "rule must be a minimax_core.weights rule (with init and update), got "
            f"{type(rule).__name__}"
        )
    return rule  # type: ignore[no-any-return]


def mix_uniform(rule: WeightRule, epsilon: float) -> WeightRule:
    """``w <- (1 - epsilon) w + epsilon / M``: every task keeps at least ``epsilon / M``."""
    rule = _check_rule(rule)
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise TypeError(f"epsilon must be a real number in [0, 1], got {type(epsilon).__name__}")
    epsilon = float(epsilon)
    if not (0.0 <= epsilon <= 1.0):
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon!r}")

    def update(losses: Any, state: WeightState) -> tuple[Any, WeightState]:
        w, state = rule.update(losses, state)
        return (1.0 - epsilon) * w + epsilon / w.shape[0], state

    return WeightRule(
        _wrapped_init(rule, None, ""),
        update,
        f"mix_uniform({rule.name})",
        _prefixed("mix_uniform", rule, {"epsilon": epsilon}),
    )


def excess_loss(
    rule: WeightRule, reference_losses: Sequence[float] | Any, *, clip_at_zero: bool = True
) -> WeightRule:
    """The rule sees the excess loss over a reference model, ``max(L_i - Lref_i, 0)`` (DoReMi).

    ``reference_losses`` (``(M,)``) are the per-task losses of a reference model (for example
    one pre-trained with ``uniform()``) on the same kind of data. A task that the reference
    also finds hard has a small excess and no longer takes all the weight. DoReMi clips the
    excess at 0 (``clip_at_zero``); the gradient still follows ``sum_i w_i L_i``.
    """
    rule = _check_rule(rule)
    reference = _task_vector("reference_losses", reference_losses, positive=False)
    cache: dict[Any, Any] = {}

    def update(losses: Any, state: WeightState) -> tuple[Any, WeightState]:
        excess = losses - _constant_like(reference, losses, cache, "reference_losses")
        xp = array_api_compat.array_namespace(losses)
        if clip_at_zero:
            excess = xp.where(excess > 0, excess, xp.zeros_like(excess))
        return rule.update(excess, state)

    return WeightRule(
        _wrapped_init(rule, reference.size, "reference_losses"),
        update,
        f"excess_loss({rule.name})",
        _prefixed("excess_loss", rule, {"clip_at_zero": float(clip_at_zero)}),
    )


def group_size_adjusted(
    rule: WeightRule, group_sizes: Sequence[float] | Any, adjustment: float
) -> WeightRule:
    """The rule sees ``L_i + C / sqrt(n_i)`` (Group DRO's generalisation adjustment).

    ``group_sizes`` are the number of training items of each task ``n_i > 0`` and
    ``adjustment`` is ``C >= 0``: small groups, whose training loss underestimates their
    true loss the most, are pushed up (Sagawa et al. 2020, eq. 5).
    """
    rule = _check_rule(rule)
    sizes = _task_vector("group_sizes", group_sizes, positive=True)
    if isinstance(adjustment, bool) or not isinstance(adjustment, int | float):
        raise TypeError(f"adjustment must be a real number >= 0, got {type(adjustment).__name__}")
    adjustment = float(adjustment)
    if not (math.isfinite(adjustment) and adjustment >= 0.0):
        raise ValueError(f"adjustment must be a finite number >= 0, got {adjustment!r}")
    offsets = adjustment / np.sqrt(sizes)
    cache: dict[Any, Any] = {}

    def update(losses: Any, state: WeightState) -> tuple[Any, WeightState]:
        return rule.update(losses + _constant_like(offsets, losses, cache, "group_sizes"), state)

    return WeightRule(
        _wrapped_init(rule, sizes.size, "group_sizes"),
        update,
        f"group_size_adjusted({rule.name})",
        _prefixed("group_size_adjusted", rule, {"adjustment": adjustment}),
    )
