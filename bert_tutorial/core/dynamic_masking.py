"""Dynamic masking: new MLM targets each time a sequence is read, from the same static shards.

A shard stores every sequence already masked: the same 15 % of its tokens are hidden in
every epoch. RoBERTa draws the masks anew each time a sequence is read instead, so that
several epochs over a small corpus ask for different words. The shards keep all that is
needed: the stored ``input_ids`` with each ``masked_lm_ids`` put back at its position are
the unmasked sequence (:func:`unmasked_tokens`).

The new masks follow the creator's rule (``create_data``): ``round(length x rate)``
targets per sequence counting [CLS]/[SEP] (at least 1, at most the shard's P), [CLS],
[SEP] and padding never chosen, then 80 % [MASK], 10 % a random word piece, 10 % kept.
With ``whole_word`` the pieces of a word are chosen together.

transformers' ``DataCollatorForLanguageModeling`` masks each token with probability 15 %
independently: the number of targets varies, with no cap P (the sparse MLM head needs
one), and its draws come from torch's global generator, which a resumed run or another
number of processes would not reproduce. Here each read draws from its own generator,
keyed by ``(seed, epoch, index)``: the masks of a sequence depend on nothing else, so an
interrupted run resumes with exactly the masks it would have drawn, and DDP ranks draw
exactly what one process would.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import ConfigError, TrainConfig
from ..hdf5_format import read_shard
from ..tokenization import (
    KEEP_SHARE,
    MASK_SHARE,
    VocabInfo,
    check_special_tokens,
    masked_counts,
    read_vocab,
)
from .data import IGNORE_INDEX, PretrainingDataset


def unmasked_tokens(
    input_ids: torch.Tensor, masked_lm_positions: torch.Tensor, masked_lm_ids: torch.Tensor
) -> torch.Tensor:
    """The sequence before masking: each original id put back at its position.

    ``masked_lm_ids`` holds ``-100`` in padded slots (as the dataset returns them), whose
    position 0 ([CLS]) is left alone. Works on one sequence or a batch.
    """
    used = masked_lm_ids != IGNORE_INDEX
    tokens = input_ids.clone()
    # Padded slots write [CLS]'s own id back onto position 0: a no-op.
    originals = torch.where(used, masked_lm_ids, input_ids.gather(-1, masked_lm_positions))
    return tokens.scatter_(-1, masked_lm_positions, originals)


def read_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one read: from ``(seed, epoch, index)`` only.

    numpy's ``SeedSequence`` hashes the three into a well-mixed 64-bit seed: neighbouring
    keys (index 7 and 8, epoch 0 and 1) give unrelated streams.
    """
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))  # a non-negative int64


