"""Where batches come from, and how the data position is restored on resume.

``deep.pretrain`` counts the micro-batches it has drawn (its *data position*) and stores that
count in every checkpoint. On resume it brings a new source to the same position:

* a **re-iterable** (list, tuple, ``DataLoader``, anything whose ``iter()`` starts a fresh
  pass): passes repeat as epochs; resuming replays the passes from the start and discards
  the first ``position`` batches (no forward pass). Make the order a function of a seed (a
  list, or ``DataLoader(..., generator=torch.Generator().manual_seed(s))``) so that the replay
  sees the same batches.
* a **one-shot iterator or generator**: resuming draws and discards ``position`` batches from
  the iterator you pass, so pass a fresh one that yields the same sequence. When it runs out
  the run ends early (with a warning); one that yields nothing at all is an error.
* a **callable** ``batches(position) -> iterable``: called with the position; it must return
  the batches from that micro-batch on (use this to seek in O(1) on large data). When that
  iterable runs out, it is called again with the current position; an empty one ends the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["BatchStream", "move_to_device"]


class BatchStream:
    """An endless (if possible) stream of micro-batches with a position counter."""

    def __init__(self, batches: Any, position: int = 0) -> None:
        self._factory: Callable[[int], Iterable[Any]] | None = None
        self._source: Iterable[Any] | None = None
        self._one_shot = False
        if isinstance(batches, torch.Tensor | str | bytes) or batches is None:
            raise TypeError(
                "batches must be a re-iterable (list, DataLoader), an iterator/generator or a "
                f"callable position -> iterable, got {type(batches).__name__}"
            )
        if isinstance(batches, Iterator):
            self._iterator: Iterator[Any] | None = batches
            self._one_shot = True
        elif isinstance(batches, Iterable):
            self._source = batches
            self._iterator = None
        elif callable(batches):
            self._factory = batches
            self._iterator = None
        else:
            raise TypeError(
                "batches must be a re-iterable (list, DataLoader), an iterator/generator or a "
                f"callable position -> iterable, got {type(batches).__name__}"
            )
        self.position = 0
        self._pass_count = 0  # batches drawn in the current pass
        if self._factory is not None:
            self.position = position
        else:
            for _ in range(position):
                if self._draw() is None:
                    raise ValueError(
                        f"cannot resume at data position {position}: batches ran out after "
                        f"{self.position} batches"
                    )

    @property
    def one_shot(self) -> bool:
        return self._one_shot

    def _start_pass(self) -> Iterator[Any]:
        if self._factory is not None:
            return iter(self._factory(self.position))
        assert self._source is not None
        return iter(self._source)

    def _draw(self) -> Any | None:
        """The next batch, or ``None`` if the data has run out."""
        for _attempt in range(2):
            if self._iterator is None:
                self._iterator = self._start_pass()
                self._pass_count = 0
            try:
                batch = next(self._iterator)
            except StopIteration:
                if self._one_shot:
                    if self.position == 0:
                        raise ValueError(
                            "batches yielded no batch at all (an empty or already exhausted "
                            "iterator/generator)"
                        ) from None
                    return None
                if self._pass_count == 0:  # a fresh pass was empty
                    if self.position == 0:
                        raise ValueError("batches yielded no batch at all") from None
                    return None
                self._iterator = None
                continue
            self._pass_count += 1
            self.position += 1
            return batch
        return None

    def next(self) -> Any | None:
        """The next micro-batch, or ``None`` when the data has run out."""
        return self._draw()


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors in ``batch`` (nested dicts, lists, tuples, named tuples, dataclasses) on ``device``.

    Copies are ``non_blocking`` (truly asynchronous from pinned memory); other leaves are
    returned as they are.
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {
            f.name: move_to_device(getattr(batch, f.name), device)
            for f in dataclasses.fields(batch)
            if f.init
        }
        return dataclasses.replace(batch, **changes)
    return batch
