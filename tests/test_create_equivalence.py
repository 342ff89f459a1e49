"""The speed-ups of ``create_data`` change nothing: same draws, same instances, same token ids.

The committed sample shards (and the model trained on them) depend on the exact random
stream, so every tuned function is compared here with its original: the whole
instance-creation code as it was (``reference_instances.py``, verbatim), the old
sentence splitter, and transformers' own tokenizer.
"""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import reference_instances as ref

from bert_tutorial.config import DATA_SAMPLES
from bert_tutorial.create_data import instances as new
from bert_tutorial.create_data.corpus import gutenberg_to_documents, split_sentences
from bert_tutorial.create_data.shard_writer import instances_to_arrays
from bert_tutorial.create_data.wordpiece import WordPieceTokenizer
from bert_tutorial.tokenization import load_tokenizer, read_vocab

VOCAB = DATA_SAMPLES / "vocab.txt"
BOOK = DATA_SAMPLES / "corpus" / "pride-and-prejudice.txt"


def random_documents(rng: random.Random, count: int) -> list[list[list[int]]]:
    """Documents with segments of 1-300 tokens, some [CLS]/[SEP]/"##" ids among them."""
    documents = []
    for _ in range(count):
        document = []
        for _ in range(rng.randint(1, 12)):
            length = rng.choice([1, 2, 3, 5, 10, 30, 60, 130, 300])
            document.append([
                rng.choice([101, 102, 1996, 2015, 1005, 3000]) if rng.random() < 0.05
                else rng.randint(999, 30521)
                for _ in range(length)
            ])
        documents.append(document)
    return documents


def test_instances_are_the_original_draw_for_draw():
    """300 random corpora and settings: identical instances and generator state after.

    The one intended difference: a "random" B drawn from the same document (a block
    of one document) is labelled 0 now, 1 before.
    """
    vocab = read_vocab(VOCAB)
    old_vocab, new_vocab = ref.VocabInfo.from_vocab(vocab), new.VocabInfo.from_vocab(vocab)
    relabelled = 0
    for trial in range(300):
        rng = random.Random(trial)
        documents = random_documents(rng, rng.choice([1, 2, 3, 8]))
        t = rng.choice([5, 8, 16, 32, 64, 128])
        settings = dict(
            max_seq_length=t,
            short_seq_prob=rng.choice([0, 0.1, 0.5, 1]),
            masked_lm_prob=rng.choice([0.15, 0.3, 0.9]),
            max_predictions_per_seq=rng.randint(1, t),
            whole_word_masking=rng.random() < 0.5,
        )
        old_rng, new_rng = random.Random(trial), random.Random(trial)
        before = list(ref.create_instances(
            documents, ref.InstanceOptions(**settings), old_vocab, old_rng, 2))
        after = list(new.create_instances(
            documents, new.InstanceOptions(**settings), new_vocab, new_rng, 2))
        assert old_rng.getstate() == new_rng.getstate()
        assert len(before) == len(after)
        for x, y in zip(before, after, strict=True):
            assert (x.input_ids, x.num_segment_a, x.masked_lm_positions, x.masked_lm_ids) == (
                list(y.input_ids), y.num_segment_a, list(y.masked_lm_positions),
                list(y.masked_lm_ids))
            assert x.is_random_next == (y.is_random_next or y.same_document_b)
            relabelled += y.same_document_b
        shape = t, settings["max_predictions_per_seq"]
        old_arrays = ref.instances_to_arrays(before, *shape)
        new_arrays = instances_to_arrays(after, *shape)
        for name, array in old_arrays.items():
            if name != "next_sentence_labels":
                assert new_arrays[name].dtype == array.dtype
                np.testing.assert_array_equal(new_arrays[name], array, err_msg=name)
    assert relabelled > 0  # the one-document corpora exercised the relabelling


def test_truncation_is_the_original_and_linear():
    for seed in range(50):
        rng = random.Random(seed)
        a = list(range(rng.randint(0, 400)))
        b = list(range(1000, 1000 + rng.randint(0, 400)))
        old_a, old_b, old_rng, new_rng = list(a), list(b), random.Random(seed), random.Random(seed)
        ref.truncate_seq_pair(old_a, old_b, 125, old_rng)
        total = len(a) + len(b)
        removed = new.truncate_seq_pair(a, b, 125, new_rng)
        assert (a, b, old_rng.getstate()) == (old_a, old_b, new_rng.getstate())
        assert removed == max(0, total - 125)


# --- the sentence splitter: linear-time rewrite, same sentences -----------------------------

_OLD_END = re.compile(r"""[.!?]+["'\u201d\u2019)\]_]*(?=\s+["'\u201c\u2018(\[_]*[A-Z])""")
_OLD_LAST_WORD = re.compile(r"(\S+)$")


