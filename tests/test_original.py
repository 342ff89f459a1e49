"""``bert_tutorial.teach.original``: the original tutorial re-created, checked against the files and
against what it claims to compute, and the demonstrations of its mistakes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from shards import make_arrays
from tiny import SEQ_LENGTH, VOCAB_SIZE, hand_sample
from torch.utils.data import default_collate
from transformers import BertForPreTraining

from bert_tutorial.config import DATA_SAMPLES, TrainConfig
from bert_tutorial.core.data import (
    IGNORE_INDEX,
    PretrainingDataset,
    build_mlm_labels,
    make_dataloader,
)
from bert_tutorial.core.model import build_model
from bert_tutorial.hdf5_format import write_shard
from bert_tutorial.teach import original
from bert_tutorial.teach.original import (
    OriginalDataset,
    compare_mlm_heads,
    data_parallel_demo,
    to_original_batch,
)


def tiny_bert(seed: int = 0, vocab: int = VOCAB_SIZE, positions: int = SEQ_LENGTH) -> BertForPreTraining:
    torch.manual_seed(seed)
    cfg = TrainConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=positions)
    return build_model(cfg, vocab)


def test_original_labels_use_minus_one_and_label_cls_with_pad():
    s = hand_sample()
    padded = torch.as_tensor(np.pad(s["masked_lm_positions"], (0, 6)))  # as the dataset pads to T
    labels = original.labels(padded, torch.as_tensor(np.pad(s["masked_lm_ids"], (0, 6)))).numpy()
    assert labels.tolist() == [0, -1, 6, -1, -1, 9, 8, -1, -1, -1]  # [PAD] label on [CLS]
    fixed, _ = build_mlm_labels(s["masked_lm_positions"], s["masked_lm_ids"], 10)
    assert fixed.tolist() == [IGNORE_INDEX, IGNORE_INDEX, 6, IGNORE_INDEX, IGNORE_INDEX, 9, 8,
                              IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    logits = torch.zeros(10, VOCAB_SIZE)
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(logits, torch.as_tensor(labels))
    assert torch.isfinite(F.cross_entropy(logits, torch.as_tensor(fixed)))


def test_compare_mlm_heads_same_loss_fewer_logits(tmp_path):
    write_shard(tmp_path / "a.hdf5", make_arrays(num_samples=8, seq_length=SEQ_LENGTH, max_predictions=4))
    data = PretrainingDataset(tmp_path / "a.hdf5")
    batch = default_collate([data[i] for i in range(8)])
    bert = tiny_bert().train()
    result = compare_mlm_heads(bert, batch, repeats=1)
    sparse, full = result["sparse head"], result["full head"]
    assert sparse["mlm_loss"] == pytest.approx(full["mlm_loss"], rel=1e-5)
    assert full["logits"] / sparse["logits"] == SEQ_LENGTH / 4
    assert full["logits"] == 8 * SEQ_LENGTH * VOCAB_SIZE
    assert sparse["seconds_fwd_bwd"] > 0 and full["logits_mib_fp32"] == full["logits"] * 4 / 2**20
    assert bert.training and all(p.grad is None for p in bert.parameters())


def test_original_dataset_holds_every_row_with_padded_fields_and_slots():
    eval_dir = DATA_SAMPLES / "eval"
    data = OriginalDataset(eval_dir, max_seq_length=512)
    ours = PretrainingDataset(eval_dir)
    assert len(data) == len(ours) == 301
    short = min(range(len(ours)), key=lambda i: int(ours[i]["attention_mask"].sum()))  # a padded row
    item, mine = data[short], ours[short]
    assert item["input_ids"].shape == (512,) and item["masked_lm_positions"].shape == (512,)
    assert torch.equal(item["input_ids"][:128], mine["input_ids"]) and not item["input_ids"][128:].any()
    assert item["attention_mask"][:128].all()  # the file's padding attended to; ours from input_mask
    assert not mine["attention_mask"].all()
    real = mine["masked_lm_ids"] != IGNORE_INDEX
    assert torch.equal(item["masked_lm_positions"][:20][real], mine["masked_lm_positions"][real])


@pytest.mark.parametrize("folder", ["eval", "bible-eval"])
def test_original_attention_mask_is_ones_over_the_files_length_then_zero_padded(folder):
    """The original made the mask ones over the row as stored (T long, its padding included)
    and then zero-padded it to ``max_seq_length`` like every other field, or cut it."""
    data_dir = DATA_SAMPLES / folder
    with h5py.File(sorted(data_dir.glob("*.hdf5"))[0], "r") as f:
        t = f["input_ids"].shape[1]
        padded_rows = np.flatnonzero(f["input_mask"][()].sum(axis=1) < t)
    assert t < 512 and len(padded_rows) > 0
    expected = torch.cat([torch.ones(t, dtype=torch.long), torch.zeros(512 - t, dtype=torch.long)])
    data = OriginalDataset(data_dir, max_seq_length=512)
    for index in (0, int(padded_rows[0])):
        mask = data[index]["attention_mask"]
        assert mask.dtype == torch.long and torch.equal(mask, expected), index
    cut = OriginalDataset(data_dir, max_seq_length=t // 2)[int(padded_rows[0])]["attention_mask"]
    assert torch.equal(cut, torch.ones(t // 2, dtype=torch.long))


def test_to_original_batch_equals_the_original_dataset_at_the_shards_length():
    eval_dir = DATA_SAMPLES / "eval"
    originals = default_collate([OriginalDataset(eval_dir, max_seq_length=128)[i] for i in range(4)])
    batch = next(iter(make_dataloader(PretrainingDataset(eval_dir), 4, shuffle=False, seed=0)))
    converted = to_original_batch(batch)
    assert converted.keys() == originals.keys()
    for key in converted:
        assert torch.equal(converted[key], originals[key]), key


def test_original_loss_is_consistent_with_its_own_minus_one_but_not_with_hf_labels():
    arrays = make_arrays(num_samples=4, seq_length=SEQ_LENGTH, max_predictions=4, seed=3)
    batch = _tiny_batch(arrays)
    bert = tiny_bert().eval()
    labels = original.labels(batch["masked_lm_positions"], batch["masked_lm_ids"])
    assert (labels[:, 0] == 0).all()  # the spurious [PAD] label on every [CLS]
    hf = bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
              attention_mask=batch["attention_mask"], labels=labels.masked_fill(labels == -1, -100),
              next_sentence_label=batch["next_sentence_labels"])
    torch.testing.assert_close(original.loss(bert, batch), hf.loss)  # -1 with ignore_index=-1: fine
    with pytest.raises(IndexError):  # -1 handed to a Hugging Face model's labels=: out of range
        bert(input_ids=batch["input_ids"], labels=labels, next_sentence_label=batch["next_sentence_labels"])
    with pytest.raises(AttributeError, match="config"):  # model.config on a wrapped model
        original.loss(torch.nn.DataParallel(bert), batch)


def _tiny_batch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    from bert_tutorial.core.data import sample_to_tensors

    return to_original_batch(sample_to_tensors(arrays, slice(None)))


def test_original_step_trains_and_evaluation_is_a_mean_of_batch_means(tmp_path):
    write_shard(tmp_path / "a.hdf5", make_arrays(num_samples=10, seq_length=SEQ_LENGTH,
                                                 max_predictions=4, seed=5))
    data = OriginalDataset(tmp_path, max_seq_length=SEQ_LENGTH)
    bert = tiny_bert().train()
    optimizer = original.optimizer(bert)
    scheduler = original.scheduler(optimizer, total_steps=10)
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.param_groups[0]["weight_decay"] == 0.01
    before = bert.bert.embeddings.word_embeddings.weight.clone()
    batch = default_collate([data[i] for i in range(4)])
    loss = original.train_step(bert, batch, optimizer, scheduler, torch.device("cpu"))
    assert torch.isfinite(loss) and torch.equal(before, bert.bert.embeddings.word_embeddings.weight)
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-3)  # step 0 had LR 0; warmup 0.1 * 10 = 1.0
    original.train_step(bert, batch, optimizer, scheduler, torch.device("cpu"))
    assert not torch.equal(before, bert.bert.embeddings.word_embeddings.weight)

    result = original.evaluate(bert, data, torch.device("cpu"), batch_size=4)  # batches of 4, 4, 2
    assert not bert.training  # left in eval mode, as the original did
    per_batch, correct, labelled = [], 0, 0
    with torch.no_grad():
        for start in (0, 4, 8):
            b = default_collate([data[i] for i in range(start, min(start + 4, 10))])
            labels = original.labels(b["masked_lm_positions"], b["masked_lm_ids"])
            scores = bert(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                          attention_mask=b["attention_mask"]).prediction_logits
            per_batch.append(F.cross_entropy(scores.view(-1, VOCAB_SIZE), labels.view(-1), ignore_index=-1))
            keep = labels != -1
            correct += int((scores.argmax(-1)[keep] == labels[keep]).sum())
            labelled += int(keep.sum())
    assert result["mlm_loss"] == pytest.approx(float(torch.stack(per_batch).mean()), rel=1e-6)
    assert result["labelled_tokens"] == labelled  # includes one [CLS] label per sequence
    assert result["mlm_accuracy"] == pytest.approx(correct / labelled)


def test_data_parallel_demo_runs_where_data_parallel_passes_through():
    arrays = make_arrays(num_samples=4, seq_length=SEQ_LENGTH, max_predictions=4, seed=2)
    from bert_tutorial.core.data import sample_to_tensors

    batch = sample_to_tensors(arrays, slice(None))
    result = data_parallel_demo(lambda: tiny_bert(), batch, device_ids=[0], steps=1)
    assert result["single_seq_per_s"] > 0 and result["data_parallel_seq_per_s"] > 0
