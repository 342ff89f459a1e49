"""``--workers N``: the worker processes of ``create_data`` and what they are given to do.

Only work that draws nothing from the random stream is sent out (see ``pipeline``), so
the shards are the same bytes for every N:

* tokenising chunks of documents ahead of the main process (:meth:`WorkerPool.tokenized`),
  up to about one block ahead, results taken back in input order;
* compressing and writing full shards (:meth:`WorkerPool.write`), at most N waiting
  at a time, so memory stays bounded when the writers fall behind;
* with ``--per-file``, whole files (:meth:`WorkerPool.per_file`).

Workers are forked where the platform allows (they start in milliseconds and share
the loaded vocabulary) and spawned elsewhere; each tokenises on one thread
(``TOKENIZERS_PARALLELISM=false``), so N workers use N cores.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from functools import partial
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..end_signals import STOP_SIGNALS
from ..tokenization import VocabInfo
from .corpus import CorpusCounts
from .pipeline import Job, Summary, create_file_shards, tokenize_chunk
from .shard_writer import write_arrays
from .wordpiece import WordPieceTokenizer

if TYPE_CHECKING:
    import numpy as np

#: Seconds between checks that every worker is still alive while waiting for one.
WATCH_S = 1.0

_TOKENIZER: WordPieceTokenizer | None = None
_VOCAB: VocabInfo | None = None


class WorkerLostError(ChildProcessError):
    """A worker process died (killed by a signal, or crashed): its task will never finish."""


def _init_worker(tokenizer: WordPieceTokenizer, vocab: VocabInfo) -> None:
    """Keep the tokenizer for this worker's tasks; leave stop signals to the main process.

    Ctrl-C and a closed terminal reach every process of the group: the main process cleans
    up and ends the pool (with SIGTERM, which a worker therefore keeps).
    """
    for sig in STOP_SIGNALS:
        if sig != signal.SIGTERM:
            signal.signal(sig, signal.SIG_IGN)
    # A forked worker inherits the main process's handler, which turns SIGTERM into an
    # exception: the pool's terminate() then printed a worker traceback. Default: end quietly.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    global _TOKENIZER, _VOCAB
    _TOKENIZER, _VOCAB = tokenizer, vocab


def _tokenize(chunk: list[list[str]], max_seq_length: int) -> tuple[list[list[list[int]]], CorpusCounts]:
    """A worker's task: :func:`tokenize_chunk` with this worker's tokenizer."""
    assert _TOKENIZER is not None
    return tokenize_chunk(chunk, _TOKENIZER, max_seq_length)


def _per_file(path: Path, job: Job) -> Summary:
    """A worker's task: every shard of one input file (``--per-file``)."""
    assert _TOKENIZER is not None and _VOCAB is not None
    return create_file_shards(path, job, _TOKENIZER, _VOCAB)


def start_method() -> str:
    """"fork" on Linux (fast, no re-import), else the platform's default ("spawn")."""
    return "fork" if sys.platform.startswith("linux") else multiprocessing.get_start_method()


class WorkerPool:
    """N processes with the run's tokenizer, used as a context manager."""

    def __init__(self, workers: int, tokenizer: WordPieceTokenizer, vocab: VocabInfo) -> None:
        """Start ``workers`` processes, each with its own copy of ``tokenizer`` and ``vocab``."""
        self.workers = workers
        context = multiprocessing.get_context(start_method())
        # Workers inherit the environment: with the variable set, tokenizers neither
        # warns about the fork nor starts a thread pool in them. The parent's value is restored.
        previous = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        try:
            self.pool = context.Pool(workers, _init_worker, (tokenizer, vocab))
        finally:
            if previous is None:
                del os.environ["TOKENIZERS_PARALLELISM"]
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = previous
        self.pending_writes: deque[AsyncResult[Path]] = deque()
        # The pool's own processes. A worker that dies (the OOM killer's SIGKILL, a crash in
        # a C library) is replaced by the pool, but its task is lost and waiting for it
        # would hang forever: every wait below also watches these (see _check_workers).
        # ``_pool`` is private; without it (another implementation) nothing is watched.
        self._processes = list(getattr(self.pool, "_pool", []))

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.wait_writes()
            self.pool.close()
        else:  # an error: do not wait for the rest
            self.pool.terminate()
        self.pool.join()

    def tokenized(
        self, chunks: Iterable[list[list[str]]], max_seq_length: int, ahead_documents: int
    ) -> Iterator[tuple[list[list[list[int]]], CorpusCounts]]:
        """:func:`tokenize_chunk` of every chunk, in order, keeping about ``ahead_documents``
        documents (and at least two chunks per worker) in the workers' hands."""
        pending: deque[tuple[AsyncResult[Any], int]] = deque()
        in_flight = 0
        for chunk in chunks:
            pending.append((self.pool.apply_async(_tokenize, (chunk, max_seq_length)), len(chunk)))
            in_flight += len(chunk)
            while pending and in_flight >= ahead_documents and len(pending) >= 2 * self.workers:
                result, size = pending.popleft()
                in_flight -= size
                yield self._get(result)
        while pending:
            yield self._get(pending.popleft()[0])

    def write(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        """A shard writer's write function: hand the shard to a worker, first waiting while N
        others are still pending."""
        while len(self.pending_writes) >= self.workers:
            self._get(self.pending_writes.popleft())  # also raises a worker's error here
        self.pending_writes.append(self.pool.apply_async(write_arrays, (path, arrays)))

    def wait_writes(self) -> None:
        """Wait for every shard handed to :meth:`write` (raising the first error)."""
        while self.pending_writes:
            self._get(self.pending_writes.popleft())

    def per_file(self, files: Iterable[Path], job: Job) -> Iterator[Summary]:
        """:func:`create_file_shards` of every file, N at a time, summaries in input order."""
        results = self.pool.imap(partial(_per_file, job=job), files)
        while True:
            try:
                yield results.next(timeout=WATCH_S)
            except multiprocessing.TimeoutError:
                self._check_workers()
            except StopIteration:
                return

    def _get(self, result: AsyncResult[Any]) -> Any:
        """``result.get()``, raising :class:`WorkerLostError` instead of waiting for a dead worker."""
        while not result.ready():
            result.wait(WATCH_S)
            self._check_workers()
        return result.get()

    def _check_workers(self) -> None:
        """Raise if a worker process has ended: workers end only with the pool."""
        for process in self._processes:
            code = process.exitcode
            if code is not None:
                how = f"exit status {code}"
                if code < 0:
                    try:
                        how = f"killed by {signal.Signals(-code).name}"
                    except ValueError:  # a real-time signal has no name
                        how = f"killed by signal {-code}"
                raise WorkerLostError(
                    f"a worker process (pid {process.pid}) died ({how}) and its work is lost; "
                    "out of memory? (the kernel's OOM killer sends SIGKILL): try fewer --workers "
                    "or a smaller --shard-size / --docs-per-block")
