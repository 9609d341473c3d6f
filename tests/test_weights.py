"""Property checks applied to every weight rule (torchjd style), plus each rule's own laws."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minimax_core import weights as W

RULES = {
    "softmax-1": lambda: W.softmax(1.0),
    "softmax-1e-12": lambda: W.softmax(1e-12),
    "softmax-1e300": lambda: W.softmax(1e300),
    "hardmax": W.hardmax,
    "uniform": W.uniform,
    "eg-0.1": lambda: W.exponentiated_gradient(0.1),
    "eg-1e12": lambda: W.exponentiated_gradient(1e12),
}

finite = st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)
loss_vectors = hnp.arrays(np.float64, st.integers(1, 12), elements=finite)
moderate = hnp.arrays(np.float64, st.integers(1, 12), elements=st.floats(-50, 50, allow_nan=False))


def run_rule(rule: W.WeightRule, sequence: list[np.ndarray]) -> np.ndarray:
    state = rule.init(len(sequence[0]))
    w = None
    for losses in sequence:
        w, state = rule.update(losses, state)
    assert w is not None
    return w


@pytest.mark.parametrize("name", RULES)
@given(losses=loss_vectors, repeats=st.integers(1, 3))
def test_output_is_on_the_simplex(name: str, losses: np.ndarray, repeats: int) -> None:
    w = run_rule(RULES[name](), [losses] * repeats)
    assert w.shape == losses.shape
    assert np.all(np.isfinite(w))
    assert np.all(w >= 0)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("name", RULES)
@given(data=st.data(), losses=moderate)
def test_permutation_equivariance(name: str, data: st.DataObject, losses: np.ndarray) -> None:
    perm = np.asarray(data.draw(st.permutations(range(len(losses)))))
    second = losses[::-1].copy()
    w = run_rule(RULES[name](), [losses, second])
    w_perm = run_rule(RULES[name](), [losses[perm], second[perm]])
    np.testing.assert_allclose(w_perm, w[perm], rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", RULES)
@given(
    losses=hnp.arrays(np.float64, st.integers(1, 12), elements=st.integers(-1000, 1000).map(float)),
    shift=st.integers(-(10**6), 10**6).map(float),
)
def test_shift_invariance(name: str, losses: np.ndarray, shift: float) -> None:
    """Adding a constant to every loss changes no weight. Integer values keep ``L + c``
    exact, so ties and orderings are the same before and after the shift."""
    w = run_rule(RULES[name](), [losses])
    w_shift = run_rule(RULES[name](), [losses + shift])
    np.testing.assert_allclose(w_shift, w, rtol=1e-12, atol=1e-300)


@given(losses=moderate)
def test_zero_temperature_limit_is_hardmax(losses: np.ndarray) -> None:
    h = run_rule(W.hardmax(), [losses])
    s = run_rule(W.softmax(1e-12), [losses])
    # exact ties split evenly in both; a gap to the max above 1e-9 (1000 temperatures)
    # gives weight exactly 0; gaps in between are genuinely soft at this temperature
    gaps = losses.max() - losses
    if np.all((gaps == 0) | (gaps > 1e-9)):
        np.testing.assert_allclose(s, h, atol=1e-12)


def test_temperature_sequence_converges_to_hardmax() -> None:
    losses = np.array([0.3, 1.0, 0.999, -2.0])
    h = run_rule(W.hardmax(), [losses])
    errors = [np.abs(run_rule(W.softmax(t), [losses]) - h).max() for t in (1.0, 1e-2, 1e-4, 1e-6)]
    assert all(b < a for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-12


def test_softmax_matches_definition() -> None:
    losses = np.array([0.1, 2.0, -1.0, 0.5])
    w = run_rule(W.softmax(0.7), [losses])
    e = np.exp(losses / 0.7)
    np.testing.assert_allclose(w, e / e.sum(), rtol=1e-14)


def test_exponentiated_gradient_matches_closed_form() -> None:
    """After losses L_1..L_k: q proportional to exp(step * sum_t L_t)."""
    rng = np.random.default_rng(0)
    seq = [rng.normal(size=5) for _ in range(7)]
    w = run_rule(W.exponentiated_gradient(0.3), seq)
    z = 0.3 * np.sum(seq, axis=0)
    e = np.exp(z - z.max())
    np.testing.assert_allclose(w, e / e.sum(), rtol=1e-12)


def test_ties_split_evenly() -> None:
    losses = np.array([1.0, 3.0, 3.0, 0.0])
    for rule in (W.hardmax(), W.softmax(1e-12)):
        np.testing.assert_allclose(run_rule(rule, [losses]), [0, 0.5, 0.5, 0])


def test_extreme_values_stay_finite() -> None:
    losses = np.array([1e300, -1e300, 0.0, 1e300, 5e299])
    for name, make in RULES.items():
        w = run_rule(make(), [losses] * 50)
        assert np.all(np.isfinite(w)), name
        assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-12), name


def test_state_is_pure() -> None:
    rule = W.exponentiated_gradient(0.5)
    s0 = rule.init(3)
    w1, s1 = rule.update(np.array([1.0, 0.0, 0.0]), s0)
    w1_again, _ = rule.update(np.array([1.0, 0.0, 0.0]), s0)
    np.testing.assert_array_equal(w1, w1_again)
    assert s0.log_weights is None and s0.step == 0
    assert s1.step == 1


@pytest.mark.parametrize("name", RULES)
@given(
    sequence=st.lists(
        hnp.arrays(np.float64, 4, elements=st.floats(-50, 50, allow_nan=False)),
        min_size=1,
        max_size=3,
    )
)
def test_numpy_and_torch_agree(name: str, sequence: list[np.ndarray]) -> None:
    rule = RULES[name]()
    w_np = run_rule(rule, sequence)
    state = rule.init(4)
    w_t = None
    for losses in sequence:
        w_t, state = rule.update(torch.from_numpy(losses), state)
    assert isinstance(w_t, torch.Tensor) and w_t.dtype == torch.float64
    np.testing.assert_allclose(w_t.numpy(), w_np, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("name", RULES)
def test_torch_float32_and_no_host_copy(name: str, dtype: torch.dtype) -> None:
    """On the meta device any host copy or sync (``.item()``, ``.numpy()``) would raise
    (also where the 16-bit dtypes are computed in float32)."""
    rule = RULES[name]()
    state = rule.init(6)
    losses = torch.empty(6, device="meta", dtype=dtype)
    w, state = rule.update(losses, state)
    w, state = rule.update(losses, state)
    assert w.device.type == "meta" and w.shape == (6,) and w.dtype == dtype
    w32, _ = rule.update(torch.tensor([1.0, 2.0, 3.0, 0.0, -1.0, 2.5]), rule.init(6))
    assert w32.dtype == torch.float32
    assert abs(float(w32.sum()) - 1.0) < 1e-6


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_bad_temperature_and_step(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        W.softmax(bad)
    with pytest.raises(ValueError, match="step_size"):
        W.exponentiated_gradient(bad)


def test_bad_types() -> None:
    with pytest.raises(TypeError, match="temperature"):
        W.softmax("0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_tasks"):
        W.softmax(1.0).init(0)


@pytest.mark.parametrize("name", RULES)
def test_bad_losses(name: str) -> None:
    rule = RULES[name]()
    state = rule.init(3)
    with pytest.raises(ValueError, match="finite"):
        rule.update(np.array([1.0, np.nan, 0.0]), state)
    with pytest.raises(ValueError, match="finite"):
        rule.update(torch.tensor([1.0, math.inf, 0.0]), state)
    with pytest.raises(ValueError, match="shape"):
        rule.update(np.zeros(4), state)
    with pytest.raises(ValueError, match="shape"):
        rule.update(np.zeros((3, 1)), state)
    with pytest.raises(TypeError, match="floating"):
        rule.update(np.array([1, 2, 3]), state)
    with pytest.raises(TypeError, match="array"):
        rule.update([1.0, 2.0, 3.0], state)
    with pytest.raises(TypeError, match="WeightState"):
        rule.update(np.zeros(3), (0, 3))


def test_state_and_losses_must_share_array_type() -> None:
    rule = W.exponentiated_gradient(0.1)
    _, state = rule.update(np.zeros(3), rule.init(3))
    with pytest.raises(TypeError, match="same array type"):
        rule.update(torch.zeros(3, dtype=torch.float64), state)


# ------------------------------------------------------------ every floating dtype (issue 14)

LOW_PRECISION = {
    "numpy-float16": (np.float16, None),
    "numpy-float32": (np.float32, None),
    "numpy-float64": (np.float64, None),
    "torch-float16": (None, torch.float16),
    "torch-bfloat16": (None, torch.bfloat16),
    "torch-float32": (None, torch.float32),
    "torch-float64": (None, torch.float64),
}
TEMPERATURES = [1e-12, 1e-9, 1e-8, 1e-6, 1e-4, 1e-2, 0.3, 1.0, 10.0, 1e3, 1e300]


def _in_dtype(values: np.ndarray, name: str) -> tuple[object, np.ndarray, float]:
    """``values`` in the dtype ``name``, the same values in float64, and the dtype's eps."""
    np_dtype, torch_dtype = LOW_PRECISION[name]
    if torch_dtype is not None:
        t = torch.tensor(values, dtype=torch_dtype)
        return t, t.double().numpy(), float(torch.finfo(torch_dtype).eps)
    a = values.astype(np_dtype)
    return a, a.astype(np.float64), float(np.finfo(np_dtype).eps)


