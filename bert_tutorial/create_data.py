"""Turn plain text into MLM + NSP pre-training shards (``python -m bert_tutorial.create_data``).

This module is the pipeline and its command line; the parts live elsewhere:

* :mod:`bert_tutorial.corpus` reads the input files into documents of sentences and
  tokenises them (input formats: one sentence per line, raw prose with
  ``--split-sentences``, a Project Gutenberg book with ``--gutenberg``);
* :mod:`bert_tutorial.instances` is Google's ``create_pretraining_data`` algorithm:
  A/B packing, random-next segments, truncation and 80/10/10 masking;
* here: :class:`ShardWriter` writes the instances with
  :func:`bert_tutorial.hdf5_format.write_shard`, so the output is exactly the format
  the reader validates (and NVIDIA's format), and :func:`create_pretraining_data`
  ties the three together.

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

from tqdm.auto import tqdm

from .corpus import (
    CorpusCounts,
    CorpusOptions,
    find_input_files,
    format_document_range,
    parse_document_range,
    read_documents,
    tokenize_documents,
)
from .hdf5_format import default_max_predictions, write_shard
from .instances import Instance, InstanceOptions, VocabInfo, create_instances, instances_to_arrays
from .tokenization import load_tokenizer

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
        """Buffer one instance; write a shard when the buffer is full."""
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

    @property
    def instances(self) -> int:
        """Instances written or buffered so far (for the progress bar)."""
        return sum(n for _, n in self.written) + len(self.buffer)


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreationOptions:
    """The settings that decide which instances are made and how they are split into shards.

    Together with the input text, the vocabulary and :class:`~bert_tutorial.corpus.CorpusOptions`
    these fix the output bytes; ``docs_per_block`` and ``shard_size`` trade memory for
    how far a random-next segment and the shuffling may reach (see the module docstring).
    """

    #: Sequence length, masking probability, predictions per sequence, short-sequence share.
    instances: InstanceOptions = field(default_factory=InstanceOptions)
    #: Passes over the text, each with new A/B splits and masks.
    dupe_factor: int = 5
    seed: int = 12345
    #: Instances per shard (the last shard may hold fewer).
    shard_size: int = 100_000
    #: Documents tokenised and held in memory at once.
    docs_per_block: int = 10_000

    def validate(self) -> None:
        """Reject values that would crash deep inside the loop or write nothing."""
        self.instances.validate()
        for name in ("dupe_factor", "shard_size", "docs_per_block"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass
class Summary(CorpusCounts):
    """What a run produced, for the CLI report and for tests."""

    shards: list[tuple[Path, int]] = field(default_factory=list)

    @property
    def instances(self) -> int:
        """Sequences written, over all shards."""
        return sum(n for _, n in self.shards)


def _blocks(items: Iterable[list[list[int]]], size: int) -> Iterator[list[list[list[int]]]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    iterator = iter(items)
    while block := list(islice(iterator, size)):
        yield block


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


def _no_text_error(files: Sequence[Path], documents: slice) -> ValueError:
    """The error for a run that wrote nothing, naming the files (and the range, if one was set)."""
    where = ", ".join(map(str, files))
    if documents != slice(None):
        where += f" (document range {format_document_range(documents)})"
    return ValueError(f"no text found in {where}")


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
) -> Summary:
    """Text files -> HDF5 shards ``<output_dir>/<prefix>_shard_NNNNN.hdf5``; the CLI in-process.

    ``options`` decides the instances and shards, ``corpus`` how the files are read
    (both default to the command line's defaults). Existing shards of ``prefix`` are
    an error unless ``overwrite``, so two runs never mix silently.
    """
    options = options or CreationOptions()
    corpus = corpus or CorpusOptions()
    options.validate()
    tokenizer = load_tokenizer(vocab_file, do_lower_case=corpus.do_lower_case)
    vocab = VocabInfo.from_vocab(tokenizer.get_vocab())
    files = find_input_files(inputs)
    output_dir = Path(output_dir)
    _prepare_output(output_dir, prefix, overwrite)

    rng = random.Random(options.seed)  # the one source of randomness, drawn in a fixed order
    summary = Summary()
    shape = options.instances.max_seq_length, options.instances.max_predictions_per_seq
    writer = ShardWriter(output_dir, prefix, options.shard_size, *shape, rng)
    text = islice(
        read_documents(files, corpus.input_format, corpus.document_regex),
        corpus.documents.start,
        corpus.documents.stop,
    )
    with tqdm(text, unit="doc", desc="documents", disable=not progress) as bar:
        for block in _blocks(tokenize_documents(bar, tokenizer, summary), options.docs_per_block):
            for instance in create_instances(
                block, options.instances, vocab, rng, options.dupe_factor
            ):
                writer.add(instance)
            bar.set_postfix(instances=writer.instances)
    writer.flush()
    summary.shards = writer.written
    if not summary.shards:
        raise _no_text_error(files, corpus.documents)
    return summary


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _add_io_arguments(parser: argparse.ArgumentParser) -> None:
    """Input files, their format, the document range, and where the shards go."""
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


def _add_instance_arguments(parser: argparse.ArgumentParser) -> None:
    """The knobs of the algorithm (sequence length, masking, passes, seed)."""
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


def _add_streaming_arguments(parser: argparse.ArgumentParser) -> None:
    """Shard size and memory use, which do not change the algorithm for a small corpus."""
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
    return parser


def _options_from_args(args: argparse.Namespace) -> tuple[CreationOptions, CorpusOptions]:
    """The parsed command line as the two option groups of :func:`create_pretraining_data`."""
    instances = InstanceOptions(
        max_seq_length=args.max_seq_length,
        short_seq_prob=args.short_seq_prob,
        masked_lm_prob=args.masked_lm_prob,
        max_predictions_per_seq=args.max_predictions_per_seq
        or default_max_predictions(args.max_seq_length),
        whole_word_masking=args.whole_word_masking,
    )
    creation = CreationOptions(
        instances=instances,
        dupe_factor=args.dupe_factor,
        seed=args.seed,
        shard_size=args.shard_size,
        docs_per_block=args.docs_per_block,
    )
    input_format = (
        "gutenberg" if args.gutenberg else "paragraphs" if args.split_sentences else "lines"
    )
    corpus = CorpusOptions(
        input_format=input_format,
        document_regex=args.document_regex,
        documents=args.documents,
        do_lower_case=args.do_lower_case,
    )
    return creation, corpus


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; user errors exit with status 2 and a one-line message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.document_regex and not args.split_sentences:
        parser.error("--document-regex needs --split-sentences")
    creation, corpus = _options_from_args(args)
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
