"""Train/eval shards of the sample texts at another sequence length, made once and reused.

``data_samples/`` ships shards at T=128 only; a full run (T=512, as BERT's second
pre-training phase) needs the same text cut into longer sequences. Rather than
committing more binary files, :func:`make_sample_shards` makes them from the text
with the same split and settings as ``data_samples/README.md``, so the notebooks'
``FULL_RUN`` can be switched on without any download: the book (*Pride and Prejudice*,
chapters 1-55 train, 56-61 eval) or the Bible (Genesis to Numbers to continue on,
Joshua and Judges held out).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..config import DATA_SAMPLES
from ..core.data import PathLike
from ..create_data.cli import CreationOptions, create_pretraining_data
from ..create_data.corpus import CorpusOptions
from ..create_data.instances import InstanceOptions
from ..hdf5_format import default_max_predictions

#: The sample book and the split of ``data_samples/``: chapters 1-55 train, 56-61 eval.
SAMPLE_CORPUS = DATA_SAMPLES / "corpus" / "pride-and-prejudice.txt"
SAMPLE_VOCAB = DATA_SAMPLES / "vocab.txt"
SAMPLE_SPLITS = {"train": (slice(0, 55), 5), "eval": (slice(55, 61), 2)}
#: The Bible's chapters: one document each, its name line ("Genesis 1") dropped.
BIBLE_CORPUS = DATA_SAMPLES / "corpus" / "kjv-bible.txt"
BIBLE_CHAPTER_LINE = r"^([123] )?[A-Z][a-z]+( of [A-Z][a-z]+)? [0-9]+$"
_DONE = "COMPLETE"


@dataclass(frozen=True)
class _Corpus:
    path: Path
    corpus: CorpusOptions  # without ``documents``: each split sets its own
    splits: dict[str, tuple[slice, int]]  # folder (and shard prefix) -> (documents, dupe factor)
    fields: tuple[str, str]  # the folders that are ``train_data`` and ``eval_data``


#: What ``data_samples/README.md`` runs, by corpus name.
SAMPLE_CORPORA = {
    "austen": _Corpus(SAMPLE_CORPUS, CorpusOptions(input_format="gutenberg"), SAMPLE_SPLITS,
                      ("train", "eval")),
    # Genesis-Numbers (chapters 0-152) to continue on, Joshua and Judges (187-231) held out.
    "bible": _Corpus(BIBLE_CORPUS, CorpusOptions(input_format="paragraphs", document_regex=BIBLE_CHAPTER_LINE),
                     {"bible-continue": (slice(0, 153), 2), "bible-eval": (slice(187, 232), 1)},
                     ("bible-continue", "bible-eval")),
}


def make_sample_shards(root: PathLike, max_seq_length: int = 512, *, corpus: str = "austen",
                       progress: bool = True) -> dict[str, str]:
    """Shards of a sample text at ``max_seq_length``, the same split as ``data_samples/``.

    ``corpus="austen"`` (the book): ``root/train`` (chapters 1-55) and ``root/eval``
    (56-61); ``corpus="bible"``: ``root/bible-continue`` (Genesis to Numbers) and
    ``root/bible-eval`` (Joshua, Judges). Made with
    :func:`bert_tutorial.create_data.cli.create_pretraining_data` (what ``python -m
    bert_tutorial.create_data`` runs) with the settings of ``data_samples/README.md``. A
    folder finished earlier (it holds a ``COMPLETE`` marker) is reused; an unfinished one
    is made again. Returns the ``TrainConfig`` fields ``train_data``, ``eval_data`` and
    ``vocab_file``.
    """
    if corpus not in SAMPLE_CORPORA:
        raise ValueError(f"corpus must be one of {sorted(SAMPLE_CORPORA)}, got {corpus!r}")
    text = SAMPLE_CORPORA[corpus]
    root = Path(root)
    instances = InstanceOptions(
        max_seq_length=max_seq_length,
        max_predictions_per_seq=default_max_predictions(max_seq_length),
    )
    for split, (documents, dupe_factor) in text.splits.items():
        folder = root / split
        if (folder / _DONE).is_file():
            continue
        options = CreationOptions(instances, dupe_factor=dupe_factor, seed=12345, shard_size=2500,
                                  masking="google")
        create_pretraining_data(
            [text.path], SAMPLE_VOCAB, folder, options, replace(text.corpus, documents=documents),
            prefix=split, overwrite=True, progress=progress,
        )
        (folder / _DONE).write_text(f"max_seq_length={max_seq_length}\n")
    train, evald = text.fields
    return {"train_data": str(root / train), "eval_data": str(root / evald),
            "vocab_file": str(SAMPLE_VOCAB)}
