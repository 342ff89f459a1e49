"""Google's ``create_pretraining_data`` algorithm: tokenised documents -> masked MLM + NSP instances.

The steps, as in the original BERT code:

1. **Packing** (:func:`create_instances_from_document`): consecutive segments
   (sentences) of a document are collected up to ``max_seq_length - 3`` tokens
   (sometimes a shorter random target, ``short_seq_prob``, so the model also sees
   short inputs) and split at a random segment boundary into A and B.
2. **Next-sentence labels**: half of the time, or always when the chunk is a single
   segment, B is replaced by text from a random other document (label 1); the
   segments that B would have used are "put back" so no text is wasted. When the
   "random" document is the same one (a block of one document), the label is 0, as
   in NVIDIA's version of the tool: B is not from another document.
3. **Truncation** (:func:`truncate_seq_pair`): the longer of A and B loses tokens from
   a random end until ``[CLS] A [SEP] B [SEP]`` fits.
4. **Masking** (:func:`mask_tokens`): 15 % of the tokens become prediction targets;
   of those 80 % are replaced by ``[MASK]``, 10 % by a random word piece and 10 %
   stay unchanged, so the model must keep a representation of every token.
   (``create_data``'s default skips this step, ``mask=False``, and masks whole shards
   at once with numpy instead: :mod:`bert_tutorial.create_data.masking`.)
5. **Padding** (:func:`bert_tutorial.create_data.shard_writer.instances_to_arrays`) into the
   fixed-shape arrays of the shard format.

Every random choice comes from the one ``random.Random`` passed in, in a fixed
order, which is what makes the shards reproducible byte for byte. The code is
tuned for speed without changing that order: candidates are shuffled as a flat list
of positions (a shuffle's permutation depends only on the list's length),
truncation counts instead of deleting one token at a time (linear, not quadratic),
and instances hold 32-bit arrays, padded in one copy. The draws themselves are the
generator's own methods (``shuffle``, ``randint``, ``choice``), not copies of its
internals, so they are the original's on any Python version.
``tests/test_create_equivalence.py`` checks it against the original implementation,
instance by instance, state by state.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain

from ..tokenization import VocabInfo

#: The ``array`` type code of a 32-bit signed integer (``int32`` in the shards).
INT32 = next(code for code in "ilh" if array(code).itemsize == 4)
#: Segments up to this many tokens stay whole at any sequence length (see :func:`split_long_segments`).
LONG_SEGMENT_TOKENS = 256


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


def split_long_segments(document: list[list[int]], max_seq_length: int) -> tuple[list[list[int]], int]:
    """``document`` with every over-long segment cut into pieces, and the number of segments cut.

    A segment longer than a sequence loses its excess to truncation, as in the
    original. Sentences of a few hundred tokens are real (the sample book has ten of
    127-235 tokens at T=128) and stay whole, so the original algorithm and the
    committed shards are unchanged. Anything longer than two sequences (at least
    :data:`LONG_SEGMENT_TOKENS`) is a line of running text, not a sentence: truncation
    would throw most of it away, so it is cut into pieces of half a sequence, which
    pack two to an instance with at most one token to spare.
    """
    max_num_tokens = max_seq_length - 3
    longest, piece = max(2 * max_num_tokens, LONG_SEGMENT_TOKENS), (max_num_tokens + 1) // 2
    out: list[list[int]] = []
    cut = 0
    for segment in document:
        if len(segment) <= longest:
            out.append(segment)
        else:
            out.extend(segment[i : i + piece] for i in range(0, len(segment), piece))
            cut += 1
    return out, cut


@dataclass
class Instance:
    """One training sequence, unpadded: ``[CLS] A [SEP] B [SEP]`` after masking.

    The id sequences are 32-bit ``array``s when made by :func:`create_instances`: half
    the memory of lists in a shard's buffer, and padded in one copy (lists work too).
    """

    input_ids: Sequence[int]
    #: Length of ``[CLS] A [SEP]``; segment id is 0 before it and 1 from it on.
    num_segment_a: int
    masked_lm_positions: Sequence[int]
    masked_lm_ids: Sequence[int]
    is_random_next: bool
    #: Tokens of A and B cut by truncation (for the run's summary).
    truncated: int = 0
    #: B was meant to be random but the draw found only this document, so the label is 0.
    same_document_b: bool = False


def truncate_seq_pair(
    tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random
) -> int:
    """Trim the longer of A and B one token at a time, randomly from the front or back (in place).

    Random ends avoid teaching the model that text always starts or stops at a
    sentence boundary. The draws are the original's (one ``rng.random()`` per token,
    the longer list trimmed, B on ties), but the cuts are counted and made with one
    slice per end, so a segment of a million tokens costs a million draws, not a
    million list deletions from the front. Returns the number of tokens removed.
    """
    len_a, len_b = len(tokens_a), len(tokens_b)
    excess = len_a + len_b - max_num_tokens
    if excess <= 0:
        return 0
    draw = rng.random  # plain locals and one branch per case: this loop runs once per cut token
    front_a = back_a = front_b = back_b = 0
    while len_a + len_b > max_num_tokens:
        if len_a > len_b:
            if draw() < 0.5:
                front_a += 1
            else:
                back_a += 1
            len_a -= 1
        else:
            if draw() < 0.5:
                front_b += 1
            else:
                back_b += 1
            len_b -= 1
    for tokens, front, back in ((tokens_a, front_a, back_a), (tokens_b, front_b, back_b)):
        del tokens[len(tokens) - back :]
        del tokens[:front]
    return excess


def _candidate_groups(token_ids: Sequence[int], vocab: VocabInfo) -> list[list[int]]:
    """Positions that may be masked, grouped per word (whole-word masking).

    A "##" piece joins the group of the piece right before it; one that follows a
    special token (possible after truncation) starts its own group, so a word never
    spans a [SEP].
    """
    groups: list[list[int]] = []
    previous_maskable = False
    is_continuation = vocab.is_continuation
    for i, token in enumerate(token_ids):
        if token == vocab.cls_id or token == vocab.sep_id:
            previous_maskable = False
            continue
        if previous_maskable and is_continuation[token]:
            groups[-1].append(i)
        else:
            groups.append([i])
        previous_maskable = True
    return groups


def _corrupt(output: list[int], chosen: list[int], vocab: VocabInfo, rng: random.Random) -> None:
    """80 % [MASK], 10 % unchanged, 10 % a random word piece, drawn position by position.

    The original's draws: ``random() < 0.8``, else ``random() < 0.5`` to keep, else
    ``randint(0, len(replacement_ids) - 1)``; ``choice`` draws the same bits (both are
    one ``_randbelow(len(replacement_ids))``).
    """
    draw = rng.random
    replacements, mask_id = vocab.replacement_ids, vocab.mask_id
    for index in chosen:
        if draw() < 0.8:
            output[index] = mask_id
        elif draw() >= 0.5:  # below 0.5: keep the original token
            output[index] = rng.choice(replacements)


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
    model cannot learn that only [MASK] positions matter. Without whole words every
    group is one position, so a flat list of positions is shuffled instead of a list
    of one-element lists: the same permutation, the same draws.
    """
    output = list(token_ids)
    num_to_predict = min(max_predictions, max(1, int(round(len(output) * masked_lm_prob))))
    if not whole_word:  # every position but those of [CLS] and [SEP]
        cls_id, sep_id = vocab.cls_id, vocab.sep_id
        candidates = [i for i, token in enumerate(output) if token != cls_id and token != sep_id]
        rng.shuffle(candidates)
        chosen = candidates[:num_to_predict]
        _corrupt(output, chosen, vocab, rng)
    else:
        groups = _candidate_groups(output, vocab)
        rng.shuffle(groups)
        chosen = []
        for group in groups:
            if len(chosen) >= num_to_predict:
                break
            if len(chosen) + len(group) > num_to_predict:
                continue  # a whole word that does not fit: try a shorter one
            chosen.extend(group)
            _corrupt(output, group, vocab, rng)
    chosen.sort()
    return output, chosen, [token_ids[i] for i in chosen]


