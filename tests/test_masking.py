"""``--masking vectorized`` (the default): whole shards masked with numpy, by Google's rules.

Google's draws are checked draw for draw in ``test_create_equivalence.py``; the vectorised
masking draws from another stream, so here it is checked rule by rule on the sample book,
and its shards are compared with ``--masking google``'s by their distributions.
"""

from __future__ import annotations

import random
from pathlib import Path

import h5py
import numpy as np
import pytest

from bert_tutorial.config import DATA_SAMPLES
from bert_tutorial.create_data.cli import CreationOptions, create_pretraining_data, main
from bert_tutorial.create_data.corpus import gutenberg_to_documents, tokenize_documents
from bert_tutorial.create_data.instances import InstanceOptions, create_instances
from bert_tutorial.create_data.masking import mask_arrays, shard_generator
from bert_tutorial.create_data.shard_writer import instances_to_arrays
from bert_tutorial.create_data.wordpiece import WordPieceTokenizer
from bert_tutorial.tokenization import VocabInfo

VOCAB = DATA_SAMPLES / "vocab.txt"
BOOK = DATA_SAMPLES / "corpus" / "pride-and-prejudice.txt"
T, P = 128, 20


@pytest.fixture(scope="module")
def book() -> tuple[list[list[list[int]]], VocabInfo]:
    """The sample book's chapters as token ids, and its vocabulary's special ids."""
    tokenizer = WordPieceTokenizer.from_file(VOCAB)
    chapters = gutenberg_to_documents(BOOK.read_text(encoding="utf-8-sig"))
    return list(tokenize_documents(chapters, tokenizer)), VocabInfo.from_vocab(tokenizer.get_vocab())


def unmasked_arrays(book, masked_lm_prob: float = 0.15, predictions: int = P) -> dict[str, np.ndarray]:
    """Shard arrays of one pass over the book, made without masking (as the writer receives them)."""
    documents, vocab = book
    options = InstanceOptions(T, masked_lm_prob=masked_lm_prob, max_predictions_per_seq=predictions)
    instances = list(create_instances(documents, options, vocab, random.Random(3), mask=False))
    assert all(len(i.masked_lm_positions) == 0 for i in instances)
    return instances_to_arrays(instances, T, predictions)


@pytest.mark.parametrize("masked_lm_prob, predictions", [(0.15, 20), (0.4, 64)])
def test_masks_follow_googles_rules_on_the_sample_book(book, masked_lm_prob, predictions):
    """Counts, positions, labels and the 80/10/10 corruption, row by row."""
    _, vocab = book
    arrays = unmasked_arrays(book, masked_lm_prob, predictions)
    original = arrays["input_ids"].copy()
    mask_arrays(arrays, vocab, masked_lm_prob, shard_generator(12345, 0))
    ids, positions, labels = arrays["input_ids"], arrays["masked_lm_positions"], arrays["masked_lm_ids"]
    lengths = arrays["input_mask"].sum(axis=1)
    chosen = labels != 0
    counts = chosen.sum(axis=1)
    # round(length * prob) targets, [CLS] and the two [SEP] counted, at least 1, at most P
    assert (counts == np.minimum(predictions, np.maximum(1, np.rint(lengths * masked_lm_prob)))).all()
    assert (np.sort(~chosen, axis=1) == ~chosen).all()  # targets first, padding after
    assert (positions[~chosen] == 0).all()
    for row in range(len(ids)):
        where = positions[row, : counts[row]]
        assert (np.diff(where) > 0).all() and where.min() > 0 and where.max() < lengths[row] - 1
        assert not np.isin(original[row, where], [vocab.cls_id, vocab.sep_id]).any()
    rows = np.repeat(np.arange(len(ids)), counts)
    targets = positions[chosen]
    assert (labels[chosen] == original[rows, targets]).all()  # labels are the original ids
    untouched = np.ones_like(ids, dtype=bool)
    untouched[rows, targets] = False
    assert (ids[untouched] == original[untouched]).all()  # nothing else changed
    now = ids[rows, targets]
    masked = (now == vocab.mask_id).mean()
    kept = (now == labels[chosen]).mean()
    replaced = ~np.isin(now, [vocab.mask_id]) & (now != labels[chosen])
    assert len(now) > 20_000
    assert abs(masked - 0.8) < 0.012 and abs(kept - 0.1) < 0.01 and abs(replaced.mean() - 0.1) < 0.01
    assert np.isin(now[replaced], vocab.replacement_ids).all()  # real word pieces only


def test_fewer_candidates_than_targets_masks_them_all(book):
    """masked_lm_prob 1 on [CLS] a b [SEP] c [SEP]: 6 targets wanted, the 3 word pieces chosen."""
    _, vocab = book
    ids = np.zeros((2, 8), np.int32)
    ids[:, :6] = [vocab.cls_id, 2000, 2001, vocab.sep_id, 2002, vocab.sep_id]
    arrays = {"input_ids": ids, "input_mask": (ids != 0).astype(np.int8),
              "masked_lm_positions": np.zeros((2, 8), np.int32),
              "masked_lm_ids": np.zeros((2, 8), np.int32)}
    mask_arrays(arrays, vocab, 1.0, shard_generator(0, 0))
    assert arrays["masked_lm_positions"].tolist() == [[1, 2, 4, 0, 0, 0, 0, 0]] * 2
    assert arrays["masked_lm_ids"].tolist() == [[2000, 2001, 2002, 0, 0, 0, 0, 0]] * 2


