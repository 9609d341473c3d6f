"""Built-in downstream suite made from the tagged corpus; labels are facts of the data.

Every tenth paragraph of each document (paragraph index ``% 10 == 9``) is held out of
pre-training; dev examples come from held-out paragraphs only, training examples from the
rest. Sentences are written back as their words joined by spaces.

==================  ======  ===============================================================
task                metric  example and label
==================  ======  ===============================================================
``acceptability``   mcc     one sentence: 1 if it is as written; 0 if corrupted once by
                            swapping two adjacent different words, dropping a verb, or
                            doubling a determiner (CoLA-like; each sentence used once)
``novel``           acc     one sentence: which document it comes from (M-way)
``consecutive``     acc     a sentence pair: 1 if the second follows the first in its
                            paragraph; 0 if it is another sentence of the same document
``word-class``      acc     one sentence with one noun, verb, adjective or adverb replaced
                            by a corpus word: 1 if the new word's POS differs (the sentence
                            breaks), 0 if it is the same POS (it stays grammatical)
==================  ======  ===============================================================

Sizes are capped per task (``max_train``, ``max_dev``); labels are balanced by
construction except for ``novel`` (as the documents are).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from ..text import TextExample, TextTask
from .tagging import UPOS_INDEX, Sentence, TaggedCorpus

__all__ = [
    "SUITE_TASKS",
    "build_suite",
    "is_heldout",
    "pretraining_sentences",
]

SUITE_TASKS = ("acceptability", "novel", "consecutive", "word-class")
_VERB, _DET, _PUNCT = UPOS_INDEX["VERB"], UPOS_INDEX["DET"], UPOS_INDEX["PUNCT"]
_CONTENT = tuple(UPOS_INDEX[t] for t in ("NOUN", "VERB", "ADJ", "ADV"))
MIN_WORDS, MAX_WORDS = 5, 40


def is_heldout(sentence: Sentence) -> bool:
    """Held out of pre-training: the sentence's paragraph index is 9 modulo 10."""
    return sentence.para % 10 == 9


def pretraining_sentences(corpus: TaggedCorpus) -> tuple[Sentence, ...]:
    return tuple(s for s in corpus.sentences if not is_heldout(s))


def _text(words: Sequence[str]) -> str:
    return " ".join(words)


def _usable(s: Sentence) -> bool:
    return MIN_WORDS <= len(s.words) <= MAX_WORDS


def _corrupt(s: Sentence, rng: np.random.Generator) -> tuple[str, ...] | None:
    """One corruption of ``s`` (adjacent swap, dropped verb, doubled determiner), or None."""
    words = list(s.words)
    kinds = rng.permutation(3)
    for kind in kinds:
        if kind == 0:
            spots = [
                i
                for i in range(len(words) - 1)
                if words[i].lower() != words[i + 1].lower()
                and _PUNCT not in (s.tags[i], s.tags[i + 1])
            ]
            if spots:
                i = int(rng.choice(spots))
                words[i], words[i + 1] = words[i + 1], words[i]
                return tuple(words)
        elif kind == 1:
            spots = [i for i, t in enumerate(s.tags) if t == _VERB]
            if spots:
                i = int(rng.choice(spots))
                return tuple(words[:i] + words[i + 1 :])
        else:
            spots = [i for i, t in enumerate(s.tags) if t == _DET]
            if spots:
                i = int(rng.choice(spots))
                return tuple([*words[: i + 1], words[i].lower(), *words[i + 1 :]])
    return None


def _acceptability(pool: list[Sentence], limit: int, rng: np.random.Generator) -> list[TextExample]:
    out = []
    for s in pool:
        if len(out) >= limit:
            break
        if len(out) % 2 == 0:
            out.append(TextExample(_text(s.words), None, 1.0))
        else:
            bad = _corrupt(s, rng)
            if bad is not None:
                out.append(TextExample(_text(bad), None, 0.0))
    return out


def _novel(pool: list[Sentence], limit: int) -> list[TextExample]:
    return [TextExample(_text(s.words), None, float(s.doc)) for s in pool[:limit]]


def _consecutive(
    sentences: Sequence[Sentence], limit: int, rng: np.random.Generator
) -> list[TextExample]:
    by_doc: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(sentences):
        by_doc[s.doc].append(i)
    starts = [
        i
        for i in range(len(sentences) - 1)
        if sentences[i].doc == sentences[i + 1].doc
        and sentences[i].para == sentences[i + 1].para
        and _usable(sentences[i])
        and _usable(sentences[i + 1])
    ]
    out = []
    for i in rng.permutation(starts):
        if len(out) >= limit:
            break
        first = sentences[int(i)]
        if len(out) % 2 == 0:
            out.append(TextExample(_text(first.words), _text(sentences[int(i) + 1].words), 1.0))
            continue
        candidates = by_doc[first.doc]
        for _ in range(20):
            j = int(rng.choice(candidates))
            if abs(j - int(i)) > 1 and _usable(sentences[j]):
                out.append(TextExample(_text(first.words), _text(sentences[j].words), 0.0))
                break
    return out