def _random_segment_b(
    documents: Sequence[Sequence[Sequence[int]]],
    document_index: int,
    target_length: int,
    rng: random.Random,
) -> tuple[list[int], bool]:
    """Tokens from a random place of another document (at least ``target_length`` if available),
    and whether the draw fell back on this same document.

    Another document is drawn up to 10 times, as in the original; with one document
    it is the same one.
    """
    other = document_index
    for _ in range(10):
        other = rng.randint(0, len(documents) - 1)
        if other != document_index:
            break
    document = documents[other]
    tokens_b: list[int] = []
    for k in range(rng.randint(0, len(document) - 1), len(document)):
        tokens_b += document[k]
        if len(tokens_b) >= target_length:
            break
    return tokens_b, other == document_index


def _build_instance(
    tokens_a: list[int],
    tokens_b: list[int],
    is_random_next: bool,
    options: InstanceOptions,
    vocab: VocabInfo,
    rng: random.Random,
    mask: bool,
) -> Instance:
    """Truncate the pair, add [CLS]/[SEP] and (unless ``mask`` is False) mask."""
    truncated = truncate_seq_pair(tokens_a, tokens_b, options.max_seq_length - 3, rng)
    tokens = [vocab.cls_id, *tokens_a, vocab.sep_id, *tokens_b, vocab.sep_id]
    positions: list[int] = []
    labels: list[int] = []
    if mask:  # else masked later, a shard at a time (bert_tutorial.create_data.masking)
        tokens, positions, labels = mask_tokens(tokens, vocab, options.masked_lm_prob,
                                                options.max_predictions_per_seq, rng,
                                                options.whole_word_masking)
    return Instance(array(INT32, tokens), len(tokens_a) + 2, array(INT32, positions),
                    array(INT32, labels), is_random_next, truncated)


