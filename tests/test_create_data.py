"""Tests of ``bert_tutorial.create_data`` (with ``corpus`` and ``instances``): text -> HDF5 shards.

The round-trip test uses a tiny corpus in which every word is a distinct single
word piece, so each token id tells which document and position it came from; that
turns "segments A and B are the right text" into exact assertions.
"""

from __future__ import annotations

import hashlib
import random
import shlex
from pathlib import Path

import h5py
import numpy as np
import pytest

from bert_tutorial.config import DATA_SAMPLES, REPO_ROOT
from bert_tutorial.core.data import PretrainingDataset
from bert_tutorial.create_data.cli import CreationOptions, create_pretraining_data, main
from bert_tutorial.create_data.corpus import (
    CorpusOptions,
    gutenberg_to_documents,
    parse_document_range,
    split_sentences,
    strip_gutenberg,
    tokenize_documents,
)
from bert_tutorial.create_data.instances import InstanceOptions, mask_tokens
from bert_tutorial.create_data.wordpiece import WordPieceTokenizer
from bert_tutorial.hdf5_format import FIELDS
from bert_tutorial.teach.book_shards import make_sample_shards
from bert_tutorial.tokenization import VocabInfo, load_tokenizer

VOCAB = DATA_SAMPLES / "vocab.txt"
BOOK = DATA_SAMPLES / "corpus" / "pride-and-prejudice.txt"
CLS, SEP, MASK = 101, 102, 103


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(VOCAB)


@pytest.fixture(scope="module")
def vocab_info(tokenizer) -> VocabInfo:
    return VocabInfo.from_vocab(tokenizer.get_vocab())


def read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in f}


def read_all(folder: Path) -> dict[str, np.ndarray]:
    shards = [read(p) for p in sorted(folder.glob("*.hdf5"))]
    return {name: np.concatenate([s[name] for s in shards]) for name in FIELDS}


def restore(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """input_ids with the masked positions set back to their original ids."""
    ids = arrays["input_ids"].copy()
    for row, (pos, lab) in enumerate(
        zip(arrays["masked_lm_positions"], arrays["masked_lm_ids"], strict=True)
    ):
        k = int((lab != 0).sum())
        ids[row, pos[:k]] = lab[:k]
    return ids


def run_cli(tmp_path: Path, *args: str, name: str = "out") -> dict[str, np.ndarray]:
    out = tmp_path / name
    assert main([*args, "--vocab-file", str(VOCAB), "--output-dir", str(out), "--quiet"]) == 0
    return read_all(out)


def book_args(documents: str = "0:20", dupe: int = 3, seed: int = 7) -> list[str]:
    return [
        "--input",
        str(BOOK),
        "--gutenberg",
        "--documents",
        documents,
        "--dupe-factor",
        str(dupe),
        "--seed",
        str(seed),
    ]


# --- tiny corpus with known tokens ----------------------------------------------------------


@pytest.fixture(scope="module")
def unique_words(tokenizer) -> list[str]:
    """Lower-case vocab words that tokenise to themselves, i.e. one distinct id per word."""
    words = [
        w
        for w, i in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        if i >= 2000 and w.isascii() and w.isalpha() and w.islower() and len(w) >= 3
    ][:600]
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    return [w for w, piece in zip(words, ids, strict=True) if len(piece) == 1]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, unique_words) -> tuple[Path, list[list[str]]]:
    """6 documents of 3-8 sentences, one sentence per line; one sentence longer than T."""
    rng = random.Random(0)
    words = iter(unique_words)
    documents = []
    for _ in range(6):
        documents.append(
            [[next(words) for _ in range(rng.randint(3, 10))] for _ in range(rng.randint(3, 8))]
        )
    documents[2][1] = [next(words) for _ in range(40)]  # longer than T=32: forces truncation
    path = tmp_path_factory.mktemp("tiny") / "tiny.txt"
    path.write_text("\n\n".join("\n".join(" ".join(s) for s in doc) for doc in documents) + "\n")
    return path, documents


