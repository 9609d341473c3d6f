"""Modalities as pre-training tasks: per-patch reconstruction losses and their batches.

Task ``i`` is "reconstruct the hidden patches of modality ``MODALITIES[i]``". Every hidden
patch of a sample is one item with task id ``i`` and the loss

- ``rgb``: mean squared error over the patch's ``3 p^2`` standardised pixel values;
- ``depth``: mean squared error over the patch's valid (``> 0``) standardised depths;
- ``semantic``: mean cross-entropy over the patch's labelled pixels;

patches with no valid pixel are left out. ``deep.task_means`` reduces the items to one
mean per modality, so ``L_i`` is the mean loss over the hidden patches of modality ``i``.
With standardised targets, predicting the mean gives an RGB or depth loss of about 1 and
a uniform semantic guess ``log C``: the modalities start on comparable scales.

Modality subsets (choosing the upstream tasks): with ``SceneBatches(modalities=("rgb",
"depth"))`` the other modalities are hidden in every sample (never input; the visible
tokens are drawn among the subset's tokens only), and :func:`subset_task_loss` keeps only
the subset's patches, task ``k`` being ``modalities[k]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .masking import num_visible, random_mask
from .model import MODALITIES, MAEOutput, MultiModalMAE, visible_indices
from .scenes import Scenes

__all__ = [
    "MAEBatch",
    "SceneBatches",
    "check_modalities",
    "modality_task_loss",
    "per_patch_losses",
    "subset_task_loss",
]


class MAEBatch(NamedTuple):
    """A pre-training batch: raw modalities, the token mask (True = hidden) and, made
    with it on the host, the visible token indices ``(B, V)`` (or None)."""

    rgb: Tensor
    depth: Tensor
    semantic: Tensor
    mask: Tensor
    visible: Tensor | None = None

    @staticmethod
    def from_arrays(
        rgb: np.ndarray, depth: np.ndarray, semantic: np.ndarray, mask: np.ndarray
    ) -> MAEBatch:
        """Tensors of numpy arrays, with the visible indices of ``mask``."""
        m = torch.from_numpy(mask)
        return MAEBatch(
            torch.from_numpy(rgb),
            torch.from_numpy(depth),
            torch.from_numpy(semantic),
            m,
            visible_indices(m),
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MAEBatch:
        return MAEBatch(
            *(None if t is None else t.to(device, non_blocking=non_blocking) for t in self)
        )


def per_patch_losses(out: MAEOutput) -> tuple[Tensor, Tensor]:
    """``(values, task_ids)`` over the hidden patches of every modality (float32)."""
    b, total = out.mask.shape
    num_classes = out.predictions["semantic"].shape[-1] // out.targets["semantic"].shape[-1]
    p = total // len(MODALITIES)
    values, ids = [], []
    for i, m in enumerate(MODALITIES):
        pred = out.predictions[m].float()
        target = out.targets[m]
        valid = out.valid[m]
        if m == "semantic":
            logits = pred.reshape(b, p, -1, num_classes)
            pixel = F.cross_entropy(
                logits.reshape(-1, num_classes),
                target.reshape(-1).clamp_min(0),
                reduction="none",
            ).reshape(target.shape)
        else:
            pixel = (pred - target.float()).square()
        if m == "rgb":
            per_patch = pixel.mean(dim=-1)
            count = torch.full_like(per_patch, pixel.shape[-1])
        else:
            # validity is per pixel; rgb has 3 values per pixel, the others one
            w = valid.to(pixel.dtype)
            count = w.sum(dim=-1)
            per_patch = (pixel * w).sum(dim=-1) / count.clamp_min(1.0)
        keep = out.mask[:, i * p : (i + 1) * p] & (count > 0)
        values.append(per_patch[keep])
        ids.append(torch.full_like(values[-1], i, dtype=torch.long))
    return torch.cat(values), torch.cat(ids)


def modality_task_loss(model: MultiModalMAE, batch: MAEBatch) -> tuple[Tensor, Tensor]:
    """The ``task_loss`` of ``deep.pretrain``: one forward, per-patch losses and task ids.

    Only calls ``model`` (no attribute access), so a DDP or compiled wrapper works too.
    """
    out = model(batch.rgb, batch.depth, batch.semantic, batch.mask, batch.visible)
    return per_patch_losses(out)


def check_modalities(modalities: tuple[str, ...]) -> tuple[str, ...]:
    """A non-empty tuple of distinct modality names, in :data:`MODALITIES` order."""
    mods = tuple(modalities)
    if not mods or len(set(mods)) != len(mods) or any(m not in MODALITIES for m in mods):
        raise ValueError(
            f"modalities must be distinct names from {MODALITIES} (at least one), got {mods!r}"
        )
    return tuple(m for m in MODALITIES if m in mods)


def subset_task_loss(
    modalities: tuple[str, ...],
) -> Callable[[MultiModalMAE, MAEBatch], tuple[Tensor, Tensor]]:
    """The ``task_loss`` of ``deep.pretrain`` on a subset of the modalities: the patches of
    the other modalities are dropped and task ``k`` is ``modalities[k]`` (in
    :data:`MODALITIES` order)."""
    mods = check_modalities(modalities)
    remap = torch.full((len(MODALITIES),), -1, dtype=torch.long)
    for k, m in enumerate(mods):
        remap[MODALITIES.index(m)] = k

    def task_loss(model: MultiModalMAE, batch: MAEBatch) -> tuple[Tensor, Tensor]:
        values, ids = modality_task_loss(model, batch)
        new = remap.to(ids.device)[ids]
        keep = new >= 0
        return values[keep], new[keep]

    return task_loss


@dataclass(frozen=True)
class SceneBatches:
    """Endless shuffled mini-batches of ``scenes`` with fresh random masks (CPU tensors).

    ``mask_alpha``: ``None`` hides tokens uniformly at random; a number draws per-modality
    shares of the visible tokens from ``Dirichlet(mask_alpha)`` (see :mod:`.masking`).

    Re-iterable and deterministic: every ``iter()`` starts the same sequence (a function of
    ``seed``), so ``deep.pretrain`` can replay it on resume. Each epoch is a new permutation;
    a last partial batch is dropped, so every batch has ``batch_size`` scenes.
    """

    scenes: Scenes
    batch_size: int
    mask_ratio: float
    patch_size: int
    seed: int = 0
    mask_alpha: float | None = None
    modalities: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.modalities is not None:
            check_modalities(self.modalities)
        n = len(self.scenes)
        bs = self.batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or not 1 <= bs <= n:
            raise ValueError(f"batch_size must be an integer in [1, {n}], got {bs!r}")
        size = self.scenes.rgb.shape[-1]
        if isinstance(self.patch_size, bool) or not isinstance(self.patch_size, int):
            raise TypeError(f"patch_size must be an integer, got {self.patch_size!r}")
        if self.patch_size < 1 or size % self.patch_size:
            raise ValueError(f"patch_size ({self.patch_size}) must divide the image size ({size})")
        num_visible(self.num_tokens, self.mask_ratio)  # validates mask_ratio
        num_visible(self._subset_tokens, self.mask_ratio)
        if self.mask_alpha is not None and not self.mask_alpha > 0:
            raise ValueError(f"mask_alpha must be None or > 0, got {self.mask_alpha!r}")

    @property
    def num_tokens(self) -> int:
        return len(MODALITIES) * (self.scenes.rgb.shape[-1] // self.patch_size) ** 2

    @property
    def _subset_index(self) -> list[int]:
        mods = MODALITIES if self.modalities is None else check_modalities(self.modalities)
        return [MODALITIES.index(m) for m in mods]

    @property
    def _subset_tokens(self) -> int:
        return len(self._subset_index) * self.num_tokens // len(MODALITIES)

    def _mask(self, rng: np.random.Generator) -> np.ndarray:
        bs, m = self.batch_size, len(MODALITIES)
        if self.modalities is None:
            return random_mask(bs, self.num_tokens, self.mask_ratio, rng, m, self.mask_alpha)
        index = self._subset_index
        p = self.num_tokens // m
        sub = random_mask(
            bs, self._subset_tokens, self.mask_ratio, rng, len(index), self.mask_alpha
        ).reshape(bs, len(index), p)
        full = np.ones((bs, m, p), dtype=bool)  # the other modalities: always hidden
        full[:, index] = sub
        return full.reshape(bs, self.num_tokens)

    def __iter__(self) -> Iterator[MAEBatch]:
        n, bs = len(self.scenes), self.batch_size
        rng = np.random.default_rng(self.seed)
        rgb = torch.from_numpy(self.scenes.rgb)
        depth = torch.from_numpy(self.scenes.depth)
        semantic = torch.from_numpy(self.scenes.semantic)
        while True:
            order = torch.from_numpy(rng.permutation(n))
            for start in range(0, n - bs + 1, bs):
                idx = order[start : start + bs]
                m = torch.from_numpy(self._mask(rng))
                yield MAEBatch(rgb[idx], depth[idx], semantic[idx], m, visible_indices(m))
