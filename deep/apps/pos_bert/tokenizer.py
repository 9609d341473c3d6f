"""WordPiece tokenizer trained on the tagged corpus, and packing into MLM sequences.

The tokenizer (``tokenizers``: BERT normaliser with lower-casing, BERT pre-tokeniser,
WordPiece model, ``[CLS] A [SEP] B [SEP]`` template) is trained on the corpus' words and
cached as ``tokenizer-KEY.json``. Encoding a sentence's *words* with
``is_pretokenized=True`` gives each sub-word piece its word index (``word_ids``), which
carries the word's POS tag to every piece.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from deep.io import atomic_path

from .corpus import cache_dir
from .tagging import Sentence, TaggedCorpus

__all__ = [
    "CLS",
    "MASK",
    "PAD",
    "SEP",
    "SPECIAL_TOKENS",
    "UNK",
    "EncodedCorpus",
    "build_tokenizer",
    "encode_sentences",
    "hf_tokenizer",
    "load_tokenizer",
    "pack_sequences",
    "train_wordpiece",
]

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # ids 0..4 in this order
NO_TAG = -1  # the tag of special and padding positions


class EncodedCorpus(NamedTuple):
    """Packed MLM sequences: ``input_ids`` (N, L) int64, ``upos`` (N, L) int8 with -1 at
    ``[CLS]``/``[SEP]``/``[PAD]``, ``doc`` (N,) the source document of each row."""

    input_ids: np.ndarray
    upos: np.ndarray
    doc: np.ndarray

    @property
    def num_tokens(self) -> int:
        return int((self.upos >= 0).sum())


def train_wordpiece(corpus: TaggedCorpus, vocab_size: int = 8000, *, lowercase: bool = True) -> Any:
    """Train a BERT-style WordPiece ``tokenizers.Tokenizer`` on the corpus' sentences."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 100:
        raise ValueError(f"vocab_size must be an integer >= 100, got {vocab_size!r}")
    tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tok.train_from_iterator((" ".join(s.words) for s in corpus.sentences), trainer)
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise RuntimeError(f"special token ids {ids} are not 0..4")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, 2), (SEP, 3)],
    )
    tok.decoder = decoders.WordPiece()
    return tok


def _corpus_key(corpus: TaggedCorpus, vocab_size: int, lowercase: bool) -> str:
    h = hashlib.sha256(f"{corpus.tagger}|{vocab_size}|{lowercase}".encode())
    for s in corpus.sentences:
        h.update(" ".join(s.words).encode() + b"\n")
    return h.hexdigest()[:16]


def build_tokenizer(
    corpus: TaggedCorpus,
    vocab_size: int = 8000,
    *,
    lowercase: bool = True,
    cache: Path | None = None,
) -> Any:
    """Train (or load from the cache) the WordPiece tokenizer for ``corpus``."""
    from tokenizers import Tokenizer

    folder = Path(cache) if cache is not None else cache_dir() / "pos_bert"
    path = folder / f"tokenizer-{_corpus_key(corpus, vocab_size, lowercase)}.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    tok = train_wordpiece(corpus, vocab_size, lowercase=lowercase)
    with atomic_path(path) as tmp:
        tok.save(str(tmp))
    return tok


def load_tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def hf_tokenizer(tokenizer: Any, model_max_length: int = 128) -> Any:
    """Wrap a ``tokenizers.Tokenizer`` as ``transformers.PreTrainedTokenizerFast``."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=UNK,
        pad_token=PAD,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=MASK,
        model_max_length=model_max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def encode_sentences(
    tokenizer: Any, sentences: Sequence[Sentence]
) -> list[tuple[list[int], list[int]]]:
    """Each sentence's piece ids and the UPOS index of each piece (its word's tag)."""
    encodings = tokenizer.encode_batch(
        [list(s.words) for s in sentences], is_pretokenized=True, add_special_tokens=False
    )
    out = []
    for s, enc in zip(sentences, encodings, strict=True):
        tags = [s.tags[w] if w is not None else NO_TAG for w in enc.word_ids]
        out.append((list(enc.ids), tags))
    return out


def pack_sequences(
    tokenizer: Any, sentences: Sequence[Sentence], max_len: int = 128
) -> EncodedCorpus:
    """Pack consecutive sentences of one document into ``[CLS] ... [SEP]`` rows of at most
    ``max_len`` tokens (BERT's full-sentences packing; a longer sentence is split), pad
    with ``[PAD]``. Pieces keep their word's UPOS tag; special positions get -1."""
    if not isinstance(max_len, int) or max_len < 8:
        raise ValueError(f"max_len must be an integer >= 8, got {max_len!r}")
    if not sentences:
        raise ValueError("pack_sequences needs at least one sentence")
    room = max_len - 2
    rows_ids: list[list[int]] = []
    rows_tags: list[list[int]] = []
    rows_doc: list[int] = []
    cur_ids: list[int] = []
    cur_tags: list[int] = []
    cur_doc = sentences[0].doc

    def emit() -> None:
        if cur_ids:
            rows_ids.append([2, *cur_ids, 3])
            rows_tags.append([NO_TAG, *cur_tags, NO_TAG])
            rows_doc.append(cur_doc)
            cur_ids.clear()
            cur_tags.clear()

    for s, (ids, tags) in zip(sentences, encode_sentences(tokenizer, sentences), strict=True):
        if s.doc != cur_doc:
            emit()
            cur_doc = s.doc
        if len(cur_ids) + len(ids) > room:
            emit()
        for start in range(0, len(ids), room):
            if len(cur_ids) + len(ids[start : start + room]) > room:
                emit()
            cur_ids.extend(ids[start : start + room])
            cur_tags.extend(tags[start : start + room])
    emit()
    n = len(rows_ids)
    input_ids = np.zeros((n, max_len), dtype=np.int64)
    upos = np.full((n, max_len), NO_TAG, dtype=np.int8)
    for i, (ids, tags) in enumerate(zip(rows_ids, rows_tags, strict=True)):
        input_ids[i, : len(ids)] = ids
        upos[i, : len(tags)] = tags
    return EncodedCorpus(input_ids, upos, np.asarray(rows_doc, dtype=np.int64))
