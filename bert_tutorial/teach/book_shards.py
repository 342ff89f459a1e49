"""Train/eval shards of the sample book at another sequence length, made once and reused.

``data_samples/`` ships shards at T=128 only; a full run (T=512, as BERT's second
pre-training phase) needs the same text cut into longer sequences. Rather than
committing more binary files, :func:`make_sample_shards` makes them from the book
with the same split and settings as ``data_samples/README.md``, so the notebooks'
``FULL_RUN`` can be switched on without any download.
"""

from __future__ import annotations

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
_DONE = "COMPLETE"


def make_sample_shards(root: PathLike, max_seq_length: int = 512, *, progress: bool = True) -> dict[str, str]:
    """Shards of the sample book at ``max_seq_length`` under ``root/train`` and ``root/eval``.

    The same split as ``data_samples/`` (held-out chapters for eval), made with
    :func:`bert_tutorial.create_data.cli.create_pretraining_data` (what ``python -m
    bert_tutorial.create_data`` runs). A folder finished earlier (it holds a
    ``COMPLETE`` marker) is reused; an unfinished one is made again. Returns the
    ``TrainConfig`` fields ``train_data``, ``eval_data`` and ``vocab_file``.
    """
    root = Path(root)
    instances = InstanceOptions(
        max_seq_length=max_seq_length,
        max_predictions_per_seq=default_max_predictions(max_seq_length),
    )
    for split, (documents, dupe_factor) in SAMPLE_SPLITS.items():
        folder = root / split
        if (folder / _DONE).is_file():
            continue
        options = CreationOptions(instances, dupe_factor=dupe_factor, seed=12345, shard_size=2500,
                                  masking="google")
        corpus = CorpusOptions(input_format="gutenberg", documents=documents)
        create_pretraining_data(
            [SAMPLE_CORPUS], SAMPLE_VOCAB, folder, options, corpus,
            prefix=split, overwrite=True, progress=progress,
        )
        (folder / _DONE).write_text(f"max_seq_length={max_seq_length}\n")
    return {"train_data": str(root / "train"), "eval_data": str(root / "eval"),
            "vocab_file": str(SAMPLE_VOCAB)}
