"""Turn plain text into MLM + NSP pre-training shards (``python -m bert_tutorial.create_data``).

This module is the command line and :func:`create_pretraining_data`. Input formats: one
sentence per line with a blank line between documents (Google's), raw prose with
``--split-sentences``, a Project Gutenberg book with ``--gutenberg``
(:mod:`bert_tutorial.create_data.corpus`). The algorithm is Google's (:mod:`bert_tutorial.create_data.instances`),
run block by block by :mod:`bert_tutorial.create_data.pipeline`.

``--documents START:END`` keeps only documents ``START`` to ``END - 1`` (0-based,
counted across all input files in sorted order, like a Python slice); it is how the
sample data holds out the last chapters of the book for evaluation.

``--report`` writes nothing: it runs the same pipeline with the same options and prints
what the text gives (documents, words, WordPiece tokens, how well the vocabulary fits,
the sequences and shards a run would write, optimizer steps per epoch):
:mod:`bert_tutorial.create_data.report`.

Memory
------
The corpus is streamed. Documents are read and tokenised in blocks of
``--docs-per-block`` documents; all ``--dupe-factor`` passes over a block are made
while it is in memory, and instances go into a buffer that is shuffled and written
as a shard as soon as it holds ``--shard-size`` instances. Memory is therefore one
block of tokenised documents plus one shard of instances (with ``--workers``, plus
the next block, tokenised ahead, and up to N shards waiting to be written),
independent of corpus size. The price: a random-next segment B comes from another
document *of the same block* (the original picks from the whole corpus), and
instances are shuffled within a shard, not across shards. A small corpus fits in one
block and behaves as in the original.

Reproducibility
---------------
Every random choice of the packing is drawn from one ``random.Random(seed)`` in a
fixed order; each shard's masks come from a numpy generator of its own
(:mod:`bert_tutorial.create_data.masking`), or with ``--masking google`` from the one stream, as
Google's tool draws them. HDF5 datasets are written without timestamps, so the same
input, arguments and library versions give byte-identical shards, for any
``--workers``. With ``--per-file`` each input file has its own generator and its own
shards, for corpora split over several machines (``docs/large_corpus.md``).
"""

from __future__ import annotations

import argparse
import codecs
import os
import re
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from ..end_signals import STOP_SIGNALS, handling
from ..tokenization import VocabInfo
from ..warn import warn_caller
from .corpus import CorpusOptions, find_input_files, parse_document_range
from .instances import InstanceOptions
from .pipeline import CreationOptions, Job, Summary, run_one_stream, run_per_file
from .report import CorpusReport, count_corpus, format_report
from .shard_writer import check_output_dir, prepared_output, shard_name
from .wordpiece import WordPieceTokenizer

__all__ = ["CreationOptions", "CreationWarning", "Summary", "create_pretraining_data", "main",
           "report_corpus"]


class CreationWarning(UserWarning):
    """Something in the input or the options that makes weaker training data, but not an error."""


def _check_options(options: CreationOptions, corpus: CorpusOptions) -> None:
    """Reject inconsistent options and warn about a P that caps the masking probability."""
    options.validate()
    if options.per_file and corpus.documents != slice(None):
        raise ValueError("--documents counts across all files; it cannot be used with --per-file")
    for name, lookup in (("encoding", codecs.lookup), ("errors", codecs.lookup_error)):
        try:
            lookup(getattr(corpus, name))
        except LookupError as exc:
            raise ValueError(f"--{name} {getattr(corpus, name)!r}: {exc}") from exc
    inst = options.instances
    needed = int(round(inst.max_seq_length * inst.masked_lm_prob))
    if inst.max_predictions_per_seq < needed:
        warn_caller(
            f"max_predictions_per_seq={inst.max_predictions_per_seq} caps the masked tokens at "
            f"{inst.max_predictions_per_seq / inst.max_seq_length:.1%} of a full sequence, below "
            f"masked_lm_prob={inst.masked_lm_prob}; P={needed} would not (the command line's "
            "default when --max-predictions-per-seq is not given)",
            CreationWarning,
        )


