"""The engine of ``create_data``: text -> token ids -> blocks -> instances -> shards, in one or N processes.

Two ways to draw the random stream, both reproducible byte for byte:

* **One stream** (the default, the original's): one ``random.Random(seed)`` draws every
  choice of the run in a fixed order, blocks and shard shuffles included. The draws
  depend on the data (how many tokens are truncated, how many candidates are
  shuffled), so block ``k``'s generator state is only known once block ``k - 1`` is
  done: instance creation runs in the main process, in order. With ``--workers N``
  everything that draws nothing runs in N worker processes: tokenising ahead of the
  main process, and compressing + writing the shards. The output is the
  same bytes for every N.
* **Per file** (``--per-file``): each input file is a unit of its own, with its own
  generator ``random.Random(f"{seed}:{stem}")`` and its own shards
  ``<prefix>_<stem>_shard_NNNNN.hdf5``. A file's shards do not depend on which other
  files are in the run, so disjoint sets of files can be processed on different
  machines, and ``--workers N`` processes N files at once.

:func:`run_one_stream` and :func:`run_per_file` are the two modes; :func:`tokenize_chunk`
and :func:`create_file_shards` are the steps that
:class:`~bert_tutorial.create_data.workers.WorkerPool` runs in worker processes. The
pipeline knows that pool only as a :class:`Pool`: ``workers`` imports this module
(its tasks are these steps), not the other way round.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from ..tokenization import VocabInfo
from .corpus import CorpusCounts, CorpusOptions, read_documents, tokenize_documents
from .instances import Instance, InstanceOptions, create_instances, split_long_segments
from .shard_writer import ShardWriter, WriteFunction, shard_name

if TYPE_CHECKING:
    import numpy as np

    from .wordpiece import WordPieceTokenizer

#: A chunk of text handed to a tokenizer process holds about this many characters (or
#: :data:`CHUNK_DOCUMENTS` documents): big enough that sending it costs little next to
#: tokenising it, small enough that N processes share a block evenly.
CHUNK_CHARS = 1 << 18
CHUNK_DOCUMENTS = 2_000


@dataclass(frozen=True)
class CreationOptions:
    """The settings that decide which instances are made and how they are split into shards.

    Together with the input text, the vocabulary and :class:`~bert_tutorial.create_data.corpus.CorpusOptions`
    these fix the output bytes; ``docs_per_block`` and ``shard_size`` trade memory for
    how far a random-next segment and the shuffling may reach (see ``create_data``).
    The number of worker processes is not among them: it never changes the output.
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
    #: Each input file on its own: own random stream and shards named after the file.
    per_file: bool = False
    #: "vectorized": whole shards masked with numpy (``bert_tutorial.create_data.masking``), ~1.6x faster
    #: in all; "google": each instance masked from the one random stream, Google's draws
    #: exactly, and the only choice with whole-word masking (the CLI picks it for
    #: ``--whole-word-masking``; here it must be asked for).
    masking: Literal["vectorized", "google"] = "vectorized"

    def validate(self) -> None:
        """Reject values that would crash deep inside the loop or write nothing."""
        self.instances.validate()
        if self.masking not in ("vectorized", "google"):
            raise ValueError(f"masking must be 'vectorized' or 'google', got {self.masking!r}")
        if self.masking == "vectorized" and self.instances.whole_word_masking:
            raise ValueError("whole-word masking draws one word at a time, Google's way: "
                             "use masking='google' (--masking google)")
        for name in ("dupe_factor", "shard_size", "docs_per_block"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass
class Summary(CorpusCounts):
    """What a run produced, for the CLI report and for tests."""

    shards: list[tuple[Path, int]] = field(default_factory=list)
    #: Tokens of A and B placed into instances before truncation, and those truncation cut.
    instance_tokens: int = 0
    truncated_tokens: int = 0
    #: Instances whose "random" B came from their own document (labelled 0, see ``instances``).
    same_document_b: int = 0
    #: Blocks that held a single document ("file:block" or "block"), for the warning.
    single_document_blocks: list[str] = field(default_factory=list)

    @property
    def instances(self) -> int:
        """Sequences written, over all shards."""
        return sum(n for _, n in self.shards)

    def count(self, instance: Instance) -> None:
        """Add one instance's truncation and NSP figures."""
        kept = len(instance.input_ids) - 3
        self.instance_tokens += kept + instance.truncated
        self.truncated_tokens += instance.truncated
        self.same_document_b += instance.same_document_b


@dataclass(frozen=True)
class Job:
    """Everything a (worker) process needs to make shards, besides the text and the tokenizer."""

    output_dir: Path
    prefix: str
    options: CreationOptions
    corpus: CorpusOptions

    def writer(self, vocab: VocabInfo, rng: random.Random, write: WriteFunction | None = None,
               name: str | None = None) -> ShardWriter:
        """A shard writer drawing from ``rng``; it masks whole shards with ``masking="vectorized"``."""
        options, instances = self.options, self.options.instances
        masker = None
        if options.masking == "vectorized":
            from .masking import mask_shard  # numpy: not needed for --help

            masker = partial(mask_shard, vocab=vocab, masked_lm_prob=instances.masked_lm_prob,
                             seed=options.seed, name=name)
        shape = (instances.max_seq_length, instances.max_predictions_per_seq)
        return ShardWriter(self.output_dir, self.prefix, options.shard_size, shape, rng, write,
                           name, masker)


class Pool(Protocol):
    """Other processes to run the work that draws nothing from the random stream (``--workers N``).

    :class:`~bert_tutorial.create_data.workers.WorkerPool` is the one implementation; the
    pipeline names only what it calls, so it does not import ``workers`` (which imports
    the pipeline's steps, :func:`tokenize_chunk` and :func:`create_file_shards`).
    """

    def tokenized(
        self, chunks: Iterable[list[list[str]]], max_seq_length: int, ahead_documents: int
    ) -> Iterator[tuple[list[list[list[int]]], CorpusCounts]]:
        """:func:`tokenize_chunk` of every chunk, results in input order."""
        ...

    def write(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        """A shard writer's write function: compress and write one shard elsewhere."""
        ...

    def wait_writes(self) -> None:
        """Return once every shard handed to :meth:`write` is written."""
        ...

    def per_file(self, files: Iterable[Path], job: Job) -> Iterator[Summary]:
        """:func:`create_file_shards` of every file, summaries in input order."""
        ...


def text_chunks(documents: Iterable[list[str]]) -> Iterator[list[list[str]]]:
    """Consecutive groups of documents of about :data:`CHUNK_CHARS` characters each."""
    chunk: list[list[str]] = []
    chars = 0
    for document in documents:
        chunk.append(document)
        chars += sum(map(len, document))
        if chars >= CHUNK_CHARS or len(chunk) >= CHUNK_DOCUMENTS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def tokenize_chunk(
    chunk: list[list[str]], tokenizer: Callable[[list[str]], list[list[int]]], max_seq_length: int
) -> tuple[list[list[list[int]]], CorpusCounts]:
    """Token ids of a chunk of documents, over-long segments cut (``split_long_segments``), and counts.

    Draws nothing, so it may run in any process in any order.
    """
    counts = CorpusCounts()
    documents = []
    for document in tokenize_documents(chunk, tokenizer, counts):
        document, cut = split_long_segments(document, max_seq_length)
        counts.split_segments += cut
        documents.append(document)
    return documents, counts


def collect(
    tokenized: Iterable[tuple[list[list[list[int]]], CorpusCounts]], summary: CorpusCounts
) -> Iterator[list[list[int]]]:
    """The documents of tokenised chunks, in order, adding each chunk's counts to ``summary``."""
    for documents, counts in tokenized:
        summary.add(counts)
        yield from documents


def blocks(documents: Iterable[list[list[int]]], size: int) -> Iterator[list[list[list[int]]]]:
    """Consecutive lists of ``size`` documents; a last block of one document joins the one before.

    A block of a single document has no other document to draw a random B from, so
    rather than leave the corpus's last document alone, it is added to the block
    before (which then holds ``size + 1``). Blocks of a corpus whose last block has
    two or more documents are exactly the original's.
    """
    iterator = iter(documents)
    block = list(islice(iterator, size))
    while block:
        following = list(islice(iterator, size))
        if len(following) == 1:
            block += following
            following = []
        yield block
        block = following


def run_one_stream(
    files: Sequence[Path],
    job: Job,
    tokenizer: Callable[[list[str]], list[list[int]]],
    vocab: VocabInfo,
    pool: Pool | None = None,
    progress: bool = False,
    name: str | None = None,
) -> Summary:
    """The shards of one random stream over ``files``, instances made in this process.

    The default mode's stream covers all files; with ``--per-file`` each file has its
    own, named ``name``, seeded from the seed and that name only. A string seed is
    hashed with SHA-512 (not Python's per-process ``hash``), so it is the same in
    every process, on every machine.
    """
    from tqdm.auto import tqdm

    options = job.options
    max_seq_length = options.instances.max_seq_length
    rng = random.Random(options.seed if name is None else f"{options.seed}:{name}")
    writer = job.writer(vocab, rng, pool.write if pool is not None else None, name)
    mask = writer.masker is None  # else the writer masks whole shards
    summary = Summary()
    documents = job.corpus.documents
    text = islice(read_documents(files, job.corpus), documents.start, documents.stop)
    with tqdm(text, unit="doc", desc="documents", disable=not progress) as bar:
        chunks = text_chunks(bar)
        if pool is None:
            tokenized = (tokenize_chunk(chunk, tokenizer, max_seq_length) for chunk in chunks)
        else:
            tokenized = pool.tokenized(chunks, max_seq_length, options.docs_per_block)
        for index, block in enumerate(blocks(collect(tokenized, summary), options.docs_per_block)):
            if len(block) == 1:
                where = f"{files[0].name}:" if name is not None else ""  # --per-file: its file
                summary.single_document_blocks.append(f"{where}block {index}")
            for instance in create_instances(block, options.instances, vocab, rng,
                                             options.dupe_factor, mask):
                summary.count(instance)
                writer.add(instance)
            bar.set_postfix(instances=writer.instances)
        writer.flush()
        if pool is not None:
            pool.wait_writes()
    summary.shards = writer.written
    return summary


def create_file_shards(
    path: Path, job: Job, tokenizer: Callable[[list[str]], list[list[int]]], vocab: VocabInfo
) -> Summary:
    """``--per-file``: the shards of one input file, independent of every other file."""
    return run_one_stream([path], job, tokenizer, vocab, name=shard_name(path))


def run_per_file(
    files: Sequence[Path],
    job: Job,
    tokenizer: WordPieceTokenizer,
    vocab: VocabInfo,
    pool: Pool | None,
    progress: bool,
) -> Summary:
    """``--per-file``: every file on its own (in ``pool``'s processes, if there is one)."""
    from tqdm.auto import tqdm

    if pool is None:
        summaries = (create_file_shards(path, job, tokenizer, vocab) for path in files)
    else:
        summaries = pool.per_file(files, job)
    summary = Summary()
    for one in tqdm(summaries, total=len(files), unit="file", desc="files", disable=not progress):
        summary.add(one)
    return summary
