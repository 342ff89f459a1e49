"""Vectorised masking: a whole shard's MLM targets chosen and corrupted with numpy at once.

``create_data``'s default (``--masking vectorized``). Google's algorithm masks one
instance at a time, drawing from the run's one ``random.Random``: a shuffle of
every candidate position (about 125 draws per sequence at T=128) to keep the first
15 %. That was about 40 % of the cost of making instances. Here the instances are made
unmasked, padded into the shard's arrays, and masked together: one random key per
position, the smallest keys win. The choice has the same distribution as Google's
(every set of ``round(length * masked_lm_prob)`` positions, [CLS]/[SEP] excluded,
equally likely; 80 % [MASK], 10 % random piece, 10 % unchanged) from a different
random stream: each shard has its own numpy generator, from the seed, the shard's
index, its text and (``--per-file``) the file's name, so the shards are still the
same bytes for every number of workers. ``--masking google`` keeps Google's draws instead
(``data_samples/`` is made that way, so it matches the reference tool draw for draw).
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..tokenization import KEEP_SHARE, MASK_SHARE, VocabInfo, masked_counts

#: Rows masked together: large enough for numpy to be fast, small enough to fit in a CPU cache.
ROWS_AT_ONCE = 2048
#: The shard arrays masking reads and writes.
MASKED_FIELDS = ("input_ids", "input_mask", "masked_lm_positions", "masked_lm_ids")


def shard_generator(
    seed: int, shard_index: int, name: str | None = None, tokens: np.ndarray | None = None
) -> np.random.Generator:
    """The generator that masks one shard: from the seed, its index, its file and its text.

    All four go through SHA-256 into a fixed-width little-endian key, so any integer
    seed works, no two keys collide, and a shard's masks are the same on any machine
    (with the same numpy) and for any number of workers. The unmasked ``tokens`` make
    runs over different text with the same seed draw unrelated masks, rather than
    the same positions row by row.
    """
    digest = hashlib.sha256(f"{seed}:{shard_index}:{name}".encode())
    if tokens is not None:
        digest.update(np.ascontiguousarray(tokens, dtype="<i4").tobytes())
    return np.random.default_rng(np.frombuffer(digest.digest(), "<u4").tolist())


def mask_arrays(
    arrays: dict[str, np.ndarray],
    vocab: VocabInfo,
    masked_lm_prob: float,
    rng: np.random.Generator,
) -> None:
    """Choose and corrupt the MLM targets of unmasked shard arrays, in place.

    ``arrays`` are :func:`~bert_tutorial.create_data.shard_writer.instances_to_arrays` of unmasked
    instances. As in Google's ``mask_tokens``, each row gets ``round(length *
    masked_lm_prob)`` targets counting [CLS]/[SEP] (at least 1, at most P, at most the
    candidates), [CLS]/[SEP] are never chosen, positions are stored ascending and
    the labels are the original ids, zero-padded to P. Rows are masked
    :data:`ROWS_AT_ONCE` at a time, so the temporary arrays stay small (a few MB)
    whatever the shard size.
    """
    replacements = np.asarray(vocab.replacement_ids, dtype=arrays["input_ids"].dtype)
    for start in range(0, len(arrays["input_ids"]), ROWS_AT_ONCE):
        rows = slice(start, start + ROWS_AT_ONCE)
        _mask_rows({name: arrays[name][rows] for name in MASKED_FIELDS}, vocab, replacements,
                   masked_lm_prob, rng)


def _mask_rows(
    arrays: dict[str, np.ndarray],
    vocab: VocabInfo,
    replacements: np.ndarray,
    masked_lm_prob: float,
    rng: np.random.Generator,
) -> None:
    """:func:`mask_arrays` of a few rows (views into the shard's arrays, written in place)."""
    ids = arrays["input_ids"]
    n, width = ids.shape
    predictions = arrays["masked_lm_positions"].shape[1]
    lengths = arrays["input_mask"].sum(axis=1, dtype=np.int64)
    wanted = masked_counts(lengths, masked_lm_prob, predictions)
    candidate = (np.arange(width) < lengths[:, None]) & (ids != vocab.cls_id) & (ids != vocab.sep_id)

    # A uniformly random subset of each row's candidates: the positions with the smallest keys.
    keys = np.where(candidate, rng.random((n, width)), 2.0)
    smallest = np.argpartition(keys, predictions - 1, axis=1)[:, :predictions]  # the P (<= T) smallest, unordered
    by_key = np.take_along_axis(smallest, np.argsort(np.take_along_axis(keys, smallest, 1), 1), 1)
    take = (np.arange(predictions) < wanted[:, None]) & (np.take_along_axis(keys, by_key, 1) < 2.0)
    positions = np.sort(np.where(take, by_key, width), axis=1)  # not taken -> width, at the end
    chosen = positions < width
    positions = np.where(chosen, positions, 0)
    rows = np.broadcast_to(np.arange(n)[:, None], positions.shape)
    labels = np.where(chosen, ids[rows, positions], 0)

    # 80 % [MASK], 10 % unchanged, 10 % a random word piece.
    draw = rng.random(positions.shape)
    corrupted = np.where(draw < MASK_SHARE, vocab.mask_id, labels)
    random_piece = draw >= MASK_SHARE + KEEP_SHARE
    corrupted[random_piece] = replacements[rng.integers(0, len(replacements), random_piece.sum())]
    ids[rows[chosen], positions[chosen]] = corrupted[chosen]
    arrays["masked_lm_positions"][...] = positions
    arrays["masked_lm_ids"][...] = labels


def mask_shard(arrays: dict[str, np.ndarray], shard_index: int, vocab: VocabInfo,
               masked_lm_prob: float, seed: int, name: str | None) -> None:
    """Mask shard ``shard_index``'s arrays with its own generator (``name``: its file's, with
    ``--per-file``); what a :class:`~bert_tutorial.create_data.shard_writer.ShardWriter` calls."""
    rng = shard_generator(seed, shard_index, name, arrays["input_ids"])
    mask_arrays(arrays, vocab, masked_lm_prob, rng)