def _check_prefix(prefix: str) -> None:
    """A prefix is a plain file name: "../x" or "a/b" wrote shards outside --output-dir (or
    failed mid-run), and a hidden one (".x") hides its shards from listings."""
    if not prefix or prefix.startswith(".") or "/" in prefix or (os.sep in prefix) or "\0" in prefix:
        raise ValueError(f"--prefix {prefix!r}: must be a plain file name (no '/', not starting "
                         "with '.'): the shards are <output-dir>/<prefix>_shard_00000.hdf5")


def _per_file_names(files: Sequence[Path]) -> list[str]:
    """The shard names of ``--per-file`` (file stems); two files with one name are an error."""
    seen: dict[str, Path] = {}
    for path in files:
        name = shard_name(path)
        if name in seen:
            raise ValueError(
                f"--per-file: {seen[name]} and {path} would both write '{name}' shards; "
                "give every input file a distinct name"
            )
        seen[name] = path
    return list(seen)


def _warn_single_document_blocks(summary: Summary) -> None:
    """One warning for all blocks that held a single document."""
    blocks = summary.single_document_blocks
    if blocks:
        shown = ", ".join(blocks[:3]) + (f" and {len(blocks) - 3} more" if len(blocks) > 3 else "")
        warn_caller(
            f"{len(blocks)} block(s) held a single document ({shown}): their random-next "
            f"segments could only come from the same document, so those {summary.same_document_b} "
            "instance(s) are labelled 0 (B follows A), as NVIDIA's tool does. Give the text "
            "document boundaries (blank lines, --document-regex) or more documents.",
            CreationWarning,
        )


def create_pretraining_data(
    inputs: Sequence[str | Path],
    vocab_file: str | Path,
    output_dir: str | Path,
    options: CreationOptions | None = None,
    corpus: CorpusOptions | None = None,
    *,
    prefix: str = "pretrain",
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,
) -> Summary:
    """Text files -> HDF5 shards ``<output_dir>/<prefix>_shard_NNNNN.hdf5``; the CLI in-process.

    ``options`` decides the instances and shards, ``corpus`` how the files are read
    (both default to the command line's defaults). Existing shards of ``prefix`` are
    an error unless ``overwrite``, so two runs never mix silently; ``overwrite`` deletes
    them only once every new shard is written, and a failed run puts them back as
    they were (``shard_writer.prepared_output``). ``workers`` > 1
    runs the work that draws no random numbers in that many processes; the shards
    are the same bytes for any number.
    """
    options = options or CreationOptions()
    corpus = corpus or CorpusOptions()
    _check_options(options, corpus)
    _check_prefix(prefix)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    tokenizer = WordPieceTokenizer.from_file(vocab_file, do_lower_case=corpus.do_lower_case)
    vocab = VocabInfo.from_vocab(tokenizer.get_vocab())
    files = find_input_files(inputs)
    names = _per_file_names(files) if options.per_file else None
    job = Job(output_dir, prefix, options, corpus)
    # Everything that can fail after old shards were set aside (reading, writing, "no text",
    # a warning made an error) runs inside: a failure puts them back.
    with prepared_output(output_dir, prefix, overwrite, names):
        pool_context: Any = nullcontext(None)
        if workers > 1:
            from .workers import WorkerPool

            pool_context = WorkerPool(workers, tokenizer, vocab)
        with pool_context as pool:  # ended (workers terminated on an error) before the cleanup
            run = run_per_file if options.per_file else run_one_stream
            summary = run(files, job, tokenizer, vocab, pool, progress)
        if not summary.shards:
            raise ValueError(f"no text found in {_where(files, corpus)}")
        _warn_single_document_blocks(summary)
    return summary


