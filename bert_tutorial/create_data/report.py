"""``python -m bert_tutorial.create_data --report``: what a corpus gives, and how well the vocabulary fits it.

Nothing is written. The report runs the real pipeline
(:func:`~bert_tutorial.create_data.pipeline.run_one_stream`, or
:func:`~bert_tutorial.create_data.pipeline.run_per_file` with ``--per-file``) with the
options of the command line, through a :class:`CountingPool` whose "write" counts a
shard's sequences and masked predictions instead of writing them. The random stream
is drawn exactly as in a run (packing, shard shuffles, Google's masks), so the
sequences and shards it reports are those a run with the same flags writes, not an
estimate. On the way the pool splits every sentence into words
(:meth:`~bert_tutorial.create_data.wordpiece.WordPieceTokenizer.words`) to see how the
vocabulary spells them: whole, in three or more pieces, or as ``[UNK]``.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..tokenization import VocabInfo
from .corpus import CorpusCounts
from .pipeline import Job, Summary, run_one_stream, run_per_file, tokenize_chunk
from .shard_writer import shard_name
from .wordpiece import WordPieceTokenizer

if TYPE_CHECKING:
    import numpy as np

#: Above this share of [UNK] tokens the reading warns: the model sees nothing of those words.
UNK_WARNING = 0.01
#: Above this share of words spelled in 3+ pieces the reading warns (with bert-base-uncased's
#: vocabulary: 1.9 % of Pride and Prejudice, 2.7 % of the King James Bible).
MANY_PIECES_WARNING = 0.05
#: Words shown per list (the most frequent first).
EXAMPLES = 5


@dataclass
class CorpusReport:
    """What the text gives: the pipeline's counts, the words seen, and the sequences made."""

    #: What was run: the options, how the text was read, the vocabulary (token -> id).
    job: Job
    vocab: dict[str, int]
    #: Documents, sentences and tokens as the pipeline counts them, and the shards it made.
    summary: Summary = field(default_factory=Summary)
    #: Word (as the tokenizer splits and lower-cases text) -> occurrences, and its piece ids.
    word_counts: Counter[str] = field(default_factory=Counter)
    word_pieces: dict[str, list[int]] = field(default_factory=dict)
    #: Real tokens ([CLS]/[SEP] included) and masked-LM targets over all sequences.
    sequence_tokens: int = 0
    predictions: int = 0

    def add_words(self, words: Iterable[tuple[str, list[int]]]) -> None:
        """Count words (with their pieces) as :meth:`WordPieceTokenizer.words` gives them."""
        counts, pieces = self.word_counts, self.word_pieces
        for word, ids in words:
            counts[word] += 1
            if word not in pieces:
                pieces[word] = ids

    def add_shard(self, arrays: dict[str, np.ndarray]) -> None:
        """Count one shard's real tokens and masked-LM targets (position 0, [CLS], is never one)."""
        self.sequence_tokens += int(arrays["input_mask"].sum())
        self.predictions += int((arrays["masked_lm_positions"] != 0).sum())

    @property
    def sequences(self) -> int:
        return self.summary.instances

    def is_word(self, word: str) -> bool:
        """A word holds a letter or digit; the rest are punctuation marks."""
        return any(ch.isalnum() for ch in word)

    def words(self) -> tuple[int, int]:
        """Occurrences of words and of punctuation marks."""
        words = sum(n for w, n in self.word_counts.items() if self.is_word(w))
        return words, sum(self.word_counts.values()) - words

    def unk_words(self, unk_id: int) -> list[tuple[str, int]]:
        """Words (and marks) that hold an [UNK] piece, with their counts, most frequent first."""
        return [(w, n) for w, n in self.word_counts.most_common() if unk_id in self.word_pieces[w]]

    def many_piece_words(self, pieces: int = 3) -> list[tuple[str, int]]:
        """Words spelled in ``pieces`` or more pieces, with their counts, most frequent first."""
        return [(w, n) for w, n in self.word_counts.most_common()
                if len(self.word_pieces[w]) >= pieces and self.is_word(w)]


