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


def test_filled_puts_each_top_guess_in_its_mask():
    r = FillMaskResult("a [MASK] b [MASK]", [[("x", 0.5), ("y", 0.25)], [("z", 0.75)]])
    assert r.filled() == "a <x> b <z>"

def test_plot_before_after_draws_dots_per_eval_set_without_joining_the_models(tmp_path):
    before = {"mlm_accuracy": 0.0, "nsp_accuracy": 0.5, "mlm_loss": 10.3}
    frequencies = {"mlm_accuracy": 0.02, "mlm_loss": 8.0}  # no NSP: a constant answer is drawn instead
    metrics = {"new": {"before": before, "frequencies": frequencies,
                       "after": {"mlm_accuracy": 0.07, "nsp_accuracy": 0.55, "mlm_loss": 7.8}},
               "old": {"before": before, "frequencies": frequencies,
                       "after": {"mlm_accuracy": 0.05, "nsp_accuracy": 0.52, "mlm_loss": 8.1}}}
    fig = plot_before_after(metrics, nsp_constant={"new": 0.55, "old": 0.53}, path=tmp_path / "ba.png")
    assert (tmp_path / "ba.png").stat().st_size > 0 and len(fig.axes) == 3
    dots = [[line for line in ax.lines if line.get_marker() == "o"] for ax in fig.axes]
    assert all(line.get_linestyle() == "None" for lines in dots for line in lines)  # no line joins models
    assert [list(line.get_ydata()) for line in dots[0]] == [[10.3, 8.0, 7.8], [10.3, 8.0, 8.1]]
    assert [list(line.get_ydata()) for line in dots[2]] == [[0.5, 0.55], [0.5, 0.52]]  # frequencies left out
    assert list(dots[0][0].get_xdata()) < list(dots[0][1].get_xdata())  # side by side, not on top
    constants = [line for line in fig.axes[2].lines if line.get_linestyle() == "--"]
    assert [line.get_ydata()[0] for line in constants] == [0.55, 0.53]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["before", "frequencies", "after"]
    assert fig.axes[1].get_ylim()[0] < 0 < 0.07 < fig.axes[1].get_ylim()[1]  # fitted, labels inside
    assert {t.get_text() for t in fig.axes[0].texts} == {"10.30", "8.00", "7.80", "8.10"}


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


def test_masked_words_masks_every_single_piece_word_one_at_a_time_in_order(tmp_path):
    from bert_tutorial.teach.verses import book_verses, masked_words

    corpus = tmp_path / "bible.txt"
    corpus.write_text(BIBLE)
    tokenizer = load_tokenizer("data_samples/vocab.txt")
    assert book_verses(corpus, "Joshua")[0] == "Now the LORD spake unto Joshua, saying,"
    assert len(book_verses(corpus, "Joshua")) == 7  # both chapters, headings left out
    found = masked_words(corpus, "Joshua", tokenizer, verses=3)
    assert found[:3] == [("[MASK] the LORD spake unto Joshua, saying,", "now"),
                         ("Now [MASK] LORD spake unto Joshua, saying,", "the"),
                         ("Now the [MASK] spake unto Joshua, saying,", "lord")]
    assert [w for _, w in found] == [
        "now", "the", "lord", "unto", "joshua", "saying",  # "spake": two WordPieces
        "moses", "my", "servant", "is", "dead", "go", "unto", "the", "children", "of", "israel",
        "this", "is", "the", "lord"]  # "LORD's": the word, never the possessive's "s"
    assert all(s.count("[MASK]") == 1 for s, _ in found)
    later = masked_words(corpus, "Joshua", tokenizer, verses=7)
    assert later[:len(found)] == found  # the rule reads in order: more verses only add
    assert ("unto [MASK].", "zelophehad") not in later
    assert not any(w.isdigit() for _, w in later)  # "12" is not a word
    with pytest.raises(KeyError, match="Exodus"):
        masked_words(corpus, "Exodus", tokenizer, verses=1)


def test_masked_words_skip_words_the_vocabulary_splits(tmp_path):
    from bert_tutorial.teach.verses import masked_words

    corpus = tmp_path / "bible.txt"
    corpus.write_text("Numbers 27\nThen came the daughters of Zelophehad.\n")
    tokenizer = load_tokenizer("data_samples/vocab.txt")
    assert tokenizer.tokenize("zelophehad") != ["zelophehad"]  # several WordPieces
    assert [w for _, w in masked_words(corpus, "Numbers", tokenizer, verses=1)] == [
        "then", "came", "the", "daughters", "of"]


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


def test_a_long_sentence_is_shown_around_its_mask():
    from bert_tutorial.teach.fill_mask import _around_mask

    long = "a " * 100 + "[MASK]" + " b" * 100
    shown = _around_mask(long, 40)
    assert "[MASK]" in shown and shown.startswith("…") and shown.endswith("…") and len(shown) == 42
    assert _around_mask("[MASK]" + " b" * 100, 40).startswith("[MASK]")  # nothing cut before it
    assert _around_mask("a [MASK].", 40) == "a [MASK]."
