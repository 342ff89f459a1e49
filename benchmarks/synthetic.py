"""Synthetic pre-training shards: valid shard arrays without a corpus or a tokenizer.

Benchmarks need shards of realistic shape (100k sequences in a second), and tests need
small ones with edge cases (short rows, rows with no masked token). Both come from
:func:`synthetic_arrays`, so the data the tests check and the data the benchmarks time
are made the same way. Each sequence is ``[CLS] A [SEP] B [SEP]`` followed by padding,
as Google's ``create_pretraining_data`` lays it out; the arrays have the dtypes of
:data:`bert_tutorial.hdf5_format.FIELDS`, so :func:`~bert_tutorial.hdf5_format.write_shard`
writes them as they are. Token ids are uniform random: no language to learn, but gzip
compresses them about as badly as real text, which is what loading speed depends on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bert_tutorial.hdf5_format import FIELDS


@dataclass(frozen=True)
class SpecialIds:
    """Where a vocabulary keeps its special tokens; [PAD] is always 0 (the format pads with 0)."""

    cls: int
    sep: int
    mask: int
    #: The first id of an ordinary word; words are drawn from ``[first_word, vocab_size)``.
    first_word: int


#: bert-base-uncased: [CLS] 101, [SEP] 102, [MASK] 103, "!" (the first non-reserved token) 999.
BERT_UNCASED_IDS = SpecialIds(cls=101, sep=102, mask=103, first_word=999)
BERT_UNCASED_SIZE = 30522
#: A toy vocabulary "[PAD] [UNK] [CLS] [SEP] [MASK] w5 w6 ..." (the test suite's).
TOY_IDS = SpecialIds(cls=2, sep=3, mask=4, first_word=5)


def synthetic_arrays(
    num_samples: int,
    seq_length: int,
    max_predictions: int,
    vocab_size: int = BERT_UNCASED_SIZE,
    seed: int = 0,
    short_seq_prob: float = 0.1,
    min_length: int = 8,
    mask_fraction: float | None = 0.15,
    special_ids: SpecialIds | None = None,
) -> dict[str, np.ndarray]:
    """Shard contents of ``num_samples`` sequences of ``seq_length``, deterministic per ``seed``.

    * Length: ``seq_length``, except for a fraction ``short_seq_prob`` of sequences whose
      length is uniform in ``[min_length, seq_length]`` (``short_seq_prob=1`` makes every
      length random); the rest is padding.
    * ``[SEP]`` splits the sequence at a random point (both sentences non-empty);
      ``segment_ids`` are 1 on sentence B and its [SEP].
    * Masked tokens: ``round(mask_fraction * length)`` (at least 1, at most
      ``max_predictions``), as Google's script counts them; with ``mask_fraction=None``
      a uniform count from 0 to ``max_predictions``, so some rows have none. Never
      [CLS], [SEP] or padding; always replaced by [MASK]; positions ascending, unused
      slots padded with 0.
    * ``special_ids``: default bert-base-uncased's when ``vocab_size`` is at least its
      30,522, else :data:`TOY_IDS`. Vectorised: 100k sequences of T=128 take about a second.
    """
    ids_of = special_ids or (BERT_UNCASED_IDS if vocab_size >= BERT_UNCASED_SIZE else TOY_IDS)
    if not 5 <= min_length <= seq_length:
        raise ValueError(f"need 5 <= min_length <= seq_length (two one-token sentences), "
                         f"got min_length {min_length}, seq_length {seq_length}")
    if ids_of.first_word >= vocab_size:
        raise ValueError(f"vocab_size {vocab_size} leaves no word ids after {ids_of}")
    rng = np.random.default_rng(seed)
    n, t, p = num_samples, seq_length, max_predictions
    rows, cols = np.arange(n), np.arange(t)
    lengths = np.full(n, t, dtype=np.int64)
    short = rng.random(n) < short_seq_prob
    lengths[short] = rng.integers(min_length, t + 1, size=int(short.sum()))
    real = cols[None, :] < lengths[:, None]
    split = rng.integers(2, lengths - 2)  # index of the first [SEP]
    ids = rng.integers(ids_of.first_word, vocab_size, size=(n, t)).astype(np.int32)
    ids[:, 0] = ids_of.cls
    ids[rows, split] = ids_of.sep
    ids[rows, lengths - 1] = ids_of.sep
    ids[~real] = 0
    words = real & (cols[None, :] > 0) & (cols[None, :] != split[:, None])
    words &= cols[None, :] != (lengths - 1)[:, None]
    most = np.minimum(p, lengths - 3)  # every word may be masked
    if mask_fraction is None:
        n_pred = rng.integers(0, most + 1)
    else:
        n_pred = np.minimum(most, np.maximum(1, np.rint(lengths * mask_fraction).astype(np.int64)))
    positions, masked_ids = _choose_masked(rng, ids, words, n_pred, p)
    used = positions != 0
    ids[np.broadcast_to(rows[:, None], positions.shape)[used], positions[used]] = ids_of.mask

    arrays = {"input_ids": ids, "input_mask": real, "segment_ids": (cols[None, :] > split[:, None]) & real,
              "masked_lm_positions": positions, "masked_lm_ids": masked_ids,
              "next_sentence_labels": rng.integers(0, 2, size=n)}
    return {name: arrays[name].astype(dtype) for name, (dtype, _) in FIELDS.items()}


def _choose_masked(rng: np.random.Generator, ids: np.ndarray, words: np.ndarray,
                   n_pred: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, original ids) of ``n_pred[i]`` random words of each row, in ascending
    order, unused slots 0: a random key per token, non-words keyed last, the smallest kept."""
    n, t = ids.shape
    keys = rng.random((n, t))
    keys[~words] = 2.0
    candidates = np.argsort(keys, axis=1)[:, :p]
    if candidates.shape[1] < p:  # P > T: pad, those slots stay unused
        candidates = np.pad(candidates, ((0, 0), (0, p - candidates.shape[1])))
    chosen = np.arange(p)[None, :] < n_pred[:, None]
    positions = np.sort(np.where(chosen, candidates, t), axis=1)  # unused slots sort last...
    used = positions < t
    positions = np.where(used, positions, 0)  # ...and are padded with 0
    return positions, np.where(used, np.take_along_axis(ids, positions, axis=1), 0)
