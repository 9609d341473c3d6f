"""The planted language's MLM: model, masking, task loss and per-category evaluation.

The model is ``transformers``' ``BertForMaskedLM`` built from a config (no download),
wrapped by :class:`deep.apps.pos_bert.model.MaskedPositionsMLM` so that the MLM head runs on the
masked positions only. Masking is :func:`deep.apps.pos_bert.masking.mask_tokens` (30% of the
category tokens; the subject, topic and specials never) with every selected token replaced by a
*typed* mask ``[MASK_c]`` of its category (``mask_prob = 1``). Typed masks: the task is
"predict the category-``c`` token here", so a category's loss measures how well the model
uses that category's context, not whether it can guess which category sits under the mask
(with untyped masks a 2-layer model sat on the unigram plateau for hundreds of steps on
CPU). With the 80/10/10 rule a kept token would let the model read its own label and the
entropy floor would no longer bound the loss.

Public API (stable)::

    model = make_model(grammar, seed=0)                 # MaskedPositionsMLM (a real BERT MLM)
    heldout = masked_set(sample, grammar, seed=1)       # MaskedSet: fixed masks, any model
    losses = category_losses(model, heldout)           # CategoryLosses(losses (K,), counts (K,))
    losses.excess(grammar.floors)                      # (K,) L_c - floor_c
    batches = PlantedBatches(sample, grammar, batch_size=64, seed=0)  # for deep.pretrain
    task_loss = planted_task_loss(per_category=True)   # task_loss(model, batch) for deep.pretrain

``category_losses`` accepts a :class:`MaskedPositionsMLM` or a bare ``BertForMaskedLM``
(its ``.logits`` are read at the masked positions); the losses are the mean cross-entropy
(nats) of each category's masked tokens, ``L_c = sum_{k: c_k = c} l_k / n_c``, and the
token-mean loss of the set is ``sum_c (n_c / n) L_c``: a mixture corpus's loss is the
convex combination of its per-category losses with its category shares as weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..pos_bert.masking import MaskingConfig, mask_tokens
from ..pos_bert.model import MaskedPositionsMLM, bert_config, make_mlm_model
from .language import Grammar, Sample

__all__ = [
    "MASKING",
    "CategoryLosses",
    "MaskedSet",
    "PlantedBatches",
    "category_losses",
    "make_model",
    "masked_set",
    "planted_task_loss",
]

MASKING = MaskingConfig(rate=0.3, mask_prob=1.0, random_prob=0.0)
"""30% of category tokens, each replaced by its typed ``[MASK_c]`` (context and specials never)."""

#: (layers, hidden, heads, feed-forward) of the default CPU-sized model
MODEL_SHAPE = (2, 64, 2, 256)


def make_model(
    grammar: Grammar,
    *,
    seed: int = 0,
    shape: tuple[int, int, int, int] = MODEL_SHAPE,
    initializer_range: float = 0.02,
) -> MaskedPositionsMLM:
    """A ``BertForMaskedLM`` of ``shape`` for ``grammar``'s vocabulary, initialised from
    ``seed``, wrapped to run the head on masked positions only. Dropout is off (the
    comparisons are paired; dropout would only add noise at this scale)."""
    layers, hidden, heads, ffn = shape
    config = bert_config(
        "tiny",
        vocab_size=grammar.vocab_size,
        max_len=grammar.spec.sequence_length,
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=ffn,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=initializer_range,
    )
    return MaskedPositionsMLM(make_mlm_model(config, seed=seed))


def _mask(
    tokens: torch.Tensor, cats: torch.Tensor, mask_offset: int, vocab_size: int, seed: int
) -> dict[str, torch.Tensor]:
    """:func:`mask_tokens`, then each ``[MASK]`` typed by its category: ``[MASK_c]``."""
    generator = torch.Generator().manual_seed(int(seed))
    out = mask_tokens(tokens, cats, vocab_size=vocab_size, generator=generator, config=MASKING)
    flat = out["input_ids"].reshape(-1)
    flat[out["mask_index"]] = mask_offset + out["pos_task"]
    return out


@dataclass(frozen=True, eq=False)
class MaskedSet:
    """Held-out sequences with fixed masks, in chunks of ``chunk`` rows (each a batch dict of
    :func:`deep.apps.pos_bert.masking.mask_tokens`, with ``pos_task`` the category)."""

    batches: tuple[dict[str, torch.Tensor], ...]
    num_categories: int

    @property
    def counts(self) -> np.ndarray:
        """``(K,)`` masked tokens of each category."""
        out = np.zeros(self.num_categories, dtype=np.int64)
        for b in self.batches:
            out += np.bincount(b["pos_task"].numpy(), minlength=self.num_categories)
        return out


def masked_set(sample: Sample, grammar: Grammar, *, seed: int, chunk: int = 256) -> MaskedSet:
    """Mask ``sample`` (from ``grammar``) once, deterministically in ``seed``, for evaluation."""
    tokens = torch.from_numpy(sample.tokens)
    cats = torch.from_numpy(sample.categories)
    K, V, offset = grammar.num_categories, grammar.vocab_size, grammar.mask_offset
    batches = tuple(
        _mask(tokens[i : i + chunk], cats[i : i + chunk], offset, V, seed * 7919 + i)
        for i in range(0, tokens.shape[0], chunk)
    )
    return MaskedSet(batches, K)


@dataclass(frozen=True)
class CategoryLosses:
    """Per-category masked-token mean losses (nats; NaN where a category has no token)."""

    losses: np.ndarray  # (K,)
    counts: np.ndarray  # (K,)

    def excess(self, floors: np.ndarray) -> np.ndarray:
        return self.losses - np.asarray(floors)

    @property
    def token_mean(self) -> float:
        """The set's token-mean loss ``sum_c (n_c / n) L_c``."""
        present = self.counts > 0
        return float((self.losses[present] * self.counts[present]).sum() / self.counts.sum())


