"""``minimize_max``: solve ``min_x max_i L_i(x)`` with the paper's method and its baselines.

========================  ==============================================================
method                    iteration
========================  ==============================================================
``"softmax"``             ``w = softmax(L(x)/temperature)``; ``x <- x - eta sum_i w_i grad L_i``
                          (gradient descent on ``F_tau``; by default Armijo backtracking on
                          ``F_tau`` with Nesterov momentum and temperature continuation down
                          to a bias of 1e-6 of the initial gap; ``line_search="fixed"``: the
                          paper's step ``eta = 1/(L + G^2/tau)``) -- :mod:`.softmax`
``"subgradient"``         hardmax weights (a subgradient of ``F``), projected on a ball that
                          holds ``x*``; ``eta_t = 2/(mu (t+1))`` with the average
                          ``sum t x_t / sum t`` (strongly convex) or ``eta_t = 2R/(G sqrt t)``
                          with the best iterate (``step_rule="sqrt"``, convex) --
                          :mod:`.subgradient`
``"average"``             gradient descent on ``mean_i L_i`` (average risk) -- :mod:`.average`
``"group_dro"``           exponentiated-gradient weights ``q <- q exp(eta_q L)`` (Group DRO)
                          with steps ``1/smoothness`` on ``x`` and the best iterate
                          (``step_rule="strongly_convex"``: projected ``2/(mu (t+1))`` steps
                          and the ``t``-weighted average) -- :mod:`.group_dro`
a weight rule             any :class:`~minimax_core.weights.WeightRule` (``softmax(tau)``,
                          ``exponentiated_gradient(s)``, a wrapped or a user's own rule):
                          ``x <- x - eta sum_i w_i grad L_i`` with ``w`` from
                          ``rule.update`` -- :mod:`.rule`
``"auto"``                exact ``min max`` with a certificate (:mod:`minimax_core.exact`):
                          Mehrotra's interior-point method for quadratic tasks or tasks with
                          ``hessians(x)``, Nesterov's accelerated gradient method for
                          max-type functions otherwise; ``tol`` is a relative accuracy --
                          :mod:`.auto`
========================  ==============================================================

Every first-order method runs the one loop of :mod:`.driver` and supplies only its
direction, step and certificate. Each method's options are the fields of a frozen dataclass
(:class:`Softmax`, :class:`Subgradient`, :class:`AverageRisk`, :class:`GroupDRO`,
:class:`Rule`, :class:`Auto`); ``minimize_max(problem, "softmax", temperature=0.1)`` and
``minimize_max(problem, Softmax(temperature=0.1))`` are the same call.

``stochastic=True`` replaces ``losses``/``jacobian`` by the problem's minibatch estimates
(``problem.sample(x, batch_size, rng)``, seeded by ``seed``) with decreasing steps
``1/(mu t + L_step)`` and the ``t``-weighted average of the iterates.

The result (:class:`~minimax_core.result.Result`) carries the scipy names (``x, fun, nit,
nfev, success, status, message``) plus ``history`` (``step``, ``fun``, ``nfev`` on a
geometric grid of steps), the task ``weights`` at the end and, where the method gives one, a
``certificate``: an upper bound on ``F(x) - F*``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..problems import check_problem
from ..result import Iterate, Result, geometric_grid
from ..validation import check_real, check_seed
from .auto import Auto
from .average import AverageRisk
from .driver import Setup, positive, run
from .group_dro import GroupDRO
from .rule import Rule, RuleLike, is_weight_rule
from .softmax import Softmax, smoothed_max
from .subgradient import Subgradient

__all__ = [
    "METHODS",
    "Auto",
    "AverageRisk",
    "GroupDRO",
    "Iterate",
    "MethodLike",
    "Result",
    "Rule",
    "RuleLike",
    "Softmax",
    "Subgradient",
    "geometric_grid",
    "minimize_max",
    "smoothed_max",
]

Float = NDArray[np.float64]

#: The methods by name: each is the frozen dataclass of its options.
METHODS: dict[str, type[Any]] = {
    "auto": Auto,
    "softmax": Softmax,
    "subgradient": Subgradient,
    "average": AverageRisk,
    "group_dro": GroupDRO,
}

_OPTION_TYPES = (*METHODS.values(), Rule)

_DEFAULT_STEPS = 2000  # every method's step (iteration) budget, except:
# the subgradient method converges at O(1/T) (Lacoste-Julien et al. 2012): measured on random
# quadratics with L/mu = 100, M = 50 (benchmarks/experiments/defaults.py), 2000 steps leave a
# relative gap of about 4e-2 and 20000 steps about 5e-3 (the 1e-2 target with a margin)
_SUBGRADIENT_STEPS = 20_000


#: What ``minimize_max`` accepts as ``method``.
MethodLike = str | Softmax | Subgradient | AverageRisk | GroupDRO | Rule | Auto | RuleLike


def minimize_max(
    problem: Any,
    method: MethodLike = "auto",
    *,
    x0: ArrayLike | None = None,
    steps: int | None = None,
    tol: float = 1e-8,
    stochastic: bool = False,
    batch_size: int = 32,
    seed: int | None = 0,
    callback: Callable[[Iterate], bool | None] | None = None,
    mu: float | None = None,
    smoothness: float | None = None,
    **options: Any,
) -> Result:
    """Minimise ``F(x) = max_i L_i(x)`` over ``x in R^d``.

    Parameters
    ----------
    problem: any object with ``num_tasks``, ``dim``, ``losses(x)`` and ``jacobian(x)``
        (plus ``mu``/``smoothness``/``lipschitz``/``sample`` where a method needs them).
    method: one of ``"auto"``, ``"softmax"``, ``"subgradient"``, ``"average"``,
        ``"group_dro"``; a weight rule (any object with ``init(num_tasks)`` and
        ``update(losses, state)``, e.g. ``minimax_core.weights.exponentiated_gradient(0.1)``);
        or a method's options object (:class:`Softmax`, :class:`Rule`, ...).
    x0: starting point (default zeros). steps: iteration budget (default 2000; 20000
        for subgradient, whose rate is O(1/T)). tol: stopping tolerance on
        the norm of the step direction (``grad F_tau`` for softmax, ``grad mean L`` for
        average, ``w'J`` for a rule); for auto the relative accuracy: ``success`` iff
        ``certificate <= tol * |F(x)| + atol``. stochastic / batch_size / seed: minibatch
        oracle. callback: ``callback(Iterate) -> bool``; ``True`` stops. mu, smoothness:
        override the problem's constants.
    options: the fields of the method's options class: ``algorithm``, ``atol`` (auto);
        ``temperature``, ``step_size``, ``line_search``, ``final_temperature``,
        ``temperature_decay``, ``accelerated`` (softmax); ``step_rule``, ``radius``,
        ``step_size`` (subgradient); ``step_size`` (average); ``step_size``,
        ``weight_step_size``, ``step_rule`` (group_dro); ``step_size``, ``line_search`` (a
        weight rule). Unknown options raise ``TypeError`` naming the allowed ones.

    With default options every method that targets ``min max`` (softmax, subgradient,
    group_dro) reaches ``F(x) - F* <= 1e-2 (F(x0) - F*)`` after its default budget on random
    quadratics with ``L/mu <= 100``, ``M <= 50``, ``d <= 100`` and never ends above its start
    (``tests/test_defaults.py``; ``python -m benchmarks run defaults`` prints the gaps).
    ``average`` targets ``argmin mean_i L_i`` instead: its default step ``2/(mu + L)``
    reaches that point (its own gap, not the ``min max`` gap, is the one tested).
    """
    chosen = _method(method, options)
    check_problem(problem)
    x_start = _start_point(x0, int(problem.dim))
    seed = check_seed(seed)
    if steps is None:
        steps = _SUBGRADIENT_STEPS if isinstance(chosen, Subgradient) else _DEFAULT_STEPS
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    tol_value = positive("tol", tol)
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if stochastic and not callable(getattr(problem, "sample", None)):
        raise TypeError("stochastic=True needs a problem with sample(x, batch_size, rng)")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable: callback(Iterate) -> bool | None")
    setup = Setup(
        problem=problem,
        x0=x_start,
        steps=int(steps),
        tol=float(tol_value or tol),
        stochastic=bool(stochastic),
        batch_size=int(batch_size),
        rng=np.random.default_rng(seed),
        callback=callback,
        mu=_resolved_constant(problem, "mu", mu),
        smoothness=_resolved_constant(problem, "smoothness", smoothness),
    )
    if isinstance(chosen, Auto):
        return chosen.solve(setup)
    return run(chosen, setup)


def _method(method: Any, options: dict[str, Any]) -> Any:
    """The options object of ``method`` (a name, a weight rule, or an options object) built
    from ``options``; unknown options raise ``TypeError`` naming the method and the allowed
    ones."""
    if isinstance(method, _OPTION_TYPES):
        if options:
            raise TypeError(
                f"method={type(method).__name__}(...) carries its options; got also "
                f"{sorted(options)}"
            )
        return method
    if isinstance(method, str) and method in METHODS:
        cls, label, extra = METHODS[method], repr(method), {}
    elif not isinstance(method, str) and is_weight_rule(method):
        cls, label, extra = (
            Rule,
            f"rule {getattr(method, 'name', type(method).__name__)!r}",
            {"rule": method},
        )
    else:
        raise ValueError(
            f"method must be one of {sorted(METHODS)} or a weight rule (an object with "
            f"init(num_tasks) and update(losses, state)), got {method!r}"
        )
    allowed = {f.name for f in fields(cls)} - set(extra)
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)} for method={label}; allowed: {sorted(allowed)}"
        )
    return cls(**extra, **options)


def _start_point(x0: ArrayLike | None, dim: int) -> Float:
    """``x0`` as a float64 copy of shape ``(dim,)``: real and finite (a complex ``x0`` would
    lose its imaginary part, a string one would be parsed)."""
    if x0 is None:
        return np.zeros(dim)
    raw = np.asarray(x0)
    if raw.dtype.kind not in "iuf":
        raise TypeError(
            f"x0 must be an array of real numbers of shape (dim,) = ({dim},), got dtype {raw.dtype}"
        )
    x_start = np.array(raw, dtype=np.float64)
    if x_start.shape != (dim,):
        raise ValueError(f"x0 must have shape (dim,) = ({dim},), got {x_start.shape}")
    if not np.all(np.isfinite(x_start)):
        raise ValueError("x0 must be finite (no NaN or Inf)")
    return x_start


def _resolved_constant(problem: Any, name: str, given: float | None) -> float | None:
    """``mu`` or ``smoothness``: the given value, else the problem's attribute (checked: a
    finite number ``>= 0``; a given smoothness ``> 0``), else ``None``.

    A given ``mu`` above ``problem.mu`` (or ``smoothness`` below ``problem.smoothness``)
    is refused: the steps, radii and certificates derived from it would not hold (the
    problem's constants are exact, or valid bounds, by the problem's contract)."""
    own = getattr(problem, name, None)
    if own is not None:
        own = check_real(f"problem.{name}", own)
    if given is None:
        return own
    value = check_real(name, given, strict=name == "smoothness")
    if own is not None and name == "mu" and value > own * (1 + 1e-12):
        raise ValueError(
            f"mu={value!r} exceeds problem.mu = {own!r}: the tasks are not {value}-strongly "
            "convex, so steps, radii and certificates derived from it would be invalid; "
            f"pass mu <= {own!r} (or none)"
        )
    if own is not None and name == "smoothness" and value < own * (1 - 1e-12):
        raise ValueError(
            f"smoothness={value!r} is below problem.smoothness = {own!r}: the tasks are not "
            f"{value}-smooth; pass smoothness >= {own!r} (or none)"
        )
    return value