def report_corpus(
    inputs: Sequence[str | Path],
    vocab_file: str | Path,
    options: CreationOptions | None = None,
    corpus: CorpusOptions | None = None,
    *,
    progress: bool = False,
) -> CorpusReport:
    """What :func:`create_pretraining_data` with these arguments would make, writing nothing
    (``--report``): the same checks, the same run (:mod:`bert_tutorial.create_data.report`)."""
    options = options or CreationOptions()
    corpus = corpus or CorpusOptions()
    _check_options(options, corpus)
    tokenizer = WordPieceTokenizer.from_file(vocab_file, do_lower_case=corpus.do_lower_case)
    vocab = VocabInfo.from_vocab(tokenizer.get_vocab())
    files = find_input_files(inputs)
    if options.per_file:
        _per_file_names(files)
    report = count_corpus(files, Job(Path("."), "report", options, corpus), tokenizer, vocab, progress)
    if not report.summary.shards:
        raise ValueError(f"no text found in {_where(files, corpus)}")
    _warn_single_document_blocks(report.summary)
    return report


def _where(files: Sequence[Path], corpus: CorpusOptions) -> str:
    """The input files, and the document range if one was set, for the "no text" error."""
    where = ", ".join(map(str, files))
    documents = corpus.documents
    if documents != slice(None):  # as it was typed: 10:, :5 or 10:20
        start = "" if documents.start is None else documents.start
        stop = "" if documents.stop is None else documents.stop
        where += f" (document range {start}:{stop})"
    return where


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _add_io_arguments(parser: argparse.ArgumentParser) -> None:
    """Input files, their format, the document range, and where the shards go."""
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", nargs="+", required=True,
                    help="text files and/or folders (every *.txt below)")
    io.add_argument("--vocab-file", required=True, help="WordPiece vocab.txt")
    io.add_argument("--output-dir", help="where the shards go (required, unless --report)")
    io.add_argument("--prefix", default="pretrain",
                    help="shards are named <prefix>_shard_00000.hdf5 (default: %(default)s)")
    io.add_argument("--overwrite", action="store_true",
                    help="replace existing shards of the same prefix (kept if the run fails)")
    fmt = io.add_mutually_exclusive_group()
    fmt.add_argument("--split-sentences", action="store_true",
                     help="input is raw prose: split paragraphs into sentences")
    fmt.add_argument("--gutenberg", action="store_true",
                     help="input is a Project Gutenberg book: strip licence, chapters = documents")
    io.add_argument("--document-regex",
                    help="with --split-sentences: a line matching this starts a new document")
    io.add_argument("--documents", type=parse_document_range, default=slice(None),
                    metavar="START:END",
                    help="keep documents START..END-1 (0-based, across all inputs)")
    io.add_argument("--no-lower-case", dest="do_lower_case", action="store_false",
                    help="for cased vocabularies")
    io.add_argument("--encoding", default="utf-8-sig",
                    help="of the input files (default: %(default)s, i.e. UTF-8 with or without a BOM)")
    io.add_argument("--errors", default="strict",
                    help="what to do with undecodable bytes: strict (an error naming the file and "
                    "byte), replace, ignore... as Python's open() (default: %(default)s)")


def _add_instance_arguments(parser: argparse.ArgumentParser) -> None:
    """The knobs of the algorithm (sequence length, masking, passes, seed)."""
    inst = parser.add_argument_group("instances")
    inst.add_argument("--max-seq-length", type=int, default=128,
                      help="tokens per sequence, T (default: %(default)s)")
    inst.add_argument("--max-predictions-per-seq", type=int,
                      help="default: 20 at T=128, 80 at T=512, else ceil(0.15 T); "
                      "more if --masked-lm-prob needs it (round(T * prob))")
    inst.add_argument("--masked-lm-prob", type=float, default=0.15,
                      help="share of tokens that become MLM targets (default: %(default)s)")
    inst.add_argument("--short-seq-prob", type=float, default=0.1,
                      help="share of sequences given a shorter random length (default: %(default)s)")
    inst.add_argument("--whole-word-masking", action="store_true",
                      help="mask all pieces of a word together")
    inst.add_argument("--masking", choices=("vectorized", "google"),
                      help="vectorized: each shard masked at once with numpy (about 1.6x faster in "
                      "all); google: each sequence masked from the one random stream, Google's "
                      "draws exactly (how data_samples/ is made). Same distributions. Default: "
                      "vectorized, or google with --whole-word-masking")
    inst.add_argument("--dupe-factor", type=int, default=5,
                      help="passes over the text, each with new masks (default: %(default)s)")
    inst.add_argument("--seed", type=int, default=12345, help="(default: %(default)s)")


