"""``python -m bert_tutorial.create_data --report``: what a run would make, nothing written.

The sequences, shards, tokens and masked predictions it reports are checked against
real runs with the same flags on chapters of the sample books; the [UNK] and 3+-piece
shares on a hand-made text whose answer is known.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_create_data import cli_error

from bert_tutorial.config import DATA_SAMPLES, REPO_ROOT
from bert_tutorial.create_data.cli import _options_from_args as options_from_args
from bert_tutorial.create_data.cli import (
    build_parser,
    create_pretraining_data,
    main,
    report_corpus,
)
from bert_tutorial.create_data.corpus import gutenberg_to_documents
from bert_tutorial.create_data.wordpiece import WordPieceTokenizer

VOCAB = DATA_SAMPLES / "vocab.txt"
BOOK = DATA_SAMPLES / "corpus" / "pride-and-prejudice.txt"
BIBLE = DATA_SAMPLES / "corpus" / "kjv-bible.txt"
CHAPTER = "^([123] )?[A-Z][a-z]+( of [A-Z][a-z]+)? [0-9]+$"  # data_samples/README.md's regex

#: Flags of small real runs: several shards (their shuffles draw from the stream), Google's
#: masks (drawn from the stream too), blocks of a few documents, one stream per file.
RUNS = {
    "book": ["--input", str(BOOK), "--gutenberg", "--documents", "0:6", "--dupe-factor", "2",
             "--shard-size", "100"],
    "book-google-masks": ["--input", str(BOOK), "--gutenberg", "--documents", "2:7",
                          "--masking", "google", "--shard-size", "150", "--seed", "3"],
    "bible-blocks": ["--input", str(BIBLE), "--split-sentences", "--document-regex", CHAPTER,
                     "--documents", "0:9", "--dupe-factor", "2", "--docs-per-block", "4",
                     "--max-seq-length", "64", "--shard-size", "200"],
}


def options(args: list[str]):
    parsed = build_parser().parse_args([*args, "--vocab-file", str(VOCAB), "--report"])
    return parsed, *options_from_args(parsed)


def written(folder: Path) -> list[dict[str, np.ndarray]]:
    shards = []
    for path in sorted(folder.glob("*.hdf5")):
        with h5py.File(path, "r") as f:
            shards.append({name: f[name][()] for name in ("input_mask", "masked_lm_positions")})
    return shards


@pytest.mark.parametrize("name", RUNS)
def test_the_report_counts_what_a_run_with_the_same_flags_writes(tmp_path, name):
    args, creation, corpus = options(RUNS[name])
    report = report_corpus(args.input, VOCAB, creation, corpus)
    summary = create_pretraining_data(args.input, VOCAB, tmp_path, creation, corpus, progress=False)
    shards = written(tmp_path)

    assert [n for _, n in report.summary.shards] == [len(s["input_mask"]) for s in shards]
    assert report.sequences == summary.instances == sum(len(s["input_mask"]) for s in shards)
    assert len(shards) > 1
    for field in ("documents", "sentences", "tokens", "split_segments"):
        assert getattr(report.summary, field) == getattr(summary, field), field
    assert report.sequence_tokens == sum(int(s["input_mask"].sum()) for s in shards)
    assert report.predictions == sum(int((s["masked_lm_positions"] != 0).sum()) for s in shards)
    # The words' pieces are the tokens, one by one.
    assert sum(n * len(report.word_pieces[w]) for w, n in report.word_counts.items()) == summary.tokens


def sample_commands() -> list[list[str]]:
    """The create_data command lines of ``data_samples/README.md`` (arguments only)."""
    text = (DATA_SAMPLES / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    prefix = "python -m bert_tutorial.create_data "
    return [shlex.split(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("index", range(4))
def test_the_report_of_each_sample_command_counts_its_committed_shards(index):
    """data_samples/README.md's commands, with --report: the committed shards, counted."""
    args = sample_commands()[index]
    committed = written(REPO_ROOT / args[args.index("--output-dir") + 1])
    for flag in ("--input", "--vocab-file"):  # the README runs from the repository root
        args[args.index(flag) + 1] = str(REPO_ROOT / args[args.index(flag) + 1])
    parsed = build_parser().parse_args([*args, "--report"])
    report = report_corpus(parsed.input, parsed.vocab_file, *options_from_args(parsed))
    assert [n for _, n in report.summary.shards] == [len(s["input_mask"]) for s in committed]
    assert report.sequence_tokens == sum(int(s["input_mask"].sum()) for s in committed)
    assert report.predictions == sum(int((s["masked_lm_positions"] != 0).sum()) for s in committed)