def _as_float64(w: object) -> np.ndarray:
    return w.double().numpy() if isinstance(w, torch.Tensor) else np.asarray(w, np.float64)


def _reference_softmax(losses: np.ndarray, temperature: float) -> np.ndarray:
    from scipy.special import softmax as scipy_softmax

    return np.asarray(scipy_softmax((losses - losses.max()) / temperature), dtype=np.float64)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("name", LOW_PRECISION)
def test_softmax_is_correct_in_every_dtype(name: str, temperature: float) -> None:
    """float16 gave uniform weights at 1e-12 and NaN at 1e-8 (issue 14): every dtype now
    gives the float64 softmax of its own (rounded) losses, to within the dtype's rounding."""
    rng = np.random.default_rng(0)
    for values in (
        rng.uniform(-3, 3, 7),
        np.array([1.0, 3.0, 3.0, 0.0, 2.999]),  # ties, and a near-tie
        np.array([-60000.0, 60000.0, 0.0, 59000.0]),  # near float16's largest
        np.array([2e-5, 1e-5, 0.0]),  # differences below 1000 * temperature in float16
    ):
        losses, exact_losses, eps = _in_dtype(values, name)
        rule = W.softmax(temperature)
        w, _ = rule.update(losses, rule.init(len(values)))
        assert type(w) is type(losses) and w.dtype == losses.dtype
        got = _as_float64(w)
        assert np.all(np.isfinite(got)), (name, temperature, got)
        want = _reference_softmax(exact_losses, temperature)
        np.testing.assert_allclose(got, want, rtol=0, atol=2 * eps, err_msg=f"{name} {values}")