def create_instances_from_document(
    documents: Sequence[Sequence[Sequence[int]]],
    document_index: int,
    options: InstanceOptions,
    vocab: VocabInfo,
    rng: random.Random,
    mask: bool = True,
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
            tokens_a = list(chain.from_iterable(chunk[:a_end]))
            is_random_next = same_document = False
            if len(chunk) == 1 or rng.random() < 0.5:
                tokens_b, same_document = _random_segment_b(
                    documents, document_index, target_length - len(tokens_a), rng
                )
                i -= len(chunk) - a_end  # put the unused segments back
                # B from this same document is not "random next": label 0, as NVIDIA's tool does
                is_random_next = not same_document
            else:
                tokens_b = list(chain.from_iterable(chunk[a_end:]))
            instance = _build_instance(tokens_a, tokens_b, is_random_next, options, vocab, rng, mask)
            instance.same_document_b = same_document
            instances.append(instance)
            chunk, chunk_length = [], 0
        i += 1
    return instances


def create_instances(
    documents_tokens: Sequence[Sequence[Sequence[int]]],
    options: InstanceOptions,
    vocab: VocabInfo,
    rng: random.Random,
    dupe_factor: int = 1,
    mask: bool = True,
) -> Iterator[Instance]:
    """Instances of ``dupe_factor`` passes over the documents (each a list of token-id segments).

    Each pass visits the documents in a fresh random order and draws new A/B splits
    and masks, so duplicates of the text are different training examples. Documents
    must be non-empty lists of non-empty segments. With ``mask=False`` the instances
    are left unmasked (no masking draws) for :mod:`bert_tutorial.create_data.masking` to mask.
    """
    for _ in range(dupe_factor):
        order = list(range(len(documents_tokens)))
        rng.shuffle(order)
        for index in order:
            yield from create_instances_from_document(
                documents_tokens, index, options, vocab, rng, mask)
