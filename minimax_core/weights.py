"""Task-weight rules: pure ``(init, update)`` pairs in the style of optax.

A rule maps the current per-task losses ``L`` (shape ``(M,)``) to weights ``w`` on the
probability simplex; the descent step is then ``sum_i w_i grad L_i``.

===========================  =====================================================
rule                          weights
===========================  =====================================================
``softmax(temperature)``      ``w = softmax(L / temperature)`` (the paper's rule): the
                              gradient of ``temperature * log sum_i exp(L_i/temperature)``
``hardmax()``                 uniform over ``argmax_i L_i``: a subgradient of ``max_i L_i``
                              (the ``temperature -> 0`` limit of ``softmax``)
``uniform()``                 ``w = 1/M``: average risk
``exponentiated_gradient(s)`` ``q <- q * exp(s L)``, normalised (Group DRO, Sagawa et al. 2020)
===========================  =====================================================

Every rule works on any array of the array API standard through ``array-api-compat``:
numpy arrays in, numpy arrays out; torch tensors in, torch tensors out on the same device,
with no host copy. On host arrays (numpy, or CPU tensors) ``update`` rejects NaN/Inf
losses; on accelerator arrays it does not synchronise to check (the caller does, see
``deep.pretrain``).

Numerics: losses up to ``1e300`` in magnitude and temperatures from ``1e300`` down to
``1e-12`` (and below, to :data:`MIN_TEMPERATURE`) give finite, correct weights in every real
floating dtype (float16, bfloat16, float32, float64): the softmax works on ``L - max L``
and the exponentiated-gradient rule keeps normalised log-weights. Both compute in a dtype
that can hold the scaled differences -- float32 for the 16-bit dtypes (whose smallest
number, ``6e-8`` for float16, cannot hold ``1000 * temperature``), float64 where a
temperature is too small or too large for float32 -- and return the input's dtype. The
cast stays on the losses' device (no host copy, no synchronisation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import array_api_compat

__all__ = [
    "MIN_TEMPERATURE",
    "WeightRule",
    "WeightState",
    "exponentiated_gradient",
    "hardmax",
    "softmax",
    "uniform",
]

Array = Any  # any array of the array API standard (numpy, torch, ...)

# exp(-1000) is exactly 0 in float32 and float64: scaled differences below this are
# clamped without changing any weight, which keeps the division by a tiny temperature
# from overflowing.
_EXP_CUTOFF = 1000.0

#: The smallest temperature the softmax accepts: ``1000 * temperature / 2`` must be a normal
#: float64 (``exp(-1000)`` is exactly 0, so the weights are those of any smaller temperature
#: on losses that differ by more than ``1e-297``).
MIN_TEMPERATURE = 1e-300


class WeightState(NamedTuple):
    """State of a weight rule.

    ``step``: number of updates so far. ``num_tasks``: ``M``. ``log_weights``: normalised
    log-weights (max 0) for stateful rules, ``None`` before their first update and for
    stateless rules. It takes the array type of the first losses it sees.
    """

    step: int
    num_tasks: int
    log_weights: Array | None = None


class WeightRule(NamedTuple):
    """A pure ``(init, update)`` pair: ``state = init(M)``; ``w, state = update(L, state)``."""

    init: Callable[[int], WeightState]
    update: Callable[[Array, WeightState], tuple[Array, WeightState]]
    name: str
    params: dict[str, float]


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a positive real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _init(num_tasks: int) -> WeightState:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    return WeightState(step=0, num_tasks=num_tasks)


def _is_host(x: Array) -> bool:
    return str(array_api_compat.device(x)) == "cpu"


def _checked(losses: Array, state: WeightState) -> tuple[Array, Any]:
    """Validate ``losses`` against ``state`` and return ``(losses, namespace)``."""
    try:
        xp = array_api_compat.array_namespace(losses)
    except TypeError as err:
        raise TypeError(
            "losses must be an array (numpy array or torch tensor) of shape (num_tasks,), "
            f"got {type(losses).__name__}"
        ) from err
    if not isinstance(state, WeightState):
        raise TypeError(f"state must be a WeightState from rule.init, got {type(state).__name__}")
    if tuple(losses.shape) != (state.num_tasks,):
        raise ValueError(
            f"losses must have shape (num_tasks,) = ({state.num_tasks},), got {tuple(losses.shape)}"
        )
    if not xp.isdtype(losses.dtype, "real floating"):
        raise TypeError(f"losses must have a real floating dtype, got {losses.dtype}")
    if _is_host(losses) and not bool(xp.all(xp.isfinite(losses))):
        raise ValueError("losses must be finite (no NaN or Inf)")
    return losses, xp


def _work_dtype(dtype: Any, xp: Any, scale: float = 1.0) -> Any:
    """The dtype to compute weights in: ``dtype`` itself from 32 bits up, float32 for the
    16-bit dtypes, float64 where ``1000 * scale / 2`` is not a normal number of that dtype
    or ``scale`` exceeds its largest (``scale``: the temperature, or ``1`` for rules
    without one)."""
    work = dtype if xp.finfo(dtype).bits >= 32 else xp.float32
    info = xp.finfo(work)
    if not float(info.smallest_normal) <= _EXP_CUTOFF * scale / 2 <= float(info.max):
        work = xp.float64
    return work


def _stable_softmax(scores: Array, xp: Any) -> Array:
    """``exp(s) / sum exp(s)`` for scores with ``max(s) = 0`` (no overflow possible)."""
    e = xp.exp(scores)
    return e / xp.sum(e)


def softmax_weights(losses: Array, temperature: float, xp: Any | None = None) -> Array:
    """``softmax(L / temperature)``, stable for any finite ``L`` and ``temperature >=``
    :data:`MIN_TEMPERATURE`, in the dtype of ``losses``.

    Computes in :func:`_work_dtype` on ``d = L/2 - max L/2`` (halved so that the difference
    of two finite numbers cannot overflow) divided by ``temperature/2``; ``d`` below
    ``-1000 temperature/2`` (where ``exp`` is exactly zero) is clamped there, so a tiny
    temperature never overflows.
    """
    xp = xp or array_api_compat.array_namespace(losses)
    if not temperature >= MIN_TEMPERATURE:
        raise ValueError(
            f"temperature must be a finite number >= {MIN_TEMPERATURE:g}, got {temperature!r}"
        )
    dtype = losses.dtype
    work = xp.astype(losses, _work_dtype(dtype, xp, temperature), copy=False)
    half = work * 0.5
    d = half - xp.max(half)
    # xp.full, not xp.asarray: copying a Python scalar to an accelerator waits for the device
    cutoff = max(-_EXP_CUTOFF * temperature / 2, float(xp.finfo(d.dtype).min))
    low = xp.full((), cutoff, dtype=d.dtype, device=array_api_compat.device(d))
    w = _stable_softmax(xp.maximum(d, low) / (temperature / 2), xp)
    return xp.astype(w, dtype, copy=False)


def softmax(temperature: float) -> WeightRule:
    """Softmax weights ``w = softmax(L / temperature)`` (the paper's rule).

    ``sum_i w_i grad L_i`` is the gradient of the log-sum-exp smoothing
    ``F_tau(x) = tau log sum_i exp(L_i(x)/tau)``, which satisfies
    ``max_i L_i <= F_tau <= max_i L_i + tau log M``.
    """
    temperature = _check_positive("temperature", temperature)
    if temperature < MIN_TEMPERATURE:
        raise ValueError(
            f"temperature must be a finite number >= {MIN_TEMPERATURE:g}, got {temperature!r}"
        )

    def update(losses: Array, state: WeightState) -> tuple[Array, WeightState]:
        losses, xp = _checked(losses, state)
        w = softmax_weights(losses, temperature, xp)
        return w, state._replace(step=state.step + 1)

    return WeightRule(_init, update, "softmax", {"temperature": temperature})


def hardmax() -> WeightRule:
    """Uniform weights over the maximisers of ``L``: a subgradient of ``max_i L_i``.

    Ties are split equally, which keeps the rule permutation-equivariant and makes it the
    ``temperature -> 0`` limit of ``softmax``.
    """

    def update(losses: Array, state: WeightState) -> tuple[Array, WeightState]:
        losses, xp = _checked(losses, state)
        is_max = xp.astype(losses == xp.max(losses), losses.dtype)
        return is_max / xp.sum(is_max), state._replace(step=state.step + 1)

    return WeightRule(_init, update, "hardmax", {})


def uniform() -> WeightRule:
    """Uniform weights ``1/M``: average risk, the baseline of the paper."""

    def update(losses: Array, state: WeightState) -> tuple[Array, WeightState]:
        losses, xp = _checked(losses, state)
        dev = array_api_compat.device(losses)
        w = xp.full(losses.shape, 1.0 / state.num_tasks, dtype=losses.dtype, device=dev)
        return w, state._replace(step=state.step + 1)

    return WeightRule(_init, update, "uniform", {})


def exponentiated_gradient(step_size: float) -> WeightRule:
    """Group-DRO weights: ``q <- q * exp(step_size * L)``, normalised, from ``q_0 = 1/M``.

    The state keeps ``log q`` normalised to ``max log q = 0``, in float32 for 16-bit losses
    (their own precision would lose the small steps). Log-weights are floored at a
    quarter of the dtype's most negative value (their weight is exactly 0 long before), so
    the sum of two never overflows and no NaN can appear.
    """
    step_size = _check_positive("step_size", step_size)

    def update(losses: Array, state: WeightState) -> tuple[Array, WeightState]:
        losses, xp = _checked(losses, state)
        dev = array_api_compat.device(losses)
        work = xp.astype(losses, _work_dtype(losses.dtype, xp), copy=False)
        floor_value = float(xp.finfo(work.dtype).min) / 4
        floor = xp.full((), floor_value, dtype=work.dtype, device=dev)
        log_q = state.log_weights
        if log_q is None:
            log_q = xp.zeros_like(work)
        elif array_api_compat.array_namespace(log_q) is not xp or (
            array_api_compat.device(log_q) != dev
        ):
            raise TypeError(
                "losses must be the same array type and device as the rule's state "
                f"({type(log_q).__name__} on {array_api_compat.device(log_q)}); "
                "start a new state with rule.init for another array type"
            )
        # step_size * (L - max L) with the product kept above the floor (no overflow); the
        # losses are halved first so that their difference cannot overflow
        half = work * 0.5
        d = half - xp.max(half)
        low = xp.full((), floor_value / max(2 * step_size, 1.0), dtype=work.dtype, device=dev)
        d = xp.maximum(d, low) * (2 * step_size)
        log_q = xp.maximum(log_q + d, floor)
        log_q = log_q - xp.max(log_q)
        w = xp.astype(_stable_softmax(log_q, xp), losses.dtype, copy=False)
        return w, WeightState(state.step + 1, state.num_tasks, log_q)

    return WeightRule(_init, update, "exponentiated_gradient", {"step_size": step_size})
