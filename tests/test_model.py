"""The model wrapper and its loss: sparse head == full head, no NaN, overfitting, unwrapping."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn
from transformers import BertForPreTraining

from bert_tutorial.config import TrainConfig
from bert_tutorial.core.data import PretrainingDataset, build_mlm_labels
from bert_tutorial.core.model import PretrainingModel, build_model, unwrap
from bert_tutorial.pretrain.speed import prepared_attention_mask

#: transformers 4.x builds the additive mask itself, from the dtype's minimum: the package
#: hands it the 1/0 mask, so the additive mask of the tests below is 5.x's path only.
ADDITIVE_MASK = pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) < 5,
    reason="transformers 4.x makes its own additive mask from the 1/0 mask")

VOCAB = 50


def tiny_bert(seed: int = 0, **overrides) -> BertForPreTraining:
    torch.manual_seed(seed)
    cfg = TrainConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=16, **overrides)
    return build_model(cfg, VOCAB)


def batch_from(shard, n: int = 8) -> dict[str, torch.Tensor]:
    data = PretrainingDataset(shard, vocab_size=VOCAB)
    items = [data[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


@pytest.fixture
def batch(shard_factory):
    return batch_from(shard_factory(num_samples=8, seq_length=16, max_predictions=4, seed=1))


def test_sparse_head_loss_equals_full_head_and_stock_model(batch):
    bert = tiny_bert().eval()
    sparse = PretrainingModel(bert, sparse_mlm_head=True)(**batch)
    full = PretrainingModel(bert, sparse_mlm_head=False)(**batch)
    torch.testing.assert_close(sparse.mlm_loss, full.mlm_loss)
    torch.testing.assert_close(sparse.nsp_loss, full.nsp_loss)
    assert sparse.mlm_count == full.mlm_count == (batch["labels"] != -100).sum()
    assert sparse.mlm_correct == full.mlm_correct
    # ...and both equal what stock BertForPreTraining computes from the dense labels.
    stock = bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                 attention_mask=batch["attention_mask"], labels=batch["labels"],
                 next_sentence_label=batch["next_sentence_label"])
    torch.testing.assert_close(sparse.loss, stock.loss)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_the_prepared_attention_mask_gives_what_the_stock_mask_gives(batch, attn):
    """On CUDA the model hands BERT a prepared mask (no host sync); same hidden states on padded rows."""
    bert = tiny_bert(attn_implementation=attn).eval()
    mask = batch["attention_mask"]
    assert (mask == 0).any(), "the batch must hold padding, or the mask changes nothing"
    inputs = dict(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
    with torch.no_grad():
        stock = bert.bert(**inputs, attention_mask=mask).last_hidden_state
        prepared = bert.bert(**inputs, attention_mask=prepared_attention_mask(mask, bert.dtype)).last_hidden_state
        unmasked = bert.bert(**inputs).last_hidden_state
    keep = mask.bool()  # padded positions' own states are never used
    torch.testing.assert_close(prepared[keep], stock[keep])
    assert not torch.allclose(unmasked[keep], stock[keep]), "the padding must matter in this batch"


def old_minimum_mask(mask: torch.Tensor) -> torch.Tensor:
    """The prepared mask as it was: fp32's minimum for padding (-inf once cast to bf16/fp16)."""
    return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min


@ADDITIVE_MASK
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_prepared_mask_survives_the_cast_to_the_compute_dtype(dtype):
    """Autocast hands attention the fp32 mask cast to bf16/fp16: it must stay finite, and exact.

    A kernel that adds it to the scores and takes the softmax in that dtype then gets finite
    weights even for a row whose keys are all padding (uniform ones; -inf gave NaN).
    """
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    prepared = prepared_attention_mask(mask, torch.float32)
    cast = prepared.to(dtype)
    assert torch.isfinite(cast).all() and torch.equal(cast.float(), prepared)
    assert not torch.isfinite(old_minimum_mask(mask).to(dtype)).all()  # what it replaces
    scores = torch.randn(2, 1, 4, 4).to(dtype) * 8
    weights = torch.softmax(scores + cast, dim=-1)
    assert torch.isfinite(weights).all()
    assert (weights[0, ..., 2:] == 0).all()  # padded keys still get no weight in a real row


