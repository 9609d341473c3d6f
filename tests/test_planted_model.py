"""Planted MLM glue: masking never touches anchors, per-category losses, the mixture identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deep.planted.language import (
    MASK_ID,
    build_grammar,
    default_spec,
    dirichlet_mixtures,
    sample_sequences,
)
from deep.planted.model import (
    PlantedBatches,
    category_losses,
    make_model,
    masked_set,
    planted_task_loss,
)


@pytest.fixture(scope="module")
def grammar():
    return build_grammar(default_spec(seed=0))


def test_masks_only_category_tokens_and_always_with_mask(grammar):
    s = sample_sequences(grammar, 64, seed=0)
    batch = PlantedBatches(s, batch_size=32, vocab_size=grammar.vocab_size, seed=0).batch(3)
    flat = batch["input_ids"].reshape(-1)
    assert torch.all(flat[batch["mask_index"]] == MASK_ID)
    assert torch.all(batch["pos_task"] >= 0)
    assert int((flat == MASK_ID).sum()) == batch["mask_index"].numel()


def test_batches_are_a_pure_function_of_seed_and_position(grammar):
    s = sample_sequences(grammar, 64, seed=0)
    a = PlantedBatches(s, batch_size=16, vocab_size=grammar.vocab_size, seed=2)
    b = PlantedBatches(s, batch_size=16, vocab_size=grammar.vocab_size, seed=2)
    for k in (0, 5):
        for key in ("input_ids", "mask_index", "labels"):
            assert torch.equal(a.batch(k)[key], b.batch(k)[key])
    with pytest.raises(ValueError, match="batch_size"):
        PlantedBatches(s, batch_size=65, vocab_size=grammar.vocab_size, seed=0)


def test_mixture_loss_is_the_convex_combination_of_category_losses(grammar):
    """On one model: the token-mean masked loss of a mixture corpus equals
    sum_c lambdahat_c L_c (lambdahat its masked-category shares), and the bare BERT gives
    the same per-category losses as the masked-positions wrapper."""
    model = make_model(grammar, seed=0)
    K = grammar.num_categories
    lam = dirichlet_mixtures(K, 1, alpha=1.0, seed=3)[0]
    s = sample_sequences(grammar, 300, seed=7, proportions=lam)
    held = masked_set(s, seed=1, num_categories=K, vocab_size=grammar.vocab_size, chunk=128)
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
    """The Bayes predictor built from the grammar's tables reaches the floor (and no less):
    a model with those logits has excess ~ 0 per category."""
    K = grammar.num_categories
    s = sample_sequences(grammar, 2000, seed=9)
    held = masked_set(s, seed=0, num_categories=K, vocab_size=grammar.vocab_size)
    sums, counts = np.zeros(K), np.zeros(K)
    A = grammar.spec.anchors_per_category
    r1 = grammar.spec.clause_length + 1
    for start, b in zip(range(0, len(s), 256), held.batches, strict=True):
        rows, cols = np.divmod(b["mask_index"].numpy(), s.tokens.shape[1])
        rows = rows + start
        clause = (cols - 1) // r1
        for r, k, label, c in zip(
            rows, clause, b["labels"].numpy(), b["pos_task"].numpy(), strict=True
        ):
            cat = grammar.spec.categories[c]
            e = grammar.emission[c]
            if cat.kind == "topic":
                row = e[(s.tokens[r, 1 + k * r1] - grammar.anchor_offset) % A]
            elif cat.kind == "agreement":
                row = e[s.subject_features[r, cat.feature]]
            else:
                row = e[0]
            sums[c] -= np.log(row[label - grammar.token_offsets[c]])
            counts[c] += 1
    np.testing.assert_allclose(sums / counts, grammar.floors, rtol=0.05)