def test_round_trip_tiny_corpus(tmp_path, tiny_corpus, tokenizer, vocab_info):
    path, documents = tiny_corpus
    arrays = run_cli(
        tmp_path,
        "--input",
        str(path),
        "--max-seq-length",
        "32",
        "--dupe-factor",
        "4",
        "--seed",
        "3",
        "--short-seq-prob",
        "0.3",
    )
    # where each id sits in the corpus: id -> (document, offset in the document's token stream)
    vocab = tokenizer.get_vocab()
    location = {
        vocab[w]: (d, k)
        for d, doc in enumerate(documents)
        for k, w in enumerate(w for sentence in doc for w in sentence)
    }

    for name, (dtype, ndim) in FIELDS.items():
        assert arrays[name].dtype == dtype and arrays[name].ndim == ndim, name
    n, t = arrays["input_ids"].shape
    assert t == 32 and arrays["masked_lm_positions"].shape == (n, 5) and n > 20
    original = restore(arrays)

    for row in range(n):
        ids, mask, seg = (
            arrays["input_ids"][row],
            arrays["input_mask"][row],
            arrays["segment_ids"][row],
        )
        pos, lab = arrays["masked_lm_positions"][row], arrays["masked_lm_ids"][row]
        length = int(mask.sum())
        sep1, sep2 = np.flatnonzero(original[row] == SEP)  # exactly two [SEP]
        assert ids[0] == CLS and sep2 == length - 1 and ids[sep1] == SEP and ids[sep2] == SEP
        assert (mask[:length] == 1).all() and (mask[length:] == 0).all()
        assert (ids[length:] == 0).all() and (seg[length:] == 0).all()
        assert (seg[: sep1 + 1] == 0).all() and (seg[sep1 + 1 : length] == 1).all()

        k = int((lab != 0).sum())
        assert k >= 1 and (lab[:k] != 0).all()
        assert (np.diff(pos[:k]) > 0).all() and (pos[k:] == 0).all() and (lab[k:] == 0).all()
        assert not {0, sep1, sep2} & set(pos[:k].tolist())  # [CLS]/[SEP] never masked
        unmasked = np.setdiff1d(np.arange(length), pos[:k])
        assert (ids[unmasked] == original[row, unmasked]).all()
        for p in pos[:k]:  # a masked token is [MASK], itself, or a real word piece
            assert ids[p] in (MASK, original[row, p]) or ids[p] in vocab_info.replacement_ids

        # A and B are each a contiguous stretch of one document; label 0 = B continues A
        spans = []
        for lo, hi in ((1, sep1), (sep1 + 1, sep2)):
            docs, offsets = zip(*(location[int(i)] for i in original[row, lo:hi]), strict=True)
            assert len(set(docs)) == 1 and np.all(np.diff(offsets) == 1)
            spans.append((docs[0], offsets[0], offsets[-1]))
        (doc_a, _, end_a), (doc_b, start_b, _) = spans
        if arrays["next_sentence_labels"][row] == 0:
            assert doc_a == doc_b and start_b > end_a
        else:
            assert doc_a != doc_b
    assert set(arrays["next_sentence_labels"].tolist()) == {0, 1}


def test_blocks_draw_random_next_from_their_own_block(tmp_path, tiny_corpus, tokenizer):
    path, documents = tiny_corpus
    arrays = run_cli(
        tmp_path,
        "--input",
        str(path),
        "--max-seq-length",
        "32",
        "--docs-per-block",
        "2",
        "--shard-size",
        "7",
        "--seed",
        "5",
    )
    vocab = tokenizer.get_vocab()
    doc_of = {vocab[w]: d for d, doc in enumerate(documents) for s in doc for w in s}
    original = restore(arrays)
    random_next = np.flatnonzero(arrays["next_sentence_labels"] == 1)
    assert len(random_next) > 5
    pairs = []
    for row in random_next:
        sep1 = int(np.flatnonzero(original[row] == SEP)[0])
        pairs.append((doc_of[int(original[row, 1])], doc_of[int(original[row, sep1 + 1])]))
    assert all(a // 2 == b // 2 for a, b in pairs)  # blocks are documents (0, 1), (2, 3), (4, 5)
    # the other document of the block, unless 10 draws in a row hit the same one (p = 1/1024)
    assert sum(a != b for a, b in pairs) >= len(pairs) - 1


def test_shards_are_named_and_sized(tmp_path, tiny_corpus):
    path, _ = tiny_corpus
    out = tmp_path / "shards"
    main(
        [
            "--input",
            str(path),
            "--vocab-file",
            str(VOCAB),
            "--output-dir",
            str(out),
            "--prefix",
            "tiny",
            "--max-seq-length",
            "32",
            "--shard-size",
            "10",
            "--quiet",
        ]
    )
    shards = sorted(out.glob("*.hdf5"))
    assert [p.name for p in shards[:2]] == ["tiny_shard_00000.hdf5", "tiny_shard_00001.hdf5"]
    sizes = [len(read(p)["next_sentence_labels"]) for p in shards]
    assert len(sizes) >= 3 and all(s == 10 for s in sizes[:-1]) and 1 <= sizes[-1] <= 10
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in shards]  # no .tmp leftovers



