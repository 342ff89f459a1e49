"""``create_data`` on odd input: each attack of issue 15, with the outcome it must have.

| attack | outcome |
|---|---|
| a line of 200 KB, no newline | split into sentences/chunks, >= 95 % of it in instances (was 0.4 %) |
| sentence splitter on runs of "!!!", "...", initials | linear time, same sentences as before |
| truncation of a segment of 400k tokens | linear time |
| a block of one document | a CreationWarning; no same-document B labelled 1 |
| a corpus whose last block would hold one document | that document joins the block before |
| a non-UTF-8 file | exit 2, message names the file, the byte and --encoding/--errors |
| --output-dir that is a file, or below a file | exit 2, message names the folder |
| --masked-lm-prob 0.3 at T=128 | P = 38 by default; an explicit P = 20 warns |
| --help, a small run | transformers is never imported |
| --max-predictions-per-seq 0 | exit 2, the range error of 500 (was: silently 20) |
| a .gz (.bz2, .xz, .zip, .zst) input | exit 2 naming the file and the compression, even with --errors replace |
| --overwrite, then the run fails (bad bytes, no text, Ctrl-C...) | the old shards are put back byte for byte |
| --overwrite with fewer shards than before | only the new shards remain |
| --workers 2, a write cut off mid-shard | no *.hdf5.tmp is left |
| a file size limit / full disk, 1 or 2 workers, --overwrite (issue 27) | one named line, exit 2; old shards back |
| a worker killed (SIGKILL) | named, not waited for forever |
| old shards a killed --overwrite left hidden | named by the next create_data and by the trainer |
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_create_data import BOOK, VOCAB, cli_error, read_all, restore, run_cli

from bert_tutorial.create_data.cli import CreationWarning, create_pretraining_data, main
from bert_tutorial.create_data.corpus import split_long_text, split_sentences
from bert_tutorial.create_data.instances import InstanceOptions, truncate_seq_pair
from bert_tutorial.create_data.pipeline import CreationOptions
from bert_tutorial.tokenization import read_vocab

CLS, SEP = 101, 102


@pytest.fixture(scope="module")
def word_sets() -> tuple[list[str], list[str]]:
    """Two disjoint lists of lower-case words that are single word pieces of the vocabulary."""
    words = [w for w, i in read_vocab(VOCAB).items() if i >= 2000 and w.isalpha() and w.islower()]
    return words[:3000], words[3000:6000]


def test_a_long_line_is_split_and_kept(tmp_path, word_sets):
    """A 200 KB line (no newline, no sentence end): its tokens end up in instances, not dropped.

    Before: 8 instances holding 113 of its 30,000 tokens (0.4 %); now 97.8 % per pass.
    """
    rng = random.Random(0)
    long_words, other_words = word_sets
    line = " ".join(rng.choice(long_words) for _ in range(30_000))
    assert len(line) > 200_000
    other = "\n".join(" ".join(rng.choice(other_words) for _ in range(12)) for _ in range(50))
    corpus = tmp_path / "long.txt"
    corpus.write_text(line + "\n\n" + other + "\n")
    arrays = run_cli(tmp_path, "--input", str(corpus), "--dupe-factor", "1", "--short-seq-prob", "0")
    vocab = read_vocab(VOCAB)
    long_ids = {vocab[w] for w in long_words}
    original = restore(arrays)
    covered = 0
    for row, label in zip(original, arrays["next_sentence_labels"], strict=True):
        sep1, sep2 = np.flatnonzero(row == SEP)[:2]
        if int(row[1]) in long_ids:  # A comes from the long line
            covered += sep1 - 1 + (sep2 - sep1 - 1 if label == 0 else 0)
    assert covered >= 0.95 * 30_000


def test_long_text_is_split_in_linear_time():
    """Runs that made the old splitter quadratic (60 KB took 27-86 s) take well under a second."""
    cases = ["J. " * 100_000, "!" * 300_000 + " x", "a" + "." * 300_000 + " X", "A. b " * 60_000]
    for text in cases:
        start = time.process_time()
        pieces = split_long_text(text)
        assert time.process_time() - start < 5
        assert all(len(p) <= 10_000 for p in pieces)
        assert "".join(pieces).replace(" ", "") == text.replace(" ", "")  # nothing lost
    assert split_sentences("Yes!!! No... Maybe?") == ["Yes!!!", "No...", "Maybe?"]


def test_truncating_a_huge_segment_is_linear():
    """400k tokens: the old one-at-a-time deletion from the front took about 30 s."""
    tokens_a, tokens_b = list(range(400_000)), [1, 2, 3]
    start = time.process_time()
    removed = truncate_seq_pair(tokens_a, tokens_b, 125, random.Random(0))
    assert time.process_time() - start < 5
    assert removed == 400_003 - 125 and len(tokens_a) + len(tokens_b) == 125
    assert tokens_a == list(range(tokens_a[0], tokens_a[0] + len(tokens_a)))  # one stretch


def test_single_document_block_warns_and_never_labels_same_document_b_random(tmp_path):
    """--split-sentences without --document-regex on one file: one document, as the issue found."""
    corpus = tmp_path / "prose.txt"
    corpus.write_text(" ".join(f"Sentence number {i} is here." for i in range(200)) + "\n")
    with pytest.warns(CreationWarning, match="single document") as caught:
        summary = create_pretraining_data(
            [corpus], VOCAB, tmp_path / "o", CreationOptions(InstanceOptions(max_seq_length=32,
            max_predictions_per_seq=5)), _paragraphs(), progress=False)
    assert "labelled 0" in str(caught[0].message)
    assert caught[0].filename == __file__  # the warning names the caller's line
    arrays = read_all(tmp_path / "o")
    assert summary.documents == 1 and summary.same_document_b > 0
    assert (arrays["next_sentence_labels"] == 0).all()  # before: about half were labelled 1

    # --per-file names the file as it is called (it was "<stem>.txt", wrong for prose.md).
    corpus = corpus.rename(tmp_path / "prose.md")
    with pytest.warns(CreationWarning, match=r"\(prose\.md:block 0\)"):
        create_pretraining_data(
            [corpus], VOCAB, tmp_path / "p", CreationOptions(InstanceOptions(max_seq_length=32,
            max_predictions_per_seq=5), per_file=True), _paragraphs(), progress=False)


def _paragraphs():
    from bert_tutorial.create_data.corpus import CorpusOptions

    return CorpusOptions(input_format="paragraphs")


def test_a_last_block_of_one_document_joins_the_block_before(tmp_path, recwarn):
    corpus = tmp_path / "five.txt"
    corpus.write_text("\n\n".join(f"Doc {d} first line.\nDoc {d} second line." for d in range(5)))
    summary = create_pretraining_data(
        [corpus], VOCAB, tmp_path / "o",
        CreationOptions(InstanceOptions(max_seq_length=16, max_predictions_per_seq=3),
                        docs_per_block=2), progress=False)
    assert summary.documents == 5 and summary.single_document_blocks == []
    assert summary.same_document_b == 0
    assert not [w for w in recwarn if issubclass(w.category, CreationWarning)]


def test_undecodable_file_is_named_with_the_byte_and_the_way_out(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Caf\u00e9 au lait.\nSecond line here.\n".encode("latin-1"))
    args = ["--input", str(bad), "--vocab-file", str(VOCAB), "--max-seq-length", "16"]
    err = cli_error(capsys, [*args, "--output-dir", str(tmp_path / "o")])
    assert str(bad) in err and "byte 3 (line 1)" in err and "--encoding" in err
    assert "--errors replace" in err
    for fix in (["--encoding", "latin-1"], ["--errors", "replace"]):
        assert main([*args, *fix, "--output-dir", str(tmp_path / fix[1]), "--quiet"]) == 0
    err = cli_error(capsys, [*args, "--encoding", "klingon", "--output-dir", str(tmp_path / "k")])
    assert "--encoding 'klingon'" in err


def test_output_folder_problems_are_named_errors(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("One line.\nTwo lines.\n")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    base = ["--input", str(corpus), "--vocab-file", str(VOCAB)]
    for output, message in ((a_file, "is a file, not a folder"),
                            (a_file / "sub", f"{a_file} is a file, not a folder")):
        err = cli_error(capsys, [*base, "--output-dir", str(output)])
        assert f"--output-dir {output}" in err and message in err and "Traceback" not in err


def test_max_predictions_default_follows_masked_lm_prob(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    rng = random.Random(1)
    words = [w for w, i in read_vocab(VOCAB).items() if i >= 2000 and w.isalpha()][:2000]
    corpus.write_text("\n\n".join("\n".join(" ".join(rng.choice(words) for _ in range(15))
                                            for _ in range(20)) for _ in range(10)))
    arrays = run_cli(tmp_path, "--input", str(corpus), "--masked-lm-prob", "0.3")
    assert arrays["masked_lm_positions"].shape[1] == 38  # round(128 * 0.3); was 20 (15.6 %)
    n_pred = (arrays["masked_lm_ids"] != 0).sum()
    assert abs(n_pred / arrays["input_mask"].sum() - 0.3) < 0.02
    main(["--input", str(corpus), "--vocab-file", str(VOCAB), "--masked-lm-prob", "0.3",
          "--max-predictions-per-seq", "20", "--output-dir", str(tmp_path / "p20"), "--quiet"])
    assert "warning: max_predictions_per_seq=20 caps the masked tokens at 15.6%" in (
        capsys.readouterr().err)


def _imported_modules(code: str) -> set[str]:
    """The modules ``code`` leaves imported (read from a marked last line, not from its output)."""
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('MODULES:', ' '.join(sys.modules))"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    return set(out.stdout.rsplit("MODULES:", 1)[1].split())


def test_help_and_small_runs_do_not_import_transformers(tmp_path):
    """transformers takes ~6 s to import; create_data tokenises with ``tokenizers`` alone."""
    help_modules = _imported_modules(
        "from bert_tutorial.create_data.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert not {"transformers", "torch", "h5py", "numpy", "tokenizers"} & help_modules
    corpus = tmp_path / "c.txt"
    corpus.write_text("One line of text.\nAnother line of text.\n\nA second document.\nEnd.\n")
    run_modules = _imported_modules(
        "from bert_tutorial.create_data.cli import main\n"
        f"main(['--input', {str(corpus)!r}, '--vocab-file', {str(VOCAB)!r}, '--output-dir', "
        f"{str(tmp_path / 'o')!r}, '--max-seq-length', '16', '--quiet'])")
    assert "h5py" in run_modules and not {"transformers", "torch"} & run_modules


def test_ctrl_c_while_writing_a_shard_leaves_complete_shards_and_a_message(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the second shard's write: exit 130, one line, shard 0 intact, no temporary file."""
    import h5py

    from bert_tutorial.hdf5_format import FIELDS, inspect_shard, read_shard

    real = h5py.Group.create_dataset
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == len(FIELDS) + 2:  # the second field of the second shard
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", interrupted)
    book = VOCAB.parent / "corpus" / "pride-and-prejudice.txt"
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        main(["--input", str(book), "--gutenberg", "--documents", "0:3", "--vocab-file", str(VOCAB),
              "--output-dir", str(out), "--shard-size", "40", "--quiet"])
    assert stop.value.code == 130
    assert f"interrupted; the shards already in {out} are complete" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["pretrain_shard_00000.hdf5"]
    assert len(read_shard(inspect_shard(out / "pretrain_shard_00000.hdf5"))["input_ids"]) == 40


