"""Task-robust pre-training inside the Hugging Face ``Trainer``.

:class:`TaskRobustTrainer` is a ``transformers.Trainer`` whose training loss is
``sum_i w_i L_i``: each micro-batch's per-item losses (``task_loss(model, inputs)``, one
forward) are reduced to per-task means ``L_i`` with one scatter
(:func:`deep.objective.task_sums`), a :mod:`minimax_core.weights` rule maps their detached
estimate to weights ``w`` and one backward follows, exactly as in :func:`deep.pretrain`:

- under DDP (``torchrun``) the per-task sums and counts are all-reduced before the rule
  runs, so every rank uses the same weights, and the loss is scaled by ``world_size`` so
  that DDP's gradient average is the gradient of ``sum_i w_i L_i`` on the global batch;
- with gradient accumulation (``K`` micro-batches per optimizer step), micro-batch ``k``
  is weighted by the rule applied to the means of micro-batches ``1..k`` of the step, its
  loss is divided by ``K``, and the rule's state advances once per optimizer step, with the
  means of the whole step (``num_items_in_batch`` is not used: each task is a mean of its
  own items);
- the rule's and the estimator's states are written to every Trainer checkpoint
  (``task_robust.json`` + ``task_robust.safetensors``) and restored on
  ``train(resume_from_checkpoint=...)``, so a resumed run uses the same weights;
- every Trainer log line gains ``task_loss/{name}`` (per-task mean over the items since the
  previous log) and ``task_weight/{name}`` (mean step weight).

Evaluation (``Trainer.evaluate``) uses the model's own loss; the task ids are removed from
the inputs first.

:class:`TaskRobustCallback` holds all of it for users with their own ``Trainer`` subclass:
return ``callback.loss(values, task_ids, accumulation_steps)`` from ``compute_loss`` and merge
``callback.pop_logs()`` into ``log``; saving and restoring the state is the callback's
``on_save`` and :meth:`TaskRobustCallback.load` (see :class:`TaskRobustTrainer`).

Example (masked LM whose masked tokens carry a task id in ``task_ids``, ``-100`` elsewhere)::

    from deep.hf import TaskRobustTrainer
    import minimax_core as mc

    trainer = TaskRobustTrainer(model=model, args=TrainingArguments("out", max_steps=1000),
                                train_dataset=dataset, data_collator=collator,
                                num_tasks=9, rule=mc.weights.softmax(0.5), task_names=names)
    trainer.train()  # logs task_loss/NOUN, task_weight/NOUN, ...

Needs the ``[hf]`` extra (``transformers`` and ``accelerate``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Trainer, TrainerCallback

from minimax_core.weights import EstimateState, LossEstimator, WeightRule, ema

from .io import atomic_path
from .objective import IGNORE_INDEX, per_token_cross_entropy, present_weights, task_sums
from .run_state import state_from_tensors, state_to_tensors

__all__ = [
    "STATE_FILES",
    "TaskRobustCallback",
    "TaskRobustTrainer",
    "masked_lm_task_loss",
    "sequence_classification_task_loss",
]

TaskLoss = Callable[[nn.Module, Mapping[str, Any]], tuple[torch.Tensor, torch.Tensor]]
STATE_FILES = ("task_robust.json", "task_robust.safetensors")
_FORMAT = 1


# --------------------------------------------------------------------------- task losses


def _split_inputs(
    inputs: Mapping[str, Any], task_ids_key: str
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    if task_ids_key not in inputs or "labels" not in inputs:
        raise KeyError(
            f"the batch must hold 'labels' and the task ids under {task_ids_key!r}; it has "
            f"{sorted(inputs)}"
        )
    rest = {k: v for k, v in inputs.items() if k not in (task_ids_key, "labels")}
    return rest, inputs["labels"], inputs[task_ids_key]


def masked_lm_task_loss(task_ids_key: str = "task_ids") -> TaskLoss:
    """Per-token cross-entropy of a masked LM and each token's task id.

    ``inputs[task_ids_key]`` is aligned with ``inputs["labels"]`` (``(B, T)``); tokens whose
    label is ``-100`` belong to no task. The model is called without ``labels`` (its own loss
    is not computed) and must return ``.logits`` of shape ``(B, T, V)``.
    """

    def task_loss(model: nn.Module, inputs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        rest, labels, task_ids = _split_inputs(inputs, task_ids_key)
        return per_token_cross_entropy(model(**rest).logits, labels, task_ids)

    return task_loss


def sequence_classification_task_loss(task_ids_key: str = "task_ids") -> TaskLoss:
    """Per-example loss of a sequence classifier and each example's task id (``(B,)``).

    Cross-entropy for integer labels, squared error for float labels with one output
    (regression, as ``transformers`` does). An example whose task id is ``-100`` counts for
    no task.
    """

    def task_loss(model: nn.Module, inputs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        rest, labels, task_ids = _split_inputs(inputs, task_ids_key)
        logits = model(**rest).logits
        if labels.is_floating_point() and logits.shape[-1] == 1:
            values = (logits.squeeze(-1) - labels.to(logits.dtype)) ** 2
        else:
            values = F.cross_entropy(logits, labels, reduction="none")
        return values, task_ids.reshape(values.shape)

    return task_loss


# --------------------------------------------------------------------------- the callback


def _world() -> tuple[int, bool]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_world_size(), True
    return 1, False


def _state_to(state: Any, device: torch.device) -> Any:
    """A NamedTuple state with its tensors on ``device``."""
    moved = {
        k: v.to(device)
        for k, v in state._asdict().items()
        if isinstance(v, torch.Tensor) and v.device != device
    }
    return state._replace(**moved) if moved else state


class TaskRobustCallback(TrainerCallback):
    """The weight rule, its state, the per-step sums and the log sums of a Trainer run.

    ``num_tasks``: ``M``; ``rule``: a :mod:`minimax_core.weights` rule (possibly wrapped,
    e.g. ``mc.weights.chain(mc.weights.mix_uniform(0.1), rule)``); ``task_names``: ``M``
    names for the logs (default ``task0``...);
    ``estimator``: the loss estimate the rule sees (default :func:`minimax_core.weights.ema` with
    ``decay=0``, the micro-batches' means); ``ignore_index``: the task id of items in no task.
    """

    def __init__(
        self,
        num_tasks: int,
        rule: WeightRule,
        task_names: Sequence[str] | None = None,
        estimator: LossEstimator | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
        if not (callable(getattr(rule, "init", None)) and callable(getattr(rule, "update", None))):
            raise TypeError(
                f"rule must be a minimax_core.weights rule (init and update), got {rule!r}"
            )
        names = [f"task{i}" for i in range(num_tasks)] if task_names is None else list(task_names)
        if len(names) != num_tasks or len(set(names)) != num_tasks:
            raise ValueError(
                f"task_names must be {num_tasks} distinct names (num_tasks), got {names!r}"
            )
        self.num_tasks, self.rule, self.task_names = num_tasks, rule, names
        self.estimator = ema(0.0) if estimator is None else estimator
        self.ignore_index = ignore_index
        self.rule_state = rule.init(num_tasks)
        self.estimator_state: EstimateState = self.estimator.init(num_tasks)
        self._pending: tuple[Any, Any, torch.Tensor] | None = None
        self._step_sums: torch.Tensor | None = None
        self._step_counts: torch.Tensor | None = None
        self._log_sums: torch.Tensor | None = None
        self._log_counts: torch.Tensor | None = None
        self._log_weights: torch.Tensor | None = None
        self._log_steps = 0

    # ---- the objective of one micro-batch
    def loss(
        self, values: torch.Tensor, task_ids: torch.Tensor, accumulation_steps: int = 1
    ) -> torch.Tensor:
        """``(world_size / K) sum_i w_i S_i / N_i`` for this micro-batch: ``S_i`` this rank's
        loss sum of task ``i``, ``N_i`` the task's item count over all ranks, ``w`` the rule's
        weights on the step's all-reduced means so far. Reads two numbers per task back to
        the host (the invalid-id and finiteness checks)."""
        M = self.num_tasks
        world_size, distributed = _world()
        sums, counts, invalid = task_sums(values, task_ids, M, ignore_index=self.ignore_index)
        stats = torch.cat([sums.detach(), counts, invalid.to(sums.dtype).view(1)])
        if distributed:
            torch.distributed.all_reduce(stats, op=torch.distributed.ReduceOp.SUM)
        g_sums, g_counts = stats[:M], stats[M : 2 * M]
        host = stats.tolist()
        if host[-1] > 0:
            raise ValueError(
                f"task ids must lie in [0, num_tasks) = [0, {M}) or equal ignore_index="
                f"{self.ignore_index}; {int(host[-1])} items had another id"
            )
        if not all(math.isfinite(v) for v in host[:M]):
            bad = [
                n for n, v in zip(self.task_names, host[:M], strict=True) if not math.isfinite(v)
            ]
            raise FloatingPointError(f"non-finite loss on tasks {bad}")
        self._step_sums = g_sums if self._step_sums is None else self._step_sums + g_sums
        self._step_counts = g_counts if self._step_counts is None else self._step_counts + g_counts
        means = self._step_sums / self._step_counts.clamp_min(1.0)
        est_state = _state_to(self.estimator_state, means.device)
        rule_state = _state_to(self.rule_state, means.device)
        estimate, est_next = self.estimator.update(means, self._step_counts, est_state)
        w_raw, rule_next = self.rule.update(estimate, rule_state)
        self._pending = (est_next, rule_next, w_raw)
        w = present_weights(w_raw, g_counts)
        scale = world_size / accumulation_steps
        return (w * sums / g_counts.clamp_min(1.0)).sum() * scale

    def weights(self) -> torch.Tensor | None:
        """The weights of the last micro-batch's step so far (``None`` before the first)."""
        if self._pending is None or self._step_counts is None:
            return None
        return present_weights(self._pending[2], self._step_counts)

    # ---- one optimizer step ends: the rule's state advances once
    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._pending is None or self._step_sums is None or self._step_counts is None:
            return
        est_next, rule_next, w_raw = self._pending
        w_step = present_weights(w_raw, self._step_counts)
        self.estimator_state, self.rule_state = est_next, rule_next
        add = (self._step_sums, self._step_counts, w_step)
        if self._log_sums is None or self._log_counts is None or self._log_weights is None:
            self._log_sums, self._log_counts, self._log_weights = (t.clone() for t in add)
        else:
            self._log_sums += add[0]
            self._log_counts += add[1]
            self._log_weights += add[2]
        self._log_steps += 1
        self._pending = self._step_sums = self._step_counts = None

    def pop_logs(self) -> dict[str, float]:
        """``task_loss/{name}`` and ``task_weight/{name}`` since the last call (then reset)."""
        if self._log_steps == 0 or self._log_sums is None or self._log_counts is None:
            return {}
        assert self._log_weights is not None
        losses = (self._log_sums / self._log_counts.clamp_min(1.0)).tolist()
        counts = self._log_counts.tolist()
        weights = (self._log_weights / self._log_steps).tolist()
        out: dict[str, float] = {}
        for name, loss, count, weight in zip(self.task_names, losses, counts, weights, strict=True):
            out[f"task_loss/{name}"] = loss if count > 0 else float("nan")
            out[f"task_weight/{name}"] = weight
        self._log_sums = self._log_counts = self._log_weights = None
        self._log_steps = 0
        return out

    # ---- checkpoints
    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write the rule's and the estimator's states into ``folder`` (atomically)."""
        folder = Path(folder)
        meta: dict[str, Any] = {
            "format": _FORMAT,
            "num_tasks": self.num_tasks,
            "task_names": self.task_names,
            "rule": self.rule.name,
            "rule_params": dict(self.rule.params),
            "estimator": self.estimator.name,
        }
        tensors: dict[str, torch.Tensor] = {}
        for prefix, value in (
            ("rule_state", self.rule_state),
            ("estimator_state", self.estimator_state),
        ):
            meta[prefix], parts = state_to_tensors(prefix, value)
            tensors.update(parts)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / STATE_FILES[1]) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        with atomic_path(folder / STATE_FILES[0]) as tmp:
            tmp.write_text(json.dumps(meta, indent=1, allow_nan=False), encoding="utf-8")

    def load(self, folder: str | os.PathLike[str]) -> None:
        """Restore the states written by :meth:`save`; the rule and tasks must match."""
        folder = Path(folder)
        missing = [name for name in STATE_FILES if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"checkpoint {folder} has no task-robust state ({', '.join(missing)}): it was not "
                "written by TaskRobustTrainer, and resuming would restart the weight rule"
            )
        meta = json.loads((folder / STATE_FILES[0]).read_text(encoding="utf-8"))
        expected = {
            "format": _FORMAT,
            "num_tasks": self.num_tasks,
            "task_names": self.task_names,
            "rule": self.rule.name,
            "rule_params": dict(self.rule.params),
            "estimator": self.estimator.name,
        }
        wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
        if wrong:
            raise ValueError(f"checkpoint {folder} was written by another set-up: {wrong}")
        tensors = load_file(str(folder / STATE_FILES[1]))
        cpu = torch.device("cpu")
        self.rule_state = state_from_tensors(
            "rule_state", self.rule_state, meta, tensors, cpu, folder
        )
        self.estimator_state = state_from_tensors(
            "estimator_state", self.estimator_state, meta, tensors, cpu, folder
        )
        self._pending = self._step_sums = self._step_counts = None

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After the Trainer wrote ``checkpoint-{global_step}``: add the state to it."""
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.save(folder)


# --------------------------------------------------------------------------- the trainer


class TaskRobustTrainer(Trainer):
    """``transformers.Trainer`` minimising ``sum_i w_i L_i`` (see the module docstring).

    Extra keyword arguments: ``num_tasks``, ``rule``, ``task_names``, ``task_loss``
    (``(model, inputs) -> (values, task_ids)``; default :func:`masked_lm_task_loss`; also
    :func:`sequence_classification_task_loss`), ``estimator``, ``task_ids_key`` (the batch
    key of the task ids, kept by ``remove_unused_columns``). The callback is
    ``trainer.task_robust``.
    """

    loss_is_scaled_for_ga = True  # TaskRobustCallback.loss divides by the micro-batches

    def __init__(
        self,
        *args: Any,
        num_tasks: int,
        rule: WeightRule,
        task_names: Sequence[str] | None = None,
        task_loss: TaskLoss | None = None,
        estimator: LossEstimator | None = None,
        task_ids_key: str = "task_ids",
        **kwargs: Any,
    ) -> None:
        if not hasattr(Trainer, "loss_is_scaled_for_ga"):  # older Trainers rescale the loss
            raise ImportError(
                "TaskRobustTrainer needs a transformers Trainer with loss_is_scaled_for_ga "
                "(pip install 'taskrobust[hf]': transformers>=5.24)"
            )
        self.task_robust = TaskRobustCallback(num_tasks, rule, task_names, estimator)
        self.task_loss = masked_lm_task_loss(task_ids_key) if task_loss is None else task_loss
        self.task_ids_key = task_ids_key
        callbacks = [*(kwargs.pop("callbacks", None) or []), self.task_robust]
        super().__init__(*args, callbacks=callbacks, **kwargs)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and self.task_ids_key not in self._signature_columns:
            self._signature_columns.append(self.task_ids_key)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        if not model.training:  # evaluation: the model's own loss, without the task ids
            rest = {k: v for k, v in inputs.items() if k != self.task_ids_key}
            return super().compute_loss(model, rest, return_outputs, num_items_in_batch)
        values, task_ids = self.task_loss(model, inputs)
        steps = int(getattr(self, "current_gradient_accumulation_steps", 1) or 1)
        loss = self.task_robust.loss(values, task_ids, steps)
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log line
            logs = {**logs, **self.task_robust.pop_logs()}
        super().log(logs, start_time)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """On resume (every rank, every backend, DeepSpeed included): also the rule's state."""
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.task_robust.load(checkpoint)
