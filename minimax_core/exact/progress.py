"""What both exact algorithms share about a run: the history (the core's
:class:`~minimax_core.result.Recorder`, every iteration, with the certificate), the callback
and the stall test (:class:`Progress`), the check of warm-start weights, and the
:class:`~minimax_core.result.Result` they return (:func:`finish`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..result import Iterate, Recorder, Result, Status

__all__ = ["STALL_WINDOW", "Callback", "Progress", "check_weights", "finish"]

Float = NDArray[np.float64]
Callback = Callable[[Iterate], "bool | None"]

STALL_WINDOW = 25  # iterations without a 10% better certificate before giving up

#: :attr:`Result.message` of a converged run: what ``tol`` measures (the other statuses
#: carry :attr:`Status.message <minimax_core.result.Status.message>`).
CONVERGED_MESSAGE = "converged: certificate <= tol * min(|F(x)|, F(x) - c) + atol"

_NO_CERTIFICATE_NOTE = (
    "no certificate: the tasks' strong convexity mu is unknown (pass mu=... or give the "
    "problem a mu attribute), so F(x) - F* cannot be bounded"
)


class Progress:
    """Every iterate into the history (``step``, ``fun``, ``certificate``, ``nfev``), the
    callback, and the stall test: no 10% better certificate for ``window`` iterations."""

    def __init__(self, callback: Callback | None) -> None:
        self.callback = callback
        self.recorder = Recorder(columns=("certificate",))
        self.anchor = math.inf  # the certificate at the last 10% improvement
        self.last_improvement = 0
        self.final_certificate: float | None = None

    def record(self, step: int, x: Float, fun: float, cert: float, nfev: int) -> bool:
        """Record one iterate; ``True`` when the callback asks to stop."""
        self.recorder.record(step, fun, nfev, certificate=cert)
        if cert < 0.9 * self.anchor:
            self.anchor = cert
            self.last_improvement = step
        return bool(self.callback is not None and self.callback(Iterate(step, x, fun)))

    def stalled(self, step: int, window: int = STALL_WINDOW) -> bool:
        return step - self.last_improvement >= window

    def end_with(self, step: int, certificate: float) -> None:
        """The history ends with the returned certificate when its last row is ``step``
        (the returned point; pruning may have changed its weights)."""
        steps = self.recorder.steps
        if steps and steps[-1] == step:
            self.final_certificate = certificate

    def history(self) -> dict[str, Float]:
        out = self.recorder.history()
        if self.final_certificate is not None:
            out["certificate"][-1] = self.final_certificate
        return out


def check_weights(weights0: Any, num_tasks: int) -> Float:
    """``weights0`` as float64 weights on the simplex: shape ``(num_tasks,)``, finite,
    ``>= 0`` with a positive sum (normalised to 1), or an error naming ``weights0``."""
    raw = np.asarray(weights0)
    if raw.dtype.kind not in "biuf":
        raise TypeError(f"weights0 must be real numbers, got an array of dtype {raw.dtype}")
    w = np.asarray(raw, dtype=np.float64)
    if w.shape != (num_tasks,):
        raise ValueError(f"weights0 must have shape (num_tasks,) = ({num_tasks},), got {w.shape}")
    total = float(w.sum()) if np.all(np.isfinite(w)) else math.nan
    if not (np.all(w >= 0) and math.isfinite(total) and total > 0):
        raise ValueError(
            "weights0 must be finite, >= 0 and not all 0 (a previous solution's weights)"
        )
    out: Float = w / total
    return out


def finish(
    algorithm: str,
    status: Status,
    x: Float,
    fun: float,
    weights: Float,
    lower: float,
    nit: int,
    nfev: int,
    progress: Progress,
    *,
    certified: bool,
    info: dict[str, Any],
    certificate: float | None = None,
) -> Result:
    """The :class:`~minimax_core.result.Result` of either algorithm (``method="auto"``).

    ``certificate`` (default ``fun - lower``) bounds ``F(x) - F*``: ``None`` in the result
    when it is not finite. ``info`` gains ``algorithm``, ``lower_bound``, ``active`` (the
    tasks with positive weight) and ``relative_certificate``. The message says what
    ``tol`` measures when converged, and why there is no certificate when the problem
    cannot give one (``mu`` unknown, tasks not quadratic).
    """
    cert = fun - lower if certificate is None else certificate
    message = CONVERGED_MESSAGE if status == Status.CONVERGED else status.message
    if not certified and status != Status.CONVERGED:
        message = f"{message}; {_NO_CERTIFICATE_NOTE}"
    info = dict(info)
    info.update(
        algorithm=algorithm,
        lower_bound=lower,
        active=np.flatnonzero(weights > 0),
        relative_certificate=cert / max(abs(fun), 1e-300),
    )
    return Result(
        x=x,
        fun=fun,
        nit=nit,
        nfev=nfev,
        status=status,
        message=message,
        method="auto",
        history=progress.history(),
        weights=weights,
        certificate=cert if math.isfinite(cert) else None,
        info=info,
    )