def test_zero_max_predictions_is_the_range_error_not_the_default(tmp_path, capsys):
    """--max-predictions-per-seq 0 was read as "not given" and silently became 20."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("One line of text.\nAnother line of text.\n\nA second document.\nEnd.\n")
    base = ["--input", str(corpus), "--vocab-file", str(VOCAB), "--output-dir", str(tmp_path / "o")]
    for value in ("0", "500"):
        err = cli_error(capsys, [*base, "--max-predictions-per-seq", value])
        assert f"max_predictions_per_seq must be in [1, max_seq_length], got {value}" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_compressed_input_is_a_named_error_whatever_the_errors_option(tmp_path, capsys):
    """A .gz was decoded as text: the error suggested --errors replace, which trained on its bytes."""
    import bz2
    import gzip
    import lzma
    import zipfile

    text = b"One line of text.\nAnother line of text.\n\nA second document.\nEnd.\n"
    files = {"gzip": tmp_path / "c.txt.gz", "bzip2": tmp_path / "c.txt.bz2",
             "xz": tmp_path / "c.txt.xz", "zip": tmp_path / "c.zip", "zstd": tmp_path / "c.zst"}
    files["gzip"].write_bytes(gzip.compress(text))
    files["bzip2"].write_bytes(bz2.compress(text))
    files["xz"].write_bytes(lzma.compress(text))
    with zipfile.ZipFile(files["zip"], "w") as archive:
        archive.writestr("c.txt", text)
    files["zstd"].write_bytes(b"\x28\xb5\x2f\xfd" + bytes(range(40)))  # a frame header's magic
    for kind, path in files.items():
        base = ["--input", str(path), "--vocab-file", str(VOCAB), "--max-seq-length", "16"]
        for extra in ([], ["--errors", "replace"], ["--encoding", "latin-1"]):
            out = tmp_path / f"o-{kind}-{len(extra)}"
            err = cli_error(capsys, [*base, *extra, "--output-dir", str(out)])
            assert f"{path}: a {kind}-compressed file, not text: decompress it first" in err
            assert "Traceback" not in err and not list(out.glob("*.hdf5"))
    plain = tmp_path / "bzh.txt"  # text that starts like a bzip2 header is still text
    plain.write_text("BZh9 is not a header here.\n" + text.decode())
    assert main(["--input", str(plain), "--vocab-file", str(VOCAB), "--max-seq-length", "16",
                 "--output-dir", str(tmp_path / "plain"), "--quiet"]) == 0


# --- --overwrite keeps the old shards until the new ones are written ---------------------------


def _folder(path: Path) -> dict[str, bytes]:
    """Every entry of ``path`` (hidden ones too) as name -> bytes; a sub-folder fails the test."""
    assert all(p.is_file() for p in path.iterdir()), sorted(p.name for p in path.iterdir())
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _three_shards(tmp_path: Path) -> tuple[list[str], Path, dict[str, bytes]]:
    """A run of prefix "p" into tmp_path/out1 with three shards: (its arguments, out1, its files)."""
    out = tmp_path / "out1"
    args = ["--input", str(BOOK), "--gutenberg", "--documents", "0:3", "--vocab-file", str(VOCAB),
            "--output-dir", str(out), "--prefix", "p", "--dupe-factor", "1", "--shard-size", "15",
            "--quiet"]
    assert main(args) == 0
    before = _folder(out)
    assert len(before) == 3
    return args, out, before


def test_a_failed_overwrite_leaves_the_old_shards_as_they_were(tmp_path, capsys):
    """The old shards were unlinked before any text was read: a failed run left nothing."""
    _, out, before = _three_shards(tmp_path)
    bad, blank = tmp_path / "bad.txt", tmp_path / "blank.txt"
    bad.write_bytes(b"Fine first line.\n\xff\xfe broken\n")
    blank.write_text("\n\n   \n")
    base = ["--vocab-file", str(VOCAB), "--output-dir", str(out), "--prefix", "p", "--overwrite"]
    for args, message in (
        (["--input", str(bad)], "not valid utf-8-sig text"),
        (["--input", str(blank)], "no text found"),
        (["--input", str(BOOK), "--gutenberg", "--documents", "500:600"], "no text found"),
    ):
        assert message in cli_error(capsys, [*args, *base])
        assert _folder(out) == before, args
    # A failure after new shards were written: the single-document warning, made an error.
    prose = tmp_path / "prose.txt"
    prose.write_text(" ".join(f"Sentence number {i} is here." for i in range(200)) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CreationWarning)
        with pytest.raises(CreationWarning, match="single document"):
            create_pretraining_data(
                [prose], VOCAB, out, CreationOptions(InstanceOptions(max_seq_length=32,
                max_predictions_per_seq=5), shard_size=20), _paragraphs(), prefix="p",
                overwrite=True, progress=False, workers=2)
    assert _folder(out) == before


def test_ctrl_c_in_an_overwrite_puts_the_old_shards_back(tmp_path, monkeypatch, capsys):
    import h5py

    from bert_tutorial.hdf5_format import FIELDS

    args, out, before = _three_shards(tmp_path)
    real, calls = h5py.Group.create_dataset, []

    def interrupted(self, *a, **kw):
        calls.append(a[0])
        if len(calls) == len(FIELDS) + 2:  # in the second new shard, the first one in place
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(h5py.Group, "create_dataset", interrupted)
    with pytest.raises(SystemExit) as stop:
        main([*args, "--seed", "99", "--overwrite"])
    assert stop.value.code == 130 and "put back" in capsys.readouterr().err
    assert _folder(out) == before


def test_a_successful_overwrite_leaves_only_the_new_shards(tmp_path):
    args, out, before = _three_shards(tmp_path)
    assert main([*args, "--shard-size", "1000", "--seed", "99", "--overwrite"]) == 0
    after = _folder(out)  # one shard: no stale p_shard_00001/2, no hidden folder left
    assert list(after) == ["p_shard_00000.hdf5"]
    assert after["p_shard_00000.hdf5"] != before["p_shard_00000.hdf5"]


# --- a failed run leaves no temporary shard file ---------------------------------------------


def test_remove_temporary_shards_removes_this_runs_only(tmp_path):
    from bert_tutorial.create_data.shard_writer import remove_temporary_shards

    names = ["p_shard_00000.hdf5.tmp", "p_a_shard_00001.hdf5.tmp", "p_b_shard_00000.hdf5.tmp",
             "q_shard_00000.hdf5.tmp", "p_shard_00000.hdf5", "p_shard_x.hdf5.tmp", "notes.tmp"]
    for name in names:
        (tmp_path / name).write_text("x")
    remove_temporary_shards(tmp_path, "p", None)
    assert not (tmp_path / "p_shard_00000.hdf5.tmp").exists()
    remove_temporary_shards(tmp_path, "p", ["a"])  # --per-file: only file "a"'s
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


def test_a_worker_cut_off_mid_write_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    """A write that dies after creating its .tmp, as a worker the pool terminates does."""
    from bert_tutorial import hdf5_format
    from bert_tutorial.create_data.corpus import gutenberg_to_documents

    chapters = gutenberg_to_documents(BOOK.read_text(encoding="utf-8"))[:3]
    good = tmp_path / "in" / "bb-good.txt"
    good.parent.mkdir()
    good.write_text("\n\n".join("\n".join(chapter) for chapter in chapters) + "\n")
    base = ["--vocab-file", str(VOCAB), "--shard-size", "40", "--workers", "2"]
    # The run: --per-file, one file undecodable; the other's worker may be mid-write.
    (good.parent / "aa-bad.txt").write_bytes(b"fine line\n\xff\xfe broken\n")
    err = cli_error(capsys, ["--input", str(good.parent), "--per-file", *base,
                             "--output-dir", str(tmp_path / "o")])
    assert "aa-bad.txt: not valid utf-8-sig" in err and not list((tmp_path / "o").glob("*.tmp"))

    def cut_off(path, arrays):  # runs in the forked workers, which inherit the patch
        Path(f"{path}.tmp").write_bytes(b"half a shard")
        raise OSError(f"{path}: disk full")

    monkeypatch.setattr(hdf5_format, "write_shard", cut_off)
    for mode in ([], ["--per-file"]):  # shards written by the pool, or inside a file's task
        out = tmp_path / f"out{len(mode)}"
        err = cli_error(capsys, ["--input", str(good), *mode, *base, "--output-dir", str(out)])
        assert "disk full" in err
        assert not list(out.glob("*.tmp")), sorted(p.name for p in out.iterdir())


# --- issue 27, case 1: a full disk or a file size limit while writing shards ------------------


def _limited(size: int):
    """A ``preexec_fn`` that sets ``ulimit -f`` (bytes here): writes beyond it fail with EFBIG."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def _create(args: list[str], limit: int | None = None) -> subprocess.CompletedProcess:
    """``python -m bert_tutorial.create_data ARGS`` in a process of its own (a hang fails it)."""
    return subprocess.run([sys.executable, "-m", "bert_tutorial.create_data", *args],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent,
                          preexec_fn=_limited(limit) if limit else None)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_fault_12_a_file_size_limit_while_writing_shards_is_a_named_error(tmp_path, workers):
    """Was: h5py's "Exception ignored" tracebacks, then a segfault; with --workers 2 a hang."""
    out = tmp_path / "out"
    args = ["--input", str(BOOK), "--gutenberg", "--documents", "0:3", "--vocab-file", str(VOCAB),
            "--output-dir", str(out), "--dupe-factor", "1", "--shard-size", "15", "--quiet",
            "--workers", workers]
    result = _create(args, limit=20_000)  # each shard is about 23 KB
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert (f"error: the file size limit was reached while writing {out}/pretrain_shard_0000"
            in result.stderr), result.stderr
    assert "no shard was written: raise the limit (ulimit -f)" in result.stderr, result.stderr
    assert list(out.iterdir()) == []  # no temporary file left


