"""``bert_tutorial.teach.fill_mask``: top-k predictions for [MASK] and the before/after views."""

from __future__ import annotations

import pytest
import torch
from tiny import SEQ_LENGTH, VOCAB_SIZE, write_vocab
from transformers import BertForPreTraining

from bert_tutorial.config import TrainConfig
from bert_tutorial.core.model import build_model
from bert_tutorial.teach.fill_mask import (
    FillMaskResult,
    fill_mask,
    fill_mask_table,
    plot_before_after,
)
from bert_tutorial.tokenization import load_tokenizer


@pytest.fixture
def toy_tokenizer(tmp_path):
    return load_tokenizer(write_vocab(tmp_path / "vocab.txt"))


def tiny_bert(seed: int = 0, vocab: int = VOCAB_SIZE, positions: int = SEQ_LENGTH) -> BertForPreTraining:
    torch.manual_seed(seed)
    cfg = TrainConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=positions)
    return build_model(cfg, vocab)


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


def test_plot_before_after_draws_one_line_per_eval_set_and_metric(tmp_path):
    before = {"mlm_accuracy": 0.0, "nsp_accuracy": 0.5, "mlm_loss": 10.3}
    metrics = {"new": {"before": before, "after": {"mlm_accuracy": 0.07, "nsp_accuracy": 0.55, "mlm_loss": 7.8}},
               "old": {"before": before, "after": {"mlm_accuracy": 0.05, "nsp_accuracy": 0.52, "mlm_loss": 8.1}}}
    fig = plot_before_after(metrics, tmp_path / "ba.png")
    assert (tmp_path / "ba.png").stat().st_size > 0 and len(fig.axes) == 3
    heights = [[list(line.get_ydata()) for line in ax.lines] for ax in fig.axes]
    assert heights == [[[10.3, 7.8], [10.3, 8.1]], [[0.0, 0.07], [0.0, 0.05]], [[0.5, 0.55], [0.5, 0.52]]]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["before", "after"]
    assert fig.axes[1].get_ylim()[0] < 0 < 0.07 < fig.axes[1].get_ylim()[1]  # fitted, labels inside
    assert {t.get_text() for t in fig.axes[0].texts} == {"10.30", "7.80", "8.10"}


def test_plot_fill_mask_marks_the_right_answer_in_green():
    from bert_tutorial.teach.fill_mask import FillMaskResult, plot_fill_mask

    sentences = ["Mr. [MASK] smiled.", "She [MASK] home."]
    results = {"before": [FillMaskResult(sentences[0], [[("the", 0.2), (",", 0.1)]]),
                          FillMaskResult(sentences[1], [[("was", 0.2), ("went", 0.1)]])],
               "after": [FillMaskResult(sentences[0], [[("darcy", 0.3), ("bingley", 0.2)]]),
                         FillMaskResult(sentences[1], [[("went", 0.4), ("ran", 0.2)]])]}
    fig = plot_fill_mask(results, answers=["Darcy", "went"], top_k=2)
    texts = {t.get_text(): t for t in fig.axes[0].texts}
    assert {"before", "after", "the  20%", "darcy  30%", "went  10%", "went  40%"} <= set(texts)
    assert texts["darcy  30%"].get_color() == "tab:green"  # a hit, case-insensitive
    assert texts["went  10%"].get_color() == texts["went  40%"].get_color() == "tab:green"
    assert texts["the  20%"].get_color() == texts["bingley  20%"].get_color() == "black"


BIBLE = """Genesis 1
In the beginning God created the heaven and the earth.
And God said, Let there be light: and there was light.

Joshua 1
Now the LORD spake unto Joshua, saying,
Moses my servant is dead; go unto the children of Israel.
This is the LORD's.
He looked and it was wonderful!
Be strong and of a good courage.
The end of the verse is 12.

Joshua 2
And Joshua sent two men, saying, Go view the land.
"""


def test_masked_verses_masks_each_verses_last_single_piece_word_in_order(tmp_path):
    from bert_tutorial.teach.verses import book_verses, masked_verses

    corpus = tmp_path / "bible.txt"
    corpus.write_text(BIBLE)
    tokenizer = load_tokenizer("data_samples/vocab.txt")
    assert book_verses(corpus, "Joshua")[0] == "Now the LORD spake unto Joshua, saying,"
    assert len(book_verses(corpus, "Joshua")) == 7  # both chapters, headings left out
    found = masked_verses(corpus, "Joshua", tokenizer, n=10)
    assert found == [("Now the LORD spake unto Joshua, [MASK],", "saying"),
                     ("Moses my servant is dead; go unto the children of [MASK].", "israel"),
                     ("He looked and it was [MASK]!", "wonderful"),  # "LORD's." skipped: a possessive
                     ("Be strong and of a good [MASK].", "courage"),  # "12." skipped: not a word
                     ("And Joshua sent two men, saying, Go view the [MASK].", "land")]
    assert masked_verses(corpus, "Joshua", tokenizer, n=2) == found[:2]
    with pytest.raises(KeyError, match="Exodus"):
        masked_verses(corpus, "Exodus", tokenizer, n=1)


def test_masked_verses_skip_words_the_vocabulary_splits(tmp_path):
    from bert_tutorial.teach.verses import mask_last_word

    tokenizer = load_tokenizer("data_samples/vocab.txt")
    assert mask_last_word("Go view the land.", tokenizer) == ("Go view the [MASK].", "land")
    assert mask_last_word("unto Zelophehad.", tokenizer) is None  # several WordPieces
    assert mask_last_word("no punctuation at the end", tokenizer) is None


def test_testament_task_is_balanced_spread_and_checks_the_testament(tmp_path):
    from bert_tutorial.teach.verses import spread, testament_task

    assert spread(list("abcdefgh"), 4) == list("aceg")
    verses = "\n\n".join(f"{book} 1\n" + "\n".join(f"{book} verse {i}." for i in range(6))
                         for book in ("Genesis", "Ruth", "Malachi", "Matthew", "Mark"))
    corpus = tmp_path / "bible.txt"
    corpus.write_text(verses)
    texts, labels = testament_task(corpus, ["Ruth"], ["Mark"], per_book=3)
    assert texts == ["Ruth verse 0.", "Ruth verse 2.", "Ruth verse 4.",
                     "Mark verse 0.", "Mark verse 2.", "Mark verse 4."]
    assert labels == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="New Testament"):
        testament_task(corpus, ["Ruth"], ["Malachi"], per_book=3)


def test_the_public_fill_mask_is_the_function_not_its_module():
    import bert_tutorial

    assert bert_tutorial.fill_mask is fill_mask
