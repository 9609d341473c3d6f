"""BERT masking with a POS task per masked token, and the seekable batch stream.

:func:`mask_tokens` selects each maskable token (not ``[CLS]``/``[SEP]``/``[PAD]``)
independently with probability ``rate`` (15%), so the expected mask rate is the same in
every POS group. A selected token becomes ``[MASK]`` with probability 0.8, a uniformly
random non-special token with probability 0.1, and stays itself otherwise (Devlin et al.
2019). The batch keeps only the selected positions' flat indices, labels and POS tasks,
so the MLM head runs on those positions alone.

:class:`MlmBatches` is a callable ``position -> iterator of batches`` (the seekable kind of
source that :func:`deep.pretrain` accepts): micro-batch ``k`` is a pure function of
``(seed, k)``: epoch ``k // per_epoch`` shuffles the rows with its own seed and batch ``k``
draws its masks from its own generator, so runs with the same seed see the same masked
batches whatever the method, and a resumed run sees what it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .tasks import PosTasks
from .tokenizer import SPECIAL_TOKENS, EncodedCorpus

__all__ = ["MaskingConfig", "MlmBatches", "mask_tokens"]

PAD_ID = 0
MASK_ID = SPECIAL_TOKENS.index("[MASK]")
NUM_SPECIAL = len(SPECIAL_TOKENS)


@dataclass(frozen=True)
class MaskingConfig:
    """``rate``: selection probability per token; of the selected, ``mask_prob`` become
    ``[MASK]``, ``random_prob`` a random token, the rest stay."""

    rate: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1

    def __post_init__(self) -> None:
        for name in ("rate", "mask_prob", "random_prob"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if self.rate == 0.0:
            raise ValueError("rate must be > 0 (nothing would be masked)")
        if self.mask_prob + self.random_prob > 1.0:
            raise ValueError(
                f"mask_prob + random_prob must be <= 1, got {self.mask_prob} + {self.random_prob}"
            )


def mask_tokens(
    input_ids: torch.Tensor,
    token_tasks: torch.Tensor,
    *,
    vocab_size: int,
    generator: torch.Generator,
    config: MaskingConfig = MaskingConfig(),
) -> dict[str, torch.Tensor]:
    """Mask a batch. ``token_tasks`` (B, L) is each token's POS task, -1 where not maskable.

    Returns ``input_ids`` (corrupted), ``attention_mask``, and for the K selected positions
    ``mask_index`` (flat indices into B*L), ``labels`` (original ids) and ``pos_task``.
    At least one token is selected when any is maskable (the one with the smallest draw).
    """
    if input_ids.shape != token_tasks.shape or input_ids.dim() != 2:
        raise ValueError(
            "input_ids and token_tasks must both be (batch, length), got "
            f"{tuple(input_ids.shape)} and {tuple(token_tasks.shape)}"
        )
    if vocab_size <= NUM_SPECIAL:
        raise ValueError(f"vocab_size must be > {NUM_SPECIAL}, got {vocab_size}")
    maskable = token_tasks >= 0
    draw = torch.rand(input_ids.shape, generator=generator)
    selected = maskable & (draw < config.rate)
    if not bool(selected.any()) and bool(maskable.any()):
        first = torch.where(maskable, draw, 2.0).flatten().argmin()
        selected.view(-1)[first] = True
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (action < config.mask_prob)
    to_random = (
        selected & (action >= config.mask_prob) & (action < config.mask_prob + config.random_prob)
    )
    random_ids = torch.randint(NUM_SPECIAL, vocab_size, input_ids.shape, generator=generator)
    corrupted = torch.where(to_mask, MASK_ID, torch.where(to_random, random_ids, input_ids))
    index = selected.flatten().nonzero().squeeze(1)
    return {
        "input_ids": corrupted,
        "attention_mask": (input_ids != PAD_ID).long(),
        "mask_index": index,
        "labels": input_ids.flatten()[index],
        "pos_task": token_tasks.flatten()[index],
    }


class MlmBatches:
    """Seekable stream of masked batches: ``MlmBatches(...)(position)`` iterates from
    micro-batch ``position`` on, forever (epochs reshuffle)."""

    def __init__(
        self,
        encoded: EncodedCorpus,
        tasks: PosTasks,
        *,
        batch_size: int,
        vocab_size: int,
        seed: int = 0,
        masking: MaskingConfig = MaskingConfig(),
        shuffle: bool = True,
    ) -> None:
        n = encoded.input_ids.shape[0]
        if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
            raise ValueError(
                f"batch_size must be an integer in [1, {n}] (rows), got {batch_size!r}"
            )
        self.input_ids = torch.from_numpy(np.ascontiguousarray(encoded.input_ids, dtype=np.int64))
        self.token_tasks = torch.from_numpy(tasks.task_ids(encoded.upos).astype(np.int64))
        self.batch_size = batch_size
        self.vocab_size = vocab_size
        self.seed = seed
        self.masking = masking
        self.shuffle = shuffle
        self.per_epoch = n // batch_size  # the last partial batch of an epoch is dropped

    def batch(self, position: int) -> dict[str, torch.Tensor]:
        """Micro-batch number ``position`` (a pure function of the seed and position)."""
        epoch, k = divmod(position, self.per_epoch)
        n = self.input_ids.shape[0]
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
            order = np.arange(n)
        rows = torch.from_numpy(order[k * self.batch_size : (k + 1) * self.batch_size])
        generator = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + position)
        return mask_tokens(
            self.input_ids[rows],
            self.token_tasks[rows],
            vocab_size=self.vocab_size,
            generator=generator,
            config=self.masking,
        )

    def __call__(self, position: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        k = position
        while True:
            yield self.batch(k)
            k += 1