def test_fault_12_a_full_disk_in_an_overwrite_puts_the_old_shards_back(tmp_path):
    args, out, before = _three_shards(tmp_path)
    result = _create([*args, "--seed", "99", "--overwrite"], limit=20_000)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"the old shards are back in {out} as they were" in result.stderr, result.stderr
    assert _folder(out) == before  # byte for byte, and no hidden folder left


def test_fault_12_a_worker_killed_mid_run_is_named_not_waited_for(tmp_path, monkeypatch, capsys):
    """A worker the OOM killer ends (SIGKILL): the pool replaces it, its task is lost."""
    import os
    import signal

    from bert_tutorial import hdf5_format

    monkeypatch.setattr(hdf5_format, "write_shard",  # runs in the forked workers
                        lambda path, arrays: os.kill(os.getpid(), signal.SIGKILL))
    out = tmp_path / "out"
    err = cli_error(capsys, ["--input", str(BOOK), "--gutenberg", "--documents", "0:3", "--vocab-file",
                             str(VOCAB), "--output-dir", str(out), "--shard-size", "15", "--workers", "2"])
    assert "a worker process (pid " in err and "died (killed by SIGKILL)" in err, err
    assert list(out.iterdir()) == []


def test_fault_12_shards_a_killed_overwrite_left_aside_are_named_not_buried(tmp_path, capsys):
    """A run killed outright cannot put the old shards back: the next runs say where they are."""
    args, out, before = _three_shards(tmp_path)
    aside = out / ".p-replaced-abc123"
    aside.mkdir()
    for name in before:
        (out / name).rename(aside / name)  # as a SIGKILLed --overwrite run leaves the folder
    err = cli_error(capsys, [*args, "--overwrite"])
    assert f"{aside}: holds 3 old 'p' shard(s)" in err and "move them back" in err, err
    assert sorted(p.name for p in aside.iterdir()) == sorted(before)
    from bert_tutorial.core.data import find_shards
    from bert_tutorial.hdf5_format import ShardError

    with pytest.raises(ShardError, match=r"holds no shard files .*\.p-replaced-abc123 holds shards "
                                         "that an interrupted create_data --overwrite set aside"):
        find_shards(out)


