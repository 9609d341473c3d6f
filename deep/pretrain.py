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

The pieces around the loop live in modules of their own: the validated options
(:mod:`deep.config`), the optimiser, learning-rate factor and precision
(:mod:`deep.optim`), fault detection and the graceful stop (:mod:`deep.faults`), and the
run state saved to and restored from checkpoints (:mod:`deep.run_state`).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from minimax_core.weights import EstimateState, LossEstimator, WeightRule, check_rule, ema

from . import checkpoint as ckpt
from .config import PretrainConfig, RunRecord
from .data import BatchStream, move_to_device
from .distributed import Context, setup
from .faults import (
    FaultCode,
    StopRequest,
    TaskLoss,
    call_task_loss,
    fault_code,
    gradient_norm,
    gradient_origin,
    nonfinite_parameters,
    optimizer_step,
    raise_fault,
    record_fault,
    record_gradient_fault,
)
from .logs import (
    JsonlLog,
    empty_history,
    history_arrays,
    log_entry,
    progress_postfix,
    tensorboard_write,
    tensorboard_writer,
    write_json_atomic,
)
from .objective import IGNORE_INDEX, present_weights, task_sums
from .optim import LrSchedule, adamw, autocast, autocast_dtype, lr_factor
from .run_state import (
    Running,
    check_optimizer,
    check_resume,
    checkpoint_payload,
    load_optimizer,
    restore,
    rng_state,
    running_init,
    set_rng_state,
)

