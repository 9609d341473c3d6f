"""Multi-modal masked autoencoder (MultiMAE style): RGB, depth and semantic maps as tokens.

Each modality ``m`` is cut into ``P = (H/p)^2`` patches of ``p x p`` pixels and embedded by
its own *input adapter* (a linear map of the patch; the semantic map first embeds each
pixel's class id). Every token gets a fixed 2-D sine-cosine position code and a learned
modality code. A random subset of all ``3P`` tokens (the visible ones; ``mask_ratio`` of
them hidden) plus one learned global token goes through a shared ViT encoder. A light
*decoder* per modality reconstructs all ``P`` patches of its modality: mask tokens (with the
encoded visible tokens of that modality put back at their places) cross-attend to every
encoded token, then ``decoder_depth`` self-attention blocks and a linear output per patch.

Inputs are raw: ``rgb`` in ``[0, 1]`` ``(B, 3, H, W)``, ``depth`` in metres ``(B, 1, H, W)``
(``0`` = missing) and ``semantic`` ids ``(B, H, W)`` (``-1`` = unlabelled); the model
standardises RGB and depth with the statistics in its :class:`Normalisation`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MODALITIES",
    "MAEConfig",
    "MAEOutput",
    "MultiModalMAE",
    "Normalisation",
    "RGBBackbone",
    "patchify",
    "sincos_2d",
    "unpatchify",
    "visible_indices",
]

MODALITIES: tuple[str, ...] = ("rgb", "depth", "semantic")


@dataclass(frozen=True)
class Normalisation:
    """Per-channel RGB and depth statistics: the model feeds and predicts
    ``(x - mean) / std``. Compute them on the pre-training data (:meth:`from_data`)."""

    rgb_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rgb_std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    depth_mean: float = 4.0
    depth_std: float = 2.0

    def __post_init__(self) -> None:
        if len(self.rgb_mean) != 3 or len(self.rgb_std) != 3:
            raise ValueError("rgb_mean and rgb_std must have 3 entries (R, G, B)")
        if min(self.rgb_std) <= 0 or self.depth_std <= 0:
            raise ValueError("rgb_std and depth_std must be > 0")

    @staticmethod
    def from_data(rgb: np.ndarray, depth: np.ndarray) -> Normalisation:
        """Mean and std of RGB per channel and of the valid (``> 0``) depth values."""
        rgb = np.asarray(rgb, dtype=np.float64)
        valid = np.asarray(depth, dtype=np.float64)
        valid = valid[valid > 0]
        if valid.size == 0:
            raise ValueError("depth has no valid (> 0) value")
        return Normalisation(
            rgb_mean=tuple(float(x) for x in rgb.mean(axis=(0, 2, 3))),  # type: ignore[arg-type]
            rgb_std=tuple(float(max(x, 1e-3)) for x in rgb.std(axis=(0, 2, 3))),  # type: ignore[arg-type]
            depth_mean=float(valid.mean()),
            depth_std=float(max(valid.std(), 1e-3)),
        )


@dataclass(frozen=True)
class MAEConfig:
    """Sizes of the model. ``num_classes``: semantic classes (ids ``0..num_classes-1``)."""

    image_size: int = 32
    patch_size: int = 4
    num_classes: int = 6
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    decoder_dim: int = 64
    decoder_depth: int = 1
    decoder_heads: int = 4
    semantic_embed_dim: int = 8
    norm: Normalisation = field(default_factory=Normalisation)

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")

        for name in (
            "image_size",
            "patch_size",
            "num_classes",
            "dim",
            "depth",
            "heads",
            "decoder_dim",
            "decoder_heads",
            "semantic_embed_dim",
        ):
            positive_int(name)
        if isinstance(self.decoder_depth, bool) or not isinstance(self.decoder_depth, int):
            raise ValueError(f"decoder_depth must be an integer >= 0, got {self.decoder_depth!r}")
        if self.decoder_depth < 0:
            raise ValueError(f"decoder_depth must be an integer >= 0, got {self.decoder_depth!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})"
            )
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.dim % self.heads or self.decoder_dim % self.decoder_heads:
            raise ValueError("dim must be divisible by heads, decoder_dim by decoder_heads")
        if self.dim % 4 or self.decoder_dim % 4:
            raise ValueError("dim and decoder_dim must be multiples of 4 (2-D sine-cosine codes)")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patches per modality, ``P``."""
        return self.grid**2

    def out_features(self, modality: str) -> int:
        """Numbers predicted per patch: pixel values, or class logits per pixel."""
        p2 = self.patch_size**2
        return {"rgb": 3 * p2, "depth": p2, "semantic": self.num_classes * p2}[modality]


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, P, p*p*C)``, patches in row-major order, pixel-major inside."""
    b, c, h, w = x.shape
    p = patch_size
    x = x.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: Tensor, patch_size: int, channels: int) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, P, p*p*C)`` -> ``(B, C, H, W)`` (square images)."""
    b, n, _ = x.shape
    g = math.isqrt(n)
    p = patch_size
    x = x.reshape(b, g, g, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, g * p, g * p)


