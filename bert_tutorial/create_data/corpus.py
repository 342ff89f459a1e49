"""Plain text -> documents of sentences -> documents of token ids: the input side of create_data.

BERT's next-sentence task needs *documents* (so that a "random" segment B can come
from elsewhere) made of *segments* (sentences, so that A/B splits fall on sentence
boundaries). This module turns the three input formats of ``python -m
bert_tutorial.create_data`` into exactly that, one document at a time so a corpus
never has to fit in memory:

* ``lines``: one sentence per line, a blank line between documents (the format of
  Google's original tool; a file boundary also ends a document), :func:`line_documents`;
* ``paragraphs``: raw prose, paragraphs separated by blank lines, split into sentences
  by :func:`split_sentences`; optionally a line matching a regex (a chapter heading)
  starts a new document, :func:`paragraph_documents`;
* ``gutenberg``: a Project Gutenberg book, licence stripped and one document per
  chapter, :func:`gutenberg_to_documents`.

:func:`tokenize_documents` then turns sentences into word-piece ids and drops what
tokenises to nothing; :class:`CorpusCounts` records how much text went through.

Odd text is handled in linear time and nothing is silently dropped: a line (or
sentence) longer than :data:`LONG_LINE_CHARS` is split into sentences, or into
chunks at spaces where it has no sentence ends (:func:`split_long_text`), a file
that cannot be decoded is an error naming the file and the byte
(:func:`read_documents`, with ``encoding`` and ``errors`` as in :func:`open`), and a
compressed file (gzip, bzip2, xz, zip, zstd) is an error naming it, never text.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

#: A line or sentence longer than this is not a sentence (the sample book's longest is 1,062
#: characters): it is split into sentences, or cut into chunks at spaces, so the tokenizer never
#: gets a megabyte at once and instance creation never sees one giant segment.
LONG_LINE_CHARS = 10_000

#: Words that end in "." without ending a sentence (compared lower-case, without the dot).
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "messrs", "mme", "mlle", "dr", "st", "jr", "sr", "prof", "rev", "hon"}
    | {"capt", "col", "gen", "lt", "sgt", "mt", "vs", "viz", "cf", "e.g", "i.e"}
)

#: End of a sentence: . ! ? (possibly repeated, possibly followed by closing quotes, brackets or
#: the underscores Gutenberg uses for italics), then whitespace, then a capital letter, possibly
#: behind opening quotes/brackets/underscores. Requiring the capital keeps `"No!" said he` whole.
#: The look-behind makes a match start only at the first of a run of . ! ?: a later start could
#: only fail the same way, and trying every start of a long run ("......") is quadratic.
_SENTENCE_END = re.compile(
    r"""(?<![.!?])[.!?]+["'\u201d\u2019)\]_]*(?=\s+["'\u201c\u2018(\[_]*[A-Z])"""
)

#: A chapter heading on a line of its own: "Chapter 12", "CHAPTER XII.", "Chapter 3. The Ball".
CHAPTER_HEADING = re.compile(
    r"^\s*(?i:chapter)\s+(?:\d+|[IVXLCDM]+|[ivxlcdm]+)\b\.?(?:\s+[A-Z].{0,80})?\s*$"
)

_GUTENBERG_START = re.compile(r"^\s*\*{3}\s*START OF", re.IGNORECASE)
_GUTENBERG_END = re.compile(r"^\s*\*{3}\s*END OF", re.IGNORECASE)
#: The "End of the Project Gutenberg EBook of ..." line that sits just inside the END marker.
_GUTENBERG_END_NOTE = re.compile(r"^\s*End of (?:the )?Project Gutenberg", re.IGNORECASE)


def _is_abbreviation(text: str, start: int, end: int) -> bool:
    """True if ``text[start:end]`` ends in a word whose trailing "." is an abbreviation or initial.

    Single capital letters count as initials ("J. Smith"), except "I", which ends
    sentences far more often than it abbreviates a name. The word is found with
    ``rfind`` from ``end`` rather than by slicing ``text[start:end]``, so a long
    sentence of many initials costs linear, not quadratic, time (the text holds single
    spaces only, see :func:`split_sentences`).
    """
    word = text[max(start, text.rfind(" ", start, end) + 1) : end]
    word = word.lstrip("\"'\u201c\u2018([_")
    return word.lower() in ABBREVIATIONS or (len(word) == 1 and word.isupper() and word != "I")


