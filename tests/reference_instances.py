# The instance-creation code as it was before the speed-ups (commit c4341d8), kept verbatim as
# the reference that test_create_equivalence.py compares the tuned code with, draw for draw.
# ruff: noqa
"""Google's ``create_pretraining_data`` algorithm: tokenised documents -> masked MLM + NSP instances.

The steps, as in the original BERT code:

1. **Packing** (:func:`create_instances_from_document`): consecutive segments
   (sentences) of a document are collected up to ``max_seq_length - 3`` tokens
   (sometimes a shorter random target, ``short_seq_prob``, so the model also sees
   short inputs) and split at a random segment boundary into A and B.
2. **Next-sentence labels**: half of the time, or always when the chunk is a single
   segment, B is replaced by text from a random other document (label 1); the
   segments that B would have used are "put back" so no text is wasted.
3. **Truncation** (:func:`truncate_seq_pair`): the longer of A and B loses tokens from
   a random end until ``[CLS] A [SEP] B [SEP]`` fits.
4. **Masking** (:func:`mask_tokens`): 15 % of the tokens become prediction targets;
   of those 80 % are replaced by ``[MASK]``, 10 % by a random word piece and 10 %
   stay unchanged, so the model must keep a representation of every token.
5. **Padding** (:func:`instances_to_arrays`) into the fixed-shape arrays of the shard
   format.

Every random choice comes from the one ``random.Random`` passed in, in a fixed
order, which is what makes the shards reproducible byte for byte.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


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
