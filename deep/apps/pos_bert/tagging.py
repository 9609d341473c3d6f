"""Sentence splitting and Universal POS tagging: shipped for Austen, cached on disk for
your text.

The six Austen novels come already tagged with this package (``data/austen-upos.txt.xz``,
read by :func:`load_tagged_text`; no tagger needed). Your own text (``corpus="files"``) is
tagged by spaCy 3.8 with its official small English pipeline ``en_core_web_sm`` (the
optional ``[tagger]`` extra plus the model wheel, see the README; parser, NER and lemmatizer
disabled, the statistical sentence splitter ``senter`` enabled): about 15k tokens/s on one
core. Any callable with the :class:`Tagger` signature can replace it.

A :class:`TaggedCorpus` is stored as gzip JSON (one row per sentence: document, paragraph,
the words joined by spaces, one letter per word for its UPOS tag) under the cache directory
(:func:`deep.apps.pos_bert.corpus.cache_dir`), keyed by the corpus fingerprint and the tagger's
name, and written atomically.
"""

from __future__ import annotations

import gzip
import json
import lzma
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from deep.io import atomic_path

from .corpus import (
    AUSTEN_TAGGED,
    Document,
    _shipped_austen,
    cache_dir,
    corpus_fingerprint,
    load_janeaustenr,
    truncate_documents,
)