def test_in_process_options_give_the_same_bytes_as_the_command_line(tmp_path, tiny_corpus):
    """``create_pretraining_data`` with option objects is the CLI; bad options fail up front."""
    path, _ = tiny_corpus
    flags = ["--max-seq-length", "32", "--dupe-factor", "2", "--seed", "9", "--shard-size", "20"]
    run_cli(tmp_path, "--input", str(path), *flags, name="cli")
    options = CreationOptions(
        InstanceOptions(max_seq_length=32, max_predictions_per_seq=5),  # ceil(0.15 * 32)
        dupe_factor=2,
        seed=9,
        shard_size=20,
    )
    summary = create_pretraining_data(
        [path], VOCAB, tmp_path / "api", options, CorpusOptions(), progress=False
    )
    cli_shards = sorted((tmp_path / "cli").glob("*.hdf5"))
    assert [p.name for p, _ in summary.shards] == [p.name for p in cli_shards]
    for (api_path, count), cli_path in zip(summary.shards, cli_shards, strict=True):
        assert api_path.read_bytes() == cli_path.read_bytes() and count <= 20
    assert summary.documents == 6 and summary.instances == sum(n for _, n in summary.shards)

    for bad, message in (
        (CreationOptions(dupe_factor=0), "dupe_factor must be >= 1"),
        (CreationOptions(docs_per_block=0), "docs_per_block must be >= 1"),
        (CreationOptions(InstanceOptions(max_seq_length=4)), "max_seq_length must be >= 5"),
    ):
        with pytest.raises(ValueError, match=message):
            create_pretraining_data([path], VOCAB, tmp_path / "bad", bad, progress=False)
    assert not (tmp_path / "bad").exists()  # rejected before touching the output folder

# --- statistics on the sample book ------------------------------------------------------------


@pytest.fixture(scope="module")
def book_sample(tmp_path_factory) -> dict[str, np.ndarray]:
    return run_cli(tmp_path_factory.mktemp("book"), *book_args())


def test_masking_statistics(book_sample):
    arrays = book_sample
    n_pred = (arrays["masked_lm_ids"] != 0).sum()
    n_maskable = (arrays["input_mask"].sum(axis=1) - 3).sum()  # all but [CLS] [SEP] [SEP]
    assert len(arrays["input_ids"]) > 1000
    assert abs(n_pred / n_maskable - 0.15) < 0.03
    assert (arrays["masked_lm_ids"] != 0).sum(axis=1).max() <= 20

    selected = arrays["masked_lm_ids"] != 0
    rows = np.nonzero(selected)[0]
    shown = arrays["input_ids"][rows, arrays["masked_lm_positions"][selected]]
    target = arrays["masked_lm_ids"][selected]
    as_mask, kept = shown == MASK, shown == target
    assert abs(as_mask.mean() - 0.8) < 0.03
    assert abs(kept.mean() - 0.1) < 0.03
    assert abs((~as_mask & ~kept).mean() - 0.1) < 0.03


def test_next_sentence_labels_about_half_random(book_sample):
    # slightly above 0.5: a chunk of a single segment always gets a random B, as in the original
    assert abs(book_sample["next_sentence_labels"].mean() - 0.5) < 0.06


