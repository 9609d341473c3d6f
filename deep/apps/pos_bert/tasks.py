"""Grouping of the 17 Universal POS tags into the M upstream MLM tasks.

A masked token's task is the group of its word's UPOS tag. The default grouping follows the
paper's POS-Mask BERT: ``NOUN, VERB, ADJ, ADV, PRON, DET, ADP, PROPN`` and ``OTHER``
(every remaining tag: AUX, CCONJ, INTJ, NUM, PART, PUNCT, SCONJ, SYM, X).

A grouping is written as a comma-separated list of groups, each one tag or tags joined by
``+``; the group ``OTHER`` takes every tag not named elsewhere::

    parse_tasks("NOUN,VERB+AUX,ADJ+ADV,OTHER")

Standard MLM is the single group ``ALL`` (:func:`single_task`): one task, the token mean.

:data:`GRANULARITIES` names three splits of the same tags for choosing the upstream tasks:
``coarse`` (3 groups: nominal ``NOUN+PROPN+PRON+NUM``, predicative and modifying
``VERB+AUX+ADJ+ADV``, and the function words ``OTHER``), ``default`` (the 9 above) and
``upos`` (the 17 tags, one task each). A group's loss is the token-weighted mean of its
tags' losses (:meth:`PosTasks.combine`), so a coarser split's losses are fixed convex
combinations of a finer one's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tagging import UPOS_TAGS

__all__ = ["DEFAULT_TASKS", "GRANULARITIES", "PosTasks", "parse_tasks", "single_task"]

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

    def combine(self, tag_losses: np.ndarray, tag_counts: np.ndarray) -> np.ndarray:
        """Per-task mean loss from per-UPOS-tag mean losses and token counts (length 17):
        ``L_g = sum_{u in g} n_u L_u / sum_{u in g} n_u``; NaN for a task with no token.
        Tags with no token may have NaN losses."""
        losses = np.asarray(tag_losses, dtype=np.float64)
        counts = np.asarray(tag_counts, dtype=np.float64)
        if losses.shape != (len(UPOS_TAGS),) or counts.shape != (len(UPOS_TAGS),):
            raise ValueError(
                f"tag_losses and tag_counts must have shape ({len(UPOS_TAGS)},), got "
                f"{losses.shape} and {counts.shape}"
            )
        if np.any(counts < 0) or np.any(~np.isfinite(losses[counts > 0])):
            raise ValueError("tag_counts must be >= 0 and every counted tag's loss finite")
        table = self.lookup()
        sums = np.zeros(self.num_tasks)
        total = np.zeros(self.num_tasks)
        seen = counts > 0
        np.add.at(sums, table[seen], counts[seen] * losses[seen])
        np.add.at(total, table[seen], counts[seen])
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, sums / np.maximum(total, 1e-300), np.nan)


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

GRANULARITIES: dict[str, PosTasks] = {
    "coarse": parse_tasks("NOUN+PROPN+PRON+NUM,VERB+AUX+ADJ+ADV,OTHER"),
    "default": DEFAULT_TASKS,
    "upos": parse_tasks(",".join(UPOS_TAGS)),
}
"""Three splits of the UPOS tags into upstream tasks: 3, 9 and 17 tasks."""