class DynamicMasking:
    """Masks a sequence with the creator's rule; its draws come from a generator passed in."""

    def __init__(self, vocab: Mapping[str, int], masked_lm_prob: float, max_predictions: int,
                 whole_word: bool = False) -> None:
        if not 0.0 < masked_lm_prob < 1.0:
            raise ValueError(f"masked_lm_prob must be in (0, 1), got {masked_lm_prob}")
        info = VocabInfo.from_vocab(dict(vocab))
        self.masked_lm_prob = masked_lm_prob
        self.max_predictions = max_predictions
        self.whole_word = whole_word
        self.mask_id = info.mask_id
        self.never = torch.zeros(len(info.is_continuation), dtype=torch.bool)  # never a target
        self.never[[info.cls_id, info.sep_id]] = True
        self.continues = torch.tensor(info.is_continuation)  # "##" pieces
        self.replacements = torch.tensor(info.replacement_ids)

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One unmasked sequence ``[T]`` -> its masked ``input_ids``, ``labels`` and sparse pair."""
        length = int(attention_mask.sum())
        candidate = ~self.never[tokens]
        candidate[length:] = False  # padding
        wanted = int(masked_counts(length, self.masked_lm_prob, self.max_predictions))
        if self.whole_word:
            chosen = self._whole_words(tokens, candidate, wanted, generator)
        else:  # a uniformly random subset of the candidates: those with the smallest keys
            keys = torch.rand(tokens.shape, generator=generator)
            keys[~candidate] = 2.0
            chosen = keys.argsort()[:wanted]
            chosen = chosen[keys[chosen] < 2.0]  # fewer candidates than wanted: all of them
        positions = chosen.sort().values
        originals = tokens[positions]

        # 80 % [MASK], 10 % unchanged, 10 % a random word piece.
        draw = torch.rand(positions.shape, generator=generator)
        corrupted = torch.where(draw < MASK_SHARE, self.mask_id, originals)
        random_piece = draw >= MASK_SHARE + KEEP_SHARE
        picks = torch.randint(len(self.replacements), (int(random_piece.sum()),), generator=generator)
        corrupted[random_piece] = self.replacements[picks]

        input_ids = tokens.clone()
        input_ids[positions] = corrupted
        labels = torch.full_like(tokens, IGNORE_INDEX)
        labels[positions] = originals
        slots = torch.zeros(self.max_predictions, dtype=torch.long)  # padded slots: position 0,
        ids = torch.full((self.max_predictions,), IGNORE_INDEX, dtype=torch.long)  # id -100
        slots[: len(positions)], ids[: len(positions)] = positions, originals
        return {"input_ids": input_ids, "labels": labels,
                "masked_lm_positions": slots, "masked_lm_ids": ids}

    def _whole_words(self, tokens: torch.Tensor, candidate: torch.Tensor, wanted: int,
                     generator: torch.Generator) -> torch.Tensor:
        """Positions of whole words in a random order, a word skipped when it does not fit.

        As in the creator's whole-word masking: a "##" piece belongs to the word before it,
        unless that is [CLS]/[SEP] (a word never spans a [SEP]).
        """
        previous = torch.cat([torch.zeros(1, dtype=torch.bool), candidate[:-1]])
        starts = candidate & ~(self.continues[tokens] & previous)
        word = torch.cumsum(starts.long(), 0) - 1  # each candidate's word number
        sizes = torch.bincount(word[candidate], minlength=int(starts.sum()))
        chosen_words, count = [], 0
        for w in torch.randperm(len(sizes), generator=generator).tolist():
            if count + int(sizes[w]) <= wanted:
                chosen_words.append(w)
                count += int(sizes[w])
                if count == wanted:
                    break
        take = candidate & torch.isin(word, torch.tensor(chosen_words, dtype=torch.long))
        return take.nonzero().flatten()


class DynamicMaskingDataset(Dataset[dict[str, torch.Tensor]]):
    """A pre-training dataset whose sequences are masked anew at each read, keyed by
    ``(seed, epoch, index)``.

    It wraps a :class:`~bert_tutorial.core.data.PretrainingDataset` and yields the same
    fields. Its ``epoch`` is set by :meth:`ShardedSampler.set_epoch
    <bert_tutorial.core.data.ShardedSampler.set_epoch>` (which calls :meth:`set_epoch`);
    :func:`~bert_tutorial.core.data.make_dataloader` starts its worker processes afresh at
    each epoch for it, so they see the new epoch. Wrap it in nothing else (``Subset``,
    ``ConcatDataset``): a wrapper hides ``set_epoch``, and every epoch would draw epoch 0's
    masks. Masking costs about 0.3 ms of CPU per sequence: a fast GPU needs a few loader
    workers (``num_workers``) to keep up.
    """

    def __init__(self, dataset: PretrainingDataset, masking: DynamicMasking, seed: int) -> None:
        if masking.max_predictions != dataset.max_predictions:
            raise ValueError(f"masking draws {masking.max_predictions} predictions per sequence, "
                             f"the shards hold {dataset.max_predictions}")
        self.dataset = dataset
        self.masking = masking
        self.seed = seed
        self.epoch = 0
        # What the sampler and the run machinery read of a dataset.
        self.shard_sizes = dataset.shard_sizes
        self.max_seq_length = dataset.max_seq_length
        self.max_predictions = dataset.max_predictions
        self.shards = dataset.shards
        self.paths = dataset.paths

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.dataset[index]
        index = index % len(self)  # -1 and len - 1 are the same read
        tokens = unmasked_tokens(sample["input_ids"], sample["masked_lm_positions"],
                                 sample["masked_lm_ids"])
        fresh = self.masking(tokens, sample["attention_mask"],
                             read_generator(self.seed, self.epoch, index))
        return {**sample, **fresh}


def dynamic_masking_of(dataset: PretrainingDataset, cfg: TrainConfig) -> DynamicMaskingDataset:
    """``dataset`` re-masked at every read as ``cfg`` says (``masked_lm_prob``, whole words,
    ``seed``), after checking that the shards were masked at that rate."""
    vocab = read_vocab(cfg.vocab_file)
    try:  # masking writes [MASK] and skips [CLS]/[SEP]: a KeyError deep inside otherwise
        check_special_tokens(vocab, cfg.vocab_file)
    except ValueError as exc:
        raise ConfigError(f"{exc}; --masking dynamic needs it") from None
    check_masking_rate(dataset, cfg.masked_lm_prob)
    masking = DynamicMasking(vocab, cfg.masked_lm_prob, dataset.max_predictions,
                             whole_word=cfg.whole_word_masking)
    return DynamicMaskingDataset(dataset, masking, cfg.seed)


def check_masking_rate(dataset: PretrainingDataset, masked_lm_prob: float) -> None:
    """Refuse a rate under which the first shard's stored masks would have other counts.

    Dynamic masking is meant to change *which* tokens are hidden, not how many: at another
    rate than the shards' a comparison with static masking would compare two tasks. A
    shard made at the same rate agrees on (nearly) every row; whole-word masks fall short
    of the count now and then, when no remaining word fits.
    """
    arrays = read_shard(dataset.shards[0])  # not load_shard: the run's reader keeps no copy
    lengths = arrays["input_mask"].sum(axis=1, dtype=np.int64)
    stored = (arrays["masked_lm_positions"] != 0).sum(axis=1)
    wanted = masked_counts(lengths, masked_lm_prob, dataset.max_predictions)
    if np.mean(stored == wanted) < 0.9:
        # Rows below the cap P tell the rate (the cap hides it in the others).
        free = stored < dataset.max_predictions
        rate = float(np.median(stored[free] / lengths[free])) if free.any() else float("nan")
        raise ConfigError(
            f"{dataset.paths[0]}: its sequences hold {stored.mean():.2f} masked tokens on average "
            f"(made at a rate of about {rate:.2f}), --masked-lm-prob {masked_lm_prob} would mask "
            f"{wanted.mean():.2f}: give the rate the shards were made with (create_data "
            "--masked-lm-prob)")