def _add_streaming_arguments(parser: argparse.ArgumentParser) -> None:
    """Shard size and memory use, which do not change the algorithm for a small corpus."""
    run = parser.add_argument_group("streaming")
    run.add_argument("--shard-size", type=int, default=100_000,
                     help="instances per shard (default: %(default)s)")
    run.add_argument("--docs-per-block", type=int, default=10_000,
                     help="documents tokenised and held in memory at once (default: %(default)s)")
    run.add_argument("--workers", type=int, default=1,
                     help="processes; the shards are the same bytes for any number; 0 = one per "
                     "core (default: %(default)s)")
    run.add_argument("--per-file", action="store_true",
                     help="each input file on its own: its own random stream (from --seed and its "
                     "name) and shards <prefix>_<file name>_shard_00000.hdf5, the same whichever "
                     "other files are in the run (for a corpus split over machines, see "
                     "docs/large_corpus.md)")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """``--report``: what the text gives with these settings, nothing written."""
    report = parser.add_argument_group("report")
    report.add_argument("--report", action="store_true",
                        help="write nothing: print what the input gives with these settings "
                        "(documents, words, WordPiece tokens, the share of [UNK] and of words in "
                        "3+ pieces, the sequences and shards a run would write, optimizer steps "
                        "per epoch); --output-dir, --prefix, --overwrite and --workers are not "
                        "used, --quiet only hides the progress bar")
    report.add_argument("--report-batch-size", type=int, default=32, metavar="N",
                        help="sequences per optimizer step (batch size x accumulation steps x "
                        "GPUs) for the report's steps per epoch (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bert_tutorial.create_data``."""
    parser = argparse.ArgumentParser(
        prog="python -m bert_tutorial.create_data",
        description="Create MLM + NSP pre-training shards (HDF5) from plain text.",
        epilog="See the module docstring for the input formats and the memory model.",
    )
    _add_io_arguments(parser)
    _add_instance_arguments(parser)
    _add_streaming_arguments(parser)
    _add_report_arguments(parser)
    return parser


def _max_predictions_for(max_seq_length: int, masked_lm_prob: float) -> int:
    """P large enough for ``masked_lm_prob``: the usual 20 / 80 / ceil(0.15 T), or more if needed.

    Each sequence gets ``round(length * masked_lm_prob)`` targets, at most P; with a
    fixed P=20 a probability of 0.3 at T=128 would silently be capped at 15.6 %.
    """
    from ..hdf5_format import default_max_predictions  # h5py: not needed to parse arguments

    needed = int(round(max_seq_length * masked_lm_prob))
    return min(max_seq_length, max(default_max_predictions(max_seq_length), needed))


def _options_from_args(args: argparse.Namespace) -> tuple[CreationOptions, CorpusOptions]:
    """The parsed command line as the two option groups of :func:`create_pretraining_data`."""
    max_predictions = args.max_predictions_per_seq
    if max_predictions is None:  # not `or`: an explicit 0 must reach the range check, not become 20
        max_predictions = _max_predictions_for(args.max_seq_length, args.masked_lm_prob)
    instances = InstanceOptions(
        max_seq_length=args.max_seq_length,
        short_seq_prob=args.short_seq_prob,
        masked_lm_prob=args.masked_lm_prob,
        max_predictions_per_seq=max_predictions,
        whole_word_masking=args.whole_word_masking,
    )
    creation = CreationOptions(
        instances=instances,
        dupe_factor=args.dupe_factor,
        seed=args.seed,
        shard_size=args.shard_size,
        docs_per_block=args.docs_per_block,
        per_file=args.per_file,
        masking=args.masking or ("google" if args.whole_word_masking else "vectorized"),
    )
    input_format = (
        "gutenberg" if args.gutenberg else "paragraphs" if args.split_sentences else "lines"
    )
    corpus = CorpusOptions(
        input_format=input_format,
        document_regex=args.document_regex,
        documents=args.documents,
        do_lower_case=args.do_lower_case,
        encoding=args.encoding,
        errors=args.errors,
    )
    return creation, corpus


def _report(summary: Summary) -> None:
    """The summary a run prints: what went in, what came out, what was cut."""
    print(
        f"{summary.documents} documents, {summary.sentences} sentences, {summary.tokens} tokens "
        f"-> {summary.instances} instances in {len(summary.shards)} shard(s):"
    )
    for path, count in summary.shards:
        print(f"  {path}  {count}")
    if summary.split_segments:
        print(f"{summary.split_segments} segment(s) longer than two sequences cut into pieces")
    if summary.instance_tokens:
        share = summary.truncated_tokens / summary.instance_tokens
        print(f"truncation cut {summary.truncated_tokens} of {summary.instance_tokens} "
              f"A/B tokens ({share:.1%})")


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    """Warnings as one line ``prog: warning: ...`` on stderr, like the errors."""
    print(f"python -m bert_tutorial.create_data: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; user errors exit with status 2 and a one-line message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.document_regex and not args.split_sentences:
        parser.error("--document-regex needs --split-sentences")
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    if args.report:
        return _print_report(parser, args)
    if args.output_dir is None:
        parser.error("the following arguments are required: --output-dir (or --report, which "
                     "writes nothing)")
    workers = args.workers or _cores()
    creation, corpus = _options_from_args(args)
    with warnings.catch_warnings(), _signals_interrupt():
        warnings.simplefilter("always", CreationWarning)
        warnings.showwarning = _show_warning
        try:
            summary = create_pretraining_data(
                args.input,
                args.vocab_file,
                args.output_dir,
                creation,
                corpus,
                prefix=args.prefix,
                overwrite=args.overwrite,
                progress=not args.quiet,
                workers=workers,
            )
        except (OSError, ValueError, re.error) as exc:
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
        except KeyboardInterrupt as exc:  # shards are renamed into place only when complete
            replaced = " (the old ones, put back, where --overwrite had set some aside)"
            signum = getattr(exc, "signum", signal.SIGINT)
            how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
            parser.exit(128 + signum, f"{parser.prog}: {how}; the shards already in "
                        f"{args.output_dir} are complete{replaced if args.overwrite else ''}, "
                        "the run is not: run it again with --overwrite\n")
    if not args.quiet:
        _report(summary)
    return 0


def _print_report(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--report``: run :func:`report_corpus` and print it; errors as a run's."""
    if args.report_batch_size < 1:
        parser.error(f"--report-batch-size must be >= 1, got {args.report_batch_size}")
    creation, corpus = _options_from_args(args)
    with warnings.catch_warnings():
        warnings.simplefilter("always", CreationWarning)
        warnings.showwarning = _show_warning
        try:
            report = report_corpus(args.input, args.vocab_file, creation, corpus,
                                   progress=not args.quiet)
        except (OSError, ValueError, re.error) as exc:
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
        except KeyboardInterrupt:
            parser.exit(128 + signal.SIGINT, f"{parser.prog}: interrupted; nothing was written\n")
    where = f"{' '.join(map(str, args.input))}, vocabulary {args.vocab_file}"
    print(format_report(report, args.report_batch_size, where))
    return 0


class Stopped(KeyboardInterrupt):
    """A signal that asks the process to end (SIGTERM, SIGHUP, ...), raised like Ctrl-C so that
    the same clean-up runs: temporary shards removed, old shards put back (``--overwrite``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Within the block, the stop signals but SIGINT (which Python already turns into
    KeyboardInterrupt) raise :class:`Stopped`."""

    def handle(signum: int, frame: Any) -> None:
        raise Stopped(signum)

    with handling(handle, [sig for sig in STOP_SIGNALS if sig != signal.SIGINT]):
        yield


def _cores() -> int:
    """The cores this process may run on (``--workers 0``)."""
    import os

    if hasattr(os, "sched_getaffinity"):  # Linux
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1

