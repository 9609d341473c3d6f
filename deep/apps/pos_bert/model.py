"""``transformers`` BERT built from a config (no download), the POS-task MLM loss, and
checkpoints that load back with ``from_pretrained``.

Sizes (layers, hidden, heads, feed-forward): ``tiny`` (2, 128, 2, 512) for CPU tests and
demos, ``mini`` (4, 256, 4, 1024), ``small`` (4, 512, 8, 2048), ``medium`` (8, 512, 8, 2048)
and ``base`` (12, 768, 12, 3072, BERT-base).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MODEL_SIZES",
    "MaskedPositionsMLM",
    "PosLossMonitor",
    "bert_config",
    "make_mlm_model",
    "mlm_task_loss",
    "save_pretrained_atomic",
]

MODEL_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (4, 512, 8, 2048),
    "medium": (8, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
}


def bert_config(
    size: str = "tiny", *, vocab_size: int, max_len: int = 128, **overrides: Any
) -> Any:
    """A ``BertConfig`` of a named size; ``overrides`` set any other config field."""
    from transformers import BertConfig

    if size not in MODEL_SIZES:
        raise ValueError(f"size must be one of {sorted(MODEL_SIZES)}, got {size!r}")
    if not isinstance(vocab_size, int) or vocab_size < 6:
        raise ValueError(f"vocab_size must be an integer >= 6, got {vocab_size!r}")
    layers, hidden, heads, ffn = MODEL_SIZES[size]
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=max_len,
        pad_token_id=0,
    )
    fields.update(overrides)
    return BertConfig(**fields)


def make_mlm_model(config: Any, seed: int = 0) -> Any:
    """``BertForMaskedLM(config)`` with weights drawn from ``torch.manual_seed(seed)``."""
    from transformers import BertForMaskedLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertForMaskedLM(config)


class PosLossMonitor:
    """Per-POS-task training loss, whatever the training objective (no device sync).

    Every call of the task loss adds the detached per-task sums and counts of its masked
    tokens; every ``every`` calls the window's sums and counts are kept (as tensors; read
    them with :meth:`history` after training).
    """

    def __init__(self, num_tasks: int, every: int = 10) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.num_tasks = num_tasks
        self.every = every
        self.calls = 0
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self._windows: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def add(self, losses: torch.Tensor, pos_task: torch.Tensor) -> None:
        values = losses.detach().float()
        sums = values.new_zeros(self.num_tasks).index_add_(0, pos_task, values)
        counts = values.new_zeros(self.num_tasks).index_add_(0, pos_task, torch.ones_like(values))
        self._sums = sums if self._sums is None else self._sums + sums
        self._counts = counts if self._counts is None else self._counts + counts
        self.calls += 1
        if self.calls % self.every == 0:
            self._windows.append((self.calls, self._sums, self._counts))
            self._sums = self._counts = None

    def history(self) -> dict[str, np.ndarray]:
        """``call`` (n,), ``task_losses`` (n, M) window means (NaN where a task had no
        token), ``counts`` (n, M)."""
        if not self._windows:
            return {
                "call": np.zeros(0, dtype=np.int64),
                "task_losses": np.zeros((0, self.num_tasks)),
                "counts": np.zeros((0, self.num_tasks)),
            }
        calls = np.array([c for c, _, _ in self._windows])
        sums = torch.stack([s for _, s, _ in self._windows]).cpu().numpy()
        counts = torch.stack([n for _, _, n in self._windows]).cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return {"call": calls, "task_losses": means, "counts": counts}


class MaskedPositionsMLM(torch.nn.Module):
    """A ``BertForMaskedLM`` whose forward runs the MLM head on the masked positions only.

    ``forward(input_ids, attention_mask, mask_index)`` returns the (K, V) logits of the K
    flat positions ``mask_index`` of the (B, L) batch. Wrapping keeps the task loss a call
    of the module (what DDP and ``torch.compile`` need); ``.mlm`` is the ``transformers``
    model to save.
    """

    def __init__(self, mlm: Any) -> None:
        super().__init__()
        self.mlm = mlm

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mask_index: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.mlm.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, mask_index)
        return self.mlm.cls(picked)


def mlm_task_loss(
    *, per_pos_task: bool, monitor: PosLossMonitor | None = None
) -> Callable[[Any, dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]:
    """The ``task_loss(model, batch)`` of :func:`deep.pretrain` for :class:`MaskedPositionsMLM`.

    One forward; per-token cross-entropy in float32 on the masked positions. Task ids: each
    masked token's POS task when ``per_pos_task`` (POS-Mask BERT), else all 0 (standard MLM:
    one task, the token mean). ``monitor`` records per-POS losses either way.
    """

    def task_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(batch["input_ids"], batch["attention_mask"], batch["mask_index"])
        losses = F.cross_entropy(logits.float(), batch["labels"], reduction="none")
        if monitor is not None:
            monitor.add(losses, batch["pos_task"])
        ids = batch["pos_task"] if per_pos_task else torch.zeros_like(batch["pos_task"])
        return losses, ids

    return task_loss


def save_pretrained_atomic(model: Any, path: Path, tokenizer: Any | None = None) -> Path:
    """``model.save_pretrained`` (safetensors) into a temporary folder, then rename: the
    checkpoint folder is complete or absent. ``tokenizer``: a ``PreTrainedTokenizerFast``
    saved beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