def _word_lexicon(corpus: TaggedCorpus) -> dict[int, tuple[list[str], np.ndarray]]:
    """Per content POS: the words whose tag is that POS at least 90% of the time (at least
    3 occurrences), and their frequencies as sampling probabilities."""
    counts: dict[str, Counter[int]] = defaultdict(Counter)
    for s in corpus.sentences:
        for w, t in zip(s.words, s.tags, strict=True):
            counts[w.lower()][t] += 1
    lexicon: dict[int, tuple[list[str], np.ndarray]] = {}
    for tag in _CONTENT:
        words, freq = [], []
        for w, c in counts.items():
            total = sum(c.values())
            if total >= 3 and c[tag] >= 0.9 * total and w.isalpha():
                words.append(w)
                freq.append(c[tag])
        if not words:
            raise ValueError("the corpus is too small for the word-class task (no lexicon)")
        p = np.asarray(freq, dtype=float)
        lexicon[tag] = (words, p / p.sum())
    return lexicon


def _word_class(
    pool: list[Sentence],
    limit: int,
    lexicon: dict[int, tuple[list[str], np.ndarray]],
    rng: np.random.Generator,
) -> list[TextExample]:
    out = []
    for s in pool:
        if len(out) >= limit:
            break
        spots = [i for i, t in enumerate(s.tags) if t in _CONTENT and s.words[i].isalpha()]
        if not spots:
            continue
        i = int(rng.choice(spots))
        label = len(out) % 2  # 1: a word of another class
        tag = s.tags[i]
        if label:
            tag = int(rng.choice([t for t in _CONTENT if t != s.tags[i]]))
        words, p = lexicon[tag]
        new = s.words[i].lower()
        for _ in range(20):
            new = words[int(rng.choice(len(words), p=p))]
            if new != s.words[i].lower():
                break
        if new == s.words[i].lower():
            continue
        replaced = (*s.words[:i], new, *s.words[i + 1 :])
        out.append(TextExample(_text(replaced), None, float(label)))
    return out


def build_suite(
    corpus: TaggedCorpus,
    *,
    tasks: Sequence[str] = SUITE_TASKS,
    max_train: int = 2000,
    max_dev: int = 500,
    seed: int = 0,
) -> tuple[TextTask, ...]:
    """The built-in tasks (train from pre-training paragraphs, dev from held-out ones)."""
    unknown = [t for t in tasks if t not in SUITE_TASKS]
    if unknown:
        raise ValueError(f"unknown suite tasks {unknown}; known: {list(SUITE_TASKS)}")
    if max_train < 2 or max_dev < 2:
        raise ValueError(f"max_train and max_dev must be >= 2, got {max_train}, {max_dev}")
    split = {
        "train": [s for s in corpus.sentences if not is_heldout(s)],
        "dev": [s for s in corpus.sentences if is_heldout(s)],
    }
    lexicon = _word_lexicon(corpus) if "word-class" in tasks else {}
    out = []
    for name in tasks:
        parts = {}
        for part, sentences in split.items():
            limit = max_train if part == "train" else max_dev
            rng = np.random.default_rng([seed, SUITE_TASKS.index(name), part == "dev"])
            usable = [s for s in sentences if _usable(s)]
            pool = [usable[int(i)] for i in rng.permutation(len(usable))]
            if name == "acceptability":
                rows = _acceptability(pool, limit, rng)
            elif name == "novel":
                rows = _novel(pool, limit)
            elif name == "consecutive":
                rows = _consecutive(sentences, limit, rng)
            else:
                rows = _word_class(pool, limit, lexicon, rng)
            if len(rows) < 2:
                raise ValueError(
                    f"the corpus is too small for the {name!r} task ({part}: {len(rows)} examples)"
                )
            parts[part] = tuple(rows)
        if name == "novel":
            num_labels, metric, label_names = len(corpus.documents), "acc", corpus.documents
            if num_labels < 2:
                raise ValueError("the 'novel' task needs a corpus of at least two documents")
        else:
            num_labels, metric, label_names = 2, "mcc" if name == "acceptability" else "acc", ()
        metrics = ("mcc", "acc") if metric == "mcc" else ("acc",)
        out.append(
            TextTask(name, metric, num_labels, parts["train"], parts["dev"], metrics, label_names)
        )
    return tuple(out)
