"""deep.optim: AdamW grouping, the learning-rate factor and the precision choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deep.optim import (
    LR_SCHEDULES,
    adamw,
    autocast,
    autocast_dtype,
    check_lr_schedule,
    check_precision,
    lr_factor,
    param_groups,
)


def _model() -> nn.Module:
    return nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.Linear(4, 3))


def test_param_groups_decay_matrices_only_and_skip_frozen() -> None:
    model = _model()
    model[0].weight.requires_grad_(False)
    decay, no_decay = param_groups(model.parameters(), 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p is model[2].weight for p in decay["params"]] == [True]
    expected = [model[1].weight, model[1].bias, model[2].bias]
    assert len(no_decay["params"]) == 3
    assert all(p is q for p, q in zip(no_decay["params"], expected, strict=True))
    only_bias = param_groups([nn.Parameter(torch.zeros(3))], 0.1)
    assert len(only_bias) == 1 and only_bias[0]["weight_decay"] == 0.0


def test_adamw_groups_and_refuses_a_frozen_model() -> None:
    opt = adamw(_model(), lr=0.01, weight_decay=0.05, betas=(0.8, 0.9), device="cpu")
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert all(g["lr"] == 0.01 and g["betas"] == (0.8, 0.9) for g in opt.param_groups)
    assert not opt.defaults["fused"]
    frozen = _model().requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter that requires grad"):
        adamw(frozen, lr=0.01, weight_decay=0.0)


def test_lr_schedule_and_precision_checks_name_the_parameter() -> None:
    for name in LR_SCHEDULES:
        assert check_lr_schedule(name) == name
    assert lr_factor(0, steps=4, warmup_steps=0, lr_schedule=lambda s: 0.5, min_lr_ratio=0) == 0.5
    with pytest.raises(ValueError, match="lr_schedule must be 'cosine', 'linear', 'constant'"):
        check_lr_schedule("step")
    with pytest.raises(ValueError, match=r"precision must be one of \('auto', 'bf16', 'fp32'\)"):
        check_precision("fp16")


def test_autocast_dtype_on_cpu() -> None:
    assert autocast_dtype("auto", "cpu") is None
    assert autocast_dtype("fp32", torch.device("cpu")) is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    x = torch.ones(2, 2)
    with autocast(torch.bfloat16, "cpu"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(None, "cpu"):
        assert (x @ x).dtype == torch.float32