def _masked_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if isinstance(model, MaskedPositionsMLM):
        return model(batch["input_ids"], batch["attention_mask"], batch["mask_index"])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits if hasattr(out, "logits") else out
    return logits.reshape(-1, logits.shape[-1]).index_select(0, batch["mask_index"])


@torch.no_grad()
def category_losses(model: Any, heldout: MaskedSet) -> CategoryLosses:
    """Per-category masked-token cross-entropy of ``model`` on ``heldout`` (eval mode)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    K = heldout.num_categories
    sums = torch.zeros(K, dtype=torch.float64)
    counts = torch.zeros(K, dtype=torch.float64)
    try:
        for batch in heldout.batches:
            b = {k: v.to(device) for k, v in batch.items()}
            logits = _masked_logits(model, b)
            values = F.cross_entropy(logits.float(), b["labels"], reduction="none").double().cpu()
            ids = batch["pos_task"]
            sums.index_add_(0, ids, values)
            counts.index_add_(0, ids, torch.ones_like(values))
    finally:
        model.train(was_training)
    c = counts.numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(c > 0, sums.numpy() / np.maximum(c, 1.0), np.nan)
    return CategoryLosses(means, c.astype(np.int64))


class PlantedBatches:
    """Seekable masked batches over ``sample`` for :func:`deep.pretrain`: micro-batch ``k`` is
    a pure function of ``(seed, k)`` (epoch shuffles and masks), so every method of one seed
    sees the same data in the same order."""

    def __init__(self, sample: Sample, grammar: Grammar, *, batch_size: int, seed: int) -> None:
        n = len(sample)
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not 1 <= batch_size <= n
        ):
            raise ValueError(
                f"batch_size must be an integer in [1, {n}] (rows), got {batch_size!r}"
            )
        self.tokens = torch.from_numpy(sample.tokens)
        self.cats = torch.from_numpy(sample.categories)
        self.batch_size, self.seed = batch_size, int(seed)
        self.vocab_size, self.mask_offset = grammar.vocab_size, grammar.mask_offset
        self.per_epoch = n // batch_size

    def batch(self, position: int) -> dict[str, torch.Tensor]:
        epoch, k = divmod(position, self.per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.tokens.shape[0])
        rows = torch.from_numpy(order[k * self.batch_size : (k + 1) * self.batch_size])
        return _mask(
            self.tokens[rows],
            self.cats[rows],
            self.mask_offset,
            self.vocab_size,
            self.seed * 1_000_003 + position,
        )

    def __call__(self, position: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        k = position
        while True:
            yield self.batch(k)
            k += 1


def planted_task_loss(*, per_category: bool) -> Any:
    """``task_loss(model, batch)`` for :func:`deep.pretrain`: per-masked-token cross-entropy
    with each token's category as task id (``per_category``) or task 0 (plain MLM)."""

    def task_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(batch["input_ids"], batch["attention_mask"], batch["mask_index"])
        losses = F.cross_entropy(logits.float(), batch["labels"], reduction="none")
        ids = batch["pos_task"] if per_category else torch.zeros_like(batch["pos_task"])
        return losses, ids

    return task_loss