@pytest.mark.parametrize("name", LOW_PRECISION)
def test_exponentiated_gradient_is_correct_in_every_dtype(name: str) -> None:
    """The Group-DRO rule in 16-bit dtypes (NaN in float16 before) matches float64."""
    rng = np.random.default_rng(1)
    sequence = [rng.uniform(0, 2, 5) for _ in range(4)]
    for step_size in (1e-3, 0.7, 1e12):
        rule = W.exponentiated_gradient(step_size)
        state, exact_state = rule.init(5), rule.init(5)
        for values in sequence:
            losses, exact_losses, eps = _in_dtype(values, name)
            w, state = rule.update(losses, state)
            want, exact_state = rule.update(exact_losses, exact_state)
            assert w.dtype == losses.dtype
            np.testing.assert_allclose(_as_float64(w), want, rtol=0, atol=8 * eps)


def test_temperature_below_the_supported_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 1e-300"):
        W.softmax(1e-310)
    with pytest.raises(ValueError, match="temperature"):
        W.softmax_weights(np.zeros(3), 1e-310)


# ------------------------------------------------------------ the log-sum-exp smoothing


def test_smoothed_max_is_stable() -> None:
    assert W.smoothed_max(np.array([1e300, 1e300]), 1e-12) == pytest.approx(
        1e300 + 1e-12 * math.log(2), rel=1e-15
    )
    assert W.smoothed_max(np.array([0.0, 0.0]), 2.0) == pytest.approx(2.0 * math.log(2))
    assert W.smoothed_max(np.array([-5.0]), 1e-3) == -5.0
    assert W.smoothed_max([1e300, -1e300, 0.0], 1e300) == pytest.approx(
        1e300 * math.log(math.exp(1.0) + 1.0 + math.exp(-1.0)), rel=1e-14
    )


@given(losses=moderate, temperature=st.floats(1e-6, 1e3))
def test_smoothed_max_sandwich_and_reference(losses: np.ndarray, temperature: float) -> None:
    """``max L <= F_tau <= max L + tau log M``; equal to scipy's logsumexp to round-off."""
    from scipy.special import logsumexp

    f = W.smoothed_max(losses, temperature)
    top = float(losses.max())
    assert top <= f <= top + temperature * math.log(losses.size) * (1 + 1e-12) + 1e-12
    ref = float(temperature * logsumexp(losses / temperature))
    assert f == pytest.approx(ref, rel=1e-12, abs=1e-12 * (1 + abs(top)))


@given(losses=moderate, temperature=st.floats(1e-2, 1e2))
def test_smoothed_max_gradient_is_the_softmax(losses: np.ndarray, temperature: float) -> None:
    """``d F_tau / d L_i = softmax(L/tau)_i``, by central differences (step ``1e-5 tau``:
    truncation ``~1e-10``, rounding ``~eps |F| / h < 1e-7``)."""
    w = W.softmax_weights(losses, temperature)
    h = 1e-5 * temperature
    for i in range(losses.size):
        e = np.zeros_like(losses)
        e[i] = h
        up, down = W.smoothed_max(losses + e, temperature), W.smoothed_max(losses - e, temperature)
        assert (up - down) / (2 * h) == pytest.approx(w[i], abs=1e-6)
