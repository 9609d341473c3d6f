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

Wrappers turn a rule into a rule (stateless; the inner rule keeps its state):

=====================================  ================================================
wrapper                                 effect
=====================================  ================================================
``group_size_adjusted(rule, n, C)``     rule sees ``L_i + C / sqrt(n_i)`` (Sagawa et al.
                                        2020, ``n_i`` the training-set size of group ``i``)
``excess_loss(rule, Lref)``             rule sees ``max(L_i - Lref_i, 0)`` (DoReMi, Xie et
                                        al. 2023): a task that is hard for a reference
                                        model too does not take all the weight
``mix_uniform(rule, epsilon)``          ``w <- (1 - epsilon) w + epsilon / M``
=====================================  ================================================

Called without the rule (``mix_uniform(0.1)``) each gives a :class:`RuleWrapper`, and
:func:`chain` composes them as optax does: ``chain(excess_loss(Lref), mix_uniform(0.1),
softmax(0.5))`` -- losses flow left to right into the rule, weights flow back right to
left (see :func:`chain`).

A loss estimator (:func:`ema`, a pure ``(init, update)`` pair too) turns a noisy batch's
per-task means and counts into the estimate a rule sees; :func:`smoothed_max` is the
log-sum-exp ``F_tau = tau log sum_i exp(L_i/tau)`` whose gradient the softmax rule follows.

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
from typing import Any, NamedTuple, overload

import array_api_compat
import numpy as np
from numpy.typing import ArrayLike

from .validation import check_int, check_interval, check_real

