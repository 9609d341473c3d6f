"""Checks of user-given numbers: one function per kind of check, shared by every layer.

Each returns the value in a plain Python type (``float``, ``int``) or raises an error that
names the parameter and the allowed range:

==========================  ===============================================================
check                       accepts
==========================  ===============================================================
:func:`check_real`          a finite real ``>= low`` (``> low`` when ``strict``)
:func:`check_interval`      a real in ``[low, high]`` or ``[low, high)`` (``include_high``)
:func:`check_int`           an integer ``>= low`` (``steps``, ``num_tasks``, sizes)
:func:`check_seed`          a seed for ``numpy.random.default_rng``
==========================  ===============================================================

Booleans and strings are refused everywhere (``True`` is not a number of steps).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["check_int", "check_interval", "check_real", "check_seed"]

_REAL_TYPES = (int, float, np.integer, np.floating)


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, _REAL_TYPES)


def check_real(name: str, value: Any, *, low: float = 0.0, strict: bool = False) -> float:
    """``value`` as a finite float ``>= low`` (``> low`` if ``strict``), or an error naming
    ``name`` and the allowed range (``TypeError`` for a non-number, ``ValueError`` for NaN,
    infinities and values out of range)."""
    allowed = f"a finite number {'>' if strict else '>='} {low:g}"
    if not _is_real(value):
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    out = float(value)
    if not math.isfinite(out) or out < low or (strict and out == low):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return out


def check_interval(
    name: str, value: Any, low: float, high: float, *, include_high: bool = True
) -> float:
    """``value`` as a float in ``[low, high]`` (``[low, high)`` unless ``include_high``),
    or an error naming ``name`` and the interval (``decay``, ``epsilon``, ...)."""
    interval = f"[{low:g}, {high:g}{']' if include_high else ')'}"
    if not _is_real(value):
        raise TypeError(f"{name} must be a real number in {interval}, got {type(value).__name__}")
    out = float(value)
    if not (low <= out <= high) or (out == high and not include_high):
        raise ValueError(f"{name} must lie in {interval}, got {out!r}")
    return out


def check_int(name: str, value: Any, *, low: int = 1) -> int:
    """``value`` as an ``int >= low``, or ``ValueError`` naming ``name`` and the bound (also
    for non-integers such as ``2.0`` or ``True``: the count itself is what is wrong)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_seed(value: Any, name: str = "seed") -> Any:
    """A seed for ``numpy.random.default_rng``: ``None``, an integer ``>= 0``, or a
    ``numpy.random.Generator``/``SeedSequence`` (returned unchanged)."""
    if value is None or isinstance(value, np.random.Generator | np.random.SeedSequence):
        return value
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(
            f"{name} must be None or an integer >= 0 (or a numpy Generator), got {value!r}"
        )
    return int(value)
