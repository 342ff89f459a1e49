"""The notebooks' helpers: decoding samples, masking statistics, pitfall demos, fill-mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from shards import MASK, make_arrays
from tiny import SEQ_LENGTH, VOCAB_SIZE, write_vocab
from torch.utils.data import default_collate
from transformers import BertForPreTraining

from bert_tutorial.config import DATA_SAMPLES, TrainConfig
from bert_tutorial.data import IGNORE_INDEX, PretrainingDataset, build_mlm_labels
from bert_tutorial.hdf5_format import write_shard
from bert_tutorial.inspection import (
    FillMaskResult,
    attention_mask_demo,
    compare_mlm_heads,
    decode_sample,
    fill_mask,
    fill_mask_table,
    frequency_baseline,
    load_shard,
    make_sample_shards,
    masked_targets,
    masked_tokens,
    masked_tokens_table,
    masking_statistics,
    original_tutorial_labels,
    plot_batch,
    plot_before_after,
    plot_masking_statistics,
    sample_at,
)
from bert_tutorial.model import PretrainingModel, build_model
from bert_tutorial.tokenization import load_tokenizer

TRAIN_SHARD = DATA_SAMPLES / "train" / "train_shard_00000.hdf5"


@pytest.fixture(scope="module")
def bert_tokenizer():
    return load_tokenizer(DATA_SAMPLES / "vocab.txt")


@pytest.fixture
def toy_tokenizer(tmp_path):
    return load_tokenizer(write_vocab(tmp_path / "vocab.txt"))


def tiny_bert(seed: int = 0, vocab: int = VOCAB_SIZE, positions: int = SEQ_LENGTH) -> BertForPreTraining:
    torch.manual_seed(seed)
    cfg = TrainConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=positions)
    return build_model(cfg, vocab)


def hand_sample() -> dict[str, np.ndarray]:
    """[CLS] w5 [MASK] w7 [SEP] w9 w10 [SEP] + 2 padding; slots: [MASK]->w6, w9 kept, w10 for w8."""
    return {
        "input_ids": np.array([2, 5, 4, 7, 3, 9, 10, 3, 0, 0]),
        "input_mask": np.array([1] * 8 + [0] * 2),
        "segment_ids": np.array([0] * 5 + [1] * 3 + [0] * 2),
        "masked_lm_positions": np.array([2, 5, 6, 0]),
        "masked_lm_ids": np.array([6, 9, 8, 0]),
        "next_sentence_labels": np.array(1),
    }


# --- decoding ------------------------------------------------------------------------------------


def test_decode_sample_marks_every_slot_with_what_is_seen_and_the_label(toy_tokenizer):
    text = decode_sample(toy_tokenizer, hand_sample())
    assert text == "[CLS] w5 [MASK→w6] w7 [SEP] [w9→w9] [w10→w8] [SEP]  (+ 2 x [PAD])"
    assert decode_sample(toy_tokenizer, hand_sample(), show_padding=False).endswith("[SEP]")


def test_masked_tokens_classifies_mask_random_and_unchanged(toy_tokenizer):
    rows = masked_tokens(toy_tokenizer, hand_sample())
    assert [(m.position, m.seen, m.original, m.kind) for m in rows] == [
        (2, "[MASK]", "w6", "[MASK]"), (5, "w9", "w9", "unchanged"), (6, "w10", "w8", "random"),
    ]
    table = masked_tokens_table(toy_tokenizer, hand_sample()).splitlines()
    assert table[0].split() == ["position", "model", "sees", "original", "(label)", "kind"]
    assert len(table) == 2 + 3 and table[-1].split() == ["6", "w10", "w8", "random"]


def test_decode_glues_wordpieces_except_at_prediction_slots(bert_tokenizer):
    ids = bert_tokenizer("so unforgiving")["input_ids"]
    pieces = bert_tokenizer.convert_ids_to_tokens(ids)
    assert pieces[2:5] == ["un", "##for", "##giving"]
    plain = {"input_ids": np.array(ids), "masked_lm_positions": np.zeros(3, dtype=int),
             "masked_lm_ids": np.zeros(3, dtype=int)}
    assert decode_sample(bert_tokenizer, plain) == "[CLS] so unforgiving [SEP]"
    assert decode_sample(bert_tokenizer, plain, merge_wordpieces=False) == "[CLS] so un ##for ##giving [SEP]"
    masked = dict(plain, input_ids=np.array(ids[:3] + [bert_tokenizer.mask_token_id] + ids[4:]),
                  masked_lm_positions=np.array([3, 0, 0]), masked_lm_ids=np.array([ids[3], 0, 0]))
    assert decode_sample(bert_tokenizer, masked) == "[CLS] so un [MASK→##for] ##giving [SEP]"


def test_shard_row_and_dataset_item_decode_identically(bert_tokenizer):
    arrays = load_shard(TRAIN_SHARD)
    data = PretrainingDataset(TRAIN_SHARD)
    for index in (0, 7, 1234):
        row, item = sample_at(arrays, index), data[index]
        text = decode_sample(bert_tokenizer, row)
        assert text == decode_sample(bert_tokenizer, item)
        assert text.startswith("[CLS] ") and text.count("[SEP]") == 2
        used = int((row["masked_lm_positions"] != 0).sum())
        assert text.count("→") == used == len(masked_tokens(bert_tokenizer, item))


# --- masking statistics --------------------------------------------------------------------------


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
    result = frequency_baseline(train, evald, vocab_size=10, smoothing=0.0)
    assert result["mlm_accuracy"] == 0.5  # always "7": right for 7, wrong for 9
    assert result["mlm_loss"] == float("inf")  # 9 never seen and no smoothing
    smoothed = frequency_baseline(train, evald, vocab_size=10, smoothing=1.0)
    p7, p9 = (3 + 1) / (5 + 10), (0 + 1) / (5 + 10)
    assert smoothed["mlm_loss"] == pytest.approx(-(np.log(p7) + np.log(p9)) / 2)
    assert smoothed["most_frequent"][0] == (7, pytest.approx(p7))


def test_frequency_baseline_of_the_sample_data():
    result = frequency_baseline(DATA_SAMPLES / "train", DATA_SAMPLES / "eval", vocab_size=30522)
    assert 5.5 < result["mlm_loss"] < 7.0  # far below ln(30522) = 10.3
    assert 0.05 < result["mlm_accuracy"] < 0.09 and result["most_frequent"][0][0] == 1010  # ","


# --- the original tutorial's pitfalls ------------------------------------------------------------


def test_original_labels_use_minus_one_and_label_cls_with_pad(toy_tokenizer):
    s = hand_sample()
    labels = original_tutorial_labels(s["masked_lm_positions"], s["masked_lm_ids"], 10)
    assert labels.tolist() == [0, -1, 6, -1, -1, 9, 8, -1, -1, -1]  # [PAD] label on [CLS]
    fixed, _ = build_mlm_labels(s["masked_lm_positions"], s["masked_lm_ids"], 10)
    assert fixed.tolist() == [IGNORE_INDEX, IGNORE_INDEX, 6, IGNORE_INDEX, IGNORE_INDEX, 9, 8,
                              IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    logits = torch.zeros(10, VOCAB_SIZE)
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(logits, torch.as_tensor(labels))
    assert torch.isfinite(F.cross_entropy(logits, torch.as_tensor(fixed)))


def test_attention_mask_demo_padding_is_invisible_only_with_the_real_mask(tmp_path):
    arrays = make_arrays(num_samples=6, seq_length=SEQ_LENGTH, max_predictions=4, seed=1)
    write_shard(tmp_path / "a.hdf5", arrays)
    data = PretrainingDataset(tmp_path / "a.hdf5")
    index = int(np.argmin(arrays["input_mask"].sum(1)))
    assert arrays["input_mask"][index].sum() < SEQ_LENGTH and arrays["masked_lm_positions"][index, 0]
    bert = tiny_bert().train()
    result = attention_mask_demo(PretrainingModel(bert), data[index])
    assert bert.training  # mode restored
    assert result["real_tokens"] + result["padding"] == SEQ_LENGTH
    assert result["max_abs_diff_correct_mask"] < 1e-5
    assert result["mlm_loss_correct_mask"] == pytest.approx(result["mlm_loss_trimmed"], rel=1e-5)
    assert result["max_abs_diff_all_ones_mask"] > 1e-3
    assert result["mlm_loss_all_ones_mask"] != pytest.approx(result["mlm_loss_trimmed"], rel=1e-6)


def test_compare_mlm_heads_same_loss_fewer_logits(tmp_path):
    write_shard(tmp_path / "a.hdf5", make_arrays(num_samples=8, seq_length=SEQ_LENGTH, max_predictions=4))
    data = PretrainingDataset(tmp_path / "a.hdf5")
    batch = default_collate([data[i] for i in range(8)])
    bert = tiny_bert().train()
    result = compare_mlm_heads(bert, batch, repeats=1)
    sparse, full = result["masked-only head"], result["full head"]
    assert sparse["mlm_loss"] == pytest.approx(full["mlm_loss"], rel=1e-5)
    assert full["logits"] / sparse["logits"] == SEQ_LENGTH / 4
    assert full["logits"] == 8 * SEQ_LENGTH * VOCAB_SIZE
    assert sparse["seconds_fwd_bwd"] > 0 and full["logits_mib_fp32"] == full["logits"] * 4 / 2**20
    assert bert.training and all(p.grad is None for p in bert.parameters())


# --- fill-mask and before/after ------------------------------------------------------------------


def test_fill_mask_matches_the_stock_head_and_ignores_batch_padding(toy_tokenizer):
    bert = tiny_bert().train()
    sentences = ["w5 [MASK] w7", "w8 w9 [MASK] w10 w11 w12 [MASK] w13"]
    results = fill_mask(bert, toy_tokenizer, sentences, top_k=3)
    assert bert.training
    assert [len(r.predictions) for r in results] == [1, 2]
    assert all(len(options) == 3 for r in results for options in r.predictions)
    probs = [p for _, p in results[1].predictions[1]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1

    # The short sentence alone (no padding) gives the same answer as inside the padded batch.
    alone = fill_mask(bert, toy_tokenizer, sentences[:1], top_k=3)[0]
    for (tok_a, p_a), (tok_b, p_b) in zip(alone.predictions[0], results[0].predictions[0], strict=True):
        assert tok_a == tok_b and p_a == pytest.approx(p_b, abs=1e-5)

    # Same as the stock BertForPreTraining forward over all positions.
    enc = toy_tokenizer(sentences[:1], return_tensors="pt")
    with torch.no_grad():
        logits = bert.eval()(**enc).prediction_logits[0, 2]
    top = logits.softmax(-1).topk(3)
    assert [t for t, _ in alone.predictions[0]] == toy_tokenizer.convert_ids_to_tokens(top.indices.tolist())
    assert [p for _, p in alone.predictions[0]] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_fill_mask_rejects_sentences_without_mask(toy_tokenizer):
    with pytest.raises(ValueError, match="without"):
        fill_mask(tiny_bert(), toy_tokenizer, ["w5 w6"])
    assert fill_mask(tiny_bert(), toy_tokenizer, []) == []


def test_fill_mask_table_and_filled():
    r = FillMaskResult("a [MASK] b [MASK]", [[("x", 0.5), ("y", 0.25)], [("z", 0.75)]])
    assert r.filled() == "a <x> b <z>"
    table = fill_mask_table({"before": [r], "after": [r]}, top_k=1)
    assert table.splitlines() == [
        "a [MASK] b [MASK]",
        "  [MASK] 1 before: x 50.0%",
        "  [MASK] 1 after : x 50.0%",
        "  [MASK] 2 before: z 75.0%",
        "  [MASK] 2 after : z 75.0%",
    ]


def test_plots_return_figures(tmp_path):
    data_dir = tmp_path / "s.hdf5"
    write_shard(data_dir, make_arrays(num_samples=4, seq_length=SEQ_LENGTH, max_predictions=4))
    data = PretrainingDataset(data_dir)
    batch = default_collate([data[i] for i in range(4)])
    fig = plot_batch(batch, tmp_path / "batch.png")
    assert len(fig.axes) == 3 and (tmp_path / "batch.png").stat().st_size > 0
    metrics = {"before": {"mlm_accuracy": 0.0, "nsp_accuracy": 0.5, "mlm_loss": 10.3},
               "after": {"mlm_accuracy": 0.07, "nsp_accuracy": 0.55, "mlm_loss": 7.8}}
    assert len(plot_before_after(metrics, tmp_path / "ba.png").axes) == 3


# --- shards for a full run -----------------------------------------------------------------------


def test_make_sample_shards_builds_once_and_reuses(tmp_path):
    paths = make_sample_shards(tmp_path / "d64", max_seq_length=64, progress=False)
    train = PretrainingDataset(paths["train_data"])
    evald = PretrainingDataset(paths["eval_data"])
    assert (train.max_seq_length, train.max_predictions) == (64, 10)
    assert len(train) > 7455 and 0 < len(evald) < len(train)  # shorter sequences, more of them
    first = {p: p.stat().st_mtime_ns for p in train.paths}
    again = make_sample_shards(tmp_path / "d64", max_seq_length=64, progress=False)
    assert again == paths and {p: p.stat().st_mtime_ns for p in train.paths} == first