def visible_indices(mask: Tensor) -> Tensor:
    """Indices of the False entries of each row of ``mask`` ``(B, T)``, in increasing
    order, ``(B, V)``; every row must have the same number ``V >= 1`` of them."""
    keep = (~mask).sum(dim=1)
    if bool((keep != keep[0]).any()) or int(keep[0]) < 1:
        raise ValueError("every row of mask must leave the same number (>= 1) of tokens")
    # a stable sort puts the False (visible) entries first, in index order
    order = torch.sort(mask.to(torch.int32), dim=1, stable=True).indices
    return order[:, : int(keep[0])]


def sincos_2d(grid: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position codes ``(grid*grid, dim)``: half the channels code
    the row, half the column, each as ``sin/cos(pos / 10000^(2k/d'))``."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def code(p: Tensor) -> Tensor:
        angle = p.reshape(-1, 1) * omega[None]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    return torch.cat([code(rows), code(cols)], dim=1).float()


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context).reshape(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    """Pre-norm transformer block; with ``cross=True`` it attends to a separate context."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, cross: bool = False) -> None:
        super().__init__()
        self.cross = cross
        self.norm1 = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(dim) if cross else None
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = max(int(dim * mlp_ratio), 1)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.norm1(x)
        ctx = self.norm_ctx(context) if self.norm_ctx is not None and context is not None else h
        x = x + self.attn(h, ctx)
        return x + self.mlp(self.norm2(x))


class _InputAdapter(nn.Module):
    """Patch embedding of one modality: ``(B, ...) -> (B, P, dim)``."""

    def __init__(self, modality: str, cfg: MAEConfig) -> None:
        super().__init__()
        self.modality = modality
        self.patch_size = cfg.patch_size
        p2 = cfg.patch_size**2
        if modality == "semantic":
            # id num_classes stands for "unlabelled"
            self.pixel_embed: nn.Embedding | None = nn.Embedding(
                cfg.num_classes + 1, cfg.semantic_embed_dim
            )
            in_features = cfg.semantic_embed_dim * p2
        else:
            self.pixel_embed = None
            in_features = (3 if modality == "rgb" else 1) * p2
        self.proj = nn.Linear(in_features, cfg.dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.pixel_embed is not None:
            ids = torch.where(x < 0, self.pixel_embed.num_embeddings - 1, x)
            x = self.pixel_embed(ids).permute(0, 3, 1, 2)
        return self.proj(patchify(x, self.patch_size))


class _Encoder(nn.Module):
    """Global token + transformer blocks + final norm, shared by all modalities."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__()
        self.global_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.blocks = nn.ModuleList(
            _Block(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, tokens: Tensor) -> Tensor:
        x = torch.cat([self.global_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class _Decoder(nn.Module):
    """Light decoder of one modality: cross-attention to all encoded tokens, then
    ``decoder_depth`` self-attention blocks over the modality's ``P`` patches."""

    def __init__(self, modality: str, cfg: MAEConfig) -> None:
        super().__init__()
        d = cfg.decoder_dim
        self.proj = nn.Linear(cfg.dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer("pos", sincos_2d(cfg.grid, d)[None], persistent=False)
        self.cross = _Block(d, cfg.decoder_heads, 2.0, cross=True)
        self.blocks = nn.ModuleList(
            _Block(d, cfg.decoder_heads, 2.0) for _ in range(cfg.decoder_depth)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.out_features(modality))

    def forward(self, encoded: Tensor, own_visible: Tensor, own_slots: Tensor) -> Tensor:
        """``encoded``: (B, 1+V, D) encoder output; ``own_visible``: (B, V) bool, which of
        the visible tokens belong to this modality; ``own_slots``: (B, V) their patch index
        (any value where ``own_visible`` is False)."""
        ctx = self.proj(encoded)
        b, p = ctx.shape[0], self.pos.shape[1]
        queries = self.mask_token.expand(b, p, -1)
        vis = ctx[:, 1:]
        # put this modality's encoded tokens at their patches: scatter into a (B, P+1, d)
        # buffer whose last slot absorbs the tokens of other modalities
        slots = torch.where(own_visible, own_slots, p)
        # under autocast ``vis`` comes out of a Linear in the autocast dtype; the learnt mask
        # token is a float32 parameter: the scatter needs one dtype
        buf = torch.cat([queries, queries[:, :1]], dim=1).to(vis.dtype)
        buf = buf.scatter(1, slots[..., None].expand(-1, -1, vis.shape[-1]), vis)
        x = buf[:, :p] + self.pos
        x = self.cross(x, ctx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class MAEOutput(NamedTuple):
    """Predictions ``(B, P, out_features(m))`` per modality, standardised targets of the
    same shape (semantic: ids ``(B, P, p*p)``), the mask ``(B, 3P)`` (True = hidden) and the
    validity of each target pixel ``(B, P, p*p)`` per modality."""

    predictions: dict[str, Tensor]
    targets: dict[str, Tensor]
    mask: Tensor
    valid: dict[str, Tensor]


class MultiModalMAE(nn.Module):
    """Input adapters per modality, a shared ViT encoder, a light decoder per modality."""

    def __init__(self, config: MAEConfig) -> None:
        super().__init__()
        if not isinstance(config, MAEConfig):
            raise TypeError(f"config must be an MAEConfig, got {type(config).__name__}")
        self.config = config
        self.adapters = nn.ModuleDict({m: _InputAdapter(m, config) for m in MODALITIES})
        self.modality_embed = nn.Parameter(torch.zeros(len(MODALITIES), config.dim))
        self.register_buffer("pos", sincos_2d(config.grid, config.dim)[None], persistent=False)
        self.encoder = _Encoder(config)
        self.decoders = nn.ModuleDict({m: _Decoder(m, config) for m in MODALITIES})
        self.apply(_init_weights)
        nn.init.normal_(self.modality_embed, std=0.02)
        nn.init.normal_(self.encoder.global_token, std=0.02)
        for dec in self.decoders.values():
            nn.init.normal_(dec.mask_token, std=0.02)

    # --- inputs ---------------------------------------------------------------------------
    def standardise(self, rgb: Tensor, depth: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Standardised RGB, standardised depth (0 where missing) and the depth mask."""
        n = self.config.norm
        mean = rgb.new_tensor(n.rgb_mean).reshape(1, 3, 1, 1)
        std = rgb.new_tensor(n.rgb_std).reshape(1, 3, 1, 1)
        valid = depth > 0
        d = torch.where(valid, (depth - n.depth_mean) / n.depth_std, torch.zeros_like(depth))
        return (rgb - mean) / std, d, valid

    def tokens(self, rgb: Tensor, depth: Tensor, semantic: Tensor) -> Tensor:
        """All ``3P`` tokens ``(B, 3P, D)`` with position and modality codes added."""
        rgb_n, depth_n, _ = self.standardise(rgb, depth)
        parts = [
            self.adapters[m](x) + self.pos + self.modality_embed[i]
            for i, (m, x) in enumerate(zip(MODALITIES, (rgb_n, depth_n, semantic), strict=True))
        ]
        return torch.cat(parts, dim=1)

    def _check(self, rgb: Tensor, depth: Tensor, semantic: Tensor) -> None:
        s = self.config.image_size
        b = rgb.shape[0]
        if tuple(rgb.shape) != (b, 3, s, s):
            raise ValueError(f"rgb must have shape (B, 3, {s}, {s}), got {tuple(rgb.shape)}")
        if tuple(depth.shape) != (b, 1, s, s):
            raise ValueError(f"depth must have shape (B, 1, {s}, {s}), got {tuple(depth.shape)}")
        if tuple(semantic.shape) != (b, s, s):
            raise ValueError(f"semantic must have shape (B, {s}, {s}), got {tuple(semantic.shape)}")
        if semantic.dtype != torch.long:
            raise TypeError(f"semantic must be int64 class ids, got {semantic.dtype}")

    # --- pre-training forward -------------------------------------------------------------
    def forward(
        self,
        rgb: Tensor,
        depth: Tensor,
        semantic: Tensor,
        mask: Tensor,
        visible: Tensor | None = None,
    ) -> MAEOutput:
        """Encode the tokens where ``mask`` (``(B, 3P)`` bool, True = hidden) is False
        (every row must hide the same number of tokens) and decode every modality.

        ``visible``: optionally the visible token indices ``(B, V)`` in increasing order
        (:func:`visible_indices` of ``mask``, made on the host with the batch), which spares
        an accelerator the host synchronisation of counting them here.
        """
        self._check(rgb, depth, semantic)
        cfg = self.config
        b, p = rgb.shape[0], cfg.num_patches
        if tuple(mask.shape) != (b, len(MODALITIES) * p) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool of shape ({b}, {len(MODALITIES) * p})")
        if visible is None:
            visible = visible_indices(mask)
        elif visible.ndim != 2 or visible.shape[0] != b or visible.dtype != torch.long:
            raise ValueError(f"visible must be int64 indices of shape ({b}, V)")
        tokens = self.tokens(rgb, depth, semantic)
        x = tokens.gather(1, visible[..., None].expand(-1, -1, tokens.shape[-1]))
        encoded = self.encoder(x)
        modality_of = torch.div(visible, p, rounding_mode="floor")
        slot = visible - modality_of * p
        preds = {
            m: self.decoders[m](encoded, modality_of == i, slot) for i, m in enumerate(MODALITIES)
        }
        rgb_n, depth_n, depth_valid = self.standardise(rgb, depth)
        sem_valid = semantic >= 0
        targets = {
            "rgb": patchify(rgb_n, cfg.patch_size),
            "depth": patchify(depth_n, cfg.patch_size),
            "semantic": patchify(semantic[:, None], cfg.patch_size),
        }
        valid = {
            "rgb": torch.ones_like(targets["depth"], dtype=torch.bool),
            "depth": patchify(depth_valid, cfg.patch_size),
            "semantic": patchify(sem_valid[:, None], cfg.patch_size),
        }
        return MAEOutput(preds, targets, mask, valid)

    def rgb_backbone(self) -> RGBBackbone:
        """A copy of the RGB path (adapter, codes, encoder) for downstream tasks."""
        return RGBBackbone(self)


class RGBBackbone(nn.Module):
    """The pre-trained encoder applied to RGB only, every patch visible:
    ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B, 1 + P, D)`` (global token first)."""

    def __init__(self, mae: MultiModalMAE) -> None:
        super().__init__()
        cfg = mae.config
        self.config = cfg
        self.adapter = copy.deepcopy(mae.adapters["rgb"])
        self.modality_embed = nn.Parameter(mae.modality_embed.detach()[0].clone())
        self.register_buffer("pos", sincos_2d(cfg.grid, cfg.dim)[None], persistent=False)
        self.encoder = copy.deepcopy(mae.encoder)
        n = cfg.norm
        self.register_buffer("mean", torch.tensor(n.rgb_mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(n.rgb_std).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, rgb: Tensor) -> Tensor:
        s = self.config.image_size
        if rgb.ndim != 4 or tuple(rgb.shape[1:]) != (3, s, s):
            raise ValueError(f"rgb must have shape (B, 3, {s}, {s}), got {tuple(rgb.shape)}")
        x = self.adapter((rgb - self.mean) / self.std) + self.pos + self.modality_embed
        return self.encoder(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
