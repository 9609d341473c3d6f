"""The result type of every check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Slack:
    """How much room a bound had on the instances a check tried.

    ``slack = min over instances of (bound - measured)``: the statement held on every
    instance when ``slack >= -tolerance``, where ``tolerance`` is the stated allowance for
    floating-point rounding (never a loosening of the bound). ``ratio = max measured /
    bound`` says how tight the bound was (1 is tight, close to 0 is loose). ``details``
    holds the per-instance arrays (per step, per pair, ...) for plots and messages.
    """

    statement: str
    slack: float
    tolerance: float
    ratio: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        return self.slack >= -self.tolerance

    def __str__(self) -> str:
        verdict = "holds" if self.holds else "VIOLATED"
        return (
            f"{self.statement}: {verdict} (slack {self.slack:.3e}, tolerance "
            f"{self.tolerance:.1e}, measured/bound up to {self.ratio:.3g})"
        )