def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph of prose into sentences with a small rule-based splitter.

    A sentence ends at . ! ? followed by whitespace and a capital letter or an opening
    quote; a "." after an abbreviation (``Mr.``, ``Mrs.``, ``Dr.``, ``St.``...) or an
    initial does not end one. Good enough for NSP segments, where an occasional wrong
    split only moves a boundary, and it needs no model download.
    """
    text = " ".join(paragraph.split())
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        punctuation = match.group(0)
        single_dot = punctuation.startswith(".") and not punctuation.startswith("..")
        if single_dot and _is_abbreviation(text, start, match.start()):
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def _chunks(text: str, limit: int) -> list[str]:
    """``text`` cut at spaces into pieces of at most ``limit`` characters (a longer word is cut)."""
    pieces: list[str] = []
    start = 0
    while len(text) - start > limit:
        cut = text.rfind(" ", start, start + limit + 1)
        if cut <= start:  # no space in the window: one "word" longer than the limit
            pieces.append(text[start : start + limit])
            start += limit
        else:
            pieces.append(text[start:cut])
            start = cut + 1
    pieces.append(text[start:])
    return [piece for piece in pieces if piece.strip()]


def _paragraph_sentences(paragraph: list[str]) -> list[str]:
    """The sentences of a paragraph (its lines), any over :data:`LONG_LINE_CHARS` cut into chunks."""
    return [piece for sentence in split_sentences(" ".join(paragraph))
            for piece in _chunks(sentence, LONG_LINE_CHARS)]


def split_long_text(text: str) -> list[str]:
    """``text`` as segments of at most :data:`LONG_LINE_CHARS` characters: unchanged if it is
    short enough, else its sentences, with any sentence still too long cut into chunks at spaces.

    Linear in the length of the text. A sentence cut into chunks is rejoined by the
    tokenizer exactly (it splits words at spaces anyway); instance creation then
    sees ordinary segments instead of one that truncation would throw away.
    """
    return [text] if len(text) <= LONG_LINE_CHARS else _paragraph_sentences([text])


def strip_gutenberg(lines: Sequence[str]) -> list[str]:
    """The lines of a Project Gutenberg file between its ``*** START OF`` and ``*** END OF`` lines.

    Also drops the "End of the Project Gutenberg EBook" note, which would otherwise
    become part of the last chapter. A file without a START line is rejected rather
    than silently training on the licence text.
    """
    start = next((i for i, line in enumerate(lines) if _GUTENBERG_START.match(line)), None)
    if start is None:
        raise ValueError("not a Project Gutenberg text: no '*** START OF' line")
    end = next(
        (i for i in range(start + 1, len(lines)) if _GUTENBERG_END.match(lines[i])), len(lines)
    )
    return [line for line in lines[start + 1 : end] if not _GUTENBERG_END_NOTE.match(line)]


def paragraph_documents(
    lines: Iterable[str], document_regex: re.Pattern[str] | None = None, drop_preamble: bool = False
) -> Iterator[list[str]]:
    """Documents (lists of sentences) from raw prose with blank lines between paragraphs.

    Without ``document_regex`` all lines form one document. With it, a matching line
    starts a new document and is dropped. ``drop_preamble`` discards the text before
    the first match (a book's title page), unless there is no match at all.
    """
    document: list[str] = []
    paragraph: list[str] = []
    seen_heading = False
    for raw in lines:
        line = raw.strip()
        if document_regex is not None and document_regex.match(line):
            document.extend(_paragraph_sentences(paragraph))
            paragraph = []
            if document and (seen_heading or not drop_preamble):
                yield document
            document, seen_heading = [], True
        elif line:
            paragraph.append(line)
        elif paragraph:
            document.extend(_paragraph_sentences(paragraph))
            paragraph = []
    document.extend(_paragraph_sentences(paragraph))
    if document:
        yield document


def line_documents(lines: Iterable[str]) -> Iterator[list[str]]:
    """Documents from the original format: one sentence per line, blank line between documents.

    A line longer than :data:`LONG_LINE_CHARS` is a paragraph or a whole text, not a
    sentence: it is split by :func:`split_long_text`.
    """
    document: list[str] = []
    for raw in lines:
        line = raw.strip()
        if line:
            document.extend(split_long_text(line))
        elif document:
            yield document
            document = []
    if document:
        yield document


def gutenberg_to_documents(text: str) -> list[list[str]]:
    """A Project Gutenberg book as documents (one per chapter) of sentences.

    Underscores are removed: Gutenberg marks italics as ``_word_``, and left in they
    become "_" tokens that carry no meaning but take masked-LM targets.
    """
    lines = [line.replace("_", "") for line in strip_gutenberg(text.splitlines())]
    return list(paragraph_documents(lines, CHAPTER_HEADING, drop_preamble=True))


def find_input_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (every ``*.txt`` below, sorted) into a list of files."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(item.rglob("*.txt"), key=lambda p: p.relative_to(item).as_posix())
            if not found:
                raise ValueError(f"{item}: folder contains no .txt files")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: input file or folder not found")
    if not files:
        raise ValueError("no input files given")
    seen: dict[tuple[int, int], Path] = {}
    for path in files:  # a file listed twice (or reached through a link) would be read twice
        stat = path.stat()
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            raise ValueError(f"{path}: the same file as {seen[key]} (listed twice, or a link); its "
                             "documents would be in the shards twice: give each input once")
        seen[key] = path
    return files


def _documents_of(lines: Iterator[str], corpus: CorpusOptions) -> Iterator[list[str]]:
    """The documents of one open file in one of the three input formats."""
    if corpus.input_format == "lines":
        yield from line_documents(lines)
    elif corpus.input_format == "paragraphs":
        pattern = re.compile(corpus.document_regex) if corpus.document_regex else None
        yield from paragraph_documents(lines, pattern)
    elif corpus.input_format == "gutenberg":
        yield from gutenberg_to_documents("".join(lines))
    else:
        raise ValueError(f"unknown input format {corpus.input_format!r}")


def read_documents(files: Iterable[Path], corpus: CorpusOptions) -> Iterator[list[str]]:
    """Stream the documents of all files, in order, read as ``corpus`` says (all but ``documents``).

    Line-based formats are read lazily; a Gutenberg book is read whole, since its
    footer can only be found by looking at the end. Any problem with a file is a
    ``ValueError`` that names it: a decoding error also says where the bad byte is
    and which options get past it.
    """
    for path in files:
        _refuse_compressed(path)
        try:
            with path.open(encoding=corpus.encoding, errors=corpus.errors) as f:
                yield from _documents_of(f, corpus)
        except UnicodeDecodeError as exc:
            raise ValueError(_decode_error_message(path, corpus.encoding, exc)) from exc
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc


#: The first bytes of compressed files (bz2's "BZh" only with a digit and a block or end marker,
#: so a text that starts with "BZh" is still text): read as text they fail to decode, and with
#: ``--errors replace`` they would silently become training data.
_COMPRESSED_MAGIC = (
    ("gzip", re.compile(rb"\x1f\x8b")),
    ("bzip2", re.compile(rb"BZh[1-9](?:\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")),
    ("xz", re.compile(rb"\xfd7zXZ\x00")),
    ("zip", re.compile(rb"PK\x03\x04")),
    ("zstd", re.compile(rb"\x28\xb5\x2f\xfd")),
)


def _refuse_compressed(path: Path) -> None:
    """A named error for a compressed input file, whatever ``--encoding`` and ``--errors`` say."""
    with path.open("rb") as f:
        head = f.read(10)
    for kind, magic in _COMPRESSED_MAGIC:
        if magic.match(head):
            raise ValueError(f"{path}: a {kind}-compressed file, not text: decompress it first")


def _decode_error_message(path: Path, encoding: str, exc: UnicodeDecodeError) -> str:
    """Where in ``path`` decoding fails (byte offset and line, found reading 1 MB at a time),
    and what to pass instead."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset, lines, where = 0, 0, "somewhere"
    with path.open("rb") as f:
        while data := f.read(1 << 20):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(data)
            except UnicodeDecodeError as error:
                position = offset - pending + error.start
                line = lines + data[: max(0, position - offset)].count(b"\n") + 1
                where = f"byte {position} (line {line})"
                break
            offset += len(data)
            lines += data.count(b"\n")
    return (
        f"{path}: not valid {encoding} text at {where}: {exc.reason}; "
        "pass --encoding for another encoding (e.g. --encoding latin-1 or cp1252) "
        "or --errors replace to replace undecodable bytes with U+FFFD"
    )


@dataclass(frozen=True)
class CorpusOptions:
    """How to read the input files into documents and tokenise them.

    Grouped because they travel together from the command line to
    :func:`read_documents` / :func:`tokenize_documents` and none of them affects
    how instances are built from the token ids.
    """

    #: "lines", "paragraphs" or "gutenberg" (see the module docstring).
    input_format: str = "lines"
    #: With ``paragraphs``: a line matching this starts a new document (and is dropped).
    document_regex: str | None = None
    #: Which documents to keep, counted from 0 across all files (see :func:`parse_document_range`).
    documents: slice = field(default_factory=lambda: slice(None))
    #: False for cased vocabularies.
    do_lower_case: bool = True
    #: How the files are decoded, as :func:`open`'s ``encoding`` and ``errors``.
    encoding: str = "utf-8-sig"
    errors: str = "strict"


def parse_document_range(text: str) -> slice:
    """``"START:END"`` (either side may be empty) -> ``slice(START, END)``; 0-based, END exclusive."""
    match = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if not match:
        raise ValueError(f"document range must look like START:END (e.g. 0:55), got {text!r}")
    start, end = (int(g) if g else None for g in match.groups())
    if start is not None and end is not None and end <= start:
        raise ValueError(f"document range {text!r} is empty")
    return slice(start, end)


@dataclass
class CorpusCounts:
    """How much text made it into token ids (documents and sentences that tokenise to nothing
    are not counted), for the summary a run prints."""

    documents: int = 0
    sentences: int = 0
    tokens: int = 0
    #: Segments longer than two sequences, cut into pieces (see ``instances.split_long_segments``).
    split_segments: int = 0

    def add(self, other: CorpusCounts) -> None:
        """Add every figure of ``other`` (all fields of its class, lists too) to this one's."""
        for name in (f.name for f in fields(other)):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def tokenize_documents(
    documents: Iterable[list[str]],
    tokenizer: Callable[[list[str]], Any],
    counts: CorpusCounts | None = None,
) -> Iterator[list[list[int]]]:
    """Token ids per sentence, dropping sentences and documents that tokenise to nothing.

    ``tokenizer`` is a :class:`~bert_tutorial.create_data.wordpiece.WordPieceTokenizer` or a
    transformers tokenizer. Empty segments would make empty A or B segments later; an
    empty document would be picked as a "random" document with nothing to give.
    ``counts``, if given, is updated as documents stream through.
    """
    from .wordpiece import WordPieceTokenizer

    if isinstance(tokenizer, WordPieceTokenizer):
        encode = tokenizer
    else:  # a transformers tokenizer returns a BatchEncoding, with [CLS]/[SEP] unless told not to

        def encode(sentences: list[str]) -> list[list[int]]:
            return tokenizer(sentences, add_special_tokens=False)["input_ids"] if sentences else []

    for sentences in documents:
        document = [segment for segment in encode(sentences) if segment]
        if document:
            if counts is not None:
                counts.documents += 1
                counts.sentences += len(document)
                counts.tokens += sum(map(len, document))
            yield document
