"""``bert_tutorial.teach.probe``: frozen features and a linear probe on them."""

from __future__ import annotations

import torch
from test_fill_mask import tiny_bert, toy_tokenizer  # noqa: F401  (a fixture)

from bert_tutorial.teach.probe import linear_probe, verse_features


def test_verse_features_average_the_real_tokens_only(toy_tokenizer):  # noqa: F811
    bert = tiny_bert().train()
    texts = ["w5 w6 w7 w8 w9", "w5 w6"]
    both = verse_features(bert, toy_tokenizer, texts, batch_size=2)
    assert bert.training and both.shape == (2, 32) and both.dtype == torch.float32
    alone = verse_features(bert, toy_tokenizer, texts[1:])  # no padding in its batch
    torch.testing.assert_close(both[1:], alone, rtol=1e-5, atol=1e-5)
    enc = toy_tokenizer(texts[1:], return_tensors="pt")
    with torch.no_grad():
        hidden = bert.eval().bert(**enc).last_hidden_state
    torch.testing.assert_close(alone, hidden.mean(1), rtol=1e-5, atol=1e-5)


def test_linear_probe_learns_a_separable_label_and_is_reproducible():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    features = torch.randn(200, 8, generator=g) + 5.0 * labels[:, None] * torch.eye(8)[0]
    train, test = slice(0, 100), slice(100, 200)
    acc = linear_probe(features[train], labels[train], features[test], labels[test], seed=1, epochs=20, lr=1e-2)
    assert acc > 0.9
    assert acc == linear_probe(features[train], labels[train].tolist(), features[test], labels[test].tolist(),
                               seed=1, epochs=20, lr=1e-2)
    noise = torch.randn(200, 8, generator=g)
    chance = linear_probe(noise[train], labels[train], noise[test], labels[test], seed=1, epochs=20, lr=1e-2)
    assert chance < 0.7
