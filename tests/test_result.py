"""``minimax_core.result``: the status enum, the result type and the one history recorder."""

from __future__ import annotations

import json

import numpy as np
import pytest

import minimax_core as mc
from minimax_core.result import Recorder, Result, Status, geometric_grid


def test_status_is_an_int_with_a_message() -> None:
    assert [int(s) for s in Status] == list(range(7))
    assert Status.CONVERGED == 0 and Status(3) is Status.NON_FINITE
    assert json.dumps({"status": Status.BUDGET}) == '{"status": 1}'
    assert Status.CONVERGED.message == "converged: tolerance met"
    assert Status.CALLBACK.message == "stopped by the callback"
    assert all(isinstance(s.message, str) and s.message for s in Status)
    assert mc.Status is Status


def test_result_derives_success_and_message_from_the_status() -> None:
    common = {"x": np.zeros(2), "fun": 1.0, "nit": 3, "nfev": 4, "method": "m", "history": {}}
    res = Result(status=1, **common)  # type: ignore[arg-type]
    assert res.status is Status.BUDGET and not res.success
    assert res.message == Status.BUDGET.message
    done = Result(status=Status.CONVERGED, message="converged: certificate small", **common)
    assert done.success and done.message == "converged: certificate small"
    with pytest.raises(TypeError):
        Result(status=Status.CONVERGED, success=False, **common)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        Result(status=9, **common)  # type: ignore[arg-type]


def test_geometric_grid() -> None:
    grid = geometric_grid(1000)
    assert grid[0] == 0 and grid[1] == 1 and grid[-1] == 1000
    assert np.all(np.diff(grid) > 0) and 50 <= grid.size <= 101
    assert geometric_grid(0).tolist() == [0]


def test_recorder_on_a_grid_records_each_step_once() -> None:
    rec = Recorder.geometric(1000)
    assert rec.record(0, 5.0, 1) and not rec.record(0, 5.0, 1)
    assert not rec.due(999) and not rec.record(999, 1.0, 9)
    assert rec.record(999, 1.0, 9, force=True)
    assert not rec.record(999, 1.0, 9, force=True)  # the final forced record is not repeated
    hist = rec.history()
    assert list(hist) == ["step", "fun", "nfev"]
    assert hist["step"].tolist() == [0, 999] and hist["step"].dtype == np.int64
    assert hist["fun"].tolist() == [5.0, 1.0] and hist["nfev"].tolist() == [1, 9]


def test_recorder_every_step_with_extra_columns() -> None:
    rec = Recorder(columns=("certificate",))
    for step in range(3):
        rec.record(step, float(step), 2 * step, certificate=1.0 / (step + 1))
    hist = rec.history()
    assert list(hist) == ["step", "fun", "certificate", "nfev"]
    assert hist["certificate"].tolist() == [1.0, 0.5, 1.0 / 3.0] and rec.steps == [0, 1, 2]
    with pytest.raises(ValueError, match="columns"):
        rec.record(3, 0.0, 6)
