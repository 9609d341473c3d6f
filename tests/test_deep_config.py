"""deep.config: the validated options of deep.pretrain and the record its checkpoints carry."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import minimax_core as mc
from deep.config import ALLOWABLE_CHANGES, CHANGEABLE, PretrainConfig, RunRecord

FORMAT2_META = Path(__file__).parent / "data" / "pretrain_format2" / "step_00000004" / "meta.json"


def test_construction_normalises_every_field(tmp_path: Path) -> None:
    config = PretrainConfig(
        num_tasks=2,
        steps=5,
        lr=1,
        betas=(0, 1),  # type: ignore[arg-type]
        checkpoint_dir=str(tmp_path),  # type: ignore[arg-type]
        resume=str(tmp_path / "step_00000002"),  # type: ignore[arg-type]
        allow_changes=True,  # type: ignore[arg-type]
    )
    assert isinstance(config.lr, float) and config.betas == (0.0, 1.0)
    assert config.checkpoint_dir == tmp_path and config.task_names == ("task0", "task1")
    assert config.resume_from == tmp_path / "step_00000002"
    assert config.allow_changes == frozenset(ALLOWABLE_CHANGES)
    assert (
        PretrainConfig(num_tasks=1, steps=1, checkpoint_dir=tmp_path, resume=True).resume_from
        == tmp_path
    )
    assert PretrainConfig(num_tasks=1, steps=1, resume=False).resume_from is None
    assert "lr_schedule" in CHANGEABLE and "schedule" not in ALLOWABLE_CHANGES


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"steps": 0}, ValueError, "steps must be an integer >= 1, got 0"),
        ({"warmup_steps": 9}, ValueError, "warmup_steps must be <= steps = 5, got 9"),
        ({"lr": 0.0}, ValueError, "lr must be a finite number > 0.0"),
        ({"lr": "big"}, TypeError, "lr must be a real number, got str"),
        ({"precision": "fp16"}, ValueError, "precision must be one of"),
        ({"lr_schedule": "step"}, ValueError, "lr_schedule must be 'cosine'"),
        ({"task_names": ("a",)}, ValueError, "task_names must have num_tasks = 2 names, got 1"),
        ({"allow_changes": ["schedule"]}, ValueError, "allow_changes names unknown options"),
        ({"on_nonfinite": "skip", "check_every": 2}, ValueError, "needs check_every=1"),
        ({"checkpoint_every": 2}, ValueError, "checkpoint_every needs checkpoint_dir"),
    ],
)
def test_a_bad_option_is_named(options: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        PretrainConfig(**{"num_tasks": 2, "steps": 5, **options})


def test_check_every_is_resolved_on_the_device() -> None:
    config = PretrainConfig(num_tasks=2, steps=5, log_every=4)
    assert config.on_device(torch.device("cpu")).check_every == 1
    assert config.on_device(torch.device("cuda")).check_every == 4
    skip = PretrainConfig(num_tasks=2, steps=5, log_every=4, on_nonfinite="skip")
    assert skip.on_device(torch.device("cuda")).check_every == 1
    fixed = PretrainConfig(num_tasks=2, steps=5, check_every=3)
    assert fixed.on_device(torch.device("cpu")).check_every == 3


def test_the_record_keeps_the_checkpoint_format_2_fields() -> None:
    """``config.json`` and ``meta.json["config"]`` keep the field names of checkpoints written
    before the split (``schedule`` included), so old checkpoints are compared field by field."""
    config = PretrainConfig(num_tasks=3, steps=6, lr_schedule=lambda step: 1.0)
    record = RunRecord.of(
        config,
        rule=mc.weights.softmax(0.5),
        estimator=mc.weights.ema(0.0),
        base_lrs=[0.1, 0.1],
        world_size=1,
        autocast_to=None,
    )
    saved = json.loads(FORMAT2_META.read_text())["config"]
    assert set(asdict(record)) == set(saved)
    assert record.schedule == "callable" and record.precision == "fp32"
    assert set(CHANGEABLE.values()) <= set(saved)