class CountingPool:
    """A :class:`~bert_tutorial.create_data.pipeline.Pool` that works in this process and writes
    nothing: it tokenises each chunk as a run does (and counts its words), and counts each
    shard it is handed instead of writing it."""

    def __init__(self, tokenizer: WordPieceTokenizer, vocab: VocabInfo, report: CorpusReport) -> None:
        self.tokenizer, self.vocab, self.report = tokenizer, vocab, report

    def tokenized(
        self, chunks: Iterable[list[list[str]]], max_seq_length: int, ahead_documents: int
    ) -> Iterator[tuple[list[list[list[int]]], CorpusCounts]]:
        for chunk in chunks:
            for document in chunk:
                self.report.add_words(self.tokenizer.words(document))
            yield tokenize_chunk(chunk, self.tokenizer, max_seq_length)

    def write(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        self.report.add_shard(arrays)

    def wait_writes(self) -> None:
        pass

    def per_file(self, files: Iterable[Path], job: Job) -> Iterator[Summary]:
        """Each file's own stream, as ``create_file_shards`` runs it, through this pool."""
        for path in files:
            yield run_one_stream([path], job, self.tokenizer, self.vocab, self, name=shard_name(path))


def count_corpus(
    files: Sequence[Path], job: Job, tokenizer: WordPieceTokenizer, vocab: VocabInfo,
    progress: bool = False,
) -> CorpusReport:
    """Run ``job`` over ``files`` as ``create_data`` would, writing nothing; what it made."""
    report = CorpusReport(job, tokenizer.vocab)
    pool = CountingPool(tokenizer, vocab, report)
    run = run_per_file if job.options.per_file else run_one_stream
    report.summary = run(files, job, tokenizer, vocab, pool, progress)
    return report


def _percent(share: float, digits: int = 2) -> str:
    """0.0123 -> "1.23 %" (the README's style)."""
    return f"{100 * share:.{digits}f} %"


def _share(part: int, whole: int) -> str:
    return _percent(part / whole) if whole else "-"


def format_report(report: CorpusReport, batch_size: int, where: str) -> str:
    """The report on the text of ``where`` as a short aligned table, examples, and a reading."""
    summary, options = report.summary, report.job.options
    length, predictions = options.instances.max_seq_length, options.instances.max_predictions_per_seq
    unk_id = report.vocab["[UNK]"]
    piece_of = {i: t for t, i in report.vocab.items()}
    words, marks = report.words()
    tokens = summary.tokens
    unk_words = report.unk_words(unk_id)
    unk_tokens = sum(n * report.word_pieces[w].count(unk_id) for w, n in unk_words)
    long_words = report.many_piece_words()
    in_pieces = sum(n for _, n in long_words)
    sequences = report.sequences
    steps = sequences // batch_size
    per_sequence = (lambda total: f"{total / sequences:.1f}") if sequences else (lambda total: "-")
    passes = f"{options.dupe_factor} pass{'es' if options.dupe_factor > 1 else ''} over the text"
    rows = [
        ("documents", f"{summary.documents:,}", ""),
        ("sentences", f"{summary.sentences:,}",
         "one per line" if report.job.corpus.input_format == "lines" else "split from the paragraphs"),
        ("words", f"{words:,}", f"and {marks:,} punctuation marks"),
        ("WordPiece tokens", f"{tokens:,}",
         f"{tokens / (words + marks):.2f} per word or mark" if words + marks else ""),
        ("[UNK] tokens", f"{unk_tokens:,}", f"{_share(unk_tokens, tokens)} of the tokens"),
        ("words in 3+ pieces", f"{in_pieces:,}", f"{_share(in_pieces, words)} of the words"),
        ("sequences", f"{sequences:,}", f"T = {length}, {passes} (--dupe-factor)"),
        ("shards", f"{len(summary.shards):,}", f"of up to {options.shard_size:,} sequences (--shard-size)"),
        ("tokens per sequence", per_sequence(report.sequence_tokens), f"on average, of T = {length}"),
        ("masked predictions", per_sequence(report.predictions), f"per sequence on average, at most {predictions}"),
        ("optimizer steps per epoch", f"{steps:,}",
         f"at {batch_size} sequences per optimizer step (--report-batch-size)"),
    ]
    width = max(len(label) for label, _, _ in rows)
    number = max(len(value) for _, value, _ in rows)
    lines = [f"Report on {where} (nothing written):"]
    lines += [f"  {label:<{width}}  {value:>{number}}  {note}".rstrip() for label, value, note in rows]

    def examples(title: str, found: list[tuple[str, int]], show_pieces: bool) -> None:
        if not found:
            lines.append(f"{title}: none")
            return
        lines.append(f"{title}:")
        shown = found[:EXAMPLES]
        column = max(len(w) for w, _ in shown)
        for word, count in shown:
            pieces = " ".join(piece_of[i] for i in report.word_pieces[word]) if show_pieces else ""
            lines.append(f"  {word:<{column}}  {count:>{len(f'{shown[0][1]:,}')},}x  {pieces}".rstrip())

    examples("Most frequent words that become [UNK]", unk_words, False)
    examples("Most frequent words in 3+ pieces", long_words, True)
    reading = _reading(unk_tokens / tokens if tokens else 0.0, in_pieces / words if words else 0.0,
                       steps, batch_size)
    lines += textwrap.wrap(reading, width=92, subsequent_indent="  ", break_on_hyphens=False)
    return "\n".join(lines)


def _reading(unk_share: float, long_share: float, steps: int, batch_size: int) -> str:
    """One or two sentences that say what the figures mean."""
    trouble = []
    if unk_share > UNK_WARNING:
        trouble.append(f"{_percent(unk_share, 1)} of the tokens are [UNK] (above "
                       f"{_percent(UNK_WARNING, 0)}): the model sees nothing of those words")
    if long_share > MANY_PIECES_WARNING:
        trouble.append(f"{_percent(long_share, 1)} of the words are spelled in 3+ pieces (above "
                       f"{_percent(MANY_PIECES_WARNING, 0)}): the model must learn them from "
                       "fragments, and a sequence holds less text")
    if trouble:
        text = ("Reading: the vocabulary does not fit this text well: " + "; ".join(trouble) + ". "
                "A vocabulary made for this domain would fit better, but continuing bert-base "
                "requires bert-base's vocabulary (its embeddings are indexed by it): a new one "
                "means new, untrained embeddings, or training from scratch.")
    else:
        text = (f"Reading: the vocabulary fits this text (no more than {_percent(UNK_WARNING, 0)} "
                f"[UNK], no more than {_percent(MANY_PIECES_WARNING, 0)} of the words in 3+ "
                "pieces): a model that uses it can be continued on this text as it is.")
    if steps == 0:
        text += (f" There are fewer sequences than one optimizer step of {batch_size}: too little "
                 "text to train on.")
    return text
