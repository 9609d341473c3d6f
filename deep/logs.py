"""Run logs: one JSON line per logging step, an optional TensorBoard writer, the time-averaged
weights as JSON, and reading a log back into a history.

``log.jsonl`` holds one object per logging step with the keys of :data:`HISTORY_KEYS` (lists
for the per-task entries) plus throughput. Lines are appended and flushed one at a time; on
resume the file is rewritten (atomically) without the lines past the checkpoint's step, so
it never holds two entries for one step, and a torn last line from a crash is dropped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .io import atomic_write_bytes, atomic_write_text

__all__ = [
    "HISTORY_KEYS",
    "JsonlLog",
    "atomic_write_bytes",
    "atomic_write_text",
    "empty_history",
    "history_arrays",
    "log_entry",
    "progress_postfix",
    "read_log",
    "tensorboard_write",
    "tensorboard_writer",
    "write_json_atomic",
]

HISTORY_KEYS = (
    "step",
    "loss",
    "mean_loss",
    "worst_loss",
    "task_losses",
    "weights",
    "counts",
    "lr",
    "grad_norm",
)
"""``step`` (int), ``loss`` (``sum_i w_i L_i``), ``mean_loss`` (item-weighted mean),
``worst_loss`` (``max_i L_i`` over present tasks), ``task_losses`` / ``weights`` / ``counts``
(``(n_logged, M)``), ``lr``, ``grad_norm`` (the global gradient norm before clipping)."""


def empty_history(num_tasks: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {k: np.zeros(0) for k in HISTORY_KEYS}
    out["step"] = np.zeros(0, dtype=np.int64)
    for key in ("task_losses", "weights", "counts"):
        out[key] = np.zeros((0, num_tasks))
    return out


def history_arrays(history: Mapping[str, Sequence[Any]], num_tasks: int) -> dict[str, np.ndarray]:
    """Lists of logged values as arrays: ``(n_logged, M)`` for the per-task keys, int64 steps,
    float64 elsewhere."""
    out = {}
    for key, values in history.items():
        per_task = key in ("task_losses", "weights", "counts")
        shape = (len(values), num_tasks) if per_task else (len(values),)
        dtype = np.int64 if key == "step" else np.float64
        out[key] = np.asarray(values, dtype=dtype).reshape(shape)
    return out


def log_entry(
    packed: Sequence[float], num_tasks: int, n_steps: int, step: int, skipped: int
) -> dict[str, Any]:
    """One history row from the interval sums read back in one piece: ``packed`` holds the
    per-task loss sums, counts and weight sums (``M`` each), then the sum of the step
    objectives and the last gradient norm, over ``n_steps`` applied steps."""
    M = num_tasks
    sums, counts = np.asarray(packed[:M]), np.asarray(packed[M : 2 * M])
    present = counts > 0
    task_losses = np.where(present, sums / np.maximum(counts, 1.0), np.nan)
    return {
        "step": step,
        "loss": packed[3 * M] / n_steps if n_steps else float("nan"),
        "mean_loss": float(sums.sum() / counts.sum()) if present.any() else float("nan"),
        "worst_loss": float(np.max(task_losses[present])) if present.any() else float("nan"),
        "task_losses": task_losses,
        "weights": np.asarray(packed[2 * M : 3 * M]) / max(n_steps, 1),
        "counts": counts,
        "grad_norm": packed[3 * M + 1],
        "skipped_steps": skipped,
    }


def progress_postfix(entry: Mapping[str, Any], names: Sequence[str]) -> dict[str, str]:
    """The progress bar's postfix: loss, worst task, throughput."""
    losses = entry["task_losses"]
    out = {"loss": f"{entry['loss']:.4g}"}
    if np.any(np.isfinite(losses)):
        worst = int(np.nanargmax(losses))
        out["worst"] = f"{names[worst]}={losses[worst]:.4g}"
    if entry.get("tokens_per_second"):
        out["tok/s"] = f"{entry['tokens_per_second']:.3g}"
    else:
        out["items/s"] = f"{entry['items_per_second']:.3g}"
    return out


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return _finite_or_none(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json_atomic(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write JSON through a temporary file and a rename (never half-written)."""
    text = json.dumps({k: _jsonable(v) for k, v in payload.items()}, indent=1) + "\n"
    return atomic_write_text(Path(path), text)


class JsonlLog:
    """Append-only JSONL log, truncated to ``keep_through_step`` when a run resumes."""

    def __init__(self, path: Path, keep_through_step: int | None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if keep_through_step is not None:
            kept = [
                json.dumps(entry)
                for entry in _read_entries(path)
                if int(entry.get("step", 0)) <= keep_through_step
            ]
        atomic_write_text(path, "".join(line + "\n" for line in kept))
        self._fh: TextIO | None = open(path, "a", encoding="utf-8")

    def write(self, entry: Mapping[str, Any]) -> None:
        if self._fh is None:
            raise RuntimeError("the log is closed")
        self._fh.write(json.dumps({k: _jsonable(v) for k, v in entry.items()}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _read_entries(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    entries = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line from a crash
                continue
    return entries


def read_log(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The history stored in a ``log.jsonl`` (or in ``<log_dir>/log.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    entries = _read_entries(path)
    if not entries:
        raise ValueError(f"{path} holds no log entries")
    history: dict[str, np.ndarray] = {}
    for key in HISTORY_KEYS:
        values = [np.nan if e.get(key) is None else e[key] for e in entries]
        if key in ("task_losses", "weights", "counts"):
            values = [[np.nan if v is None else v for v in row] for row in values]
        history[key] = np.asarray(values, dtype=np.int64 if key == "step" else np.float64)
    return history


def tensorboard_writer(log_dir: Path) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter`` in ``log_dir/tensorboard``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(
            "tensorboard=True needs the tensorboard package: pip install tensorboard"
        ) from err
    return SummaryWriter(log_dir=str(log_dir / "tensorboard"))


def tensorboard_write(writer: Any, entry: Mapping[str, Any], task_names: Sequence[str]) -> None:
    step = int(entry["step"])
    for key in ("loss", "mean_loss", "worst_loss", "lr", "grad_norm", "items_per_second"):
        value = entry.get(key)
        if value is not None and math.isfinite(float(value)):
            writer.add_scalar(f"train/{key}", float(value), step)
    for i, name in enumerate(task_names):
        writer.add_scalar(f"task_loss/{name}", float(entry["task_losses"][i]), step)
        writer.add_scalar(f"weight/{name}", float(entry["weights"][i]), step)
    writer.flush()
