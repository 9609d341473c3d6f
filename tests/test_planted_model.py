"""Planted MLM glue: typed masks on category tokens only, per-category losses, the mixture identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deep.apps.planted.language import (
    MASK_ID,
    build_grammar,
    default_spec,
    dirichlet_mixtures,
    sample_sequences,
)
from deep.apps.planted.model import (
    PlantedBatches,
    category_losses,
    make_model,
    masked_set,
    planted_task_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def grammar():
    return build_grammar(default_spec(seed=0))


def test_masks_only_category_tokens_and_always_with_mask(grammar):
    s = sample_sequences(grammar, 64, seed=0)
    batch = PlantedBatches(s, grammar, batch_size=32, seed=0).batch(3)
    flat = batch["input_ids"].reshape(-1)
    assert torch.all(flat[batch["mask_index"]] == grammar.mask_offset + batch["pos_task"])
    assert torch.all(batch["pos_task"] >= 0)
    assert not torch.any(flat == MASK_ID)  # every mask is typed
    typed = (flat >= grammar.mask_offset) & (flat < grammar.subject_offset)
    assert int(typed.sum()) == batch["mask_index"].numel()


def test_batches_are_a_pure_function_of_seed_and_position(grammar):
    s = sample_sequences(grammar, 64, seed=0)
    a = PlantedBatches(s, grammar, batch_size=16, seed=2)
    b = PlantedBatches(s, grammar, batch_size=16, seed=2)
    for k in (0, 5):
        for key in ("input_ids", "mask_index", "labels"):
            assert torch.equal(a.batch(k)[key], b.batch(k)[key])
    with pytest.raises(ValueError, match="batch_size"):
        PlantedBatches(s, grammar, batch_size=65, seed=0)


def test_mixture_loss_is_the_convex_combination_of_category_losses(grammar):
    """On one model: the token-mean masked loss of a mixture corpus equals
    sum_c lambdahat_c L_c (lambdahat its masked-category shares), and the bare BERT gives
    the same per-category losses as the masked-positions wrapper."""
    model = make_model(grammar, seed=0)
    K = grammar.num_categories
    lam = dirichlet_mixtures(K, 1, alpha=1.0, seed=3)[0]
    s = sample_sequences(grammar, 300, seed=7, proportions=lam)
    held = masked_set(s, grammar, seed=1, chunk=128)
    per_cat = category_losses(model, held)
    values = []
    with torch.no_grad():
        for b in held.batches:
            v, _ = planted_task_loss(per_category=False)(model, b)
            values.append(v)
    token_mean = float(torch.cat(values).double().mean())
    shares = per_cat.counts / per_cat.counts.sum()
    present = per_cat.counts > 0
    assert token_mean == pytest.approx(
        float((shares[present] * per_cat.losses[present]).sum()), rel=1e-6
    )
    assert per_cat.token_mean == pytest.approx(token_mean, rel=1e-6)
    bare = category_losses(model.mlm, held)
    np.testing.assert_allclose(bare.losses[present], per_cat.losses[present], rtol=1e-5)


def test_floors_bound_the_loss_of_the_true_conditional(grammar):
    """The Bayes predictor built from the grammar's tables reaches the floor: its mean
    masked-token loss per category matches ``grammar.floors``."""
    K = grammar.num_categories
    s = sample_sequences(grammar, 2000, seed=9)
    held = masked_set(s, grammar, seed=0)
    sums, counts = np.zeros(K), np.zeros(K)
    for start, b in zip(range(0, len(s), 256), held.batches, strict=True):
        rows, _ = np.divmod(b["mask_index"].numpy(), s.tokens.shape[1])
        rows = rows + start
        for r, label, c in zip(rows, b["labels"].numpy(), b["pos_task"].numpy(), strict=True):
            row = grammar.emission[c][grammar.context_of(s, c)[r]]
            sums[c] -= np.log(row[label - grammar.token_offsets[c]])
            counts[c] += 1
    np.testing.assert_allclose(sums / counts, grammar.floors, rtol=0.05)


def test_misstated_floors_fail_the_bayes_check(grammar):
    """Negative control for the floor check above: floors off by a factor 2 (e.g. bits for
    nats, or the wrong support) are far outside its tolerance."""
    K = grammar.num_categories
    s = sample_sequences(grammar, 300, seed=9)
    held = masked_set(s, grammar, seed=0)
    sums, counts = np.zeros(K), np.zeros(K)
    for start, b in zip(range(0, len(s), 256), held.batches, strict=True):
        rows = np.divmod(b["mask_index"].numpy(), s.tokens.shape[1])[0] + start
        for r, label, c in zip(rows, b["labels"].numpy(), b["pos_task"].numpy(), strict=True):
            row = grammar.emission[c][grammar.context_of(s, c)[r]]
            sums[c] -= np.log(row[label - grammar.token_offsets[c]])
            counts[c] += 1
    bayes = sums / counts
    for wrong in (grammar.floors * 2, grammar.floors / 2, grammar.floors / np.log(2)):
        assert not np.allclose(bayes, wrong, rtol=0.05)
