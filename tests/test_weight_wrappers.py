"""The loss estimator and the rule wrappers of minimax_core.weights (moved there from
deep.objective): their laws, numpy and torch alike without host copies, and chain's order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import deep
from minimax_core import weights as W


def test_ema_estimator_blends_present_keeps_absent_fills_unseen() -> None:
    est = W.ema(0.5)
    state = est.init(3)
    view, state = est.update(torch.tensor([2.0, 4.0, 0.0]), torch.tensor([1.0, 1.0, 0.0]), state)
    assert view.tolist() == [2.0, 4.0, 3.0]  # task 2 unseen: mean of the present tasks
    view, state = est.update(torch.tensor([4.0, 0.0, 10.0]), torch.tensor([1.0, 0.0, 2.0]), state)
    assert view.tolist() == [3.0, 4.0, 10.0]  # blend, keep, first observation
    assert (
        W.ema(0.0).update(torch.tensor([1.0]), torch.tensor([1.0]), W.ema(0.0).init(1))[0].item()
        == 1.0
    )
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\)"):
            W.ema(bad)


def test_mix_uniform_excess_and_group_size_wrappers() -> None:
    losses = np.array([1.0, 2.0, 4.0])
    mixed = W.mix_uniform(W.hardmax(), 0.3)
    w, _ = mixed.update(losses, mixed.init(3))
    assert w.tolist() == pytest.approx([0.1, 0.1, 0.8])

    # DoReMi: task 2 is hard for the reference too, so task 1 has the largest excess
    doremi = W.excess_loss(W.hardmax(), [0.5, 0.5, 3.9])
    w, _ = doremi.update(torch.tensor(losses), doremi.init(3))
    assert isinstance(w, torch.Tensor) and w.tolist() == [0.0, 1.0, 0.0]
    unclipped = W.excess_loss(W.softmax(1.0), [2.0, 0.0, 0.0], clip_at_zero=False)
    w, _ = unclipped.update(losses, unclipped.init(3))
    assert w.tolist() == pytest.approx(W.softmax_weights(np.array([-1.0, 2.0, 4.0]), 1.0).tolist())

    # Group DRO: C / sqrt(n) lifts the small group 0 to the top
    adjusted = W.group_size_adjusted(W.hardmax(), [1.0, 100.0, 10000.0], 4.0)
    w, _ = adjusted.update(losses, adjusted.init(3))
    assert w.tolist() == [1.0, 0.0, 0.0]  # 1 + 4 > 2 + 0.4 and > 4 + 0.04
    assert adjusted.name == "group_size_adjusted(hardmax)"

    # wrappers nest and keep the inner rule's state
    nested = W.mix_uniform(W.excess_loss(W.exponentiated_gradient(1.0), [0, 0, 0]), 0.1)
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
        W.mix_uniform(W.uniform(), 1.5)
    with pytest.raises(ValueError, match="reference_losses has 2 entries but num_tasks = 3"):
        W.excess_loss(W.uniform(), [1.0, 2.0]).init(3)
    with pytest.raises(ValueError, match="group_sizes must be > 0"):
        W.group_size_adjusted(W.uniform(), [1.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="adjustment must be a finite number >= 0"):
        W.group_size_adjusted(W.uniform(), [1.0, 2.0], -1.0)
    with pytest.raises(ValueError, match="reference_losses must be finite"):
        W.excess_loss(W.uniform(), [1.0, float("nan")])
    with pytest.raises(TypeError, match=r"rule must be a minimax_core\.weights rule"):
        W.mix_uniform("softmax", 0.1)  # type: ignore[call-overload]


def test_the_wrappers_live_beside_the_rules_only() -> None:
    """One home: the wrappers and the estimator are :mod:`minimax_core.weights` names;
    :mod:`deep` (the torch engine) does not carry second copies or aliases of them."""
    for name in ("ema", "mix_uniform", "excess_loss", "group_size_adjusted", "chain"):
        assert callable(getattr(W, name))
    for name in ("ema", "mix_uniform", "excess_loss", "group_size_adjusted", "LossEstimator"):
        assert not hasattr(deep.objective, name)
        with pytest.raises(AttributeError):
            getattr(deep, name)


# --------------------------------------------------------------------------- ema


def test_ema_needs_its_decay() -> None:
    with pytest.raises(TypeError, match="decay"):
        W.ema()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"decay must be a real number in \[0, 1\)"):
        W.ema("0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_tasks must be an integer >= 1"):
        W.ema(0.5).init(0)
    est = W.ema(0.5)
    with pytest.raises(ValueError, match=r"means and counts must have shape \(num_tasks,\)"):
        est.update(np.zeros(3), np.ones(2), est.init(3))


def _run_estimator(est: W.LossEstimator, pairs: list[tuple[Any, Any]], m: int) -> list[Any]:
    state, views = est.init(m), []
    for means, counts in pairs:
        view, state = est.update(means, counts, state)
        views.append(view)
    return views


@pytest.mark.parametrize("decay", [0.0, 0.3, 0.9])
@given(
    data=st.lists(
        st.tuples(
            hnp.arrays(np.float64, 4, elements=st.floats(-50, 50, allow_nan=False)),
            hnp.arrays(np.float64, 4, elements=st.sampled_from([0.0, 1.0, 3.0])),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_ema_numpy_and_torch_agree(decay: float, data: list[tuple[np.ndarray, np.ndarray]]) -> None:
    est = W.ema(decay)
    got_np = _run_estimator(est, data, 4)
    got_t = _run_estimator(est, [(torch.from_numpy(a), torch.from_numpy(c)) for a, c in data], 4)
    for a, b in zip(got_np, got_t, strict=True):
        assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
        np.testing.assert_array_equal(a, b.numpy())
    # decay 0: a present task reads its batch mean exactly
    if decay == 0.0:
        means, counts = data[-1]
        np.testing.assert_array_equal(got_np[-1][counts > 0], means[counts > 0])


def test_ema_blends_like_its_formula_in_numpy() -> None:
    est = W.ema(0.75)
    first, second = np.array([2.0, 8.0]), np.array([6.0, 0.0])
    (_, view) = _run_estimator(est, [(first, np.ones(2)), (second, np.array([2.0, 0.0]))], 2)
    assert view.tolist() == [0.75 * 2.0 + 0.25 * 6.0, 8.0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_ema_no_host_copy(dtype: torch.dtype) -> None:
    """On the meta device any host copy or sync would raise."""
    est = W.ema(0.5)
    means = torch.empty(5, device="meta", dtype=dtype)
    counts = torch.empty(5, device="meta", dtype=torch.int64)
    views = _run_estimator(est, [(means, counts)] * 3, 5)
    assert views[-1].device.type == "meta" and views[-1].dtype == dtype


# --------------------------------------------------------------------------- wrappers


WRAPPED = {
    "mix_uniform": lambda: W.mix_uniform(W.softmax(0.7), 0.2),
    "excess_loss": lambda: W.excess_loss(W.softmax(0.7), [0.5, -1.0, 2.0, 0.0]),
    "excess_unclipped": lambda: W.excess_loss(
        W.exponentiated_gradient(0.3), [0.5, -1.0, 2.0, 0.0], clip_at_zero=False
    ),
    "group_size_adjusted": lambda: W.group_size_adjusted(W.hardmax(), [1, 10, 100, 4], 2.0),
    "chain": lambda: W.chain(
        W.excess_loss([0.5, -1.0, 2.0, 0.0]),
        W.group_size_adjusted([1, 10, 100, 4], 0.5),
        W.mix_uniform(0.1),
        W.exponentiated_gradient(0.3),
    ),
}


def _run(rule: W.WeightRule, sequence: list[Any]) -> Any:
    state, w = rule.init(4), None
    for losses in sequence:
        w, state = rule.update(losses, state)
    return w


@pytest.mark.parametrize("name", WRAPPED)
@given(
    sequence=st.lists(
        hnp.arrays(np.float64, 4, elements=st.floats(-50, 50, allow_nan=False)),
        min_size=1,
        max_size=3,
    )
)
def test_wrappers_numpy_and_torch_agree(name: str, sequence: list[np.ndarray]) -> None:
    rule = WRAPPED[name]()
    w_np = _run(rule, sequence)
    w_t = _run(rule, [torch.from_numpy(v) for v in sequence])
    assert isinstance(w_np, np.ndarray) and w_np.dtype == np.float64
    assert isinstance(w_t, torch.Tensor) and w_t.dtype == torch.float64
    np.testing.assert_allclose(w_t.numpy(), w_np, rtol=1e-12, atol=1e-300)
    assert w_np.sum() == pytest.approx(1.0, rel=1e-12) and np.all(w_np >= 0)
    # the constants follow the losses' dtype too (converted once per dtype)
    w32 = _run(rule, [torch.from_numpy(v).float() for v in sequence])
    assert w32.dtype == torch.float32
    np.testing.assert_allclose(w32.double().numpy(), w_np, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("name", WRAPPED)
def test_wrappers_no_host_copy(name: str, dtype: torch.dtype) -> None:
    """On the meta device any host copy or sync (``.item()``, ``.numpy()``) would raise."""
    rule = WRAPPED[name]()
    losses = torch.empty(4, device="meta", dtype=dtype)
    w = _run(rule, [losses, losses])
    assert w.device.type == "meta" and w.shape == (4,) and w.dtype == dtype


def test_wrappers_take_tensor_constants() -> None:
    rule = W.excess_loss(W.hardmax(), torch.tensor([0.5, 0.5, 3.9], requires_grad=True))
    w, _ = rule.update(np.array([1.0, 2.0, 4.0]), rule.init(3))
    assert w.tolist() == [0.0, 1.0, 0.0]


# --------------------------------------------------------------------------- chain


def _recording(seen: list[np.ndarray]) -> W.WeightRule:
    """A rule that records the losses it sees and returns uniform weights."""
    inner = W.uniform()

    def update(losses: Any, state: W.WeightState) -> tuple[Any, W.WeightState]:
        seen.append(np.asarray(losses).copy())
        return inner.update(losses, state)

    return W.WeightRule(inner.init, update, "recording", {})


def _sharpen() -> W.RuleWrapper:
    """A wrapper on the way out: ``w -> w^2 / sum w^2``."""

    def wrap(rule: W.WeightRule) -> W.WeightRule:
        def update(losses: Any, state: W.WeightState) -> tuple[Any, W.WeightState]:
            w, state = rule.update(losses, state)
            return w**2 / (w**2).sum(), state

        return W.WeightRule(rule.init, update, f"sharpen({rule.name})", rule.params)

    return W.RuleWrapper(wrap, "sharpen")


def test_chain_losses_flow_left_to_right() -> None:
    """The first wrapper sees the raw losses: excess first, then the size offsets, gives
    max(L - Lref, 0) + C/sqrt(n); the other order clips after the offsets."""
    losses = np.array([1.0, 5.0, 0.0])
    ref, sizes, c = [2.0, 1.0, 0.5], [4.0, 1.0, 100.0], 2.0
    offsets = c / np.sqrt(sizes)
    seen: list[np.ndarray] = []
    rule = W.chain(W.excess_loss(ref), W.group_size_adjusted(sizes, c), _recording(seen))
    rule.update(losses, rule.init(3))
    np.testing.assert_allclose(seen[-1], np.maximum(losses - ref, 0) + offsets, rtol=1e-15)
    rule = W.chain(W.group_size_adjusted(sizes, c), W.excess_loss(ref), _recording(seen))
    rule.update(losses, rule.init(3))
    np.testing.assert_allclose(seen[-1], np.maximum(losses + offsets - ref, 0), rtol=1e-15)
    assert not np.allclose(seen[-1], seen[-2])


def test_chain_weights_flow_right_to_left() -> None:
    """The last wrapper sees the rule's weights first: chain(mix, sharpen, rule) mixes the
    sharpened weights."""
    losses = np.array([1.0, 2.0, 0.0])
    w0, _ = W.softmax(1.0).update(losses, W.softmax(1.0).init(3))
    sharp = w0**2 / (w0**2).sum()
    rule = W.chain(W.mix_uniform(0.5), _sharpen(), W.softmax(1.0))
    w, _ = rule.update(losses, rule.init(3))
    np.testing.assert_allclose(w, 0.5 * sharp + 0.5 / 3, rtol=1e-14)
    other = W.chain(_sharpen(), W.mix_uniform(0.5), W.softmax(1.0))
    w_other, _ = other.update(losses, other.init(3))
    mixed = 0.5 * w0 + 0.5 / 3
    np.testing.assert_allclose(w_other, mixed**2 / (mixed**2).sum(), rtol=1e-14)


def test_chain_is_the_nested_wrappers() -> None:
    ref = [0.5, 0.5, 3.9]
    chained = W.chain(W.mix_uniform(0.1), W.excess_loss(ref), W.exponentiated_gradient(1.0))
    nested = W.mix_uniform(W.excess_loss(W.exponentiated_gradient(1.0), ref), 0.1)
    assert chained.name == nested.name == "mix_uniform(excess_loss(exponentiated_gradient))"
    assert chained.params == nested.params
    rng = np.random.default_rng(0)
    sequence = [rng.normal(size=3) for _ in range(5)]
    s1, s2 = chained.init(3), nested.init(3)
    for losses in sequence:
        w1, s1 = chained.update(losses, s1)
        w2, s2 = nested.update(losses, s2)
        np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(s1.log_weights, s2.log_weights)
    # a wrapper alone applies itself too; a rule alone is its own chain
    alone = W.mix_uniform(0.1)
    assert isinstance(alone, W.RuleWrapper) and alone.name == "mix_uniform"
    assert alone(W.uniform()).name == "mix_uniform(uniform)"
    assert W.mix_uniform(epsilon=0.1)(W.uniform()).params == {"mix_uniform.epsilon": 0.1}
    rule = W.softmax(0.5)
    assert W.chain(rule) is rule
    # the wrapper-alone forms, positional or by keyword, are the same wrapper
    losses = np.array([1.0, 5.0, 0.0])
    forms = [
        W.group_size_adjusted([4.0, 1.0, 9.0], 2.0),
        W.group_size_adjusted([4.0, 1.0, 9.0], adjustment=2.0),
        W.group_size_adjusted(group_sizes=[4.0, 1.0, 9.0], adjustment=2.0),
    ]
    want = W.group_size_adjusted(W.softmax(1.0), [4.0, 1.0, 9.0], 2.0)
    for form in forms:
        wrapped = W.chain(form, W.softmax(1.0))
        assert wrapped.params == want.params
        np.testing.assert_array_equal(
            wrapped.update(losses, wrapped.init(3))[0], want.update(losses, want.init(3))[0]
        )
    by_keyword = W.excess_loss(reference_losses=[1.0, 1.0, 1.0], clip_at_zero=False)
    assert by_keyword(W.uniform()).params == {"excess_loss.clip_at_zero": 0.0}


def test_chain_rejects_bad_pieces() -> None:
    with pytest.raises(TypeError, match="chain needs at least a rule"):
        W.chain()
    with pytest.raises(TypeError, match=r"rule must be a minimax_core\.weights rule"):
        W.chain(W.mix_uniform(0.1))
    with pytest.raises(TypeError, match="piece 0 is WeightRule"):
        W.chain(W.softmax(1.0), W.uniform())
    with pytest.raises(TypeError, match="epsilon is required"):
        W.mix_uniform(W.uniform())  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="reference_losses is required"):
        W.excess_loss(W.uniform())
    with pytest.raises(TypeError, match="adjustment is required"):
        W.group_size_adjusted(W.uniform(), [1.0, 2.0])  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="group_sizes is required"):
        W.group_size_adjusted(W.uniform(), adjustment=1.0)
    with pytest.raises(TypeError, match=r"rule must be a minimax_core\.weights rule"):
        W.group_size_adjusted("hardmax", [1.0, 2.0], 1.0)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="reference_losses has 2 entries but num_tasks = 3"):
        W.chain(W.excess_loss([1.0, 2.0]), W.uniform()).init(3)
