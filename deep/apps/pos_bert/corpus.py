"""English text sources for POS-Mask BERT, all offline.

A corpus is a tuple of :class:`Document` (a name and its paragraphs). Three sources:

- ``"austen"``: Jane Austen's six complete novels (about 720k words; public domain, text as
  packaged by the MIT-licensed R package ``janeaustenr``), shipped with this package
  already POS-tagged (``deep/apps/pos_bert/data/austen-upos.txt.xz``, 1.5 MB): no tagger, no
  download.
- ``"austen-excerpt"`` (default): their opening chapters, the first whole paragraphs of each
  novel up to 20,000 words (about 120k words), cut from the same shipped file.
- text files: each file (``.txt``, ``.txt.gz``, ``.txt.xz``) is one document whose
  paragraphs are separated by blank lines; hard-wrapped lines inside a paragraph are joined.

:func:`load_janeaustenr` reads the novels from Debian's ``r-cran-janeaustenr`` (an installed
R library, or ``apt-get download`` + ``dpkg-deb -x`` into the cache, decoded with PyPI
``rdata``): the source the shipped file was made from (``data/README.md``).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import warnings
import zlib
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "AUSTEN_EXCERPT_WORDS",
    "AUSTEN_NOVELS",
    "AUSTEN_TAGGED",
    "CORPORA",
    "DATA_DIR",
    "Document",
    "cache_dir",
    "corpus_fingerprint",
    "load_austen",
    "load_austen_excerpt",
    "load_corpus",
    "load_janeaustenr",
    "load_text_files",
    "paragraphs_from_lines",
    "truncate_documents",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
AUSTEN_TAGGED = DATA_DIR / "austen-upos.txt.xz"
AUSTEN_EXCERPT_WORDS = 20_000
AUSTEN_NOVELS = (
    "sensesensibility",
    "prideprejudice",
    "mansfieldpark",
    "emma",
    "northangerabbey",
    "persuasion",
)
R_LIBRARY_DIRS = (
    Path("/usr/lib/R/site-library/janeaustenr"),
    Path("/usr/local/lib/R/site-library/janeaustenr"),
    Path("/usr/lib/R/library/janeaustenr"),
)
_HEADING = re.compile(r"^(chapter|volume|book|part|the end|finis)\b[\s\w.]*$", re.IGNORECASE)
_CHAPTER = re.compile(r"^chapter\s+[\w.]+$", re.IGNORECASE)
_BYLINE = re.compile(r"^[Bb]y( [A-Z][\w.]*){1,3}$")


class Document(NamedTuple):
    """A named text: its paragraphs, each a single line of plain text."""

    name: str
    paragraphs: tuple[str, ...]


def cache_dir() -> Path:
    """``$TASKROBUST_CACHE`` if set, else ``$XDG_CACHE_HOME/taskrobust`` or ``~/.cache/taskrobust``."""
    env = os.environ.get("TASKROBUST_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "taskrobust"


def _is_heading(paragraph: str) -> bool:
    """Chapter/volume headings, by-lines and short lines without a lower-case letter (titles, dates)."""
    if _HEADING.match(paragraph) or _BYLINE.match(paragraph):
        return True
    return paragraph.upper() == paragraph and len(paragraph.split()) <= 6


def paragraphs_from_lines(lines: Iterable[str]) -> tuple[str, ...]:
    """Join hard-wrapped lines into paragraphs at blank lines.

    Drops front matter before the first ``CHAPTER`` heading (when there is one),
    headings (``CHAPTER IV``, all-capital title lines, by-lines) and the ``_italic_`` markers of
    Project-Gutenberg-style text; collapses runs of white space.
    """
    paragraphs: list[str] = []
    current: list[str] = []
    first_chapter: int | None = None

    def flush() -> None:
        nonlocal first_chapter
        if current:
            text = " ".join(" ".join(current).replace("_", " ").split())
            if first_chapter is None and _CHAPTER.match(text):
                first_chapter = len(paragraphs)
            if text and not _is_heading(text):
                paragraphs.append(text)
            current.clear()

    for line in lines:
        if line.strip():
            current.append(line.strip())
        else:
            flush()
    flush()
    return tuple(paragraphs[first_chapter or 0 :])


def _read_text(path: Path) -> str:
    name = path.name.lower()
    opener = gzip.open if name.endswith(".gz") else lzma.open if name.endswith(".xz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None


def _document_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".xz", ".txt"):
        name = name.removesuffix(suffix)
    return name


def load_text_files(paths: Sequence[str | Path]) -> tuple[Document, ...]:
    """Each file is one document; a directory contributes its ``*.txt[.gz|.xz]`` files, sorted."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                q for q in p.iterdir() if re.search(r"\.txt(\.gz|\.xz)?$", q.name.lower())
            )
            if not found:
                raise ValueError(f"text directory {p} has no .txt, .txt.gz or .txt.xz file")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"text path {p} does not exist")
    if not files:
        raise ValueError("load_text_files needs at least one file or directory")
    docs = []
    for f in files:
        paragraphs = paragraphs_from_lines(_read_text(f).splitlines())
        if not paragraphs:
            raise ValueError(f"{f}: no paragraph of text (empty file?)")
        docs.append(Document(_document_name(f), paragraphs))
    names = [d.name for d in docs]
    if len(set(names)) != len(names):
        raise ValueError(f"two text files have the same document name: {sorted(names)}")
    return tuple(docs)