def test_random_replacements_are_real_word_pieces(book_sample, vocab_info):
    selected = book_sample["masked_lm_ids"] != 0
    rows = np.nonzero(selected)[0]
    shown = book_sample["input_ids"][rows, book_sample["masked_lm_positions"][selected]]
    replaced = shown[(shown != MASK) & (shown != book_sample["masked_lm_ids"][selected])]
    assert len(replaced) > 100
    assert np.isin(replaced, vocab_info.replacement_ids).all()
    assert (
        replaced >= 999
    ).all()  # bert-base-uncased: ids below 999 are [PAD], [unusedN], specials


# --- reproducibility ---------------------------------------------------------------------------


def test_same_seed_same_bytes_different_seed_different_data(tmp_path):
    args = book_args(documents="0:4", dupe=1)
    first, second = run_cli(tmp_path, *args, name="a"), run_cli(tmp_path, *args, name="b")
    for name in FIELDS:
        np.testing.assert_array_equal(first[name], second[name])
    digest = {
        d: hashlib.sha256((tmp_path / d / "pretrain_shard_00000.hdf5").read_bytes()).hexdigest()
        for d in ("a", "b")
    }
    assert digest["a"] == digest["b"]
    other = run_cli(tmp_path, *book_args(documents="0:4", dupe=1, seed=8), name="c")
    assert not np.array_equal(first["masked_lm_positions"], other["masked_lm_positions"])


# --- whole-word masking ------------------------------------------------------------------------


def test_whole_word_masking_masks_all_pieces_together(tmp_path, vocab_info):
    arrays = run_cli(tmp_path, *book_args(documents="0:6", dupe=1), "--whole-word-masking")
    original = restore(arrays)
    multi_piece_words_masked = 0
    for row in range(len(original)):
        k = int((arrays["masked_lm_ids"][row] != 0).sum())
        masked = set(arrays["masked_lm_positions"][row, :k].tolist())
        tokens = original[row, : int(arrays["input_mask"][row].sum())]
        word: list[int] = []
        for i, token in enumerate([*tokens.tolist(), SEP]):  # trailing SEP closes the last word
            if token not in (CLS, SEP) and word and vocab_info.is_continuation[token]:
                word.append(i)
                continue
            if word:
                flags = {p in masked for p in word}
                assert len(flags) == 1, f"row {row}: word at {word} partly masked"
                multi_piece_words_masked += len(word) > 1 and flags == {True}
            word = [i] if token not in (CLS, SEP) else []
    assert multi_piece_words_masked > 10


def test_mask_tokens_never_picks_special_tokens(vocab_info):
    tokens = [CLS, *range(2000, 2040), SEP, *range(3000, 3020), SEP]
    for seed in range(20):
        _, positions, labels = mask_tokens(tokens, vocab_info, 0.15, 20, random.Random(seed))
        assert positions == sorted(positions) and len(positions) == round(len(tokens) * 0.15)
        assert not {0, 41, len(tokens) - 1} & set(positions)
        assert labels == [tokens[p] for p in positions]


# --- reading text ------------------------------------------------------------------------------


def test_sentence_splitter_keeps_abbreviations():
    text = (
        '"My dear Mr. Bennet," said his lady. Mrs. Long has come! Did Dr. Smith of St. Albans '
        'call? "Yes," said he. "Is he married?" cried she. J. Smith agreed.'
    )
    assert split_sentences(text) == [
        '"My dear Mr. Bennet," said his lady.',
        "Mrs. Long has come!",
        "Did Dr. Smith of St. Albans call?",
        '"Yes," said he.',
        '"Is he married?" cried she.',
        "J. Smith agreed.",
    ]
    assert split_sentences("  one line\n  wrapped over two.  Next one.") == [
        "one line wrapped over two.",
        "Next one.",
    ]


GUTENBERG = """The Project Gutenberg EBook of A Book
Licence words.

*** START OF THIS PROJECT GUTENBERG EBOOK A BOOK ***

Produced by Someone

A BOOK

Chapter 1

It was _very_ dark. Mr. Smith
slept.

He woke.

CHAPTER II.

The end came.

End of the Project Gutenberg EBook of A Book

*** END OF THIS PROJECT GUTENBERG EBOOK A BOOK ***
More licence words.
"""