def test_per_file_streams_are_counted_as_a_run_makes_them(tmp_path):
    """--per-file: each file its own random stream and shards."""
    chapters = gutenberg_to_documents(BOOK.read_text(encoding="utf-8"))
    folder = tmp_path / "text"
    folder.mkdir()
    for name, part in (("a", chapters[:3]), ("b", chapters[3:5])):
        (folder / f"{name}.txt").write_text("\n\n".join("\n".join(c) for c in part) + "\n")
    args, creation, corpus = options(["--input", str(folder), "--per-file", "--shard-size", "120"])
    report = report_corpus(args.input, VOCAB, creation, corpus)
    create_pretraining_data(args.input, VOCAB, tmp_path / "out", creation, corpus, progress=False)
    shards = written(tmp_path / "out")
    assert [n for _, n in report.summary.shards] == [len(s["input_mask"]) for s in shards]
    assert len(shards) > 2
    assert report.predictions == sum(int((s["masked_lm_positions"] != 0).sum()) for s in shards)


def test_the_command_line_prints_the_sequences_a_run_writes(tmp_path, capsys):
    args = [*RUNS["book"], "--vocab-file", str(VOCAB), "--quiet"]
    assert main([*args, "--report", "--report-batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert main([*args, "--output-dir", str(tmp_path / "shards")]) == 0
    sequences = sum(len(s["input_mask"]) for s in written(tmp_path / "shards"))
    shards = len(written(tmp_path / "shards"))

    def figure(label: str) -> str:
        return re.search(rf"^  {re.escape(label)} +([\d,.]+)", out, re.MULTILINE).group(1)

    assert int(figure("sequences").replace(",", "")) == sequences
    assert int(figure("shards")) == shards
    assert int(figure("optimizer steps per epoch").replace(",", "")) == sequences // 16
    assert "at 16 sequences per optimizer step" in out
    assert "nothing written" in out


@pytest.fixture
def hand_made(tmp_path) -> tuple[Path, Path]:
    """A vocabulary that spells "jehoshaphat" in 4 pieces and lacks "dog", and a text using both."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat",
                                ".", ",", "je", "##hos", "##ha", "##phat"]) + "\n")
    text = tmp_path / "text.txt"
    text.write_text("The cat sat.\nJehoshaphat sat, the cat sat.\n\nThe dog sat.\n")
    return text, vocab


def test_unk_and_many_piece_shares_of_a_hand_made_text(hand_made, capsys):
    text, vocab = hand_made
    # 11 words and 4 punctuation marks; "jehoshaphat" is 4 pieces, "dog" one [UNK]: 18 tokens.
    report = report_corpus([text], vocab)
    assert report.words() == (11, 4)
    assert report.summary.tokens == 18
    assert report.unk_words(1) == [("dog", 1)]
    assert report.many_piece_words() == [("jehoshaphat", 1)]

    assert main(["--input", str(text), "--vocab-file", str(vocab), "--report", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  words +11  and 4 punctuation marks$", out, re.MULTILINE)
    assert re.search(r"^  WordPiece tokens +18  1\.20 per word or mark$", out, re.MULTILINE)
    assert re.search(r"^  \[UNK\] tokens +1  5\.56 % of the tokens$", out, re.MULTILINE)  # 1/18
    assert re.search(r"^  words in 3\+ pieces +1  9\.09 % of the words$", out, re.MULTILINE)  # 1/11
    assert re.search(r"^  dog +1x$", out, re.MULTILINE)
    assert re.search(r"^  jehoshaphat +1x  je ##hos ##ha ##phat$", out, re.MULTILINE)
    reading = " ".join(out.split("Reading:")[1].split())
    assert "does not fit" in reading and "5.6 % of the tokens are [UNK]" in reading
    assert "9.1 % of the words are spelled in 3+ pieces" in reading
    assert "bert-base's vocabulary" in reading  # the trade-off is named


def test_a_fitting_vocabulary_reads_as_fitting(capsys):
    assert main(["--input", str(BOOK), "--gutenberg", "--documents", "0:3", "--vocab-file",
                 str(VOCAB), "--report", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Most frequent words that become [UNK]: none" in out
    assert "the vocabulary fits this text" in " ".join(out.split())


def test_words_are_the_tokens_one_by_one():
    """ASCII sentences (the fast path) and others (tokenizers): the same ids as a run's."""
    tokenizer = WordPieceTokenizer.from_file(VOCAB)
    sentences = ["Jehoshaphat said, \"Hello\" to Mephibosheth.", "Café [MASK] naïve 北京 x",
                 "It's   12\tmiles\u00a0off…", ""]
    words = tokenizer.words(sentences)
    assert [i for _, pieces in words for i in pieces] == [i for ids in tokenizer(sentences) for i in ids]
    assert ("jehoshaphat", tokenizer(["jehoshaphat"])[0]) in words
    assert ("café", tokenizer(["café"])[0]) in words  # the word as written (lower-cased)


def test_the_report_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*RUNS["book"], "--vocab-file", str(VOCAB), "--report", "--quiet",
                 "--output-dir", "shards", "--prefix", "x"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert main([*RUNS["book"], "--vocab-file", str(VOCAB), "--report", "--quiet"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert "sequences" in capsys.readouterr().out


def test_report_errors_name_the_problem(tmp_path, capsys):
    missing = tmp_path / "missing.txt"
    err = cli_error(capsys, ["--input", str(missing), "--vocab-file", str(VOCAB), "--report"])
    assert f"error: {missing}: input file or folder not found" in err

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    err = cli_error(capsys, ["--input", str(empty), "--vocab-file", str(VOCAB), "--report"])
    assert f"error: no text found in {empty}" in err
    err = cli_error(capsys, [*RUNS["book"][:3], "--documents", "100:", "--vocab-file", str(VOCAB),
                             "--report"])
    assert f"error: no text found in {BOOK} (document range 100:)" in err

    err = cli_error(capsys, ["--input", str(BOOK), "--vocab-file", str(tmp_path / "v.txt"), "--report"])
    assert "v.txt: vocabulary file not found" in err
    err = cli_error(capsys, ["--input", str(BIBLE), "--gutenberg", "--vocab-file", str(VOCAB), "--report"])
    assert f"{BIBLE}: not a Project Gutenberg text" in err
    err = cli_error(capsys, ["--input", str(BOOK), "--vocab-file", str(VOCAB), "--report",
                             "--report-batch-size", "0"])
    assert "--report-batch-size must be >= 1, got 0" in err
    assert not list(tmp_path.glob("*.hdf5"))


def test_without_report_the_output_dir_is_still_required(capsys):
    err = cli_error(capsys, ["--input", str(BOOK), "--vocab-file", str(VOCAB)])
    assert "the following arguments are required: --output-dir" in err


@pytest.mark.slow
def test_the_readme_your_own_corpus_commands_run_and_print_what_it_shows(tmp_path):
    """The README's "Your own corpus" commands as a reader copies them, from the repository root:
    the report prints the output shown, the shards are made, and the training run starts
    (the hub model swapped for the local starting model, stopped before its first step)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your own corpus", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(bash)?\n(.*?)```", section, re.DOTALL)
    commands = [shlex.split(line) for lang, block in blocks if lang
                for line in block.replace("\\\n", " ").splitlines() if line.startswith("python -m ")]
    assert [c[2] for c in commands] == ["bert_tutorial.create_data"] * 4 + ["bert_tutorial.pretrain"]
    shown = blocks[1][1]  # the report's output, after its command
    assert not blocks[1][0] and shown.startswith("Report on data_samples/corpus/kjv-bible.txt")

    (tmp_path / "data_samples").symlink_to(DATA_SAMPLES)
    commands[-1] += ["--model-name-or-path", str(DATA_SAMPLES / "base-model"), "--device", "cpu",
                     "--dry-run"]
    for command in commands:
        done = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{shlex.join(command)}\n{done.stderr[-3000:]}"
        if "--report" in command:
            assert done.stdout == shown
    assert "58559 train sequences, 684 optimizer steps -> runs/mine" in done.stdout
    assert len(list((tmp_path / "my_shards" / "train").glob("bible_shard_*.hdf5"))) == 11