def load_austen() -> tuple[Document, ...]:
    """The six novels, in publication order, from the shipped tagged file (no tagger)."""
    return _shipped_austen()[1]


def load_austen_excerpt() -> tuple[Document, ...]:
    """The opening chapters: each novel's first whole paragraphs up to 20,000 words."""
    return truncate_documents(load_austen(), AUSTEN_EXCERPT_WORDS)


@cache
def _shipped_austen() -> tuple[Any, tuple[Document, ...]]:
    """``(TaggedCorpus, documents)`` of the shipped file, read once per process."""
    from .tagging import load_tagged_text

    corpus, documents = load_tagged_text(AUSTEN_TAGGED)
    if tuple(d.name for d in documents) != AUSTEN_NOVELS:
        raise ValueError(f"{AUSTEN_TAGGED} holds {[d.name for d in documents]}, not the six novels")
    return corpus, documents


def _rdata_vectors(data_dir: Path) -> dict[str, list[str]]:
    """Decode R's lazy-load database ``Rdata.rdx``/``Rdata.rdb`` into character vectors.

    The ``.rdx`` is a gzip RDS file holding each variable's ``[offset, length]`` in the
    ``.rdb``, where each record is a 4-byte big-endian length and a zlib stream of
    R-serialised data.
    """
    try:
        import rdata
    except ImportError as err:
        raise ImportError(
            "reading janeaustenr needs PyPI 'rdata': pip install 'taskrobust[deep]'"
        ) from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Unknown file type: assumed RDS"
        index = rdata.read_rds(data_dir / "Rdata.rdx")
        raw = (data_dir / "Rdata.rdb").read_bytes()
        out: dict[str, list[str]] = {}
        for name, (offset, length) in index["variables"].items():
            record = raw[int(offset) : int(offset) + int(length)]
            (size,) = struct.unpack(">I", record[:4])
            payload = zlib.decompress(record[4:])
            if len(payload) != size:
                raise ValueError(
                    f"{data_dir}: record {name!r} is corrupt ({len(payload)} != {size})"
                )
            value = rdata.conversion.convert(rdata.parser.parse_data(payload))
            out[str(name)] = [str(x) for x in value]
    return out


