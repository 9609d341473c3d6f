"""Faults and bad input: clear errors naming the step and the task, and no checkpoint damage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import deep
import minimax_core as mc

M = 3


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(2, 1)


def _batches(n: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {"x": torch.randn(6, 2, generator=g), "t": torch.tensor([0, 1, 2, 0, 1, 2])}
        for _ in range(n)
    ]


def _loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    return model(batch["x"]).squeeze(1) ** 2, batch["t"]


def _nan_at(step: int, task: int, value: float = float("nan")) -> Any:
    calls = {"n": 0}

    def task_loss(
        model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        calls["n"] += 1
        values, ids = _loss(model, batch)
        if calls["n"] == step:
            values = torch.where(ids == task, values * value, values)
        return values, ids

    return task_loss


def _run(**options: Any) -> deep.PretrainResult:
    kwargs: dict[str, Any] = {
        "num_tasks": M,
        "task_loss": _loss,
        "rule": mc.weights.softmax(0.5),
        "steps": 4,
        "progress": False,
        "log_every": 1,
    }
    kwargs.update(options)
    return deep.pretrain(_model(), kwargs.pop("batches", _batches()), **kwargs)


def test_nan_loss_stops_naming_step_and_task(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 3: task 1 \(verbs\)"):
        _run(
            task_loss=_nan_at(3, 1), task_names=["nouns", "verbs", "other"], checkpoint_dir=tmp_path
        )
    with pytest.raises(
        FloatingPointError, match=r"non-finite loss at step 2: task 2 \(task2\) has mean loss inf"
    ):
        _run(task_loss=_nan_at(2, 2, float("inf")))


def test_nan_found_late_still_names_its_step_and_writes_no_checkpoint(tmp_path: Path) -> None:
    """Deferred checks (the accelerator default) read the first fault back later."""
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 2: task 0"):
        _run(
            task_loss=_nan_at(2, 0),
            check_every=3,
            log_every=3,
            checkpoint_dir=tmp_path,
            checkpoint_every=2,
        )
    assert deep.checkpoint.list_checkpoints(tmp_path) == []


@pytest.mark.parametrize("check_every", [1, 2])
def test_a_fault_leaves_earlier_checkpoints_intact(tmp_path: Path, check_every: int) -> None:
    with pytest.raises(FloatingPointError, match="non-finite loss at step 3"):
        _run(
            task_loss=_nan_at(3, 0),
            checkpoint_dir=tmp_path,
            checkpoint_every=1,
            keep_checkpoints=None,
            check_every=check_every,
            log_every=check_every,
        )
    names = [p.name for p in deep.checkpoint.list_checkpoints(tmp_path)]
    assert names == ["step_00000001", "step_00000002"]
    assert deep.load_checkpoint(tmp_path).step == 2  # hashes verified
    resumed = _run(resume=tmp_path / "step_00000002")  # and it resumes
    assert resumed.steps == 4


def test_skip_drops_the_step_and_counts_it() -> None:
    """Skipping step 2 (NaN) of [d0, d0, d1, d2] equals a clean run on [d0, d1, d2]."""
    data = _batches(3)
    clean = _run(steps=3, batches=data, lr_schedule="constant")
    skipped = _run(
        steps=4,
        batches=[data[0], data[0], data[1], data[2]],
        task_loss=_nan_at(2, 1),
        on_nonfinite="skip",
        lr_schedule="constant",
    )
    assert skipped.skipped_steps == 1 and skipped.steps == 4
    for a, b in zip(clean.model.parameters(), skipped.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert skipped.history["step"].tolist() == [1, 2, 3, 4]
    assert np.isnan(skipped.history["loss"][1]) and np.isfinite(skipped.history["loss"][2])
    with pytest.raises(ValueError, match="on_nonfinite='skip' needs check_every=1"):
        _run(on_nonfinite="skip", check_every=2)


def test_task_ids_out_of_range_name_the_step(tmp_path: Path) -> None:
    def bad_ids(
        model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        values, ids = _loss(model, batch)
        return values, ids + 1  # ids 1..3 with num_tasks = 3: a num_tasks mismatch

    with pytest.raises(ValueError, match=r"task ids outside \[0, num_tasks\) = \[0, 3\) at step 1"):
        _run(task_loss=bad_ids, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"task ids outside \[0, num_tasks\) = \[0, 3\) at step 1"):
        _run(task_loss=bad_ids, check_every=2, log_every=2)
    assert deep.checkpoint.list_checkpoints(tmp_path) == []


def test_empty_batches_and_missing_losses_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="empty batch at step 1: task_loss returned 0 items"):
        _run(task_loss=lambda m, b: (m(b["x"][:0]).squeeze(1), b["t"][:0]))
    with pytest.raises(
        ValueError, match="empty batch at step 1: every item has task id ignore_index"
    ):
        _run(task_loss=lambda m, b: (m(b["x"]).squeeze(1), torch.full_like(b["t"], -100)))
    with pytest.raises(ValueError, match="batches yielded no batch at all"):
        _run(batches=[])
    # before: a warning and a run of 0 steps (#14.7)
    with pytest.raises(ValueError, match=r"batches yielded no batch at all \(an empty or already"):
        _run(batches=iter([]))
    with pytest.raises(ValueError, match="batches yielded no batch at all"):
        _run(batches=(b for b in _batches() if False))
    with pytest.raises(TypeError, match="task_loss returned no loss tensor at step 1"):
        _run(task_loss=lambda m, b: (None, b["t"]))
    with pytest.raises(TypeError, match=r"must return \(per_item_losses, task_ids\)"):
        _run(task_loss=lambda m, b: m(b["x"]).sum())
    with pytest.raises(ValueError, match="returned a scalar loss at step 1"):
        _run(task_loss=lambda m, b: (m(b["x"]).mean(), b["t"]))
    with pytest.raises(ValueError, match="do not require grad"):
        _run(task_loss=lambda m, b: (m(b["x"]).squeeze(1).detach(), b["t"]))
    with pytest.raises(ValueError, match="same shape"):
        _run(task_loss=lambda m, b: (m(b["x"]).squeeze(1), b["t"][:2]))


def test_a_model_that_returns_no_loss() -> None:
    """A transformers model called without labels has ``loss=None``."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    model = BertForMaskedLM(config)
    batch = {"input_ids": torch.randint(0, 50, (2, 8))}
    with pytest.raises(TypeError, match="task_loss returned no loss tensor at step 1"):
        deep.pretrain(
            model,
            [batch],
            num_tasks=2,
            task_loss=lambda m, b: (m(**b).loss, torch.zeros(16, dtype=torch.long)),
            rule=mc.weights.uniform(),
            steps=1,
            progress=False,
        )