def test_gutenberg_header_stripped_and_chapters_are_documents():
    assert gutenberg_to_documents(GUTENBERG) == [
        ["It was very dark.", "Mr. Smith slept.", "He woke."],
        ["The end came."],
    ]
    with pytest.raises(ValueError, match="START OF"):
        strip_gutenberg(["no markers here"])


def test_sample_book_has_61_chapters():
    documents = gutenberg_to_documents(BOOK.read_text(encoding="utf-8"))
    assert len(documents) == 61
    assert documents[0][0].startswith("It is a truth universally acknowledged")
    assert documents[55][0].startswith("One morning, about a week after Bingley's engagement")
    text = " ".join(s for doc in documents for s in doc)
    assert "Gutenberg" not in text and "_" not in text


def test_split_sentences_mode_with_document_regex(tmp_path):
    corpus = tmp_path / "raw.txt"
    corpus.write_text("== A ==\nFirst doc. It has\ntwo sentences.\n\n== B ==\nSecond doc here.\n")
    arrays = run_cli(
        tmp_path,
        "--input",
        str(corpus),
        "--split-sentences",
        "--document-regex",
        "^== .* ==$",
        "--max-seq-length",
        "16",
        "--dupe-factor",
        "3",
    )
    assert len(arrays["input_ids"]) > 0


def test_parse_document_range():
    assert parse_document_range("0:55") == slice(0, 55)
    assert parse_document_range("55:") == slice(55, None)
    with pytest.raises(ValueError):
        parse_document_range("5")
    with pytest.raises(ValueError):
        parse_document_range("9:3")


# --- errors --------------------------------------------------------------------------------------


def cli_error(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*args, "--quiet"])
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_empty_input_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    err = cli_error(
        capsys,
        ["--input", str(empty), "--vocab-file", str(VOCAB), "--output-dir", str(tmp_path / "o")],
    )
    assert "no text found" in err
    folder = tmp_path / "nothing"
    folder.mkdir()
    err = cli_error(
        capsys,
        ["--input", str(folder), "--vocab-file", str(VOCAB), "--output-dir", str(tmp_path / "o")],
    )
    assert "no .txt files" in err
    err = cli_error(
        capsys,
        [
            "--input",
            str(tmp_path / "missing.txt"),
            "--vocab-file",
            str(VOCAB),
            "--output-dir",
            str(tmp_path / "o"),
        ],
    )
    assert "not found" in err


def test_missing_vocab_is_a_clear_error(tmp_path, capsys, tiny_corpus):
    path, _ = tiny_corpus
    err = cli_error(
        capsys,
        [
            "--input",
            str(path),
            "--vocab-file",
            str(tmp_path / "nope.txt"),
            "--output-dir",
            str(tmp_path / "o"),
        ],
    )
    assert "vocabulary file not found" in err


def test_refuses_to_mix_with_existing_shards(tmp_path, capsys, tiny_corpus):
    path, _ = tiny_corpus
    args = [
        "--input",
        str(path),
        "--vocab-file",
        str(VOCAB),
        "--output-dir",
        str(tmp_path / "o"),
        "--max-seq-length",
        "32",
        "--shard-size",
        "5",
    ]
    main([*args, "--quiet"])
    assert "--overwrite" in cli_error(capsys, args)
    main([*args, "--shard-size", "1000", "--overwrite", "--quiet"])
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["pretrain_shard_00000.hdf5"]


def test_sample_shards_match_the_format(tokenizer):
    """The committed sample shards exist and hold what the README says they hold."""
    train, evals, bible_continue, bible_eval = (
        sorted((DATA_SAMPLES / folder).glob("*.hdf5"))
        for folder in ("train", "eval", "bible-continue", "bible-eval")
    )
    assert len(train) >= 2 and len(evals) == 1
    assert len(bible_continue) == 2 and len(bible_eval) == 1
    for path in [*train, *evals, *bible_continue, *bible_eval]:
        arrays = read(path)
        assert arrays["input_ids"].shape[1] == 128 and arrays["masked_lm_positions"].shape[1] == 20
        assert arrays["input_ids"].max() < tokenizer.vocab_size