def _fetch_janeaustenr_deb(target: Path) -> Path:
    """``apt-get download r-cran-janeaustenr`` and ``dpkg-deb -x`` it under ``target``."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(
                f"reading janeaustenr needs Debian's '{tool}' to fetch r-cran-janeaustenr; "
                "the novels are also shipped, already tagged (corpus='austen' or "
                "'austen-excerpt', deep.apps.pos_bert.corpus.load_austen())"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:

        def download() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["apt-get", "download", "r-cran-janeaustenr"],
                cwd=tmp,
                capture_output=True,
                text=True,
                check=False,
            )

        result = download()
        if result.returncode != 0:  # the package lists may be missing: refresh once
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            result = download()
        debs = sorted(Path(tmp).glob("r-cran-janeaustenr_*.deb"))
        if result.returncode != 0 or not debs:
            raise RuntimeError(
                "apt-get download r-cran-janeaustenr failed (needs Debian/Ubuntu package "
                f"lists; run 'apt-get update' as root?): {result.stderr.strip()[-400:]}"
            )
        extracted = Path(tmp) / "x"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(extracted)], check=True)
        found = list(extracted.rglob("janeaustenr/data/Rdata.rdx"))
        if not found:
            raise RuntimeError(f"{debs[0].name} has no janeaustenr/data/Rdata.rdx")
        staged = Path(tmp) / "data"
        shutil.copytree(found[0].parent, staged)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)  # complete or absent, never half-written
    return target


def _janeaustenr_data_dir(source: str | Path | None) -> Path:
    if source is not None:
        p = Path(source)
        for candidate in (p, p / "data", *p.rglob("janeaustenr/data")):
            if (candidate / "Rdata.rdx").is_file():
                return candidate
        raise ValueError(f"janeaustenr source {p} holds no data/Rdata.rdx")
    for lib in R_LIBRARY_DIRS:
        if (lib / "data" / "Rdata.rdx").is_file():
            return lib / "data"
    target = cache_dir() / "janeaustenr" / "data"
    if (target / "Rdata.rdx").is_file():
        return target
    return _fetch_janeaustenr_deb(target)


def load_janeaustenr(source: str | Path | None = None) -> tuple[Document, ...]:
    """The six novels of ``janeaustenr``, in publication order.

    ``source``: an extracted package directory (or its ``data`` folder); by default an
    installed R library, else a copy fetched with ``apt-get download`` into the cache.
    """
    vectors = _rdata_vectors(_janeaustenr_data_dir(source))
    missing = [n for n in AUSTEN_NOVELS if n not in vectors]
    if missing:
        raise ValueError(f"janeaustenr data lacks the novels {missing}")
    return tuple(Document(n, paragraphs_from_lines(vectors[n])) for n in AUSTEN_NOVELS)


CORPORA = ("austen-excerpt", "austen", "files")


def load_corpus(
    corpus: str = "austen-excerpt", text_files: Sequence[str | Path] = ()
) -> tuple[Document, ...]:
    """``corpus`` is ``"austen-excerpt"`` or ``"austen"`` (both shipped) or ``"files"``."""
    if corpus == "files":
        return load_text_files(text_files)
    if text_files:
        raise ValueError(f"text_files are only read with corpus='files', not {corpus!r}")
    if corpus == "austen-excerpt":
        return load_austen_excerpt()
    if corpus == "austen":
        return load_austen()
    raise ValueError(f"corpus must be one of {CORPORA}, got {corpus!r}")


def corpus_fingerprint(documents: Sequence[Document]) -> str:
    """SHA-256 (hex, 16 characters) of the documents' names and paragraphs."""
    h = hashlib.sha256()
    for doc in documents:
        h.update(doc.name.encode() + b"\0")
        for p in doc.paragraphs:
            h.update(p.encode() + b"\n")
        h.update(b"\1")
    return h.hexdigest()[:16]


def truncate_documents(documents: Sequence[Document], max_words: int) -> tuple[Document, ...]:
    """The first whole paragraphs of each document, up to ``max_words`` words."""
    out = []
    for doc in documents:
        kept, words = [], 0
        for p in doc.paragraphs:
            if words >= max_words:
                break
            kept.append(p)
            words += len(p.split())
        out.append(Document(doc.name, tuple(kept)))
    return tuple(out)