__all__ = ["PretrainResult", "pretrain"]


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
            possibly wrapped by :func:`minimax_core.weights.mix_uniform` and friends.
        steps: optimizer steps in total (a resumed run continues up to ``steps``).
        optimizer: an optimizer over ``model``'s parameters or ``model -> optimizer``; default
            :func:`deep.optim.adamw` (fused on CUDA) with ``lr`` (default ``1e-4``),
            ``weight_decay`` on matrices only, ``betas``. With your own optimizer its learning
            rates are the peaks.
        warmup_steps, lr_schedule, min_lr_ratio: see :func:`deep.optim.lr_factor`.
        grad_clip: clip the global gradient norm to this (``None``: no clipping).
        accumulation_steps: micro-batches per optimizer step (see the module docstring).
        estimator: loss estimate the rule sees (default :func:`minimax_core.weights.ema` with ``decay=0``).
        device: default ``cuda:LOCAL_RANK`` if CUDA is available, else CPU.
        precision: ``"auto"`` (bf16 autocast on CUDA with bf16 support, else float32),
            ``"bf16"`` or ``"fp32"`` (:func:`deep.optim.autocast_dtype`).
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
    config = PretrainConfig(
        num_tasks=num_tasks,
        steps=steps,
        lr=1e-4 if lr is None else lr,
        weight_decay=weight_decay,
        betas=betas,
        warmup_steps=warmup_steps,
        lr_schedule=lr_schedule,
        min_lr_ratio=min_lr_ratio,
        grad_clip=grad_clip,
        accumulation_steps=accumulation_steps,
        precision=precision,
        compile=compile,
        seed=seed,
        checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        resume=resume if resume is None or isinstance(resume, bool) else Path(resume),
        log_dir=None if log_dir is None else Path(log_dir),
        log_every=log_every,
        tensorboard=tensorboard,
        progress=progress,
        on_nonfinite=on_nonfinite,
        check_every=check_every,
        task_names=None if task_names is None else tuple(task_names),
        ignore_index=ignore_index,
        ddp_options=dict(ddp_options or {}),
        allow_changes=allow_changes,  # type: ignore[arg-type]  # normalised by the config
    )
    if not callable(task_loss):
        raise TypeError(
            f"task_loss must be callable (model, batch) -> (losses, task_ids), got {task_loss!r}"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")

    rule = check_rule(rule)
    estimator = ema(0.0) if estimator is None else estimator
    if not (
        callable(getattr(estimator, "init", None)) and callable(getattr(estimator, "update", None))
    ):
        raise TypeError(
            f"estimator must be a minimax_core.weights.LossEstimator such as minimax_core.weights.ema(0.0), got {estimator!r}"
        )
    if isinstance(optimizer, torch.optim.Optimizer) and lr is not None:
        raise ValueError(
            "pass lr or an optimizer instance, not both (its learning rates are the peaks)"
        )
    ctx = setup(device)
    try:
        run = config.on_device(ctx.device)
        return _train(ctx, model, batches, task_loss, rule, estimator, optimizer, run)
    finally:
        ctx.close()


def _make_optimizer(
    optimizer: Any, model: nn.Module, config: PretrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The user's optimizer, ``optimizer(model)``, or :func:`deep.optim.adamw` by default."""
    if optimizer is None:
        return adamw(
            model, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas, device=device
        )
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        opt = optimizer(model)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer(model) must return a torch.optim.Optimizer, got {type(opt).__name__}"
            )
        return opt
    raise TypeError(
        f"optimizer must be None, a torch.optim.Optimizer or model -> optimizer, got {optimizer!r}"
    )


def _wrap(model: nn.Module, config: PretrainConfig, ctx: Context) -> nn.Module:
    """``model`` compiled if asked, inside DDP under torchrun (the module the loop calls)."""
    wrapped: nn.Module = model
    if config.compile:
        options = config.compile if isinstance(config.compile, Mapping) else {}
        wrapped = torch.compile(model, **options)  # type: ignore[assignment]
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        wrapped = DDP(wrapped, device_ids=ids, **config.ddp_options)
    return wrapped


def _train(
    ctx: Context,
    model: nn.Module,
    batches: Any,
    task_loss: TaskLoss,
    rule: WeightRule,
    estimator: LossEstimator,
    optimizer: Any,
    config: PretrainConfig,
) -> PretrainResult:
    c = config
    M, K, steps, device = c.num_tasks, c.accumulation_steps, c.steps, ctx.device
    names = list(c.task_names or ())
    assert c.check_every is not None  # resolved by PretrainConfig.on_device
    check_every, log_every = c.check_every, c.log_every
    autocast_to = autocast_dtype(c.precision, device)
    raw_model = model.to(device)
    raw_model.train()
    opt = _make_optimizer(optimizer, raw_model, c, device)
    base_lrs = [float(g["lr"]) for g in opt.param_groups]
    record = RunRecord.of(
        c,
        rule=rule,
        estimator=estimator,
        base_lrs=base_lrs,
        world_size=ctx.world_size,
        autocast_to=autocast_to,
    )
    if ctx.is_main and c.checkpoint_dir is not None:  # what a killed writer left behind
        ckpt.clean_stale(c.checkpoint_dir)

    # ---- state: fresh or from a checkpoint
    rule_state = rule.init(M)
    est_state = estimator.init(M)
    running = running_init(M, device)
    history = {k: list(v) for k, v in empty_history(M).items()}
    step, skipped, position, last_log_step = 0, 0, 0, 0
    loaded: ckpt.Checkpoint | None = None
    rng: dict[str, Any] | None = None
    if c.resume_from is not None:
        loaded = ckpt.load_checkpoint(c.resume_from)
        check_resume(loaded.meta, record, loaded.path, c.allow_changes)
        # every field is checked before the model or the optimizer is touched
        (step, skipped, position, last_log_step, rule_state, est_state, running, history, rng) = (
            restore(
                loaded,
                rule_state=rule_state,
                estimator_state=est_state,
                running=running,
                history_keys=list(history),
                accumulation_steps=K,
                rank=ctx.rank,
                device=device,
            )
        )
        check_optimizer(opt, loaded.optimizer_state, loaded.path, c.allow_changes)
        ckpt.load_model_weights(raw_model, loaded)
        load_optimizer(opt, loaded.optimizer_state, loaded.path)
    if c.seed is not None:  # also on resume: data replays start from the same RNG state
        torch.manual_seed(c.seed + ctx.rank)
    stream = BatchStream(batches, position)
    if rng is not None:  # after the replay, which may have drawn random numbers
        set_rng_state(rng, device)
    train_model = _wrap(raw_model, c, ctx)
    params = [p for group in opt.param_groups for p in group["params"]]

    # ---- outputs
    log: JsonlLog | None = None
    writer: Any = None
    if ctx.is_main and c.log_dir is not None:
        log = JsonlLog(
            c.log_dir / "log.jsonl", keep_through_step=step if loaded is not None else None
        )
        write_json_atomic(c.log_dir / "config.json", asdict(record))
        if c.tensorboard:
            writer = tensorboard_writer(c.log_dir)
    bar: Any = None
    if ctx.is_main and c.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
    last_checkpoint = loaded.path if loaded is not None else None

    def save(at_step: int) -> Path | None:
        """Collective: every rank's RNG state goes to rank 0, which writes the checkpoint."""
        nonlocal last_checkpoint
        raise_fault(running.fault.tolist(), names)
        damaged = nonfinite_parameters(raw_model)
        if damaged:
            raise FloatingPointError(
                f"refusing to write the checkpoint of step {at_step}: non-finite values in "
                f"{', '.join(damaged[:5])}{' ...' if len(damaged) > 5 else ''}"
            )
        rngs = ctx.gather_to_main(rng_state(device))
        path = None
        if ctx.is_main and c.checkpoint_dir is not None:
            assert rngs is not None
            meta, tensors = checkpoint_payload(
                record,
                skipped=skipped,
                position=stream.position,
                last_log_step=last_log_step,
                states={"rule_state": rule_state, "estimator_state": est_state, "running": running},
                history=history_arrays(history, M),
                rngs=rngs,
            )
            path = ckpt.write_checkpoint(
                c.checkpoint_dir,
                step=at_step,
                model=raw_model,
                optimizer_state=opt.state_dict(),
                tensors=tensors,
                meta=meta,
                keep=c.keep_checkpoints,
            )
            last_checkpoint = path
        ctx.barrier()
        return path

    def amp() -> Any:
        return autocast(autocast_to, device)

    immediate = check_every == 1  # read the checks back every step, before the update
    diagnose = immediate and c.on_nonfinite == "raise"
    stops = StopRequest() if c.checkpoint_dir is not None else None
    start_time = time.perf_counter()
    interval_start, interval_tokens = start_time, 0
    stopped_early = False
    flags = {False: torch.zeros(1, device=device), True: torch.ones(1, device=device)}
    with stops if stops is not None else contextlib.nullcontext():
        while step < steps:
            factor = lr_factor(
                step,
                steps=steps,
                warmup_steps=c.warmup_steps,
                lr_schedule=c.lr_schedule,
                min_lr_ratio=c.min_lr_ratio,
            )
            for group, base in zip(opt.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor
            skip_step = agreed_stop = False
            step_batches: list[Any] = []  # kept to name the origin of a gradient fault
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
                    # 1. one forward: per-item losses and task ids
                    with amp():
                        values, ids = call_task_loss(task_loss, train_model, batch, step + 1)
                    # 2. per-task sums and counts; one all-reduce with the invalid-id count
                    #    and the stop requests
                    local_sums, local_counts, invalid = task_sums(
                        values, ids, M, ignore_index=c.ignore_index
                    )
                    asked = stops is not None and stops.requested
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
                        code, task = fault_code(host, M)
                        if code == FaultCode.NONFINITE and c.on_nonfinite == "skip":
                            skip_step = True
                            opt.zero_grad(set_to_none=True)
                            continue
                        if code:
                            sums, counts = host[:M], host[M : 2 * M]
                            seen = [v / max(n, 1.0) for v, n in zip(sums, counts, strict=True)]
                            raise_fault([step + 1, code, task], names, seen)
                    else:  # remember the first fault on the device; read it at the next check
                        running = running._replace(
                            fault=record_fault(running.fault, stats, M, step + 1),
                            stop=running.stop + stats[-1],
                        )
                        g_sums = torch.nan_to_num(g_sums, nan=0.0, posinf=0.0, neginf=0.0)
                    # 3. the estimate of the step's per-task means so far, and the weights
                    step_sums = g_sums if step_sums is None else step_sums + g_sums
                    step_counts = g_counts if step_counts is None else step_counts + g_counts
                    means = step_sums / step_counts.clamp_min(1.0)
                    estimate, est_next = estimator.update(means, step_counts, est_state)
                    w_raw, rule_next = rule.update(estimate, rule_state)
                    w = present_weights(w_raw, g_counts)
                    # 4. one backward of sum_i w_i L_i (DDP averages: scale by world / K)
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

            # ---- the gradient check (the norm clipping computes anyway), then the update
            halt: torch.Tensor | None = None
            if not skip_step:
                norm = gradient_norm(params, c.grad_clip)
                if immediate:  # read back now (free on CPU): stop or skip before the update
                    if not math.isfinite(float(norm)):
                        opt.zero_grad(set_to_none=True)
                        if c.on_nonfinite == "raise":
                            origin = gradient_origin(raw_model, step_batches, task_loss, M, amp)
                            raise_fault([step, FaultCode.GRADIENT, -1], names, origin=origin)
                        skip_step = True
                else:  # remember it on the device; from the first fault on, updates are skipped
                    recorded = record_gradient_fault(running.fault, norm, step)
                    running = running._replace(fault=recorded)
                    halt = recorded[0] >= 0
            if skip_step:
                skipped += 1
            else:
                grad_norm = norm.to(running.grad_norm.device, running.grad_norm.dtype)
                optimizer_step(opt, halt)
                opt.zero_grad(set_to_none=True)
                est_state, rule_state = est_next, rule_next
                w_step = w if K == 1 else present_weights(w_raw, step_counts)
                step_loss = (w_step * step_sums / step_counts.clamp_min(1.0)).sum()
                running = _accumulate(running, w_step, step_sums, step_counts, step_loss, grad_norm)
            if bar is not None:
                bar.update(1)

            # ---- checks and logs: one host read per log_every (or check_every) steps
            logging_now = step % log_every == 0 or step == steps
            if logging_now or step % check_every == 0:
                packed = _read_back(running)
                raise_fault(packed[3 * M + 3 :], names)
                agreed_stop = agreed_stop or packed[3 * M + 2] > 0
            if logging_now:
                now = time.perf_counter()
                elapsed = max(now - interval_start, 1e-12)
                entry = log_entry(packed, M, running.interval_steps, step, skipped)
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
                    bar.set_postfix(progress_postfix(entry, names), refresh=False)
                running = _new_interval(running)
                interval_start, interval_tokens, last_log_step = now, 0, step

            # ---- interruption (all ranks agree on the step) and periodic checkpoints
            if not ctx.distributed:
                agreed_stop = stops is not None and stops.requested
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
            if c.checkpoint_every is not None and step % c.checkpoint_every == 0 and step < steps:
                save(step)

    # ---- the end
    raise_fault(running.fault.tolist(), names)
    if c.checkpoint_dir is not None:
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
    for folder in (c.log_dir, c.checkpoint_dir):  # the time-averaged weights, as JSON
        if ctx.is_main and folder is not None:
            write_json_atomic(folder / "mean_weights.json", summary)
    if log is not None:
        log.close()
    if writer is not None:
        writer.close()
    return PretrainResult(
        model=raw_model,
        history=history_arrays(history, M),
        mean_weights=mean_weights,
        steps=step,
        skipped_steps=skipped,
        rule_state=rule_state,
        estimator_state=est_state,
        checkpoint=last_checkpoint if c.checkpoint_dir is not None else None,
        log_path=None if c.log_dir is None else c.log_dir / "log.jsonl",
        wall_seconds=time.perf_counter() - start_time,
        stopped_early=stopped_early,
        config=asdict(record),
    )


def _accumulate(
    running: Running,
    weights: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
    loss: torch.Tensor,
    grad_norm: torch.Tensor,
) -> Running:
    """``running`` after one applied step (device-side sums, no host sync)."""
    return running._replace(
        weight_sum=running.weight_sum + weights,
        applied_steps=running.applied_steps + 1,
        interval_sums=running.interval_sums + sums,
        interval_counts=running.interval_counts + counts,
        interval_weights=running.interval_weights + weights,
        interval_loss=running.interval_loss + loss,
        interval_steps=running.interval_steps + 1,
        grad_norm=grad_norm,
    )


def _read_back(running: Running) -> list[float]:
    """The interval sums, last gradient norm, stop flag and fault in one host read:
    ``[sums (M), counts (M), weights (M), loss, grad_norm, stop, fault (3)]``."""
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
    )
    return packed.tolist()  # type: ignore[no-any-return]


def _new_interval(running: Running) -> Running:
    """``running`` with the interval sums reset after a logging step."""
    zeros = torch.zeros_like(running.interval_sums)
    return running._replace(
        interval_sums=zeros,
        interval_counts=zeros,
        interval_weights=zeros,
        interval_loss=torch.zeros_like(running.interval_loss),
        interval_steps=0,
    )
