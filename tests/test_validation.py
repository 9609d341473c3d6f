"""minimax_core.validation: one check per kind, each error naming the parameter and range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minimax_core.validation import check_int, check_interval, check_real, check_seed


def test_check_real() -> None:
    assert check_real("x", 2) == 2.0 and isinstance(check_real("x", 2), float)
    assert check_real("x", np.float32(0.5), strict=True) == 0.5
    assert check_real("x", 0.0) == 0.0
    assert check_real("x", -3.0, low=-3.0) == -3.0
    with pytest.raises(ValueError, match=r"x must be a finite number > 0, got 0\.0"):
        check_real("x", 0.0, strict=True)
    for bad in (-1e-300, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"x must be a finite number >= 0"):
            check_real("x", bad)
    for wrong_type in ("1", True, None, np.array(1.0)):
        with pytest.raises(TypeError, match=r"x must be a finite number >= 0"):
            check_real("x", wrong_type)


def test_check_interval() -> None:
    assert check_interval("d", 0, 0.0, 1.0, include_high=False) == 0.0
    assert check_interval("e", 1.0, 0.0, 1.0) == 1.0
    with pytest.raises(ValueError, match=r"d must lie in \[0, 1\), got 1\.0"):
        check_interval("d", 1.0, 0.0, 1.0, include_high=False)
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"e must lie in \[0, 1\]"):
            check_interval("e", bad, 0.0, 1.0)
    with pytest.raises(TypeError, match=r"e must be a real number in \[0, 1\], got str"):
        check_interval("e", "0.5", 0.0, 1.0)


def test_check_int() -> None:
    assert check_int("steps", np.int64(3)) == 3 and type(check_int("steps", 3)) is int
    assert check_int("steps", 0, low=0) == 0
    for bad in (0, -1, 2.0, True, None, "3"):
        with pytest.raises(ValueError, match=r"steps must be an integer >= 1"):
            check_int("steps", bad)


def test_check_seed() -> None:
    rng = np.random.default_rng(0)
    assert check_seed(None) is None and check_seed(rng) is rng and check_seed(np.int32(4)) == 4
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ValueError, match=r"rng_seed must be None or an integer >= 0"):
            check_seed(bad, "rng_seed")
