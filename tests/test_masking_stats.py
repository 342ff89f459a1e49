"""``bert_tutorial.teach.masking_stats``: counts over whole shards, their plot, the frequency baseline."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from shards import MASK, make_arrays
from tiny import SEQ_LENGTH, VOCAB_SIZE

from bert_tutorial.config import DATA_SAMPLES
from bert_tutorial.core.evaluation import frequency_baseline, masked_targets
from bert_tutorial.hdf5_format import write_shard
from bert_tutorial.teach.masking_stats import masking_statistics, plot_masking_statistics


def test_masking_statistics_of_the_sample_training_data(bert_tokenizer):
    stats = masking_statistics(DATA_SAMPLES / "train", bert_tokenizer)
    assert stats.sequences == 7455 and (stats.max_seq_length, stats.max_predictions) == (128, 20)
    assert 0.14 < stats.fraction_predicted < 0.155  # round(0.15 x length) per sequence
    assert stats.fraction_of_candidates > stats.fraction_predicted
    for kind, target in {"[MASK]": 0.8, "random": 0.1, "unchanged": 0.1}.items():
        assert stats.shares[kind] == pytest.approx(target, abs=0.01)
    assert stats.replaced_by_mask + stats.replaced_by_random + stats.unchanged == stats.predictions
    assert stats.nsp_random_fraction == pytest.approx(0.5445, abs=0.001)  # data_samples/README.md
    assert stats.lengths.shape == (7455,) and stats.lengths.max() <= 128
    assert stats.predictions_per_sequence.sum() == stats.predictions
    summary = stats.summary()
    assert summary["sequences"] == 7455 and summary["sequences using all P slots"] == 0.0
    fig = plot_masking_statistics(stats)
    assert isinstance(fig, Figure) and len(fig.axes) == 4


def test_masking_statistics_counts_exactly_on_a_hand_made_shard(tmp_path, toy_tokenizer):
    arrays = make_arrays(num_samples=12, seq_length=SEQ_LENGTH, max_predictions=4, seed=5)
    # Turn two [MASK] slots back into their originals and one into another word.
    rows = np.nonzero(arrays["masked_lm_positions"][:, 0])[0][:3]
    for n, r in enumerate(rows):
        pos = arrays["masked_lm_positions"][r, 0]
        arrays["input_ids"][r, pos] = arrays["masked_lm_ids"][r, 0] if n < 2 else 5 + (
            arrays["masked_lm_ids"][r, 0] - 4) % (VOCAB_SIZE - 5)
    write_shard(tmp_path / "a.hdf5", arrays)
    stats = masking_statistics(tmp_path / "a.hdf5", toy_tokenizer)
    used = arrays["masked_lm_positions"] != 0
    assert stats.predictions == used.sum() and stats.tokens == arrays["input_mask"].sum()
    assert (stats.unchanged, stats.replaced_by_random) == (2, 1)
    assert stats.replaced_by_mask == used.sum() - 3 == (arrays["input_ids"] == MASK).sum()
    assert stats.candidates == stats.tokens - 3 * 12  # [CLS] and two [SEP] per sequence
    assert stats.nsp_random_next == arrays["next_sentence_labels"].sum()


def test_frequency_baseline_by_hand(tmp_path):
    def shard(name, positions, ids):
        arrays = make_arrays(num_samples=len(ids), seq_length=SEQ_LENGTH, max_predictions=3)
        arrays["masked_lm_positions"] = np.array(positions, dtype=np.int32)
        arrays["masked_lm_ids"] = np.array(ids, dtype=np.int32)
        return write_shard(tmp_path / name, arrays)

    # Train labels: 7 three times, 8 once, 0 once (a used slot may hold any id; an unused
    # slot, position 0, is no label).
    train = shard("train.hdf5", [[1, 2, 0], [1, 2, 3]], [[7, 8, 0], [7, 7, 0]])
    evald = shard("eval.hdf5", [[1, 2, 0]], [[7, 9, 5]])
    assert masked_targets(train).tolist() == [7, 8, 7, 7, 0] and masked_targets(evald).tolist() == [7, 9]
    result = frequency_baseline(train, evald, vocab_size=VOCAB_SIZE, smoothing=0.0)
    assert result["mlm_accuracy"] == 0.5  # always "7": right for 7, wrong for 9
    assert result["mlm_loss"] == float("inf")  # 9 never seen and no smoothing
    smoothed = frequency_baseline(train, evald, vocab_size=VOCAB_SIZE, smoothing=1.0)
    p7, p9 = (3 + 1) / (5 + VOCAB_SIZE), (0 + 1) / (5 + VOCAB_SIZE)
    assert smoothed["mlm_loss"] == pytest.approx(-(np.log(p7) + np.log(p9)) / 2)
    assert smoothed["most_frequent"][0] == (7, pytest.approx(p7))


def test_frequency_baseline_names_a_shard_beyond_the_vocabulary(tmp_path):
    """Every shard is validated before its ids index the counts: a named error, no IndexError."""
    arrays = make_arrays(2, SEQ_LENGTH)
    arrays["masked_lm_ids"][0, 0] = VOCAB_SIZE + 3
    bad = write_shard(tmp_path / "eval.hdf5", arrays)
    good = write_shard(tmp_path / "train.hdf5", make_arrays(2, SEQ_LENGTH))
    with pytest.raises(ValueError, match="eval.hdf5: field 'masked_lm_ids'"):
        frequency_baseline(good, bad, vocab_size=VOCAB_SIZE)


def test_frequency_baseline_of_the_sample_data():
    result = frequency_baseline(DATA_SAMPLES / "train", DATA_SAMPLES / "eval", vocab_size=30522)
    assert 5.5 < result["mlm_loss"] < 7.0  # far below ln(30522) = 10.3
    assert 0.05 < result["mlm_accuracy"] < 0.09 and result["most_frequent"][0][0] == 1010  # ","
