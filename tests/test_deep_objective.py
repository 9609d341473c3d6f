"""The objective: per-task means, absent tasks, estimators, rule wrappers, one-step exactness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import deep
import minimax_core as mc


@st.composite
def _items(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    m = draw(st.integers(1, 6))
    n = draw(st.integers(1, 40))
    values = draw(st.lists(st.floats(-50, 50, allow_nan=False), min_size=n, max_size=n))
    ids = draw(st.lists(st.sampled_from([*range(m), deep.IGNORE_INDEX]), min_size=n, max_size=n))
    return np.asarray(values), np.asarray(ids), m


@given(_items())
def test_task_means_match_a_python_loop(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    values, ids, m = case
    means, counts = deep.task_means(torch.tensor(values), torch.tensor(ids), m)
    for i in range(m):
        chosen = values[ids == i]
        assert counts[i].item() == chosen.size
        expected = chosen.mean() if chosen.size else 0.0
        assert means[i].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert counts.dtype == torch.int64


def test_task_means_shape_any_float32_gradient() -> None:
    values = torch.tensor(
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.bfloat16, requires_grad=True
    )
    ids = torch.tensor([[0, 1, 1], [0, -100, 2]])
    means, counts = deep.task_means(values, ids, 4)
    assert means.dtype == torch.float32
    assert counts.tolist() == [2, 2, 1, 0]
    assert means.tolist() == [2.5, 2.5, 6.0, 0.0]
    means.sum().backward()
    # d mean_i / d l_k = 1 / n_i for items of task i, 0 for ignored items
    assert values.grad.float().tolist() == [[0.5, 0.5, 0.5], [0.5, 0.0, 1.0]]


@pytest.mark.parametrize("bad", [3, 7, -1, -5])
def test_task_ids_out_of_range_are_an_error_naming_the_range(bad: int) -> None:
    with pytest.raises(ValueError, match=r"task_ids must lie in \[0, num_tasks\) = \[0, 3\)"):
        deep.task_means(torch.ones(4), torch.tensor([0, 1, bad, 2]), 3)


def test_task_means_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        deep.task_means(torch.ones(4), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="integer dtype"):
        deep.task_means(torch.ones(3), torch.zeros(3), 2)
    with pytest.raises(TypeError, match="floating dtype"):
        deep.task_means(torch.ones(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="num_tasks must be an integer >= 1"):
        deep.task_means(torch.ones(3), torch.zeros(3, dtype=torch.long), 0)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        deep.task_means(np.ones(3), torch.zeros(3, dtype=torch.long), 2)


def test_task_sums_counts_invalid_ids_without_raising() -> None:
    sums, counts, invalid = deep.task_sums(torch.ones(5), torch.tensor([0, 5, -100, -3, 1]), 2)
    assert sums.tolist() == [1.0, 1.0] and counts.tolist() == [1.0, 1.0]
    assert int(invalid) == 2


def test_present_weights_zero_for_absent_and_renormalised() -> None:
    w = torch.tensor([0.5, 0.3, 0.2])
    out = deep.present_weights(w, torch.tensor([3.0, 0.0, 1.0]))
    assert out.tolist() == pytest.approx([0.5 / 0.7, 0.0, 0.2 / 0.7])
    # hardmax picked an absent task: the present tasks share equally
    out = deep.present_weights(torch.tensor([0.0, 1.0, 0.0]), torch.tensor([2.0, 0.0, 5.0]))
    assert out.tolist() == [0.5, 0.0, 0.5]
    assert deep.present_weights(w, torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_per_token_cross_entropy_ignores_unlabelled_tokens() -> None:
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, -100, 4], [-100, 0, 2]])
    tasks = torch.tensor([[0, 1, 1], [2, 2, 0]])
    values, ids = deep.per_token_cross_entropy(logits, labels, tasks)
    assert ids.tolist() == [0, -100, 1, -100, 2, 0]
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 5)[0:1], labels.reshape(-1)[0:1])
    assert values[0].item() == pytest.approx(ref.item())
    _, counts = deep.task_means(values, ids, 3)
    assert counts.tolist() == [2, 1, 1]


def test_ema_estimator_blends_present_keeps_absent_fills_unseen() -> None:
    est = deep.ema(0.5)
    state = est.init(3)
    view, state = est.update(torch.tensor([2.0, 4.0, 0.0]), torch.tensor([1.0, 1.0, 0.0]), state)
    assert view.tolist() == [2.0, 4.0, 3.0]  # task 2 unseen: mean of the present tasks
    view, state = est.update(torch.tensor([4.0, 0.0, 10.0]), torch.tensor([1.0, 0.0, 2.0]), state)
    assert view.tolist() == [3.0, 4.0, 10.0]  # blend, keep, first observation
    assert (
        deep.ema().update(torch.tensor([1.0]), torch.tensor([1.0]), deep.ema().init(1))[0].item()
        == 1.0
    )
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\)"):
            deep.ema(bad)


def test_mix_uniform_excess_and_group_size_wrappers() -> None:
    losses = np.array([1.0, 2.0, 4.0])
    mixed = deep.mix_uniform(mc.weights.hardmax(), 0.3)
    w, _ = mixed.update(losses, mixed.init(3))
    assert w.tolist() == pytest.approx([0.1, 0.1, 0.8])

    # DoReMi: task 2 is hard for the reference too, so task 1 has the largest excess
    doremi = deep.excess_loss(mc.weights.hardmax(), [0.5, 0.5, 3.9])
    w, _ = doremi.update(torch.tensor(losses), doremi.init(3))
    assert isinstance(w, torch.Tensor) and w.tolist() == [0.0, 1.0, 0.0]
    unclipped = deep.excess_loss(mc.weights.softmax(1.0), [2.0, 0.0, 0.0], clip_at_zero=False)
    w, _ = unclipped.update(losses, unclipped.init(3))
    assert w.tolist() == pytest.approx(
        mc.weights.softmax_weights(np.array([-1.0, 2.0, 4.0]), 1.0).tolist()
    )

    # Group DRO: C / sqrt(n) lifts the small group 0 to the top
    adjusted = deep.group_size_adjusted(mc.weights.hardmax(), [1.0, 100.0, 10000.0], 4.0)
    w, _ = adjusted.update(losses, adjusted.init(3))
    assert w.tolist() == [1.0, 0.0, 0.0]  # 1 + 4 > 2 + 0.4 and > 4 + 0.04
    assert adjusted.name == "group_size_adjusted(hardmax)"

    # wrappers nest and keep the inner rule's state
    nested = deep.mix_uniform(
        deep.excess_loss(mc.weights.exponentiated_gradient(1.0), [0, 0, 0]), 0.1
    )
    state = nested.init(3)
    _, state = nested.update(losses, state)
    assert state.step == 1 and state.log_weights is not None
    assert nested.params == {
        "step_size": 1.0,
        "excess_loss.clip_at_zero": 1.0,
        "mix_uniform.epsilon": 0.1,
    }


def test_wrappers_reject_bad_input() -> None:
    with pytest.raises(ValueError, match=r"epsilon must lie in \[0, 1\]"):
        deep.mix_uniform(mc.weights.uniform(), 1.5)
    with pytest.raises(ValueError, match="reference_losses has 2 entries but num_tasks = 3"):
        deep.excess_loss(mc.weights.uniform(), [1.0, 2.0]).init(3)
    with pytest.raises(ValueError, match="group_sizes must be > 0"):
        deep.group_size_adjusted(mc.weights.uniform(), [1.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="adjustment must be a finite number >= 0"):
        deep.group_size_adjusted(mc.weights.uniform(), [1.0, 2.0], -1.0)
    with pytest.raises(ValueError, match="reference_losses must be finite"):
        deep.excess_loss(mc.weights.uniform(), [1.0, float("nan")])
    with pytest.raises(TypeError, match=r"rule must be a minimax_core\.weights rule"):
        deep.mix_uniform("softmax", 0.1)  # type: ignore[arg-type]


def _one_step_setup(seed: int = 0) -> tuple[torch.nn.Module, list[dict[str, torch.Tensor]]]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(12, 3)
    t = torch.tensor([0, 1, 2, 0, 1, 0, 0, 1, 0, 0, 1, 0])
    y = torch.randn(12, 1) * (1 + t[:, None])
    return model, [{"x": x, "y": y, "t": t}]


def _sq_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    return ((model(batch["x"]) - batch["y"]) ** 2).squeeze(1), batch["t"]


@pytest.mark.parametrize(
    "rule",
    [mc.weights.softmax(0.5), mc.weights.uniform(), mc.weights.hardmax()],
    ids=lambda r: r.name,
)
def test_one_step_is_weighted_gradient_descent(rule: mc.weights.WeightRule) -> None:
    """x_1 = x_0 - eta sum_i w_i grad L_i(x_0) with w = rule(L(x_0)): one backward, exact."""
    model, batches = _one_step_setup()
    start = [p.detach().clone() for p in model.parameters()]
    eta = 0.05
    # the reference: per-task gradients one at a time
    batch = batches[0]
    values, ids = _sq_loss(model, batch)
    means = torch.stack([values[ids == i].mean() for i in range(3)])
    w, _ = rule.update(means.detach(), rule.init(3))
    grads = [
        torch.autograd.grad(means[i], list(model.parameters()), retain_graph=True) for i in range(3)
    ]
    expected = [p - eta * sum(w[i] * grads[i][j] for i in range(3)) for j, p in enumerate(start)]

    result = deep.pretrain(
        model,
        batches,
        num_tasks=3,
        task_loss=_sq_loss,
        rule=rule,
        steps=1,
        optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=eta),
        lr_schedule="constant",
        grad_clip=None,
        progress=False,
        log_every=1,
    )
    for got, want in zip(result.model.parameters(), expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.history["weights"][0], w.numpy(), rtol=1e-6)
    np.testing.assert_allclose(result.history["task_losses"][0], means.detach().numpy(), rtol=1e-6)
    assert result.history["loss"][0] == pytest.approx(float((w * means.detach()).sum()), rel=1e-6)


def test_absent_task_gets_zero_weight_in_the_step() -> None:
    model, batches = _one_step_setup()
    batches[0]["t"] = torch.where(batches[0]["t"] == 2, 1, batches[0]["t"])  # task 2 absent
    result = deep.pretrain(
        model,
        batches,
        num_tasks=3,
        task_loss=_sq_loss,
        rule=mc.weights.softmax(0.1),
        steps=1,
        progress=False,
        log_every=1,
    )
    w = result.history["weights"][0]
    assert w[2] == 0.0 and w.sum() == pytest.approx(1.0)
    assert result.history["counts"][0].tolist() == [7.0, 5.0, 0.0]
    assert np.isnan(result.history["task_losses"][0, 2])
