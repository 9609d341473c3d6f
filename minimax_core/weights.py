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

Numerics: losses up to ``1e300`` in magnitude and temperatures down to ``1e-12`` give
finite weights: the softmax works on ``L - max L`` and the exponentiated-gradient rule
keeps normalised log-weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import array_api_compat

__all__ = [
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


def _stable_softmax(scores: Array, xp: Any) -> Array:
    """``exp(s) / sum exp(s)`` for scores with ``max(s) = 0`` (no overflow possible)."""
    e = xp.exp(scores)
    return e / xp.sum(e)


def softmax_weights(losses: Array, temperature: float, xp: Any | None = None) -> Array:
    """``softmax(L / temperature)``, stable for any finite ``L`` and ``temperature > 0``.

    Works on ``d = L - max L <= 0``; ``d / temperature`` below ``-1000`` (where ``exp`` is
    exactly zero in float32 and float64) is clamped there, so a tiny temperature never
    overflows.
    """
    xp = xp or array_api_compat.array_namespace(losses)
    d = losses - xp.max(losses)
    # xp.full, not xp.asarray: copying a Python scalar to an accelerator waits for the device
    cutoff = max(-_EXP_CUTOFF * temperature, float(xp.finfo(d.dtype).min))
    low = xp.full((), cutoff, dtype=d.dtype, device=array_api_compat.device(d))
    d = xp.maximum(d, low)
    return _stable_softmax(d / temperature, xp)


def softmax(temperature: float) -> WeightRule:
    """Softmax weights ``w = softmax(L / temperature)`` (the paper's rule).

    ``sum_i w_i grad L_i`` is the gradient of the log-sum-exp smoothing
    ``F_tau(x) = tau log sum_i exp(L_i(x)/tau)``, which satisfies
    ``max_i L_i <= F_tau <= max_i L_i + tau log M``.
    """
    temperature = _check_positive("temperature", temperature)

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

    The state keeps ``log q`` normalised to ``max log q = 0``. Log-weights are floored at a
    quarter of the dtype's most negative value (their weight is exactly 0 long before), so
    the sum of two never overflows and no NaN can appear.
    """
    step_size = _check_positive("step_size", step_size)

    def update(losses: Array, state: WeightState) -> tuple[Array, WeightState]:
        losses, xp = _checked(losses, state)
        dev = array_api_compat.device(losses)
        floor_value = float(xp.finfo(losses.dtype).min) / 4
        floor = xp.full((), floor_value, dtype=losses.dtype, device=dev)
        log_q = state.log_weights
        if log_q is None:
            log_q = xp.zeros_like(losses)
        elif array_api_compat.array_namespace(log_q) is not xp or (
            array_api_compat.device(log_q) != dev
        ):
            raise TypeError(
                "losses must be the same array type and device as the rule's state "
                f"({type(log_q).__name__} on {array_api_compat.device(log_q)}); "
                "start a new state with rule.init for another array type"
            )
        # step_size * (L - max L) with the product kept above the floor (no overflow)
        d = losses - xp.max(losses)
        low = xp.full((), floor_value / max(step_size, 1.0), dtype=losses.dtype, device=dev)
        d = xp.maximum(d, low) * step_size
        log_q = xp.maximum(log_q + d, floor)
        log_q = log_q - xp.max(log_q)
        w = _stable_softmax(log_q, xp)
        return w, WeightState(state.step + 1, state.num_tasks, log_q)

    return WeightRule(_init, update, "exponentiated_gradient", {"step_size": step_size})
