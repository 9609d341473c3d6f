"""deep.apps.finetune: the one fine-tuning configuration (budget and checks) of the text and
image applications; deep.diagnostics.linear_probe's step budget is checked."""

from __future__ import annotations

import numpy as np
import pytest

from deep.apps.finetune import IMAGE_FINETUNE, FinetuneConfig
from deep.diagnostics import linear_probe


def test_budget_is_steps_else_epochs_of_batches():
    assert FinetuneConfig(steps=7).total_steps(1000) == 7
    assert FinetuneConfig(epochs=2.0, batch_size=32).total_steps(65) == 6  # 2 x ceil(65/32)
    assert FinetuneConfig(epochs=0.1, batch_size=32).total_steps(10) == 1  # at least one step
    assert IMAGE_FINETUNE.total_steps(10) == 200


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": True}, "steps"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"lr": float("inf")}, "lr"),
    ],
)
def test_bad_values_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FinetuneConfig(**kwargs)


def test_probe_steps_are_checked():
    x = np.random.default_rng(0).normal(size=(20, 3))
    y = (x[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match="steps"):
        linear_probe(x, y, x, y, num_labels=2, steps=0)