def test_one_shot_data_running_out_ends_the_run_with_a_warning() -> None:
    with pytest.warns(
        RuntimeWarning, match="batches ran out after 2 micro-batches; stopping after step 2 of 4"
    ):
        result = _run(batches=iter(_batches(2)))
    assert result.steps == 2 and result.stopped_early


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"num_tasks": 0}, ValueError, "num_tasks must be an integer >= 1"),
        ({"steps": 0}, ValueError, "steps must be an integer >= 1"),
        ({"lr": -1.0}, ValueError, "lr must be a finite number > 0"),
        ({"lr": float("nan")}, ValueError, "lr must be a finite number > 0"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay must be a finite number >= 0"),
        ({"warmup_steps": 9}, ValueError, "warmup_steps must be <= steps = 4"),
        ({"lr_schedule": "step"}, ValueError, "lr_schedule must be 'cosine', 'linear', 'constant'"),
        (
            {"min_lr_ratio": 2.0},
            ValueError,
            r"min_lr_ratio must be a finite number >= 0.0 and <= 1.0",
        ),
        ({"grad_clip": 0.0}, ValueError, "grad_clip must be a finite number > 0"),
        ({"accumulation_steps": 0}, ValueError, "accumulation_steps must be an integer >= 1"),
        ({"precision": "fp16"}, ValueError, r"precision must be one of \('auto', 'bf16', 'fp32'\)"),
        ({"on_nonfinite": "ignore"}, ValueError, "on_nonfinite must be 'raise' or 'skip'"),
        ({"task_names": ["a"]}, ValueError, "task_names must have num_tasks = 3 names"),
        ({"rule": "softmax"}, TypeError, "rule must be a minimax_core"),
        ({"task_loss": 3}, TypeError, "task_loss must be callable"),
        ({"device": "gpu0"}, ValueError, "device must name a torch device"),
        ({"batches": 5}, TypeError, "batches must be a re-iterable"),
        (
            {"optimizer": torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1), "lr": 0.1},
            ValueError,
            "pass lr or an optimizer",
        ),
        ({"tensorboard": True}, ValueError, "tensorboard=True needs log_dir"),
    ],
)
def test_bad_options_are_clear_errors(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        _run(**options)


def test_rule_and_num_tasks_mismatch() -> None:
    rule = deep.excess_loss(mc.weights.softmax(1.0), [1.0, 2.0])  # built for 2 tasks
    with pytest.raises(ValueError, match="reference_losses has 2 entries but num_tasks = 3"):
        _run(rule=rule)


# ----------------------------------------------------------------- non-finite gradients (#14.1)


def _poisoned_batches(poison_at: int, n: int = 4) -> list[dict[str, Any]]:
    """Batch ``poison_at`` (1-based) gives task 1 a NaN gradient with a finite loss."""
    return [dict(b, poison=torch.tensor(i + 1 == poison_at)) for i, b in enumerate(_batches(n))]


def _sqrt_at_zero_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Finite losses; on a poisoned batch task 1's loss is ``sqrt(u^2)`` at ``u = 0`` (its
    value is finite, its derivative ``inf * 0 = NaN``). Data-determined, so a re-run agrees."""
    out = model(batch["x"]).squeeze(1)
    values = out**2
    if bool(batch["poison"]):
        hit = batch["t"] == 1  # indexing, not torch.where (whose backward spreads the NaN)
        zero = out[hit] - out[hit].detach()
        values = values.clone()
        values[hit] = torch.sqrt(zero**2) + values[hit].detach()
    return values, batch["t"]


def _params_of(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("grad_clip", [1.0, None])
def test_nan_gradient_with_finite_loss_names_step_and_task(
    tmp_path: Path, grad_clip: float | None
) -> None:
    """Before: the update wrote NaN weights, a NaN checkpoint, and the error blamed step 4."""
    clean = _run(steps=2, batches=_poisoned_batches(0)[:2], lr_schedule="constant")
    model = _model()
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite gradient at step 3 while every task's loss is finite .*; the first NaN "
        r"of the backward comes from PowBackward0, whose forward is at .*test_deep_faults.py:\d+ "
        r"\(in _sqrt_at_zero_loss\)",
    ):
        deep.pretrain(
            model,
            _poisoned_batches(3),
            num_tasks=M,
            task_loss=_sqrt_at_zero_loss,
            rule=mc.weights.softmax(0.5),
            steps=4,
            progress=False,
            lr_schedule="constant",
            grad_clip=grad_clip,
            task_names=["nouns", "verbs", "other"],
            checkpoint_dir=tmp_path,
            checkpoint_every=1,
            keep_checkpoints=None,
        )
    names = [p.name for p in deep.checkpoint.list_checkpoints(tmp_path)]
    assert names == ["step_00000001", "step_00000002"]
    if grad_clip is not None:  # the model holds the weights from before step 3
        for a, b in zip(clean.model.parameters(), model.parameters(), strict=True):
            assert torch.equal(a, b)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_skip_drops_a_step_with_a_nan_gradient() -> None:
    """Before: ``skip`` applied the NaN update (the NaN only showed in the next step's loss)."""
    data = _poisoned_batches(0, 3)
    clean = _run(steps=3, batches=data, lr_schedule="constant", task_loss=_sqrt_at_zero_loss)
    poisoned = dict(data[0], poison=torch.tensor(True))
    skipped = _run(
        steps=4,
        batches=[data[0], poisoned, data[1], data[2]],
        task_loss=_sqrt_at_zero_loss,
        on_nonfinite="skip",
        lr_schedule="constant",
    )
    assert skipped.skipped_steps == 1
    for a, b in zip(clean.model.parameters(), skipped.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("fused", [True, False])
def test_nan_gradient_found_late_names_its_step_and_writes_no_checkpoint(
    tmp_path: Path, fused: bool
) -> None:
    """Deferred checks (the accelerator default) record the first faulty step on the device;
    an optimizer that accepts ``found_inf`` (fused AdamW) skips every update from it on."""
    model = _model()
    with pytest.raises(FloatingPointError, match=r"non-finite gradient at step 2 .*check_every=1"):
        deep.pretrain(
            model,
            _poisoned_batches(2),
            num_tasks=M,
            task_loss=_sqrt_at_zero_loss,
            rule=mc.weights.softmax(0.5),
            steps=4,
            progress=False,
            lr_schedule="constant",
            optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=fused),
            check_every=3,
            log_every=3,
            checkpoint_dir=tmp_path,
            checkpoint_every=2,
        )
    assert deep.checkpoint.list_checkpoints(tmp_path) == []
    if fused:
        one_step = _run(
            steps=1,
            batches=_poisoned_batches(0, 1),
            optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True),
        )
        for a, b in zip(one_step.model.parameters(), model.parameters(), strict=True):
            assert torch.equal(a, b)  # the weights after step 1: steps 2 and 3 were not applied