def test_each_shard_file_and_text_has_its_own_generator(tmp_path):
    """Same key -> same draws; any part changed -> other draws; any integer seed works."""
    text = np.arange(12, dtype=np.int32).reshape(3, 4)
    draw = lambda *key: shard_generator(*key).random(4).tolist()  # noqa: E731
    assert draw(7, 0) == draw(7, 0) and draw(7, 2, "a", text) == draw(7, 2, "a", text.copy())
    keys = [(7, 0), (8, 0), (7, 1), (7, 0, "a"), (7, 0, "b"), (7, 0, "a", text), (7, 0, "a", text + 1),
            (-1, 0), (2**32, 0), (0, 1), (2**70, 3)]  # 2**32 and (0, 1) would collide as raw entropy
    assert len({str(draw(*key)) for key in keys}) == len(keys)
    args = ["--input", str(BOOK), "--gutenberg", "--documents", "0:3", "--vocab-file", str(VOCAB),
            "--quiet", "--output-dir", str(tmp_path / "negative"), "--seed", "-1"]
    assert main(args) == 0 and len(list((tmp_path / "negative").glob("*.hdf5"))) == 1


def shard_statistics(folder: Path, vocab: VocabInfo) -> dict[str, float | np.ndarray]:
    """What must not depend on the masking mode: shares of targets and corruptions, NSP, lengths."""
    ids, mask, positions, labels, nsp = (np.concatenate([h5py.File(p)[name][:] for p in sorted(
        folder.glob("*.hdf5"))]) for name in ("input_ids", "input_mask", "masked_lm_positions",
                                               "masked_lm_ids", "next_sentence_labels"))
    chosen = labels != 0
    now = ids[np.arange(len(ids))[:, None], positions][chosen]
    lengths = mask.sum(axis=1)
    return {
        "sequences": len(ids),
        "target share": chosen.sum() / lengths.sum(),
        "[MASK] share": (now == vocab.mask_id).mean(),
        "unchanged share": (now == labels[chosen]).mean(),
        "random-next share": nsp.mean(),
        "length histogram": np.histogram(lengths, bins=[0, 32, 64, 96, 125, 128, 129])[0] / len(ids),
    }


def test_vectorized_and_google_masking_make_the_same_distributions(tmp_path, book):
    """The book as ~740 documents of 8 sentences, dupe factor 3, both ways: the same shares.

    Packing draws are the same code in both modes but a different stream (Google's mask
    draws sit between them), so instance counts, NSP labels and lengths differ by
    sampling noise: seed to seed within one mode they move by up to 1.3 % (count) and
    1.6 points (NSP share, each length bin), hence the tolerances.
    """
    chapters = gutenberg_to_documents(BOOK.read_text(encoding="utf-8-sig"))
    sentences = [sentence for chapter in chapters for sentence in chapter]
    corpus = tmp_path / "documents.txt"  # one sentence per line, a blank line between documents
    corpus.write_text("\n\n".join("\n".join(sentences[i : i + 8]) for i in range(0, len(sentences), 8)))
    stats = {}
    for masking in ("vectorized", "google"):
        options = CreationOptions(InstanceOptions(T), dupe_factor=3, seed=1, masking=masking)
        create_pretraining_data([corpus], VOCAB, tmp_path / masking, options, progress=False)
        stats[masking] = shard_statistics(tmp_path / masking, book[1])
    vectorized, google = stats["vectorized"], stats["google"]
    assert google["sequences"] > 6000
    assert abs(vectorized["sequences"] / google["sequences"] - 1) < 0.03
    assert abs(vectorized["target share"] - google["target share"]) < 0.001
    assert abs(vectorized["[MASK] share"] - google["[MASK] share"]) < 0.01
    assert abs(vectorized["unchanged share"] - google["unchanged share"]) < 0.01
    assert abs(vectorized["random-next share"] - google["random-next share"]) < 0.025
    assert np.abs(vectorized["length histogram"] - google["length histogram"]).max() < 0.025


def test_whole_word_masking_is_drawn_googles_way(tmp_path):
    """The flag alone picks --masking google; asking for both by name is a clear error."""
    args = ["--input", str(BOOK), "--gutenberg", "--documents", "0:3", "--vocab-file", str(VOCAB),
            "--whole-word-masking", "--quiet"]
    assert main([*args, "--output-dir", str(tmp_path / "ok")]) == 0
    with pytest.raises(ValueError, match="--masking google"):
        CreationOptions(InstanceOptions(whole_word_masking=True), masking="vectorized").validate()
    with pytest.raises(ValueError, match="masking must be 'vectorized' or 'google'"):
        CreationOptions(masking="numpy").validate()  # type: ignore[arg-type]