def test_fault_12_a_full_disk_for_real_is_a_named_error(tmp_path):
    """A 40 KB tmpfs in a private mount namespace (skipped where ``unshare -rm`` is not allowed)."""
    from test_fault_values import private_mount

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = ["--input", str(BOOK), "--gutenberg", "--documents", "0:3", "--vocab-file", str(VOCAB),
            "--output-dir", str(mnt / "out"), "--dupe-factor", "1", "--shard-size", "15", "--quiet"]
    for workers in ("1", "2"):
        cmd = " ".join([sys.executable, "-m", "bert_tutorial.create_data", *args, "--workers", workers])
        result = private_mount(f"""
            mount -t tmpfs -o size=40k tmpfs {mnt}
            {cmd}; echo "rc=$?"; ls -a {mnt}/out""", Path(__file__).parent.parent)
        assert "rc=2" in result.stdout, (result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert re.search(r"error: no space left while writing .*/out/pretrain_shard_0000\d\.hdf5; the 1 "
                         r"shard\(s\) already in .*/out are complete, the run is not: free some space and "
                         r"run the same command again with --overwrite$", result.stderr), result.stderr
        assert ".tmp" not in result.stdout


# --- found by attacking issue 27's changes as a user (2026-12-06) -----------------------------


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_a_stop_signal_in_an_overwrite_puts_the_old_shards_back(tmp_path, monkeypatch, capsys, signame):
    """scancel (SIGTERM) or a closed terminal (SIGHUP) ended the process at once: the old shards
    stayed hidden in .p-replaced-*, the folder looked empty."""
    import os
    import signal

    import h5py

    args, out, before = _three_shards(tmp_path)
    real, calls = h5py.Group.create_dataset, []

    def signalled(self, *a, **kw):
        calls.append(a[0])
        if len(calls) == 8:  # in the second new shard, the first one in place
            os.kill(os.getpid(), getattr(signal, signame))
        return real(self, *a, **kw)

    monkeypatch.setattr(h5py.Group, "create_dataset", signalled)
    with pytest.raises(SystemExit) as stop:
        main([*args, "--seed", "99", "--overwrite"])
    assert stop.value.code == 128 + getattr(signal, signame)
    err = capsys.readouterr().err
    assert f"stopped by {signame}; the shards already in {out} are complete (the old ones, put back" in err
    assert _folder(out) == before


def test_an_input_given_twice_is_refused(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("One line of text.\nAnother line of text.\n\nA second document.\nEnd.\n")
    (tmp_path / "link.txt").symlink_to(corpus)
    for inputs in ([corpus, corpus], [tmp_path]):  # listed twice; a folder holding a link to it
        err = cli_error(capsys, ["--input", *map(str, inputs), "--vocab-file", str(VOCAB),
                                 "--output-dir", str(tmp_path / "o")])
        assert "the same file as" in err and "its documents would be in the shards twice" in err, err


@pytest.mark.parametrize("prefix", ["../escaped", "sub/dir", ".hidden", ""])
def test_a_prefix_that_is_not_a_plain_name_is_refused(tmp_path, capsys, prefix):
    corpus = tmp_path / "c.txt"
    corpus.write_text("One line of text.\nAnother line of text.\n\nA second document.\nEnd.\n")
    out = tmp_path / "deep" / "o"
    err = cli_error(capsys, ["--input", str(corpus), "--vocab-file", str(VOCAB), "--output-dir", str(out),
                             "--prefix", prefix])
    assert f"--prefix {prefix!r}: must be a plain file name" in err, err
    assert not list(tmp_path.rglob("*.hdf5"))