class _Scaled(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = _model()
        self.register_buffer("scale", torch.ones(()))  # a statistic, as BatchNorm keeps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_no_checkpoint_is_written_with_non_finite_weights(tmp_path: Path) -> None:
    calls = {"n": 0}

    def spoiling_loss(
        model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        calls["n"] += 1
        values, ids = _loss(model, batch)
        if calls["n"] == 2:  # after the forward: the losses stay finite, the buffer does not
            model.scale.fill_(float("nan"))  # type: ignore[operator]
        return values, ids

    with pytest.raises(
        FloatingPointError,
        match=r"refusing to write the checkpoint of step 2: non-finite values in scale",
    ):
        deep.pretrain(
            _Scaled(),
            _batches(),
            num_tasks=M,
            task_loss=spoiling_loss,
            rule=mc.weights.softmax(0.5),
            steps=4,
            progress=False,
            checkpoint_dir=tmp_path,
            checkpoint_every=1,
            keep_checkpoints=None,
        )
    assert [p.name for p in deep.checkpoint.list_checkpoints(tmp_path)] == ["step_00000001"]


def test_integer_losses_are_a_clear_error() -> None:
    """Before: 'do not require grad', which sends the user to look for a detach."""
    with pytest.raises(TypeError, match=r"losses of dtype torch\.int64 at step 1; losses must be"):
        _run(task_loss=lambda m, b: ((m(b["x"]).squeeze(1) * 10).long(), b["t"]))
