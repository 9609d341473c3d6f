"""Random masking across modalities.

A sample has ``T = M * P`` tokens (``M`` modalities of ``P`` patches); ``V = T -
round(mask_ratio * T)`` of them stay visible, the same number in every sample.

- ``alpha=None``: a uniformly random subset of ``V`` tokens, without regard to modality.
- ``alpha > 0`` (MultiMAE's sampling): per sample, modality shares ``pi ~ Dirichlet(alpha)``
  split the ``V`` visible tokens between modalities (``V * pi`` rounded by largest
  remainder, at most ``P`` each), then a uniformly random subset inside each modality.
  Small ``alpha`` often shows one modality almost alone, so the encoder must predict the
  others from it (from RGB alone, as downstream tasks will ask).
"""

from __future__ import annotations

import numpy as np

__all__ = ["modality_counts", "num_visible", "random_mask"]


def num_visible(num_tokens: int, mask_ratio: float) -> int:
    """Visible tokens per sample: ``num_tokens - round(mask_ratio * num_tokens)``.

    Raises ValueError unless at least one token is visible and one is hidden.
    """
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 2:
        raise ValueError(f"num_tokens must be an integer >= 2, got {num_tokens!r}")
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, int | float):
        raise TypeError(f"mask_ratio must be a number in (0, 1), got {type(mask_ratio).__name__}")
    if not 0.0 < float(mask_ratio) < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio!r}")
    hidden = round(float(mask_ratio) * num_tokens)
    if not 1 <= hidden <= num_tokens - 1:
        raise ValueError(
            f"mask_ratio={mask_ratio} hides {hidden} of {num_tokens} tokens; it must hide at "
            "least one and leave at least one visible"
        )
    return num_tokens - hidden


def modality_counts(shares: np.ndarray, visible: int, per_modality: int) -> np.ndarray:
    """Split ``visible`` tokens by ``shares`` ``(B, M)`` (rows on the simplex): integer
    counts ``(B, M)`` summing to ``visible``, each in ``[0, per_modality]``, by largest
    remainder; a count over ``per_modality`` passes its excess to the modalities with room
    (most room first)."""
    m = shares.shape[1]
    if not 0 <= visible <= m * per_modality:
        raise ValueError(f"visible must be in [0, {m * per_modality}], got {visible}")
    exact = shares * visible
    counts = np.floor(exact).astype(np.int64)
    short = visible - counts.sum(axis=1)
    order = np.argsort(-(exact - counts), axis=1, kind="stable")
    bump = np.arange(m)[None, :] < short[:, None]
    np.put_along_axis(counts, order, np.take_along_axis(counts, order, 1) + bump, axis=1)
    for _ in range(m):
        excess = np.maximum(counts - per_modality, 0).sum(axis=1)
        if not excess.any():
            break
        counts = np.minimum(counts, per_modality)
        room_order = np.argsort(-(per_modality - counts), axis=1, kind="stable")
        room = np.take_along_axis(per_modality - counts, room_order, 1)
        give = np.zeros_like(counts)
        left = excess.copy()
        for j in range(m):
            g = np.minimum(room[:, j], left)
            give[:, j] = g
            left -= g
        np.put_along_axis(counts, room_order, np.take_along_axis(counts, room_order, 1) + give, 1)
    return counts


def random_mask(
    batch_size: int,
    num_tokens: int,
    mask_ratio: float,
    rng: np.random.Generator,
    num_modalities: int = 1,
    alpha: float | None = None,
) -> np.ndarray:
    """Bool mask ``(batch_size, num_tokens)``, True = hidden, the same count in every row.

    Tokens are ordered modality by modality (``num_tokens / num_modalities`` each).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    keep = num_visible(num_tokens, mask_ratio)
    if alpha is None:
        order = np.argsort(rng.random((batch_size, num_tokens)), axis=1)
        mask = np.ones((batch_size, num_tokens), dtype=bool)
        np.put_along_axis(mask, order[:, :keep], False, axis=1)
        return mask
    if not (isinstance(alpha, int | float) and not isinstance(alpha, bool) and alpha > 0):
        raise ValueError(f"alpha must be None or a number > 0, got {alpha!r}")
    m = num_modalities
    if isinstance(m, bool) or not isinstance(m, int) or m < 1 or num_tokens % m:
        raise ValueError(f"num_modalities must be an integer >= 1 dividing {num_tokens}, got {m!r}")
    p = num_tokens // m
    shares = rng.dirichlet(np.full(m, float(alpha)), size=batch_size)
    counts = modality_counts(shares, keep, p)  # (B, M)
    rank = np.argsort(np.argsort(rng.random((batch_size, m, p)), axis=2), axis=2)
    return (rank >= counts[:, :, None]).reshape(batch_size, num_tokens)
