"""The original tutorial's mistakes, demonstrated (``bert_tutorial._original_demos``).

Temporary home: the lead merges these into ``tests/test_original.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from shards import make_arrays
from tiny import SEQ_LENGTH, VOCAB_SIZE
from torch.utils.data import default_collate
from transformers import BertForPreTraining

from bert_tutorial._original_demos import (
    attention_mask_demo,
    compare_mlm_heads,
    original_tutorial_labels,
)
from bert_tutorial.config import TrainConfig
from bert_tutorial.data import IGNORE_INDEX, PretrainingDataset, build_mlm_labels
from bert_tutorial.hdf5_format import write_shard
from bert_tutorial.model import PretrainingModel, build_model


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


def test_original_labels_use_minus_one_and_label_cls_with_pad():
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
