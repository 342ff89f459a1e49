"""``bert_tutorial.teach.decode``: shards and single samples decoded, and a batch as heatmaps."""

from __future__ import annotations

import numpy as np
from shards import make_arrays
from tiny import SEQ_LENGTH, hand_sample
from torch.utils.data import default_collate

from bert_tutorial.config import DATA_SAMPLES
from bert_tutorial.core.data import IGNORE_INDEX, PretrainingDataset
from bert_tutorial.hdf5_format import write_shard
from bert_tutorial.teach.decode import (
    batch_categories,
    decode_sample,
    load_shard,
    masked_tokens,
    masked_tokens_table,
    plot_batch,
    sample_at,
)

TRAIN_SHARD = DATA_SAMPLES / "train" / "train_shard_00000.hdf5"




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


def test_plot_batch_has_a_legend_per_panel_and_its_own_colour_for_padding(tmp_path):
    write_shard(tmp_path / "s.hdf5", make_arrays(num_samples=6, seq_length=SEQ_LENGTH, max_predictions=4))
    data = PretrainingDataset(tmp_path / "s.hdf5")
    batch = default_collate([data[i] for i in range(6)])
    real = batch["attention_mask"].numpy() == 1
    assert not real.all()  # the batch has padding to show

    codes = batch_categories(batch)
    assert (codes["attention_mask"] == real).all()
    segment = batch["token_type_ids"].numpy()
    target = batch["labels"].numpy() != IGNORE_INDEX
    for key in ("token_type_ids", "labels"):
        assert (codes[key][~real] == 0).all()  # padding, not "segment A" / "no label"
    assert (codes["token_type_ids"][real] == 1 + segment[real]).all()
    assert (codes["labels"][real] == 1 + target[real]).all() and target[real].any()

    fig = plot_batch(batch, tmp_path / "batch.png")
    assert (tmp_path / "batch.png").stat().st_size > 0
    panels, bars = fig.axes[:3], fig.axes[3:]
    assert len(bars) == 3  # one colour bar per heatmap
    for ax, key in zip(panels, ("attention_mask", "token_type_ids", "labels"), strict=True):
        assert (np.asarray(ax.images[0].get_array()) == codes[key]).all()
    legends = [[t.get_text() for t in bar.get_yticklabels()] for bar in bars]
    assert legends[1] == ["padding", "segment A (0)", "segment B (1)"]
    assert legends[2] == ["padding", "-100: no label", "MLM target"]
    pad_colours = {tuple(ax.images[0].cmap(ax.images[0].norm(0))) for ax in panels}
    assert len(pad_colours) == 1  # padding has one colour everywhere...
    segment_a = panels[1].images[0].cmap(panels[1].images[0].norm(1))
    assert tuple(segment_a) not in pad_colours  # ...and it is not segment A's