def readme_commands() -> list[list[str]]:
    """The create_data command lines of ``data_samples/README.md`` (arguments only)."""
    text = (DATA_SAMPLES / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    prefix = "python -m bert_tutorial.create_data "
    return [
        shlex.split(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)
    ]


def test_readme_commands_regenerate_the_sample_shards(tmp_path):
    """The committed shards are what the README's commands make (compared as arrays, not bytes)."""
    commands = readme_commands()
    assert len(commands) == 4  # Austen's train and eval, the Bible's continue and eval
    for args in commands:
        for flag in ("--input", "--vocab-file"):  # the README runs from the repository root
            args[args.index(flag) + 1] = str(REPO_ROOT / args[args.index(flag) + 1])
        committed = Path(args[args.index("--output-dir") + 1])
        args[args.index("--output-dir") + 1] = str(tmp_path / committed.name)
        assert main([*args, "--quiet"]) == 0
        fresh = sorted((tmp_path / committed.name).glob("*.hdf5"))
        assert [p.name for p in fresh] == [
            p.name for p in sorted((REPO_ROOT / committed).glob("*.hdf5"))
        ]
        for path in fresh:
            expected, actual = read(REPO_ROOT / committed / path.name), read(path)
            for name in FIELDS:
                np.testing.assert_array_equal(
                    actual[name], expected[name], err_msg=f"{path.name}:{name}"
                )


# --- the sample book at another sequence length -----------------------------------------------


def test_make_sample_shards_builds_once_and_reuses(tmp_path):
    paths = make_sample_shards(tmp_path / "d64", max_seq_length=64, progress=False)
    train = PretrainingDataset(paths["train_data"])
    evald = PretrainingDataset(paths["eval_data"])
    assert (train.max_seq_length, train.max_predictions) == (64, 10)
    assert len(train) > 7455 and 0 < len(evald) < len(train)  # shorter sequences, more of them
    first = {p: p.stat().st_mtime_ns for p in train.paths}
    again = make_sample_shards(tmp_path / "d64", max_seq_length=64, progress=False)
    assert again == paths and {p: p.stat().st_mtime_ns for p in train.paths} == first


def test_make_sample_shards_of_the_bible_split_it_as_data_samples(tmp_path):
    """corpus="bible": the README's settings (at T=128 the committed arrays), at any length."""
    paths = make_sample_shards(tmp_path / "b128", max_seq_length=128, corpus="bible", progress=False)
    assert [Path(paths[k]).name for k in ("train_data", "eval_data")] == ["bible-continue", "bible-eval"]
    for folder in ("bible-continue", "bible-eval"):
        fresh, committed = read_all(tmp_path / "b128" / folder), read_all(DATA_SAMPLES / folder)
        for name in FIELDS:
            np.testing.assert_array_equal(fresh[name], committed[name], err_msg=f"{folder}:{name}")
    short = make_sample_shards(tmp_path / "b64", max_seq_length=64, corpus="bible", progress=False)
    train, evald = PretrainingDataset(short["train_data"]), PretrainingDataset(short["eval_data"])
    assert (train.max_seq_length, train.max_predictions, evald.max_seq_length) == (64, 10, 64)
    assert len(train) > 3365 and len(evald) > 473  # shorter sequences, more of them
    with pytest.raises(ValueError, match="corpus must be one of"):
        make_sample_shards(tmp_path / "x", corpus="shakespeare")


def test_tokenize_documents_takes_a_transformers_tokenizer_too():
    """The ids, without [CLS]/[SEP], are those of the package's WordPiece; empty ones drop out."""
    documents = [["It is a truth universally acknowledged.", "Hello, Mr. Darcy!", "  "], [], ["x"]]
    ours = list(tokenize_documents(documents, WordPieceTokenizer.from_file(VOCAB)))
    assert list(tokenize_documents(documents, load_tokenizer(VOCAB))) == ours
    assert len(ours) == 2 and len(ours[0]) == 2  # the blank sentence and document are gone
