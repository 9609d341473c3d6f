"""Shared pieces of the experiments: registry types, atomic JSON/PNG output, timing."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deep.io import atomic_write_text
from deep.plotting import save_figure

__all__ = [
    "Experiment",
    "Report",
    "atomic_write_text",
    "given",
    "save_figure",
    "single_threaded",
    "timed",
    "to_jsonable",
    "write_json",
]


@dataclass(frozen=True)
class Report:
    """What an experiment produced: its files and a REPORT.md section (markdown)."""

    json_path: Path
    png_paths: tuple[Path, ...]
    markdown: str
    headline: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """One experiment of ``python -m benchmarks``.

    ``run(args)`` receives the parsed arguments (``args.quick``, ``args.out`` and whatever
    ``add_arguments`` added) and returns a :class:`Report`. Experiments with
    ``quickstart_order`` set run in the quickstart, in that order, with the command-line
    arguments ``quickstart_args`` (default ``--quick``; a heavy experiment can pass a smaller
    demo flag of its own instead).
    """

    name: str
    summary: str
    run: Callable[[argparse.Namespace], Report]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    quickstart_order: int | None = None
    quickstart_args: tuple[str, ...] = ("--quick",)


def given(value: Any, default: Any) -> Any:
    """The command-line value when one was given (even 0, which validation then rejects)."""
    return default if value is None else value


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, paths and tuples to plain JSON; non-finite floats to strings."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    return atomic_write_text(
        path, json.dumps(to_jsonable(payload), indent=2, sort_keys=False) + "\n"
    )


@contextmanager
def single_threaded() -> Iterator[None]:
    """Limit BLAS (and torch, if imported) to one thread for side-by-side timings."""
    from threadpoolctl import threadpool_limits

    torch_threads = None
    try:
        import sys

        torch = sys.modules.get("torch")
        if torch is not None:
            torch_threads = torch.get_num_threads()
            torch.set_num_threads(1)
        with threadpool_limits(limits=1):
            yield
    finally:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls of ``fn`` and the last result."""
    times, out = [], None
    for _ in range(max(repeat, 1)):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out