__all__ = [
    "MIN_TEMPERATURE",
    "EstimateState",
    "LossEstimator",
    "RuleWrapper",
    "WeightRule",
    "WeightState",
    "chain",
    "check_rule",
    "ema",
    "excess_loss",
    "exponentiated_gradient",
    "group_size_adjusted",
    "hardmax",
    "mix_uniform",
    "smoothed_max",
    "softmax",
    "softmax_weights",
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


def _init(num_tasks: int) -> WeightState:
    return WeightState(step=0, num_tasks=check_int("num_tasks", num_tasks))


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


def smoothed_max(losses: ArrayLike, temperature: float) -> float:
    """The log-sum-exp smoothing ``F_tau = tau log sum_i exp(L_i / tau)`` of ``max_i L_i``
    (numpy, float64): the function whose gradient :func:`softmax` descends.

    Computed as ``max L + tau log sum_i exp((L_i - max L) / tau)`` with the differences
    floored at ``-1000 tau`` (where ``exp`` is exactly 0), so no finite losses and no
    temperature overflow: ``max L <= F_tau <= max L + tau log M`` holds in floating point
    too. ``temperature`` is assumed valid (``> 0``); the rules check theirs when built.
    """
    values = np.asarray(losses, dtype=np.float64)
    top = float(np.max(values))
    scaled = np.maximum(values - top, -_EXP_CUTOFF * temperature) / temperature
    return top + temperature * math.log(float(np.sum(np.exp(scaled))))


def softmax(temperature: float) -> WeightRule:
    """Softmax weights ``w = softmax(L / temperature)`` (the paper's rule).

    ``sum_i w_i grad L_i`` is the gradient of the log-sum-exp smoothing
    ``F_tau(x) = tau log sum_i exp(L_i(x)/tau)``, which satisfies
    ``max_i L_i <= F_tau <= max_i L_i + tau log M``.
    """
    temperature = check_real("temperature", temperature, strict=True)
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
    step_size = check_real("step_size", step_size, strict=True)

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


# --------------------------------------------------------------------------- loss estimators


class EstimateState(NamedTuple):
    """State of a loss estimator: ``estimate`` (``(M,)``, 0 where unseen), ``seen`` (bool);
    both ``None`` before the first update, then arrays of the means' type and device."""

    step: int
    num_tasks: int
    estimate: Array | None = None
    seen: Array | None = None


class LossEstimator(NamedTuple):
    """A pure ``(init, update)`` pair: ``Lhat, state = update(means, counts, state)``.

    ``update`` gets the batch's per-task means and counts (absent tasks have count 0) and
    returns the full ``(M,)`` estimate the weight rule sees.
    """

    init: Callable[[int], EstimateState]
    update: Callable[[Array, Array, EstimateState], tuple[Array, EstimateState]]
    name: str
    params: dict[str, float]


def _estimator_init(num_tasks: int) -> EstimateState:
    return EstimateState(step=0, num_tasks=check_int("num_tasks", num_tasks))


def ema(decay: float) -> LossEstimator:
    """Running per-task loss estimate for noisy batches (numpy arrays or torch tensors).

    For a present task ``i``: ``Lhat_i <- decay Lhat_i + (1 - decay) L_i`` (its first
    observation sets ``Lhat_i = L_i``, so there is no start-up bias); an absent task keeps its
    estimate; a task never seen reads the mean of the present tasks' losses. ``decay`` in
    ``[0, 1)``, required: ``ema(0.0)`` is the batch's means themselves (what
    :func:`deep.pretrain` uses when given no estimator), ``ema(0.9)`` averages over about
    ten batches. No host copy, no device synchronisation.
    """
    decay = check_interval("decay", decay, 0.0, 1.0, include_high=False)

    def update(means: Array, counts: Array, state: EstimateState) -> tuple[Array, EstimateState]:
        xp = array_api_compat.array_namespace(means, counts)
        if tuple(means.shape) != (state.num_tasks,) or tuple(means.shape) != tuple(counts.shape):
            raise ValueError(
                f"means and counts must have shape (num_tasks,) = ({state.num_tasks},), got "
                f"{tuple(means.shape)} and {tuple(counts.shape)}"
            )
        dev = array_api_compat.device(means)
        present = counts > 0
        if state.estimate is None or state.seen is None:
            previous = xp.zeros_like(means)
            seen = xp.zeros(means.shape, dtype=xp.bool, device=dev)
        else:
            previous, seen = xp.astype(state.estimate, means.dtype, copy=False), state.seen
        blended = decay * previous + (1.0 - decay) * means if decay > 0.0 else means
        estimate = xp.where(present, xp.where(seen, blended, means), previous)
        seen = xp.logical_or(seen, present)
        present_f = xp.astype(present, means.dtype)
        # xp.full, not a Python scalar: copying one to an accelerator waits for the device
        one = xp.full((), 1.0, dtype=means.dtype, device=dev)
        fill = xp.sum(means * present_f) / xp.maximum(xp.sum(present_f), one)
        visible = xp.where(seen, estimate, fill)
        return visible, EstimateState(state.step + 1, state.num_tasks, estimate, seen)

    return LossEstimator(_estimator_init, update, "ema", {"decay": decay})


# --------------------------------------------------------------------------- rule wrappers
#
# A wrapper turns a rule into a rule: it may change the losses the inner rule sees (on the
# way in) and the weights it returns (on the way out). Each is stateless (the inner rule
# keeps its own state) and works on numpy arrays and torch tensors alike: its constants are
# converted once per (namespace, device, dtype) and cached, so a step copies nothing.

_Wrap = Callable[[WeightRule], WeightRule]


class RuleWrapper(NamedTuple):
    """A wrapper not yet applied to a rule, for :func:`chain`: ``wrapper(rule)`` applies it.

    Made by calling a wrapper without its rule, e.g. ``mix_uniform(0.1)``.
    """

    wrap: _Wrap
    name: str

    def __call__(self, rule: WeightRule) -> WeightRule:
        return self.wrap(rule)


def chain(*pieces: RuleWrapper | WeightRule) -> WeightRule:
    """``chain(w_1, ..., w_k, rule)``: the rule wrapped by ``w_k``, then ``w_{k-1}``, ...,
    then ``w_1`` (optax's ``chain`` read the same way: left to right is the way in).

    Order: the **losses** flow left to right -- ``w_1`` sees the raw losses first and
    passes what it made of them to ``w_2``, and the rule sees what ``w_k`` passes on;
    the **weights** flow back right to left -- the rule's weights go through ``w_k`` first
    and ``w_1`` last. So ``chain(excess_loss(floors), mix_uniform(0.1), softmax(0.5))`` is
    ``excess_loss(mix_uniform(softmax(0.5), 0.1), floors)``: the softmax of the excess
    losses, then mixed with the uniform weights.
    """
    if not pieces:
        raise TypeError("chain needs at least a rule: chain(wrapper, ..., rule)")
    *wrappers, rule = pieces
    rule = check_rule(rule)
    checked: list[RuleWrapper] = []
    for i, wrapper in enumerate(wrappers):
        if not isinstance(wrapper, RuleWrapper):
            raise TypeError(
                f"chain's pieces before the rule must be wrappers such as mix_uniform(0.1); "
                f"piece {i} is {type(wrapper).__name__}"
            )
        checked.append(wrapper)
    for wrapper in reversed(checked):
        rule = wrapper.wrap(rule)
    return rule


def _constant_like(values: np.ndarray, like: Any, cache: dict[Any, Any], name: str) -> Any:
    """``values`` (the wrapper's argument ``name``) as an array of the losses ``like``'s
    namespace, dtype and device (converted once), after checking that the shapes agree."""
    if tuple(like.shape) != values.shape:
        raise ValueError(
            f"losses must have shape {values.shape} like {name}, got {tuple(like.shape)}"
        )
    xp = array_api_compat.array_namespace(like)
    device = array_api_compat.device(like)
    key = (xp.__name__, str(device), str(like.dtype))
    if key not in cache:
        cache[key] = xp.asarray(values, dtype=like.dtype, device=device)
    return cache[key]


def _task_vector(name: str, values: Any, positive: bool) -> np.ndarray:
    """One float64 value per task, from a sequence, a numpy array or a tensor (copied to
    the host once, when the wrapper is built)."""
    if array_api_compat.is_torch_array(values):
        values = values.detach().cpu().double().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a sequence of real numbers, one per task") from err
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a 1-d sequence with one value per task, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    if positive and not np.all(arr > 0):
        raise ValueError(f"{name} must be > 0 for every task, got {arr.tolist()}")
    return arr


def _wrapped_init(rule: WeightRule, size: int | None, what: str) -> Callable[[int], WeightState]:
    def init(num_tasks: int) -> WeightState:
        state = rule.init(num_tasks)
        if size is not None and size != num_tasks:
            raise ValueError(f"{what} has {size} entries but num_tasks = {num_tasks}")
        return state

    return init


def _prefixed(prefix: str, rule: WeightRule, extra: dict[str, float]) -> dict[str, float]:
    return {**rule.params, **{f"{prefix}.{k}": v for k, v in extra.items()}}


def _is_rule(rule: Any) -> bool:
    return callable(getattr(rule, "init", None)) and callable(getattr(rule, "update", None))


def check_rule(rule: Any) -> WeightRule:
    """``rule`` if it has callable ``init`` and ``update`` (any weight rule, a user's own
    too), else ``TypeError`` naming what was given."""
    if not _is_rule(rule):
        raise TypeError(
            "rule must be a minimax_core.weights rule (with init and update), got "
            f"{type(rule).__name__}"
        )
    return rule  # type: ignore[no-any-return]


_MISSING: Any = object()


def _arguments(rule: Any, *args: Any, names: tuple[str, ...]) -> tuple[Any, tuple[Any, ...]]:
    """``(rule or None, the wrapper's own arguments)`` for a wrapper called with its rule,
    ``f(rule, a, b)``, or without, ``f(a, b)`` / ``f(a, b=...)``: without a rule the
    positional arguments slide one place left (the first missing one is filled)."""
    if rule is not None and not _is_rule(rule):
        missing = [i for i, arg in enumerate(args) if arg is _MISSING]
        if not missing:  # every argument given: ``rule`` is not a rule
            check_rule(rule)
        i = missing[0]
        rule, args = None, (rule, *args[:i], *args[i + 1 :])
    for name, arg in zip(names, args, strict=True):
        if arg is _MISSING:
            raise TypeError(f"{name} is required")
    return rule, args


def _applied(rule: Any, wrap: _Wrap, name: str) -> Any:
    """``wrap(rule)`` when a rule was given, else the wrapper itself (for :func:`chain`)."""
    return RuleWrapper(wrap, name) if rule is None else wrap(check_rule(rule))


def _on_losses(
    name: str,
    transform: Callable[[Array, dict[Any, Any]], Array],
    what: str,
    size: int,
    extra: dict[str, float],
) -> _Wrap:
    """A wrapper on the way in: the inner rule sees ``transform(losses, cache)`` (``cache``
    holds the wrapper's constants converted to the losses' namespace/device/dtype, one per
    wrapped rule); ``what`` (``size`` entries) must match ``num_tasks`` at ``init``."""

    def wrap(inner: WeightRule) -> WeightRule:
        cache: dict[Any, Any] = {}

        def update(losses: Array, state: WeightState) -> tuple[Array, WeightState]:
            return inner.update(transform(losses, cache), state)

        return WeightRule(
            _wrapped_init(inner, size, what),
            update,
            f"{name}({inner.name})",
            _prefixed(name, inner, extra),
        )

    return wrap


@overload
def mix_uniform(rule: WeightRule, epsilon: float) -> WeightRule: ...
@overload
def mix_uniform(epsilon: float, /) -> RuleWrapper: ...
@overload
def mix_uniform(*, epsilon: float) -> RuleWrapper: ...
def mix_uniform(rule: Any = None, epsilon: Any = _MISSING) -> Any:
    """``w <- (1 - epsilon) w + epsilon / M``: every task keeps at least ``epsilon / M``.

    ``mix_uniform(rule, epsilon)`` wraps ``rule``; ``mix_uniform(epsilon)`` is the wrapper
    alone, for :func:`chain`. A wrapper on the way out: it sees the inner rule's weights.
    """
    rule, (epsilon,) = _arguments(rule, epsilon, names=("epsilon",))
    eps = check_interval("epsilon", epsilon, 0.0, 1.0)

    def wrap(inner: WeightRule) -> WeightRule:
        def update(losses: Array, state: WeightState) -> tuple[Array, WeightState]:
            w, state = inner.update(losses, state)
            return (1.0 - eps) * w + eps / w.shape[0], state

        return WeightRule(
            _wrapped_init(inner, None, ""),
            update,
            f"mix_uniform({inner.name})",
            _prefixed("mix_uniform", inner, {"epsilon": eps}),
        )

    return _applied(rule, wrap, "mix_uniform")


@overload
def excess_loss(
    rule: WeightRule, reference_losses: ArrayLike | Array, *, clip_at_zero: bool = True
) -> WeightRule: ...
@overload
def excess_loss(
    reference_losses: ArrayLike | Array, /, *, clip_at_zero: bool = True
) -> RuleWrapper: ...
@overload
def excess_loss(
    *, reference_losses: ArrayLike | Array, clip_at_zero: bool = True
) -> RuleWrapper: ...
def excess_loss(
    rule: Any = None, reference_losses: Any = _MISSING, *, clip_at_zero: bool = True
) -> Any:
    """The rule sees the excess loss over a reference model, ``max(L_i - Lref_i, 0)`` (DoReMi).

    ``reference_losses`` (``(M,)``) are the per-task losses of a reference model (for example
    one pre-trained with ``uniform()``) on the same kind of data. A task that the reference
    also finds hard has a small excess and no longer takes all the weight. DoReMi clips the
    excess at 0 (``clip_at_zero``); the gradient still follows ``sum_i w_i L_i``.
    ``excess_loss(reference_losses)`` is the wrapper alone, for :func:`chain`. A wrapper on
    the way in: it changes the losses the inner rule sees.
    """
    rule, (reference_losses,) = _arguments(rule, reference_losses, names=("reference_losses",))
    reference = _task_vector("reference_losses", reference_losses, positive=False)

    def excess(losses: Array, cache: dict[Any, Any]) -> Array:
        out = losses - _constant_like(reference, losses, cache, "reference_losses")
        if clip_at_zero:
            xp = array_api_compat.array_namespace(losses)
            out = xp.where(out > 0, out, xp.zeros_like(out))
        return out

    extra = {"clip_at_zero": float(clip_at_zero)}
    wrap = _on_losses("excess_loss", excess, "reference_losses", reference.size, extra)
    return _applied(rule, wrap, "excess_loss")


@overload
def group_size_adjusted(
    rule: WeightRule, group_sizes: ArrayLike | Array, adjustment: float
) -> WeightRule: ...
@overload
def group_size_adjusted(group_sizes: ArrayLike | Array, adjustment: float, /) -> RuleWrapper: ...
@overload
def group_size_adjusted(group_sizes: ArrayLike | Array, /, *, adjustment: float) -> RuleWrapper: ...
@overload
def group_size_adjusted(*, group_sizes: ArrayLike | Array, adjustment: float) -> RuleWrapper: ...
def group_size_adjusted(
    rule: Any = None, group_sizes: Any = _MISSING, adjustment: Any = _MISSING
) -> Any:
    """The rule sees ``L_i + C / sqrt(n_i)`` (Group DRO's generalisation adjustment).

    ``group_sizes`` are the number of training items of each task ``n_i > 0`` and
    ``adjustment`` is ``C >= 0``: small groups, whose training loss underestimates their
    true loss the most, are pushed up (Sagawa et al. 2020, eq. 5).
    ``group_size_adjusted(group_sizes, adjustment)`` is the wrapper alone, for
    :func:`chain`. A wrapper on the way in.
    """
    rule, (group_sizes, adjustment) = _arguments(
        rule, group_sizes, adjustment, names=("group_sizes", "adjustment")
    )
    sizes = _task_vector("group_sizes", group_sizes, positive=True)
    adjustment = check_real("adjustment", adjustment)
    offsets = adjustment / np.sqrt(sizes)

    def shifted(losses: Array, cache: dict[Any, Any]) -> Array:
        return losses + _constant_like(offsets, losses, cache, "group_sizes")

    extra = {"adjustment": adjustment}
    wrap = _on_losses("group_size_adjusted", shifted, "group_sizes", sizes.size, extra)
    return _applied(rule, wrap, "group_size_adjusted")