def old_split_sentences(paragraph: str) -> list[str]:
    """``corpus.split_sentences`` before the linear-time rewrite (commit c4341d8)."""
    from bert_tutorial.create_data.corpus import ABBREVIATIONS

    def is_abbreviation(text_before: str) -> bool:
        match = _OLD_LAST_WORD.search(text_before)
        if not match:
            return False
        word = match.group(1).lstrip("\"'\u201c\u2018([_")
        return word.lower() in ABBREVIATIONS or (len(word) == 1 and word.isupper() and word != "I")

    text = " ".join(paragraph.split())
    sentences, start = [], 0
    for match in _OLD_END.finditer(text):
        punctuation = match.group(0)
        single_dot = punctuation.startswith(".") and not punctuation.startswith("..")
        if single_dot and is_abbreviation(text[start : match.start()]):
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    return [*sentences, tail] if tail else sentences


def test_sentence_splitter_is_the_original():
    book = BOOK.read_text(encoding="utf-8")
    for paragraph in book.split("\n\n"):
        assert split_sentences(paragraph) == old_split_sentences(paragraph)
    rng = random.Random(0)
    pieces = ["Mr.", "J.", "I.", "e.g.", "word", "Word", "!!", "?", "...", ".", '"', "'", ")",
              "_", "(", "\u201c", "\u201d", "A.", "x!", "Yes?", " ", "  ", "\t", "St.", "M"]
    for _ in range(3000):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        text = text.replace("  ", rng.choice(["", " ", "\n"]))
        assert split_sentences(text) == old_split_sentences(text), repr(text)


# --- the tokenizer: built without transformers, same ids ------------------------------------


@pytest.fixture(scope="module")
def wordpiece() -> WordPieceTokenizer:
    return WordPieceTokenizer.from_file(VOCAB)


def test_wordpiece_is_transformers_bert_tokenizer(wordpiece):
    """Same configuration as transformers' fast BERT tokenizer, same ids on the book and odd text."""
    reference = load_tokenizer(VOCAB)
    backend = getattr(reference, "backend_tokenizer", None)
    if backend is None:  # transformers 4: BertTokenizer is the slow one
        from transformers import BertTokenizerFast

        backend = BertTokenizerFast(vocab_file=str(VOCAB)).backend_tokenizer
    expected, actual = json.loads(backend.to_str()), json.loads(wordpiece.tokenizer.to_str())
    for part in ("normalizer", "pre_tokenizer", "model", "added_tokens"):
        assert actual[part] == expected[part], part

    sentences = [s for d in gutenberg_to_documents(BOOK.read_text(encoding="utf-8")) for s in d]
    odd = ["Caf\u00e9 na\u00efve \u00c5ngstr\u00f6m", "\u4e2d\u6587\u5b57 and \u65e5\u672c",
           "tab\there\r\nnew\x00line\x07bell\x7f", "[SEP] a [sep] [MASK]x [CLS][PAD]",
           "emoji \U0001f600 \u00a0nbsp\u2009thin", "e\u0301 combining", "x" * 150,
           "UPPER lower MiXeD", "", " ", "\ufffd replacement", "\x1c\x1d\x1e\x1f seps"]
    expected_ids = reference([*sentences, *odd], add_special_tokens=False)["input_ids"]
    assert wordpiece([*sentences, *odd]) == expected_ids


@pytest.mark.parametrize("lower", [True, False])
def test_wordpiece_python_path_matches_tokenizers(lower):
    """ASCII sentences are tokenised in Python (with a word cache): the same ids as ``tokenizers``
    for random ASCII text (control characters, punctuation, digits, words of 1-130 letters)."""
    wordpiece = WordPieceTokenizer.from_file(VOCAB, do_lower_case=lower)
    rng = random.Random(0)
    others = [chr(i) for i in range(128) if not chr(i).isalnum() and chr(i) != "["]
    vocab_words = [w for w in read_vocab(VOCAB) if w.isascii() and w.isalpha()]

    def word() -> str:
        kind = rng.random()
        if kind < 0.5:
            return rng.choice(vocab_words)
        if kind < 0.7:
            letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
            return "".join(rng.choice(letters) for _ in range(rng.choice([1, 3, 8, 99, 100, 101, 130])))
        return "".join(rng.choice(others) for _ in range(rng.randint(1, 3)))

    texts = ["".join(word() + rng.choice([" ", "", "  ", "\t", "\n"]) for _ in range(rng.randint(0, 20)))
             for _ in range(4000)]
    expected = [e.ids for e in wordpiece.tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert wordpiece(texts) == expected
    assert wordpiece(texts) == expected  # again, from the word cache
