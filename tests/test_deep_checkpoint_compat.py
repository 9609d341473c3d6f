"""A checkpoint written by an earlier ``deep.pretrain`` (format 2, before the engine was split
into config/optim/faults/run_state modules) resumes with today's code to the same run.

``tests/data/pretrain_format2/step_00000004`` is the step-4 checkpoint of a 6-step run
(softmax(0.5), 2 micro-batches per step, warm-up 2 then cosine) written at commit 87bc54a;
``expected.json`` holds that run's final parameters and history, uninterrupted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

import deep
import minimax_core as mc

DATA = Path(__file__).parent / "data" / "pretrain_format2"
M = 3


def _data(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(12, 5, generator=g)
        ids = torch.arange(12) % M
        y = x.sum(1) * (1 + ids) + 0.1 * torch.randn(12, generator=g)
        out.append({"x": x, "y": y, "ids": ids})
    return out


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    )


def _task_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    return (model(batch["x"]).squeeze(-1) - batch["y"]) ** 2, batch["ids"]


def test_a_checkpoint_of_the_earlier_code_resumes_to_the_same_run(tmp_path: Path) -> None:
    expected = json.loads((DATA / "expected.json").read_text())
    source = tmp_path / "step_00000004"
    shutil.copytree(DATA / "step_00000004", source)
    result = deep.pretrain(
        _model(),
        _data(12),
        num_tasks=M,
        task_loss=_task_loss,
        rule=mc.weights.softmax(0.5),
        steps=6,
        lr=0.05,
        warmup_steps=2,
        accumulation_steps=2,
        resume=source,
        progress=False,
        log_every=1,
    )
    assert result.steps == 6
    assert result.history["step"].tolist() == expected["step"]
    for got, want in zip(result.model.parameters(), expected["params"], strict=True):
        np.testing.assert_allclose(got.detach().double().flatten().numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(result.history["loss"], expected["loss"], rtol=1e-6)
    np.testing.assert_allclose(result.history["weights"], expected["weights"], rtol=1e-6)
    np.testing.assert_allclose(result.mean_weights, expected["mean_weights"], rtol=1e-6)
