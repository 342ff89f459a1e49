"""Evaluation figures against a hand computation over a whole (multi-batch) data set."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bert_tutorial.config import TrainConfig
from bert_tutorial.core.data import PretrainingDataset, make_dataloader
from bert_tutorial.core.evaluation import evaluate, finalize_metrics
from bert_tutorial.core.model import PretrainingModel, build_model

VOCAB = 50


def test_finalize_metrics_by_hand():
    m = finalize_metrics({"mlm_loss_sum": 6.0, "mlm_correct": 1, "mlm_count": 4,
                          "nsp_loss_sum": 1.4, "nsp_correct": 1, "nsp_count": 2})
    assert m["mlm_loss"] == 1.5 and m["mlm_accuracy"] == 0.25
    assert m["nsp_loss"] == 0.7 and m["nsp_accuracy"] == 0.5
    assert math.isclose(m["perplexity"], math.exp(1.5)) and m["masked_tokens"] == 4


def test_evaluate_matches_hand_computation(shard_factory):
    data = PretrainingDataset(shard_factory(num_samples=10, seed=3), vocab_size=VOCAB)
    torch.manual_seed(0)
    bert = build_model(TrainConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=16), VOCAB)
    model = PretrainingModel(bert).train()
    # Batches of 4, 4, 2 samples with different numbers of masked tokens.
    loader = make_dataloader(data, 4, shuffle=False, seed=0)
    result = evaluate(model, loader)
    assert model.training  # train mode restored

    # By hand: every masked token of every sample, one at a time, with the stock model.
    bert.eval()
    token_losses, token_hits, nsp_losses, nsp_hits = [], [], [], []
    with torch.no_grad():
        for i in range(len(data)):
            s = data[i]
            out = bert(input_ids=s["input_ids"][None], token_type_ids=s["token_type_ids"][None],
                       attention_mask=s["attention_mask"][None])
            for pos in (s["labels"] != -100).nonzero().flatten().tolist():
                logits = out.prediction_logits[0, pos]
                target = s["labels"][pos]
                token_losses.append(F.cross_entropy(logits[None], target[None]).item())
                token_hits.append(int(logits.argmax() == target))
            nsp = out.seq_relationship_logits[0]
            nsp_losses.append(F.cross_entropy(nsp[None], s["next_sentence_label"][None]).item())
            nsp_hits.append(int(nsp.argmax() == s["next_sentence_label"]))
    expected_mlm = sum(token_losses) / len(token_losses)
    assert result["masked_tokens"] == len(token_losses) and result["sequences"] == 10
    assert math.isclose(result["mlm_loss"], expected_mlm, rel_tol=1e-5)
    assert result["mlm_accuracy"] == sum(token_hits) / len(token_hits)
    assert math.isclose(result["nsp_loss"], sum(nsp_losses) / 10, rel_tol=1e-5)
    assert result["nsp_accuracy"] == sum(nsp_hits) / 10
    assert math.isclose(result["perplexity"], math.exp(expected_mlm), rel_tol=1e-5)


def test_evaluate_respects_max_batches(shard_factory):
    data = PretrainingDataset(shard_factory(num_samples=10, seed=3), vocab_size=VOCAB)
    bert = build_model(TrainConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=16), VOCAB)
    result = evaluate(PretrainingModel(bert), make_dataloader(data, 4, shuffle=False, seed=0),
                      max_batches=1)
    assert result["sequences"] == 4
