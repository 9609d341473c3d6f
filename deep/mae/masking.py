"""Random masking across modalities.

Of the ``T = M * P`` tokens of a sample (``M`` modalities, ``P`` patches each), a uniformly
random subset of ``T - round(mask_ratio * T)`` stays visible, chosen independently per
sample and without regard to modality, so a sample may see one modality mostly and
another hardly at all: the encoder must predict each modality from the others.
"""

from __future__ import annotations

import numpy as np

__all__ = ["num_visible", "random_mask"]


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


def random_mask(
    batch_size: int,
    num_tokens: int,
    mask_ratio: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Bool mask ``(batch_size, num_tokens)``, True = hidden, the same count in every row.

    Each row hides a uniformly random subset (the first ``hidden`` entries of a random
    permutation, drawn with ``rng.random`` + ``argsort``, vectorised over rows).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    keep = num_visible(num_tokens, mask_ratio)
    order = np.argsort(rng.random((batch_size, num_tokens)), axis=1)
    mask = np.ones((batch_size, num_tokens), dtype=bool)
    np.put_along_axis(mask, order[:, :keep], False, axis=1)
    return mask
