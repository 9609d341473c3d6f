"""The planted-task language: frequencies, entropy floors, mixtures, determinism, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deep.planted.language import (
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
    clauses = N * grammar.spec.clauses  # categories are drawn per clause
    se = np.sqrt(p * (1 - p) / clauses)
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
    analytic floor (plug-in bias is O(support / n), well inside the tolerance here)."""
    spec, A = grammar.spec, grammar.spec.anchors_per_category
    anchors = sample.tokens[:, 1:-1].reshape(N, spec.clauses, -1)[:, :, 0] - grammar.anchor_offset
    body = sample.tokens[:, 1:-1].reshape(N, spec.clauses, -1)[:, :, 1:]
    cats = np.broadcast_to(sample.clause_categories[:, :, None], body.shape)
    floors = grammar.floors
    for c, cat in enumerate(spec.categories):
        here = cats == c
        tokens = body[here]
        if cat.kind == "topic":
            context = np.broadcast_to((anchors % A)[:, :, None], body.shape)[here]
        elif cat.kind == "agreement":
            ctx = sample.subject_features[:, cat.feature][:, None, None]
            context = np.broadcast_to(ctx, body.shape)[here]
        else:
            context = np.zeros(tokens.size, dtype=np.int64)
        h = _conditional_entropy(tokens, context)
        # plug-in bias ~ (support - 1) / (2 n) per context; tolerance covers it
        assert abs(h - floors[c]) < 0.03 * floors[c] + 0.02, (cat.name, h, floors[c])
        if cat.kind == "uniform":
            assert floors[c] == pytest.approx(np.log(cat.num_tokens))
        if cat.kind == "unigram":
            assert floors[c] == pytest.approx(zipf_entropy(cat.num_tokens, cat.zipf))


def test_agreement_tokens_identify_the_subject_class(grammar, sample):
    """Long-range: an agreement token's block is the subject anchor's class, whatever the
    nearest anchor; the marginal entropy is log(classes) higher than the floor."""
    spec = grammar.spec
    for c, cat in enumerate(spec.categories):
        if cat.kind != "agreement":
            continue
        g = spec.feature_classes[cat.feature]
        rows = np.nonzero(np.any(sample.categories == c, axis=1))[0][:500]
        block = cat.num_tokens // g
        e = grammar.emission[c]
        for i in rows:
            toks = sample.tokens[i][sample.categories[i] == c] - grammar.token_offsets[c]
            klass = sample.subject_features[i, cat.feature]
            assert np.all(e[klass, toks] > 0)
        assert np.count_nonzero(e, axis=1).tolist() == [block] * g


def test_layout_and_structure(grammar, sample):
    spec = grammar.spec
    assert sample.tokens.shape == (N, spec.sequence_length)
    assert np.all(sample.categories[:, 0] == NO_CATEGORY)
    anchors = sample.categories[:, 1 :: spec.clause_length + 1]
    assert np.all(anchors == NO_CATEGORY)
    owner = grammar.token_category()
    assert np.array_equal(owner[sample.tokens], sample.categories)
    assert grammar.vocab_size <= 2000


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
        se = np.sqrt(lam * (1 - lam) / (3000 * grammar.spec.clauses))
        assert np.all(np.abs(freq - lam) <= 5 * se + 1e-12), (freq, lam)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"clauses": 0}, "clauses"),
        ({"feature_classes": (5,)}, "divide anchors_per_category"),
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
