"""The planted-task language: frequencies, entropy floors, mixtures, determinism, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deep.apps.planted.language import (
    BODY_START,
    NO_CATEGORY,
    Category,
    LanguageSpec,
    build_grammar,
    category_frequencies,
    default_spec,
    dirichlet_mixtures,
    sample_sequences,
    vertex,
    zipf_entropy,
)

N = 6000  # sequences: 24 category tokens each, 144k tokens


@pytest.fixture(scope="module")
def grammar():
    return build_grammar(default_spec(seed=0))


@pytest.fixture(scope="module")
def sample(grammar):
    return sample_sequences(grammar, N, seed=1)


def test_category_frequencies_match_the_spec(grammar, sample):
    p = grammar.spec.proportions
    freq = category_frequencies(sample, grammar.num_categories)
    tokens = N * grammar.spec.length
    se = np.sqrt(p * (1 - p) / tokens)
    assert np.all(np.abs(freq - p) < 5 * se), (freq, p)


def _conditional_entropy(tokens: np.ndarray, context: np.ndarray) -> float:
    """Plug-in H(token | context) in nats."""
    total, h = tokens.size, 0.0
    for k in np.unique(context):
        t = tokens[context == k]
        p = np.bincount(t - t.min()) / t.size
        p = p[p > 0]
        h += t.size / total * float(-(p * np.log(p)).sum())
    return h


def test_per_category_entropy_matches_the_floor(grammar, sample):
    """The empirical entropy of each category's tokens given its true context equals the
    analytic floor (plug-in bias is O(support / n), inside the tolerance here)."""
    floors = grammar.floors
    for c, cat in enumerate(grammar.spec.categories):
        here = sample.categories == c
        tokens = sample.tokens[here]
        context = np.broadcast_to(grammar.context_of(sample, c)[:, None], here.shape)[here]
        h = _conditional_entropy(tokens, context)
        assert abs(h - floors[c]) < 0.03 * floors[c] + 0.02, (cat.name, h, floors[c])
        if cat.kind == "uniform":
            assert floors[c] == pytest.approx(np.log(cat.num_tokens))
        if cat.kind == "unigram":
            assert floors[c] == pytest.approx(zipf_entropy(cat.num_tokens, cat.zipf))
        if cat.kind in ("topic", "agreement"):  # the context matters: marginal entropy is higher
            assert _conditional_entropy(tokens, np.zeros_like(tokens)) > floors[c] + 0.5


def test_agreement_tokens_identify_the_subject_class(grammar, sample):
    """Long range: an agreement token lies in the block of the subject's class."""
    spec = grammar.spec
    for c, cat in enumerate(spec.categories):
        if cat.kind != "agreement":
            continue
        g = spec.feature_classes[cat.feature]
        rows, cols = np.nonzero(sample.categories == c)
        klass = sample.subject_features[rows, cat.feature]
        e = grammar.emission[c]
        assert np.all(e[klass, sample.tokens[rows, cols] - grammar.token_offsets[c]] > 0)
        assert np.count_nonzero(e, axis=1).tolist() == [cat.num_tokens // g] * g


def test_layout_and_structure(grammar, sample):
    spec = grammar.spec
    assert sample.tokens.shape == (N, spec.sequence_length)
    assert np.all(sample.categories[:, :BODY_START] == NO_CATEGORY)
    assert np.all(sample.categories[:, -1] == NO_CATEGORY)
    assert np.all(sample.categories[:, BODY_START:-1] >= 0)
    owner = grammar.token_category()
    assert np.array_equal(owner[sample.tokens], sample.categories)
    assert grammar.vocab_size <= 2000
    counts = np.bincount(grammar.subject_features[:, 0], minlength=spec.feature_classes[0])
    assert np.all(counts == spec.num_subjects // spec.feature_classes[0])  # balanced


def test_sampling_is_seeded(grammar):
    a = sample_sequences(grammar, 50, seed=3)
    b = sample_sequences(grammar, 50, seed=3)
    c = sample_sequences(grammar, 50, seed=4)
    assert np.array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    other = build_grammar(dataclasses.replace(default_spec(), seed=1))
    assert not np.array_equal(other.emission[3], grammar.emission[3])


def test_mixture_corpora_follow_their_proportions(grammar):
    K = grammar.num_categories
    for lam in [vertex(K, 6), *dirichlet_mixtures(K, 2, alpha=1.0, seed=0)]:
        s = sample_sequences(grammar, 3000, seed=5, proportions=lam)
        freq = category_frequencies(s, K)
        se = np.sqrt(lam * (1 - lam) / (3000 * grammar.spec.length))
        assert np.all(np.abs(freq - lam) <= 5 * se + 1e-12), (freq, lam)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"length": 0}, "length"),
        ({"feature_classes": (5,)}, "divide num_subjects"),
        ({"categories": ()}, "at least one"),
    ],
)
def test_bad_spec_names_the_parameter(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(default_spec(), **change)


def test_bad_category_and_proportions(grammar):
    with pytest.raises(ValueError, match="kind"):
        LanguageSpec(categories=(Category("x", "bigram", 10, 1.0),))
    with pytest.raises(ValueError, match="support"):
        LanguageSpec(categories=(Category("x", "topic", 10, 1.0, support=11),))
    with pytest.raises(ValueError, match="proportions"):
        sample_sequences(grammar, 5, seed=0, proportions=[0.5] * grammar.num_categories)
    with pytest.raises(ValueError, match="num_sequences"):
        sample_sequences(grammar, 0, seed=0)