__all__ = [
    "DEFAULT_SPACY_MODEL",
    "UPOS_TAGS",
    "Sentence",
    "TaggedCorpus",
    "Tagger",
    "build_tagged_corpus",
    "load_tagged_austen",
    "load_tagged_text",
    "regenerate_tagged_austen",
    "spacy_tagger",
    "tag_documents",
    "write_tagged_text",
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
DEFAULT_SPACY_MODEL = "en_core_web_sm"
_TEXT_MAGIC = "# taskrobust tagged text, format 1"

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


_MODEL_HELP = (
    "pip install 'taskrobust[tagger]' and the official model wheel, checked by its hash: pip "
    "install 'en_core_web_sm @ https://github.com/explosion/spacy-models/releases/download/"
    "en_core_web_sm-3.8.0/en_core_web_sm-3.8.0-py3-none-any.whl#sha256="
    "1932429db727d4bff3deed6b34cfc05df17794f4a52eeb26cf8928f7c1a0fb85'"
)


def spacy_tagger(model: str = DEFAULT_SPACY_MODEL, batch_size: int = 64) -> Tagger:
    """spaCy's tagger and sentence splitter; UPOS tags from ``token.pos_``.

    ``model``: an installed spaCy pipeline (default the official ``en_core_web_sm``)."""
    try:
        import spacy
    except ImportError as err:
        raise ImportError(f"tagging your own text needs spaCy: {_MODEL_HELP}") from err
    try:
        nlp = spacy.load(model, disable=["parser", "ner", "lemmatizer"])
    except OSError as err:
        raise ImportError(f"spaCy model {model!r} is not installed: {_MODEL_HELP}") from err
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
        return f"spacy-{version('spacy')}/core_web_sm-{version(DEFAULT_SPACY_MODEL)}"
    except PackageNotFoundError:
        return "spacy-missing"


# --------------------------------------------------------------------------- shipped text
#
# One line per sentence, ``words<TAB>tags``: the words joined by single spaces, one letter per
# word for its UPOS tag (``a`` = UPOS_TAGS[0], ...), upper case when the word follows the
# previous one with no space in the text (``don't`` -> ``do n't`` with ``..V``...). A blank
# line ends a paragraph, ``## NAME`` starts a document, other ``#`` lines are the header.
# The letters' case makes the paragraphs' text exactly recoverable.


def _glued(paragraph: str, words: Sequence[str], where: str) -> list[bool]:
    """For each word, whether it follows the previous one with no space in ``paragraph``."""
    out, pos = [], 0
    for word in words:
        space = paragraph.startswith(" ", pos)
        pos += space
        if not paragraph.startswith(word, pos):
            raise ValueError(f"{where}: word {word!r} is not at offset {pos} of its paragraph")
        out.append(pos > 0 and not space)
        pos += len(word)
    if pos != len(paragraph):
        raise ValueError(f"{where}: the words cover {pos} of {len(paragraph)} characters")
    return out


def write_tagged_text(
    corpus: TaggedCorpus, documents: Sequence[Document], path: Path, *, header: str = ""
) -> Path:
    """Write ``corpus`` (tagged from ``documents``) as xz-compressed text, atomically.

    Every paragraph of ``documents`` must be exactly its sentences' words joined by single
    spaces or nothing (as the text was tagged), so that :func:`load_tagged_text` gives the
    same documents back; ``header`` lines (provenance) are written as ``#`` comments.
    """
    if corpus.documents != tuple(d.name for d in documents):
        raise ValueError("corpus and documents must name the same documents in the same order")
    by_paragraph: dict[tuple[int, int], list[Sentence]] = {}
    for s in corpus.sentences:
        by_paragraph.setdefault((s.doc, s.para), []).append(s)
    lines = [_TEXT_MAGIC, f"# tagger: {corpus.tagger}", "# upos: " + " ".join(UPOS_TAGS)]
    lines += [f"# {line}".rstrip() for line in header.splitlines()]
    for d, doc in enumerate(documents):
        lines.append(f"## {doc.name}")
        for p, paragraph in enumerate(doc.paragraphs):
            sentences = by_paragraph.get((d, p), [])
            words = [w for s in sentences for w in s.words]
            glued = iter(_glued(paragraph, words, f"{doc.name} paragraph {p}"))
            for s in sentences:
                tags = (chr(97 + t).upper() if next(glued) else chr(97 + t) for t in s.tags)
                lines.append(" ".join(s.words) + "\t" + "".join(tags))
            lines.append("")
    with (
        atomic_path(Path(path)) as tmp,
        lzma.open(tmp, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as fh,
    ):
        fh.write("\n".join(lines) + "\n")
    return Path(path)


def load_tagged_text(path: Path) -> tuple[TaggedCorpus, tuple[Document, ...]]:
    """Read a :func:`write_tagged_text` file: the tagged corpus and the documents' text."""
    try:
        with lzma.open(path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except (OSError, lzma.LZMAError) as err:
        raise ValueError(f"{path}: not a tagged-text file ({err})") from None
    if lines[0] != _TEXT_MAGIC:
        raise ValueError(f"{path}: not a tagged-text file (first line {lines[0][:60]!r})")
    tagger, names = "unknown", []
    sentences: list[Sentence] = []
    paragraphs: list[list[str]] = []
    current: list[str] = []  # the paragraph's text pieces
    for number, line in enumerate(lines[1:], start=2):
        if "\t" in line:
            if not names:
                raise ValueError(f"{path}:{number}: a sentence before the first '## NAME' line")
            words_text, letters = line.split("\t")
            words = tuple(words_text.split(" "))
            if len(words) != len(letters) or not all(words):
                raise ValueError(f"{path}:{number}: {len(words)} words but {len(letters)} tags")
            tags = tuple(ord(c.lower()) - 97 for c in letters)
            if not all(0 <= t < len(UPOS_TAGS) for t in tags):
                raise ValueError(
                    f"{path}:{number}: a tag letter outside a-{chr(96 + len(UPOS_TAGS))}"
                )
            for word, letter in zip(words, letters, strict=True):
                current.append(word if letter.isupper() or not current else " " + word)
            sentences.append(Sentence(len(names) - 1, len(paragraphs[-1]), words, tags))
        elif line.startswith("## "):
            names.append(line[3:])
            paragraphs.append([])
        elif line.startswith("# tagger: ") and not names:
            tagger = line.removeprefix("# tagger: ")
        elif line == "" and current:
            paragraphs[-1].append("".join(current))
            current = []
        elif line and not line.startswith("#"):
            raise ValueError(f"{path}:{number}: cannot read {line[:60]!r}")
    if current:
        paragraphs[-1].append("".join(current))
    documents = tuple(Document(n, tuple(ps)) for n, ps in zip(names, paragraphs, strict=True))
    return TaggedCorpus(tuple(names), tuple(sentences), tagger), documents


def load_tagged_austen(words_per_document: int | None = None) -> TaggedCorpus:
    """The shipped tagged novels; with ``words_per_document``, each novel's first whole
    paragraphs up to that many words (as :func:`~deep.apps.pos_bert.corpus.truncate_documents`
    cuts the text: the excerpt is ``words_per_document=20_000``)."""
    corpus, documents = _shipped_austen()
    if words_per_document is None:
        return corpus
    if isinstance(words_per_document, bool) or not isinstance(words_per_document, int):
        raise TypeError(f"words_per_document must be an int or None, got {words_per_document!r}")
    if words_per_document < 1:
        raise ValueError(f"words_per_document must be >= 1, got {words_per_document}")
    kept = [len(d.paragraphs) for d in truncate_documents(documents, words_per_document)]
    sentences = tuple(s for s in corpus.sentences if s.para < kept[s.doc])
    return TaggedCorpus(corpus.documents, sentences, corpus.tagger)


def regenerate_tagged_austen(
    source: str | Path | None = None,
    out: Path = AUSTEN_TAGGED,
    *,
    tagger: Tagger | None = None,
) -> Path:
    """Rebuild the shipped file: the novels of Debian's ``r-cran-janeaustenr``
    (:func:`~deep.apps.pos_bert.corpus.load_janeaustenr`, ``source`` as there), tagged by
    ``tagger`` (default :func:`spacy_tagger`, the official ``en_core_web_sm``)."""
    documents = load_janeaustenr(source)
    corpus = tag_documents(documents, tagger or spacy_tagger())
    header = (
        "Jane Austen's six novels (public domain); text as packaged by the R package "
        "janeaustenr 1.0.0 (MIT), Debian r-cran-janeaustenr\n"
        f"{corpus.num_words} words in {len(corpus.sentences)} sentences; see README.md"
    )
    return write_tagged_text(corpus, documents, out, header=header)