@ADDITIVE_MASK
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_row_of_only_padding_is_finite_under_bf16_autocast_and_other_rows_unchanged(batch, attn):
    """bf16 autocast on the CPU: an all-padding row gives finite states; real rows keep theirs.

    torch 2.13's CPU attention (SDPA, and BERT's eager path, which adds the fp32 mask in
    fp32) stayed finite with the old -inf mask too; the test above is the one it fails.
    """
    bert = tiny_bert(attn_implementation=attn).eval()
    mask = batch["attention_mask"].clone()
    mask[0] = 0  # a row without one real key (an unpadded or packed batch can have one)
    inputs = dict(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            prepared = bert.bert(**inputs, attention_mask=prepared_attention_mask(mask, bert.dtype))
            old = bert.bert(**inputs, attention_mask=old_minimum_mask(mask))
        fp32 = bert.bert(**inputs, attention_mask=prepared_attention_mask(mask, bert.dtype))
        stock = bert.bert(**inputs, attention_mask=mask)
    assert torch.isfinite(prepared.last_hidden_state).all()
    assert torch.isfinite(fp32.last_hidden_state).all()
    keep = mask.bool()  # rows with real keys: the same states as before, to the bit
    assert torch.equal(prepared.last_hidden_state[keep], old.last_hidden_state[keep])
    torch.testing.assert_close(fp32.last_hidden_state[keep], stock.last_hidden_state[keep])


def test_sparse_head_gradients_equal_full_head(batch):
    grads = []
    for sparse in (True, False):
        bert = tiny_bert()
        PretrainingModel(bert, sparse_mlm_head=sparse)(**batch).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in bert.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_batch_without_masked_tokens_gives_finite_zero_mlm_loss(batch):
    positions = torch.zeros_like(batch["masked_lm_positions"])
    labels, ids = build_mlm_labels(positions, batch["masked_lm_ids"], batch["input_ids"].shape[1])
    batch = {**batch, "masked_lm_positions": positions, "masked_lm_ids": torch.as_tensor(ids),
             "labels": torch.as_tensor(labels)}
    for sparse in (True, False):
        out = PretrainingModel(tiny_bert(), sparse_mlm_head=sparse)(**batch)
        assert out.mlm_count == 0
        assert out.mlm_loss.item() == 0.0
        assert torch.isfinite(out.loss)
        out.loss.backward()  # gradients flow through the NSP loss, none are NaN


@pytest.mark.slow
def test_overfitting_one_batch_drives_loss_near_zero(batch):
    torch.manual_seed(0)
    model = PretrainingModel(tiny_bert(dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        out = model(**batch)
        first = first if first is not None else out.loss.item()
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert first > 3.0
    assert out.loss.item() < 0.05
    assert out.mlm_correct == out.mlm_count


def test_vocab_mismatch_is_refused():
    cfg = TrainConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    bert = build_model(cfg, vocab_size=40)
    from bert_tutorial.core.model import check_vocab

    with pytest.raises(ValueError, match="vocab_size 40 is smaller than the data's vocabulary"):
        check_vocab(bert, 50, source="my-model")


def test_unwrap_finds_the_model_inside_any_wrapping():
    bert = tiny_bert()
    wrapped = PretrainingModel(bert)
    assert unwrap(bert) is bert
    assert unwrap(wrapped) is bert
    assert unwrap(nn.DataParallel(wrapped)) is bert
    assert unwrap(torch.compile(wrapped)) is bert
    with pytest.raises(TypeError):
        unwrap(nn.Linear(2, 2))
