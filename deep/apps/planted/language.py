"""A planted-task language: token sequences whose every token carries a known category.

The grammar (a tiny generative model with hidden features; numpy only)::

    S -> [CLS] subject topic w_1 ... w_T [SEP],      category(w_t) ~ Categorical(proportions)

Position 1 holds a *subject* token (one of ``num_subjects``), which carries
``len(feature_classes)`` hidden agreement features (balanced over the subjects); position
2 a *topic* token (one of ``num_topics``). Neither is ever masked and neither belongs to a
task (category ``NO_CATEGORY``). Each of the ``T = length`` body tokens independently
picks a category ``c`` from ``proportions`` (by default the spec's ``frequency`` values)
and is drawn from ``c``'s emission table, which depends on at most one context variable:

==============  ==============================================  ==========================
kind            context                                          what a model must learn
==============  ==============================================  ==========================
``unigram``     none: Zipf over the category's tokens            the category's unigram
``topic``       the topic token: Zipf over ``support`` tokens    topic -> token table
                chosen for that topic                            (frequent)
``agreement``   feature ``feature`` of the subject (class g):   subject -> class -> block,
                Zipf over the g-th block of tokens               long range; rare by design
``uniform``     none: uniform over all the category's tokens     nothing beyond the category
                                                                 (high, irreducible floor)
==============  ==============================================  ==========================

Entropy floor. Every row of an emission table is a Zipf distribution of the same size and
exponent, so ``H(token | context)`` is the same in every context: ``floor_c =
H(Zipf(support_c, zipf_c))``. The context tokens are never masked, body tokens are
conditionally independent given them, and :mod:`deep.apps.planted.model` types every mask with
its category, so the expected masked-token cross-entropy of category ``c`` is ``>=
floor_c`` for every model, with equality for the true conditional: ``excess_c = L_c -
floor_c`` is the learnable part of the loss.

Mixtures. Token categories are i.i.d. from ``proportions``, so MLM on a corpus sampled with
``proportions = lambda`` has population loss ``sum_i lambda_i L_i``, ``L_i`` the
per-category loss: the downstream loss is a convex combination of the upstream ones by
construction.

Public API (stable)::

    spec = default_spec(seed=0)                 # LanguageSpec (frozen); or build your own
    grammar = build_grammar(spec)               # Grammar: the hidden tables, vocabulary layout
    grammar.num_categories, grammar.vocab_size, grammar.category_names, grammar.floors
    sample = sample_sequences(grammar, 1000, seed=3)                 # Sample (frozen)
    mix = sample_sequences(grammar, 1000, seed=4, proportions=lam)  # a mixture corpus
    sample.tokens (N, L) int64, sample.categories (N, L) int64 (-1: no task),
    sample.subjects (N,), sample.topics (N,), sample.subject_features (N, F) int64
    category_frequencies(sample, K)             # (K,) empirical token shares
    dirichlet_mixtures(K, count, alpha=1.0, seed=0), vertex(K, i)    # proportions

Per-category masked-token losses of a model (the upstream task losses) are in
:mod:`deep.apps.planted.model` (:func:`deep.apps.planted.model.category_losses`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = [
    "BODY_START",
    "CLS_ID",
    "KINDS",
    "MASK_ID",
    "NO_CATEGORY",
    "NUM_SPECIAL",
    "PAD_ID",
    "SEP_ID",
    "Category",
    "Grammar",
    "LanguageSpec",
    "Sample",
    "build_grammar",
    "category_frequencies",
    "default_spec",
    "dirichlet_mixtures",
    "sample_sequences",
    "vertex",
    "zipf_entropy",
]

# the special ids of deep.apps.pos_bert's tokenizer (PAD, UNK, CLS, SEP, MASK), so its masking
# and model code apply unchanged
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
NUM_SPECIAL = 5
NO_CATEGORY = -1
KINDS = ("unigram", "topic", "agreement", "uniform")


@dataclass(frozen=True)
class Category:
    """One token category (an upstream task).

    ``kind`` in :data:`KINDS`; ``num_tokens`` tokens of its own; ``frequency`` > 0 its share
    of body tokens (normalised over categories). ``zipf`` >= 0 is the exponent of the
    emission rows (0: uniform rows). ``support``: tokens per topic (``topic``). ``feature``: which
    subject feature the tokens agree with (``agreement``; the category's tokens are split
    into that feature's ``classes`` equal blocks).
    """

    name: str
    kind: str
    num_tokens: int
    frequency: float
    zipf: float = 1.0
    support: int = 0
    feature: int = 0


@dataclass(frozen=True)
class LanguageSpec:
    """The planted language: categories, sequence shape and the seed of its hidden tables."""

    categories: tuple[Category, ...]
    num_subjects: int = 64
    num_topics: int = 16
    length: int = 24
    feature_classes: tuple[int, ...] = (8, 4)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", tuple(self.categories))
        object.__setattr__(self, "feature_classes", tuple(self.feature_classes))
        if not self.categories:
            raise ValueError("categories must hold at least one Category")
        names = [c.name for c in self.categories]
        if len(set(names)) != len(names):
            raise ValueError(f"category names must be distinct, got {names}")
        _check_int("num_subjects", self.num_subjects, 1)
        _check_int("num_topics", self.num_topics, 1)
        _check_int("length", self.length, 1)
        for f, g in enumerate(self.feature_classes):
            _check_int(f"feature_classes[{f}]", g, 2)
            if self.num_subjects % g:
                raise ValueError(
                    f"feature_classes[{f}] = {g} must divide num_subjects = "
                    f"{self.num_subjects} (features are balanced over subjects)"
                )
        for c in self.categories:
            _check_category(c, self)

    @property
    def sequence_length(self) -> int:
        """``[CLS] subject topic`` + ``length`` body tokens + ``[SEP]``."""
        return 4 + self.length

    @property
    def proportions(self) -> np.ndarray:
        f = np.array([c.frequency for c in self.categories], dtype=np.float64)
        return f / f.sum()


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_category(c: Category, spec: LanguageSpec) -> None:
    where = f"category {c.name!r}"
    if c.kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, got {c.kind!r}")
    _check_int(f"{where}: num_tokens", c.num_tokens, 2)
    if not (
        isinstance(c.frequency, int | float) and math.isfinite(c.frequency) and c.frequency > 0
    ):
        raise ValueError(f"{where}: frequency must be a finite number > 0, got {c.frequency!r}")
    if not (isinstance(c.zipf, int | float) and math.isfinite(c.zipf) and c.zipf >= 0):
        raise ValueError(f"{where}: zipf must be a finite number >= 0, got {c.zipf!r}")
    if c.kind == "topic":
        _check_int(f"{where}: support", c.support, 1)
        if c.support > c.num_tokens:
            raise ValueError(
                f"{where}: support must be in [1, num_tokens = {c.num_tokens}], got {c.support}"
            )
    if c.kind == "agreement":
        if not (0 <= c.feature < len(spec.feature_classes)):
            raise ValueError(
                f"{where}: feature must be in [0, {len(spec.feature_classes)}), got {c.feature!r}"
            )
        g = spec.feature_classes[c.feature]
        if c.num_tokens % g:
            raise ValueError(
                f"{where}: num_tokens = {c.num_tokens} must be a multiple of the feature's "
                f"{g} classes"
            )


def default_spec(seed: int = 0) -> LanguageSpec:
    """K = 8 categories of designed difficulty; vocabulary 1,103 ids.

    Frequent easy unigram categories (``det``, ``prep``, ``adj``), two topic-dependent
    categories (``noun``, ``verb``), a high-entropy ``name`` category (floor log 400 = 5.99
    nats: high *and irreducible*), and two rare long-range ``agreement`` categories
    (``number``, ``gender``, 5% of tokens each) whose tokens agree with the subject at
    position 1 (hard but learnable: low floor, high initial excess).
    """
    cats = (
        Category("det", "unigram", 8, 0.22, zipf=1.0),
        Category("prep", "unigram", 12, 0.14, zipf=1.0),
        Category("adj", "unigram", 40, 0.12, zipf=1.0),
        Category("noun", "topic", 200, 0.16, zipf=1.0, support=6),
        Category("verb", "topic", 150, 0.14, zipf=1.0, support=4),
        Category("name", "uniform", 400, 0.12, zipf=0.0),
        Category("number", "agreement", 96, 0.05, zipf=1.0, feature=0),
        Category("gender", "agreement", 64, 0.05, zipf=1.0, feature=1),
    )
    return LanguageSpec(categories=cats, seed=seed)


def zipf_probabilities(size: int, exponent: float) -> np.ndarray:
    """``p_k ∝ k^(-exponent)``, ``k = 1..size``."""
    p = np.arange(1, size + 1, dtype=np.float64) ** (-float(exponent))
    return p / p.sum()


def zipf_entropy(size: int, exponent: float) -> float:
    """Entropy (nats) of :func:`zipf_probabilities`."""
    p = zipf_probabilities(size, exponent)
    return float(-(p * np.log(p)).sum())


@dataclass(frozen=True, eq=False)
class Grammar:
    """The hidden tables of a :class:`LanguageSpec` (built by :func:`build_grammar`).

    Vocabulary layout: the 5 special ids, one typed mask ``[MASK_c]`` per category
    (``mask_offset + c``), the subjects (``subject_offset + s``), the topics
    (``topic_offset + t``), then each category's tokens in a block (``token_offsets[c]``).
    ``emission[c]`` is ``(contexts, num_tokens_c)``: row ``k`` is the token distribution in
    context ``k`` (``unigram``/``uniform``: one row; ``topic``: the topic; ``agreement``:
    the subject's class of the category's feature). ``subject_features`` is
    ``(num_subjects, F)``.
    """

    spec: LanguageSpec
    token_offsets: np.ndarray  # (K,) first vocabulary id of each category's block
    mask_offset: int
    subject_offset: int
    topic_offset: int
    subject_features: np.ndarray
    emission: tuple[np.ndarray, ...]
    emission_cdf: tuple[np.ndarray, ...] = field(repr=False)

    @property
    def num_categories(self) -> int:
        return len(self.spec.categories)

    @property
    def category_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.spec.categories)

    @property
    def vocab_size(self) -> int:
        return int(self.token_offsets[-1] + self.spec.categories[-1].num_tokens)

    @property
    def floors(self) -> np.ndarray:
        """``(K,)`` entropy floor of each category's masked-token loss (nats)."""
        return np.array([_row_entropy(e).mean() for e in self.emission])

    def token_category(self) -> np.ndarray:
        """``(vocab_size,)``: the category of every vocabulary id (-1: special or context)."""
        out = np.full(self.vocab_size, NO_CATEGORY, dtype=np.int64)
        for c, cat in enumerate(self.spec.categories):
            start = int(self.token_offsets[c])
            out[start : start + cat.num_tokens] = c
        return out

    def context_of(self, sample: Sample, category: int) -> np.ndarray:
        """``(N,)`` the emission-table row of ``category`` in each sequence of ``sample``."""
        cat = self.spec.categories[category]
        if cat.kind == "topic":
            return sample.topics
        if cat.kind == "agreement":
            return sample.subject_features[:, cat.feature]
        return np.zeros(len(sample), dtype=np.int64)


def _row_entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return np.asarray(terms.sum(axis=1))


@lru_cache(maxsize=16)
def build_grammar(spec: LanguageSpec) -> Grammar:
    """The hidden tables of ``spec``, a pure function of it (seeded by ``spec.seed``)."""
    if not isinstance(spec, LanguageSpec):
        raise TypeError(f"spec must be a LanguageSpec, got {type(spec).__name__}")
    rng = np.random.default_rng([spec.seed, 0x91A7])
    K, S, T = len(spec.categories), spec.num_subjects, spec.num_topics
    mask_offset = NUM_SPECIAL
    subject_offset = mask_offset + K
    topic_offset = subject_offset + S
    sizes = np.array([c.num_tokens for c in spec.categories])
    token_offsets = topic_offset + T + np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # balanced features: class k of feature f is held by S / g_f subjects
    features = np.empty((S, len(spec.feature_classes)), dtype=np.int64)
    for f, g in enumerate(spec.feature_classes):
        features[:, f] = rng.permutation(np.arange(S) % g)
    emission = []
    for cat in spec.categories:
        n = cat.num_tokens
        if cat.kind == "uniform":
            rows = np.full((1, n), 1.0 / n)
        elif cat.kind == "unigram":
            rows = np.zeros((1, n))
            rows[0, rng.permutation(n)] = zipf_probabilities(n, cat.zipf)
        elif cat.kind == "topic":
            rows = np.zeros((T, n))
            z = zipf_probabilities(cat.support, cat.zipf)
            for t in range(T):
                rows[t, rng.choice(n, size=cat.support, replace=False)] = z
        else:  # agreement: class k owns the k-th block of tokens (in a random order)
            g = spec.feature_classes[cat.feature]
            block = n // g
            order = rng.permutation(n)
            rows = np.zeros((g, n))
            z = zipf_probabilities(block, cat.zipf)
            for k in range(g):
                rows[k, order[k * block : (k + 1) * block]] = z
        emission.append(rows)
    cdfs = tuple(np.cumsum(e, axis=1) for e in emission)
    return Grammar(
        spec=spec,
        token_offsets=token_offsets.astype(np.int64),
        mask_offset=mask_offset,
        subject_offset=subject_offset,
        topic_offset=topic_offset,
        subject_features=features,
        emission=tuple(emission),
        emission_cdf=cdfs,
    )


@dataclass(frozen=True, eq=False)
class Sample:
    """Sampled sequences: ``tokens`` and ``categories`` are ``(N, L)`` int64 (category
    ``NO_CATEGORY`` = -1 for specials, subject and topic); ``subjects`` and ``topics``
    ``(N,)``; ``subject_features`` ``(N, F)``: the hidden features of each subject."""

    tokens: np.ndarray
    categories: np.ndarray
    subjects: np.ndarray
    topics: np.ndarray
    subject_features: np.ndarray

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


SUBJECT_POSITION, TOPIC_POSITION, BODY_START = 1, 2, 3


def _check_proportions(proportions: Sequence[float] | np.ndarray, K: int) -> np.ndarray:
    p = np.asarray(proportions, dtype=np.float64)
    if p.shape != (K,):
        raise ValueError(f"proportions must have one entry per category ({K}), got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or not abs(p.sum() - 1.0) < 1e-6:
        raise ValueError(
            f"proportions must be on the simplex (>= 0, summing to 1), got {p.tolist()}"
        )
    return p / p.sum()


def sample_sequences(
    grammar: Grammar,
    num_sequences: int,
    *,
    seed: int | Sequence[int],
    proportions: Sequence[float] | np.ndarray | None = None,
) -> Sample:
    """``num_sequences`` sequences, a pure function of ``(grammar, seed, proportions)``.

    ``proportions`` (``(K,)`` on the simplex; default the spec's frequencies) is the
    probability of each category for every body token: a downstream mixture corpus.
    """
    if not isinstance(grammar, Grammar):
        raise TypeError(f"grammar must be a Grammar (build_grammar(spec)), got {type(grammar)}")
    n = _check_int("num_sequences", num_sequences, 1)
    spec = grammar.spec
    K, T = grammar.num_categories, spec.length
    p = spec.proportions if proportions is None else _check_proportions(proportions, K)
    rng = np.random.default_rng(seed)
    subjects = rng.integers(0, spec.num_subjects, size=n)
    topics = rng.integers(0, spec.num_topics, size=n)
    features = grammar.subject_features[subjects]  # (n, F)
    tok_cat = rng.choice(K, size=(n, T), p=p)
    u = rng.random((n, T))
    body = np.zeros((n, T), dtype=np.int64)
    for c, cat in enumerate(spec.categories):
        here = tok_cat == c
        if not here.any():
            continue
        if cat.kind == "topic":
            context = np.broadcast_to(topics[:, None], here.shape)[here]
        elif cat.kind == "agreement":
            context = np.broadcast_to(features[:, cat.feature : cat.feature + 1], here.shape)[here]
        else:
            context = np.zeros(int(here.sum()), dtype=np.int64)
        cdf = grammar.emission_cdf[c][context]  # (m, n_c)
        index = (u[here][:, None] >= cdf).sum(axis=1)
        index = np.minimum(index, cdf.shape[1] - 1)  # guard against cdf[-1] < 1 by rounding
        body[here] = grammar.token_offsets[c] + index
    L = spec.sequence_length
    tokens = np.empty((n, L), dtype=np.int64)
    categories = np.full((n, L), NO_CATEGORY, dtype=np.int64)
    tokens[:, 0], tokens[:, -1] = CLS_ID, SEP_ID
    tokens[:, SUBJECT_POSITION] = grammar.subject_offset + subjects
    tokens[:, TOPIC_POSITION] = grammar.topic_offset + topics
    tokens[:, BODY_START:-1] = body
    categories[:, BODY_START:-1] = tok_cat
    return Sample(tokens, categories, subjects, topics, features)


def category_frequencies(sample: Sample, num_categories: int) -> np.ndarray:
    """``(K,)`` share of the sample's body tokens in each category."""
    cats = sample.categories[sample.categories >= 0]
    counts = np.bincount(cats, minlength=num_categories).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def vertex(num_categories: int, index: int) -> np.ndarray:
    """The simplex vertex ``e_index`` (a one-category corpus)."""
    if not 0 <= index < num_categories:
        raise ValueError(f"index must be in [0, {num_categories}), got {index}")
    e = np.zeros(num_categories)
    e[index] = 1.0
    return e


def dirichlet_mixtures(
    num_categories: int, count: int, *, alpha: float = 1.0, seed: int | Sequence[int] = 0
) -> np.ndarray:
    """``(count, K)`` proportions drawn from ``Dirichlet(alpha 1)``."""
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    _check_int("count", count, 0)
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(num_categories, float(alpha)), size=count)
