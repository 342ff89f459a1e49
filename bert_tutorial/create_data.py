"""Turn plain text into MLM + NSP pre-training shards (``python -m bert_tutorial.create_data``).

The algorithm is the one of Google's original BERT ``create_pretraining_data.py``:
documents are split into segments (sentences), consecutive segments are packed up
to ``max_seq_length`` (sometimes shorter, ``--short-seq-prob``), split into A and B,
and half of the time B is replaced by text from another document (NSP label 1).
Then 15 % of the tokens are chosen for masked-LM prediction, of which 80 % become
``[MASK]``, 10 % a random word piece and 10 % stay unchanged. The output is written
with :func:`bert_tutorial.hdf5_format.write_shard`, so it is exactly the format the
reader validates (and NVIDIA's format).

Input formats
-------------
* default: one sentence per line, a blank line between documents (the original
  tool's format; a file boundary also ends a document).
* ``--split-sentences``: raw prose, paragraphs separated by blank lines. Paragraphs
  are split into sentences by :func:`split_sentences`. Each file is one document,
  unless ``--document-regex`` is given: then a line matching it (e.g. a chapter
  heading) starts a new document and is itself dropped.
* ``--gutenberg``: a Project Gutenberg book. The licence header and footer are
  stripped, every ``Chapter N`` heading starts a document, the front matter before
  the first chapter is dropped, ``_italics_`` markers are removed, and paragraphs
  are sentence-split (:func:`gutenberg_to_documents`).

``--documents START:END`` keeps only documents ``START`` to ``END - 1`` (0-based,
counted across all input files in sorted order, like a Python slice); it is how the
sample data holds out the last chapters of the book for evaluation.

Memory
------
The corpus is streamed. Documents are read and tokenised in blocks of
``--docs-per-block`` documents; all ``--dupe-factor`` passes over a block are made
while it is in memory, and instances go into a buffer that is shuffled and written
as a shard as soon as it holds ``--shard-size`` instances. Memory is therefore one
block of tokenised documents plus one shard of instances, independent of corpus
size. The price: a random-next segment B comes from another document *of the same
block* (the original picks from the whole corpus), and instances are shuffled
within a shard, not across shards. A small corpus fits in one block and behaves as
in the original.

Reproducibility
---------------
Every random choice is drawn from one ``random.Random(seed)`` in a fixed order, and
HDF5 datasets are written without timestamps, so the same input, arguments and
library versions give byte-identical shards.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from .hdf5_format import default_max_predictions, write_shard
from .tokenization import load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# --------------------------------------------------------------------------------------------
# Reading text
# --------------------------------------------------------------------------------------------

#: Words that end in "." without ending a sentence (compared lower-case, without the dot).
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "messrs", "mme", "mlle", "dr", "st", "jr", "sr", "prof", "rev", "hon"}
    | {"capt", "col", "gen", "lt", "sgt", "mt", "vs", "viz", "cf", "e.g", "i.e"}
)

#: End of a sentence: . ! ? (possibly repeated, possibly followed by closing quotes, brackets or
#: the underscores Gutenberg uses for italics), then whitespace, then a capital letter, possibly
#: behind opening quotes/brackets/underscores. Requiring the capital keeps `"No!" said he` whole.
_SENTENCE_END = re.compile(r"""[.!?]+["'\u201d\u2019)\]_]*(?=\s+["'\u201c\u2018(\[_]*[A-Z])""")
_LAST_WORD = re.compile(r"(\S+)$")

#: A chapter heading on a line of its own: "Chapter 12", "CHAPTER XII.", "Chapter 3. The Ball".
CHAPTER_HEADING = re.compile(
    r"^\s*(?i:chapter)\s+(?:\d+|[IVXLCDM]+|[ivxlcdm]+)\b\.?(?:\s+[A-Z].{0,80})?\s*$"
)

_GUTENBERG_START = re.compile(r"^\s*\*{3}\s*START OF", re.IGNORECASE)
_GUTENBERG_END = re.compile(r"^\s*\*{3}\s*END OF", re.IGNORECASE)
#: The "End of the Project Gutenberg EBook of ..." line that sits just inside the END marker.
_GUTENBERG_END_NOTE = re.compile(r"^\s*End of (?:the )?Project Gutenberg", re.IGNORECASE)


def _is_abbreviation(text_before: str) -> bool:
    """True if ``text_before`` ends in a word whose trailing "." is an abbreviation or initial.

    Single capital letters count as initials ("J. Smith"), except "I", which ends
    sentences far more often than it abbreviates a name.
    """
    match = _LAST_WORD.search(text_before)
    if not match:
        return False
    word = match.group(1).lstrip("\"'\u201c\u2018([_")
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
        if single_dot and _is_abbreviation(text[start : match.start()]):
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


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
            document.extend(split_sentences(" ".join(paragraph)))
            paragraph = []
            if document and (seen_heading or not drop_preamble):
                yield document
            document, seen_heading = [], True
        elif line:
            paragraph.append(line)
        elif paragraph:
            document.extend(split_sentences(" ".join(paragraph)))
            paragraph = []
    document.extend(split_sentences(" ".join(paragraph)))
    if document:
        yield document


def line_documents(lines: Iterable[str]) -> Iterator[list[str]]:
    """Documents from the original format: one sentence per line, blank line between documents."""
    document: list[str] = []
    for raw in lines:
        line = raw.strip()
        if line:
            document.append(line)
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
    return files


def read_documents(
    files: Iterable[Path], input_format: str = "lines", document_regex: str | None = None
) -> Iterator[list[str]]:
    """Stream the documents of all files, in order; ``input_format`` is lines/paragraphs/gutenberg.

    Line-based formats are read lazily; a Gutenberg book is read whole, since its
    footer can only be found by looking at the end.
    """
    pattern = re.compile(document_regex) if document_regex else None
    for path in files:
        with path.open(encoding="utf-8-sig") as f:
            if input_format == "lines":
                yield from line_documents(f)
            elif input_format == "paragraphs":
                yield from paragraph_documents(f, pattern)
            elif input_format == "gutenberg":
                try:
                    yield from gutenberg_to_documents(f.read())
                except ValueError as exc:
                    raise ValueError(f"{path}: {exc}") from exc
            else:
                raise ValueError(f"unknown input format {input_format!r}")


# --------------------------------------------------------------------------------------------
# Vocabulary facts the masking needs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VocabInfo:
    """Special ids, which pieces continue a word, and which ids may replace a masked token."""

    cls_id: int
    sep_id: int
    mask_id: int
    #: is_continuation[id] is True for "##" pieces (whole-word masking groups them with the word).
    is_continuation: list[bool]
    #: Ids a token may be replaced with in the 10 % "random" case. Unlike the original (which draws
    #: from the whole vocab) we exclude [PAD]/[CLS]/[SEP]/[MASK]/[UNK] and the [unusedN] slots: a
    #: replacement should look like real text, and [unusedN] embeddings are never trained otherwise.
    replacement_ids: list[int]

    @classmethod
    def from_vocab(cls, vocab: dict[str, int]) -> VocabInfo:
        """Build from a token -> id mapping (``tokenizer.get_vocab()``)."""
        tokens = [""] * (max(vocab.values()) + 1)
        for token, index in vocab.items():
            tokens[index] = token
        special = re.compile(r"^\[.+\]$")
        return cls(
            cls_id=vocab["[CLS]"],
            sep_id=vocab["[SEP]"],
            mask_id=vocab["[MASK]"],
            is_continuation=[t.startswith("##") for t in tokens],
            replacement_ids=[i for i, t in enumerate(tokens) if t and not special.match(t)],
        )


# --------------------------------------------------------------------------------------------
# Instances
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceOptions:
    """The knobs of instance creation (defaults as in the original for T=128)."""

    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    whole_word_masking: bool = False

    def validate(self) -> None:
        """Reject values that would crash deep inside the loop or produce empty sequences."""
        if self.max_seq_length < 5:
            raise ValueError(
                f"max_seq_length must be >= 5 ([CLS] A [SEP] B [SEP]), got {self.max_seq_length}"
            )
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError(f"short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        if not 0.0 < self.masked_lm_prob <= 1.0:
            raise ValueError(f"masked_lm_prob must be in (0, 1], got {self.masked_lm_prob}")
        if not 1 <= self.max_predictions_per_seq <= self.max_seq_length:
            raise ValueError(
                f"max_predictions_per_seq must be in [1, max_seq_length], got {self.max_predictions_per_seq}"
            )


@dataclass
class Instance:
    """One training sequence, unpadded: ``[CLS] A [SEP] B [SEP]`` after masking."""

    input_ids: list[int]
    #: Length of ``[CLS] A [SEP]``; segment id is 0 before it and 1 from it on.
    num_segment_a: int
    masked_lm_positions: list[int]
    masked_lm_ids: list[int]
    is_random_next: bool


def truncate_seq_pair(
    tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random
) -> None:
    """Trim the longer of A and B one token at a time, randomly from the front or back (in place).

    Random ends avoid teaching the model that text always starts or stops at a
    sentence boundary.
    """
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()


def _candidate_groups(
    token_ids: Sequence[int], vocab: VocabInfo, whole_word: bool
) -> list[list[int]]:
    """Positions that may be masked, grouped per word when ``whole_word`` (else one per group).

    A "##" piece joins the group of the piece right before it; one that follows a
    special token (possible after truncation) starts its own group, so a word never
    spans a [SEP].
    """
    groups: list[list[int]] = []
    previous_maskable = False
    for i, token in enumerate(token_ids):
        if token in (vocab.cls_id, vocab.sep_id):
            previous_maskable = False
            continue
        if whole_word and previous_maskable and vocab.is_continuation[token]:
            groups[-1].append(i)
        else:
            groups.append([i])
        previous_maskable = True
    return groups


def mask_tokens(
    token_ids: Sequence[int],
    vocab: VocabInfo,
    masked_lm_prob: float,
    max_predictions: int,
    rng: random.Random,
    whole_word: bool = False,
) -> tuple[list[int], list[int], list[int]]:
    """Choose and corrupt masked-LM targets; returns (masked ids, positions ascending, original ids).

    As in the original, the number of targets is ``round(len(tokens) * masked_lm_prob)``
    counting [CLS]/[SEP] (at least 1, at most ``max_predictions``), but [CLS] and
    [SEP] themselves are never chosen. Each chosen token becomes [MASK] with
    probability 0.8, a random word piece with 0.1, and stays itself with 0.1, so the
    model cannot learn that only [MASK] positions matter.
    """
    groups = _candidate_groups(token_ids, vocab, whole_word)
    rng.shuffle(groups)
    num_to_predict = min(max_predictions, max(1, int(round(len(token_ids) * masked_lm_prob))))
    output = list(token_ids)
    chosen: list[int] = []
    for group in groups:
        if len(chosen) >= num_to_predict:
            break
        if len(chosen) + len(group) > num_to_predict:
            continue  # a whole word that does not fit: try a shorter one
        for index in group:
            chosen.append(index)
            if rng.random() < 0.8:
                output[index] = vocab.mask_id
            elif rng.random() < 0.5:
                pass  # keep the original token
            else:
                output[index] = vocab.replacement_ids[
                    rng.randint(0, len(vocab.replacement_ids) - 1)
                ]
    chosen.sort()
    return output, chosen, [token_ids[i] for i in chosen]


def _pick_random_document(num_documents: int, document_index: int, rng: random.Random) -> int:
    """Another document's index (10 tries, as the original; with one document it is the same one)."""
    random_index = document_index
    for _ in range(10):
        random_index = rng.randint(0, num_documents - 1)
        if random_index != document_index:
            break
    return random_index


def _random_segment_b(
    documents: Sequence[Sequence[Sequence[int]]],
    document_index: int,
    target_length: int,
    rng: random.Random,
) -> list[int]:
    """Tokens from a random place of another document, at least ``target_length`` if available."""
    document = documents[_pick_random_document(len(documents), document_index, rng)]
    tokens_b: list[int] = []
    for segment in document[rng.randint(0, len(document) - 1) :]:
        tokens_b.extend(segment)
        if len(tokens_b) >= target_length:
            break
    return tokens_b


def _build_instance(
    tokens_a: list[int],
    tokens_b: list[int],
    is_random_next: bool,
    options: InstanceOptions,
    vocab: VocabInfo,
    rng: random.Random,
) -> Instance:
    """Truncate the pair, add [CLS]/[SEP] and mask."""
    truncate_seq_pair(tokens_a, tokens_b, options.max_seq_length - 3, rng)
    tokens = [vocab.cls_id, *tokens_a, vocab.sep_id, *tokens_b, vocab.sep_id]
    masked, positions, labels = mask_tokens(
        tokens,
        vocab,
        options.masked_lm_prob,
        options.max_predictions_per_seq,
        rng,
        options.whole_word_masking,
    )
    return Instance(masked, len(tokens_a) + 2, positions, labels, is_random_next)


def create_instances_from_document(
    documents: Sequence[Sequence[Sequence[int]]],
    document_index: int,
    options: InstanceOptions,
    vocab: VocabInfo,
    rng: random.Random,
) -> list[Instance]:
    """All instances of one document: the original's packing of segments into A/B pairs.

    Segments are collected until the target length is reached; a random prefix of
    them becomes A. B is either the rest (label 0) or, with probability 0.5 or when
    there is only one segment, text from another document (label 1). In the random
    case the segments not used for B are "put back" so they start the next chunk and
    no text is wasted.
    """
    document = documents[document_index]
    max_num_tokens = options.max_seq_length - 3  # [CLS], [SEP], [SEP]
    # Mostly fill the sequence, but sometimes use a shorter one so that the model also sees
    # short inputs (e.g. for fine-tuning on short sentences).
    target_length = max_num_tokens
    if rng.random() < options.short_seq_prob:
        target_length = rng.randint(2, max_num_tokens)

    instances: list[Instance] = []
    chunk: list[Sequence[int]] = []
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_length:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = [t for segment in chunk[:a_end] for t in segment]
            if len(chunk) == 1 or rng.random() < 0.5:
                tokens_b = _random_segment_b(
                    documents, document_index, target_length - len(tokens_a), rng
                )
                i -= len(chunk) - a_end  # put the unused segments back
                is_random_next = True
            else:
                tokens_b = [t for segment in chunk[a_end:] for t in segment]
                is_random_next = False
            instances.append(
                _build_instance(tokens_a, tokens_b, is_random_next, options, vocab, rng)
            )
            chunk, chunk_length = [], 0
        i += 1
    return instances


def create_instances(
    documents_tokens: Sequence[Sequence[Sequence[int]]],
    options: InstanceOptions,
    vocab: VocabInfo,
    rng: random.Random,
    dupe_factor: int = 1,
) -> Iterator[Instance]:
    """Instances of ``dupe_factor`` passes over the documents (each a list of token-id segments).

    Each pass visits the documents in a fresh random order and draws new A/B splits
    and masks, so duplicates of the text are different training examples. Documents
    must be non-empty lists of non-empty segments.
    """
    for _ in range(dupe_factor):
        order = list(range(len(documents_tokens)))
        rng.shuffle(order)
        for index in order:
            yield from create_instances_from_document(documents_tokens, index, options, vocab, rng)


def instances_to_arrays(
    instances: Sequence[Instance], max_seq_length: int, max_predictions: int
) -> dict[str, np.ndarray]:
    """Pad instances into the arrays of the shard format (see ``hdf5_format``)."""
    n = len(instances)
    arrays = {
        "input_ids": np.zeros((n, max_seq_length), np.int32),
        "input_mask": np.zeros((n, max_seq_length), np.int8),
        "segment_ids": np.zeros((n, max_seq_length), np.int8),
        "masked_lm_positions": np.zeros((n, max_predictions), np.int32),
        "masked_lm_ids": np.zeros((n, max_predictions), np.int32),
        "next_sentence_labels": np.zeros((n,), np.int8),
    }
    for row, inst in enumerate(instances):
        length, num_pred = len(inst.input_ids), len(inst.masked_lm_positions)
        arrays["input_ids"][row, :length] = inst.input_ids
        arrays["input_mask"][row, :length] = 1
        arrays["segment_ids"][row, inst.num_segment_a : length] = 1
        arrays["masked_lm_positions"][row, :num_pred] = inst.masked_lm_positions
        arrays["masked_lm_ids"][row, :num_pred] = inst.masked_lm_ids
        arrays["next_sentence_labels"][row] = int(inst.is_random_next)
    return arrays


# --------------------------------------------------------------------------------------------
# Writing shards
# --------------------------------------------------------------------------------------------


def shard_path(output_dir: Path, prefix: str, index: int) -> Path:
    """``<output_dir>/<prefix>_shard_00000.hdf5``."""
    return output_dir / f"{prefix}_shard_{index:05d}.hdf5"


def existing_shards(output_dir: Path, prefix: str) -> list[Path]:
    """Shards of this prefix already in ``output_dir`` (they would mix with the new ones)."""
    pattern = re.compile(rf"^{re.escape(prefix)}_shard_\d{{5,}}\.hdf5$")
    return sorted(p for p in output_dir.iterdir() if pattern.match(p.name))


@dataclass
class ShardWriter:
    """Buffers instances and writes a shuffled shard every ``shard_size`` instances."""

    output_dir: Path
    prefix: str
    shard_size: int
    max_seq_length: int
    max_predictions: int
    rng: random.Random
    buffer: list[Instance] = field(default_factory=list)
    written: list[tuple[Path, int]] = field(default_factory=list)

    def add(self, instance: Instance) -> None:
        self.buffer.append(instance)
        if len(self.buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffer (shuffled, so a shard does not hold one document's instances in a row)."""
        if not self.buffer:
            return
        self.rng.shuffle(self.buffer)
        arrays = instances_to_arrays(self.buffer, self.max_seq_length, self.max_predictions)
        path = write_shard(shard_path(self.output_dir, self.prefix, len(self.written)), arrays)
        self.written.append((path, len(self.buffer)))
        self.buffer = []


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a run produced, for the CLI report and for tests."""

    documents: int = 0
    sentences: int = 0
    tokens: int = 0
    shards: list[tuple[Path, int]] = field(default_factory=list)

    @property
    def instances(self) -> int:
        return sum(n for _, n in self.shards)


def parse_document_range(text: str) -> slice:
    """``"START:END"`` (either side may be empty) -> ``slice(START, END)``; 0-based, END exclusive."""
    match = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if not match:
        raise ValueError(f"document range must look like START:END (e.g. 0:55), got {text!r}")
    start, end = (int(g) if g else None for g in match.groups())
    if start is not None and end is not None and end <= start:
        raise ValueError(f"document range {text!r} is empty")
    return slice(start, end)


def _format_range(documents: slice) -> str:
    """``slice(55, None)`` -> ``"55:"``, the inverse of :func:`parse_document_range`."""
    start, stop = ("" if end is None else end for end in (documents.start, documents.stop))
    return f"{start}:{stop}"


def _blocks(items: Iterable[list[list[int]]], size: int) -> Iterator[list[list[list[int]]]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    iterator = iter(items)
    while block := list(islice(iterator, size)):
        yield block


def _tokenize_documents(
    documents: Iterable[list[str]], tokenizer: PreTrainedTokenizerBase, summary: Summary
) -> Iterator[list[list[int]]]:
    """Token ids per sentence, dropping sentences and documents that tokenise to nothing."""
    for sentences in documents:
        ids = tokenizer(sentences, add_special_tokens=False)["input_ids"] if sentences else []
        document = [segment for segment in ids if segment]
        if document:
            summary.documents += 1
            summary.sentences += len(document)
            summary.tokens += sum(map(len, document))
            yield document


def _prepare_output(output_dir: Path, prefix: str, overwrite: bool) -> None:
    """Create the folder; refuse (or with ``overwrite`` remove) old shards of the same prefix."""
    output_dir.mkdir(parents=True, exist_ok=True)
    old = existing_shards(output_dir, prefix)
    if old and not overwrite:
        raise ValueError(
            f"{output_dir}: already holds {len(old)} '{prefix}' shard(s) (e.g. {old[0].name}); "
            "pass --overwrite to replace them or choose another --prefix"
        )
    for path in old:
        path.unlink()


def create_pretraining_data(
    inputs: Sequence[str | Path],
    vocab_file: str | Path,
    output_dir: str | Path,
    options: InstanceOptions | None = None,
    *,
    prefix: str = "pretrain",
    input_format: str = "lines",
    document_regex: str | None = None,
    documents: slice = slice(None),
    dupe_factor: int = 5,
    shard_size: int = 100_000,
    docs_per_block: int = 10_000,
    seed: int = 12345,
    do_lower_case: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> Summary:
    """Text files -> HDF5 shards; the in-process equivalent of the command line."""
    options = options or InstanceOptions()
    options.validate()
    for name, value in (
        ("dupe_factor", dupe_factor),
        ("shard_size", shard_size),
        ("docs_per_block", docs_per_block),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    tokenizer = load_tokenizer(vocab_file, do_lower_case=do_lower_case)
    vocab = VocabInfo.from_vocab(tokenizer.get_vocab())
    files = find_input_files(inputs)
    output_dir = Path(output_dir)
    _prepare_output(output_dir, prefix, overwrite)

    rng = random.Random(seed)
    summary = Summary()
    writer = ShardWriter(
        output_dir, prefix, shard_size, options.max_seq_length, options.max_predictions_per_seq, rng
    )
    text_documents = islice(
        read_documents(files, input_format, document_regex), documents.start, documents.stop
    )
    with tqdm(text_documents, unit="doc", desc="documents", disable=not progress) as bar:
        for block in _blocks(_tokenize_documents(bar, tokenizer, summary), docs_per_block):
            for instance in create_instances(block, options, vocab, rng, dupe_factor):
                writer.add(instance)
            bar.set_postfix(instances=sum(n for _, n in writer.written) + len(writer.buffer))
    writer.flush()
    summary.shards = writer.written
    if not summary.shards:
        where = ", ".join(map(str, files))
        if documents != slice(None):
            where += f" (document range {_format_range(documents)})"
        raise ValueError(f"no text found in {where}")
    return summary


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bert_tutorial.create_data",
        description="Create MLM + NSP pre-training shards (HDF5) from plain text.",
        epilog="See the module docstring for the input formats and the memory model.",
    )
    io = parser.add_argument_group("input and output")
    io.add_argument(
        "--input", nargs="+", required=True, help="text files and/or folders (every *.txt below)"
    )
    io.add_argument("--vocab-file", required=True, help="WordPiece vocab.txt")
    io.add_argument("--output-dir", required=True)
    io.add_argument(
        "--prefix",
        default="pretrain",
        help="shards are named <prefix>_shard_00000.hdf5 (default: %(default)s)",
    )
    io.add_argument(
        "--overwrite", action="store_true", help="replace existing shards of the same prefix"
    )
    fmt = io.add_mutually_exclusive_group()
    fmt.add_argument(
        "--split-sentences",
        action="store_true",
        help="input is raw prose: split paragraphs into sentences",
    )
    fmt.add_argument(
        "--gutenberg",
        action="store_true",
        help="input is a Project Gutenberg book: strip licence, chapters = documents",
    )
    io.add_argument(
        "--document-regex",
        help="with --split-sentences: a line matching this starts a new document",
    )
    io.add_argument(
        "--documents",
        type=parse_document_range,
        default=slice(None),
        metavar="START:END",
        help="keep documents START..END-1 (0-based, across all inputs)",
    )
    io.add_argument(
        "--no-lower-case", dest="do_lower_case", action="store_false", help="for cased vocabularies"
    )

    inst = parser.add_argument_group("instances")
    inst.add_argument("--max-seq-length", type=int, default=128)
    inst.add_argument(
        "--max-predictions-per-seq",
        type=int,
        default=None,
        help="default: 20 at T=128, 80 at T=512, else ceil(0.15 T)",
    )
    inst.add_argument("--masked-lm-prob", type=float, default=0.15)
    inst.add_argument("--short-seq-prob", type=float, default=0.1)
    inst.add_argument(
        "--whole-word-masking", action="store_true", help="mask all pieces of a word together"
    )
    inst.add_argument(
        "--dupe-factor", type=int, default=5, help="passes over the text, each with new masks"
    )
    inst.add_argument("--seed", type=int, default=12345)

    run = parser.add_argument_group("streaming")
    run.add_argument(
        "--shard-size", type=int, default=100_000, help="instances per shard (default: %(default)s)"
    )
    run.add_argument(
        "--docs-per-block",
        type=int,
        default=10_000,
        help="documents tokenised and held in memory at once (default: %(default)s)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; user errors exit with status 2 and a one-line message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.document_regex and not args.split_sentences:
        parser.error("--document-regex needs --split-sentences")
    options = InstanceOptions(
        max_seq_length=args.max_seq_length,
        short_seq_prob=args.short_seq_prob,
        masked_lm_prob=args.masked_lm_prob,
        max_predictions_per_seq=args.max_predictions_per_seq
        or default_max_predictions(args.max_seq_length),
        whole_word_masking=args.whole_word_masking,
    )
    input_format = (
        "gutenberg" if args.gutenberg else "paragraphs" if args.split_sentences else "lines"
    )
    try:
        summary = create_pretraining_data(
            args.input,
            args.vocab_file,
            args.output_dir,
            options,
            prefix=args.prefix,
            input_format=input_format,
            document_regex=args.document_regex,
            documents=args.documents,
            dupe_factor=args.dupe_factor,
            shard_size=args.shard_size,
            docs_per_block=args.docs_per_block,
            seed=args.seed,
            do_lower_case=args.do_lower_case,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (FileNotFoundError, ValueError, re.error) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if not args.quiet:
        print(
            f"{summary.documents} documents, {summary.sentences} sentences, {summary.tokens} tokens "
            f"-> {summary.instances} instances in {len(summary.shards)} shard(s):"
        )
        for path, count in summary.shards:
            print(f"  {path}  {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
