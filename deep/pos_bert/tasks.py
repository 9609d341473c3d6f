"""Grouping of the 17 Universal POS tags into the M upstream MLM tasks.

A masked token's task is the group of its word's UPOS tag. The default grouping follows the
paper's POS-Mask BERT: ``NOUN, VERB, ADJ, ADV, PRON, DET, ADP, PROPN`` and ``OTHER``
(every remaining tag: AUX, CCONJ, INTJ, NUM, PART, PUNCT, SCONJ, SYM, X).

A grouping is written as a comma-separated list of groups, each one tag or tags joined by
``+``; the group ``OTHER`` takes every tag not named elsewhere::

    parse_tasks("NOUN,VERB+AUX,ADJ+ADV,OTHER")

Standard MLM is the single group ``ALL`` (:func:`single_task`): one task, the token mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tagging import UPOS_TAGS

__all__ = ["DEFAULT_TASKS", "PosTasks", "parse_tasks", "single_task"]

REST = "OTHER"


@dataclass(frozen=True)
class PosTasks:
    """``names[i]`` is task ``i``; ``members[i]`` its UPOS tags. Every tag is in one group."""

    names: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]

    @property
    def num_tasks(self) -> int:
        return len(self.names)

    @property
    def spec(self) -> str:
        return ",".join(self.names)

    def lookup(self) -> np.ndarray:
        """``table[u]`` = task of UPOS index ``u`` (int64, length 17); index with the
        ``upos`` array, after mapping the -1 of special positions to -1 yourself."""
        table = np.full(len(UPOS_TAGS), -1, dtype=np.int64)
        for task, tags in enumerate(self.members):
            for tag in tags:
                table[UPOS_TAGS.index(tag)] = task
        return table

    def task_ids(self, upos: np.ndarray) -> np.ndarray:
        """Task of every position of a ``upos`` array; -1 where ``upos`` is -1."""
        upos = np.asarray(upos)
        if upos.size and (upos.min() < -1 or upos.max() >= len(UPOS_TAGS)):
            raise ValueError(f"upos indices must be in [-1, {len(UPOS_TAGS) - 1}]")
        table = self.lookup()
        return np.where(upos >= 0, table[np.maximum(upos, 0)], -1)


def parse_tasks(spec: str) -> PosTasks:
    """Parse ``"NOUN,VERB+AUX,...,OTHER"`` (see the module docstring)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("the POS task spec must be a non-empty string like 'NOUN,VERB,OTHER'")
    groups = [g.strip() for g in spec.split(",")]
    if len(set(groups)) != len(groups) or any(not g for g in groups):
        raise ValueError(f"POS task spec {spec!r} has an empty or repeated group")
    named: dict[str, tuple[str, ...]] = {}
    seen: set[str] = set()
    for g in groups:
        if g == REST:
            continue
        tags = tuple(t.strip().upper() for t in g.split("+"))
        for t in tags:
            if t not in UPOS_TAGS:
                raise ValueError(
                    f"POS task spec {spec!r}: {t!r} is not a Universal POS tag "
                    f"(allowed: {', '.join(UPOS_TAGS)} and the group {REST})"
                )
            if t in seen:
                raise ValueError(f"POS task spec {spec!r}: tag {t} is in two groups")
            seen.add(t)
        named[g] = tags
    rest = tuple(t for t in UPOS_TAGS if t not in seen)
    if REST in groups:
        if not rest:
            raise ValueError(f"POS task spec {spec!r}: {REST} would be empty")
        named[REST] = rest
    elif rest:
        raise ValueError(
            f"POS task spec {spec!r} leaves {', '.join(rest)} in no group: add {REST} or name them"
        )
    names = tuple(groups)
    return PosTasks(names, tuple(named[g] for g in names))


def single_task() -> PosTasks:
    """Standard MLM: every tag in one task ``ALL`` (the loss is the token mean)."""
    return PosTasks(("ALL",), (UPOS_TAGS,))


DEFAULT_TASKS = parse_tasks("NOUN,VERB,ADJ,ADV,PRON,DET,ADP,PROPN,OTHER")
