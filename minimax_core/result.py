"""What every solver returns: :class:`Result` (``scipy.optimize.OptimizeResult``'s field
names), its :class:`Status` (an ``IntEnum`` whose members carry their messages), the
:class:`Iterate` a callback sees, and the one history :class:`Recorder` (a geometric grid of
steps, or every step) that :mod:`minimax_core.solvers`, :mod:`minimax_core.exact` and
:mod:`minimax_core.reference` share."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = ["Iterate", "Recorder", "Result", "Status", "geometric_grid"]

Float = NDArray[np.float64]


class Status(enum.IntEnum):
    """Why a solver stopped. An ``int`` (``res.status == 0`` and JSON keep working);
    ``status.message`` is the sentence :attr:`Result.message` carries unless the solver
    words it more precisely (e.g. what its tolerance measures)."""

    CONVERGED = 0  # tol met
    BUDGET = 1  # step budget reached first
    CALLBACK = 2  # the callback returned True
    NON_FINITE = 3  # NaN/Inf losses or gradients (divergence)
    STALLED = 4  # no more progress at floating-point accuracy
    NO_CERTIFICATE = 5  # stationary, but no certificate (mu unknown)
    NOT_OPTIMAL = 6  # a reference solver reported a status other than optimal

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.CONVERGED: "converged: tolerance met",
    Status.BUDGET: "step budget reached before the tolerance",
    Status.CALLBACK: "stopped by the callback",
    Status.NON_FINITE: "diverged: non-finite losses or gradients",
    Status.STALLED: "stalled: the certificate stopped improving before the tolerance "
    "(the limit of floating-point accuracy for this problem, or tol too small)",
    Status.NO_CERTIFICATE: "the optimality conditions hold to tol (estimated gap from the "
    "local model), but without a certificate",
    Status.NOT_OPTIMAL: "the reference solver did not report an optimal solution",
}


class Iterate(NamedTuple):
    """What a callback sees after each step: ``fun`` is ``F`` at the current ``x``."""

    step: int
    x: Float
    fun: float


@dataclass(frozen=True, kw_only=True)
class Result:
    """Outcome of a solver, with ``scipy.optimize.OptimizeResult`` field names.

    ``status`` is a :class:`Status` (0 converged, 1 step budget reached, 2 stopped by the
    callback, 3 non-finite values, 4 stalled at floating-point accuracy, 5 stationary but
    not certified, 6 reference solver not optimal); ``success`` is ``status == 0``;
    ``message`` defaults to ``status.message``. ``history`` holds ``step``, ``fun`` and
    ``nfev`` arrays (plus solver-specific columns) on the recorder's grid; ``weights`` the
    task weights at the end; ``certificate``, where the method gives one, an upper bound on
    ``F(x) - F*``; ``info`` the method's own diagnostics.
    """

    x: Float
    fun: float
    nit: int
    nfev: int
    success: bool = field(init=False)
    status: Status
    message: str = ""
    method: str
    history: dict[str, Float]
    weights: Float | None = None
    certificate: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        status = Status(self.status)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "success", status == Status.CONVERGED)
        if not self.message:
            object.__setattr__(self, "message", status.message)


def geometric_grid(steps: int, num: int = 100) -> NDArray[np.int64]:
    """Sorted unique integers from 0 to ``steps`` spaced geometrically (about ``num``)."""
    if steps <= 0:
        return np.zeros(1, dtype=np.int64)
    grid = np.unique(np.round(np.geomspace(1, steps, num)).astype(np.int64))
    return np.concatenate([[0], grid])


class Recorder:
    """A run's history: ``step``, ``fun``, any extra columns (e.g. ``certificate``) and
    ``nfev``, one row per recorded step.

    ``grid``: the steps to record (:meth:`geometric` for the usual geometric grid of a
    step budget); ``None`` records every step. A step is recorded at most once (a final
    ``record(..., force=True)`` after the loop adds the last step unless it is there)."""

    def __init__(self, grid: Iterable[int] | None = None, columns: Iterable[str] = ()) -> None:
        self.grid: frozenset[int] | None = None if grid is None else frozenset(int(s) for s in grid)
        self.columns = tuple(columns)
        self._rows: dict[str, list[float]] = {name: [] for name in ("step", "fun", *self.columns)}
        self._nfev: list[int] = []

    @classmethod
    def geometric(cls, steps: int, columns: Iterable[str] = ()) -> Recorder:
        """Records on :func:`geometric_grid` ``(steps)``."""
        return cls(geometric_grid(steps).tolist(), columns)

    def due(self, step: int, force: bool = False) -> bool:
        """Whether :meth:`record` would add ``step`` (on the grid or forced, and new), so a
        caller can skip computing ``fun`` otherwise."""
        on_grid = force or self.grid is None or step in self.grid
        steps = self._rows["step"]
        return on_grid and not (steps and steps[-1] == step)

    def record(self, step: int, fun: float, nfev: int, force: bool = False, **extra: float) -> bool:
        """Add one row if :meth:`due`; ``extra`` gives a value for every extra column.
        Returns whether the row was added."""
        if not self.due(step, force):
            return False
        if set(extra) != set(self.columns):
            raise ValueError(f"record needs the columns {self.columns}, got {tuple(extra)}")
        self._rows["step"].append(step)
        self._rows["fun"].append(fun)
        for name in self.columns:
            self._rows[name].append(extra[name])
        self._nfev.append(nfev)
        return True

    @property
    def steps(self) -> list[int]:
        """The steps recorded so far."""
        return [int(s) for s in self._rows["step"]]

    def history(self) -> dict[str, Float]:
        """The columns as arrays: ``step`` and ``nfev`` int64, the others float64."""
        out: dict[str, Any] = {"step": np.asarray(self._rows["step"], dtype=np.int64)}
        for name in ("fun", *self.columns):
            out[name] = np.asarray(self._rows[name], dtype=np.float64)
        out["nfev"] = np.asarray(self._nfev, dtype=np.int64)
        return out
