"""``--workers N`` and ``--per-file``: the same bytes for every N, and shards that add up across machines.

* One stream (the default): the random stream stays in the main process, so N only
  changes who tokenises and who compresses; the committed sample shards come out
  byte for byte with any N (checked against the sha256 sums of ``data_samples/README.md``,
  Austen's and the Bible's, and, for ``data_samples/continue/``, of the base model's card).
* ``--per-file``: a file's shards depend only on the file, the seed and the options,
  so two partial runs over disjoint file sets, put together, are exactly the shards
  of one run over all files (the recipe of ``docs/large_corpus.md``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import h5py
import pytest
from test_create_data import BOOK, VOCAB, cli_error, readme_commands

from bert_tutorial.config import DATA_SAMPLES, REPO_ROOT
from bert_tutorial.create_data.cli import main
from bert_tutorial.create_data.corpus import gutenberg_to_documents


def run(output: Path, *args: str) -> dict[str, bytes]:
    """Run the CLI; the shards it wrote as name -> bytes."""
    assert main([*args, "--vocab-file", str(VOCAB), "--output-dir", str(output), "--quiet"]) == 0
    return {p.name: p.read_bytes() for p in sorted(output.glob("*.hdf5"))}


@pytest.mark.parametrize("masking", ["vectorized", "google"])
def test_one_stream_is_the_same_bytes_for_any_number_of_workers(tmp_path, masking):
    """Several blocks, shards that fill up mid-block, documents tokenised ahead: N = 1, 2, 3."""
    args = ["--input", str(BOOK), "--gutenberg", "--documents", "0:14", "--dupe-factor", "2",
            "--docs-per-block", "3", "--shard-size", "300", "--max-seq-length", "64", "--seed", "4",
            "--masking", masking]
    one = run(tmp_path / "w1", *args)
    assert len(one) >= 4
    for workers in ("2", "3"):
        assert run(tmp_path / f"w{workers}", *args, "--workers", workers) == one


EXPECTED_SUMS = dict(
    re.findall(r"`((?:train|eval|bible-continue|bible-eval)/[\w-]+\.hdf5)` "
               r"\|[^|]*\|[^|]*\|[^|]*\| `([0-9a-f]{64})`",
               (DATA_SAMPLES / "README.md").read_text(encoding="utf-8"))
)


@pytest.mark.skipif(
    (h5py.version.version, h5py.version.hdf5_version) != ("3.16.0", "2.0.0"),
    reason="the README's sums were made with h5py 3.16.0 / HDF5 2.0.0; other versions may differ",
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_readme_commands_give_the_committed_bytes(tmp_path, workers):
    """The hard constraint: the sample shards, sha256 for sha256, also with --workers 2."""
    assert len(EXPECTED_SUMS) == 7  # train 3, eval 1, bible-continue 2, bible-eval 1
    for args in readme_commands():
        for flag in ("--input", "--vocab-file"):
            args[args.index(flag) + 1] = str(REPO_ROOT / args[args.index(flag) + 1])
        committed = args[args.index("--output-dir") + 1]
        args[args.index("--output-dir") + 1] = str(tmp_path / committed)
        assert main([*args, "--quiet", "--workers", workers]) == 0
    made = {p.relative_to(tmp_path / "data_samples").as_posix():
            hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((tmp_path / "data_samples").rglob("*.hdf5"))}
    assert made == EXPECTED_SUMS


@pytest.mark.skipif(
    (h5py.version.version, h5py.version.hdf5_version) != ("3.16.0", "2.0.0"),
    reason="the model card's sums were made with h5py 3.16.0 / HDF5 2.0.0",
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_continue_shards_give_the_committed_bytes(tmp_path, workers):
    """data_samples/continue/ (scripts/make_base_model.py's command) is also reproduced exactly."""
    card = (DATA_SAMPLES / "base-model" / "README.md").read_text(encoding="utf-8")
    expected = dict(re.findall(r"`\.\./continue/(\w+\.hdf5)` \| `([0-9a-f]{64})`", card))
    assert len(expected) == 2
    made = run(tmp_path / "continue", "--input", str(BOOK), "--gutenberg", "--documents", "40:55",
               "--dupe-factor", "5", "--max-seq-length", "128", "--seed", "12345",
               "--masking", "google", "--shard-size", "2500", "--prefix", "continue", "--workers", workers)
    assert {name: hashlib.sha256(data).hexdigest() for name, data in made.items()} == expected


@pytest.fixture(scope="module")
def book_files(tmp_path_factory) -> Path:
    """Chapters 1-16 of the book as four files of four chapters, one sentence per line."""
    folder = tmp_path_factory.mktemp("parts")
    chapters = gutenberg_to_documents(BOOK.read_text(encoding="utf-8"))[:16]
    for part in range(4):
        text = "\n\n".join("\n".join(chapter) for chapter in chapters[4 * part : 4 * part + 4])
        (folder / f"part-{part:02d}.txt").write_text(text + "\n")
    return folder


PER_FILE = ["--per-file", "--dupe-factor", "2", "--shard-size", "200", "--max-seq-length", "64"]


def test_per_file_partial_runs_add_up_to_the_whole(tmp_path, book_files):
    """Machine A takes parts 0-1, machine B parts 2-3; together they are the one-machine run."""
    parts = sorted(book_files.glob("*.txt"))
    whole = run(tmp_path / "all", "--input", str(book_files), *PER_FILE)
    first = run(tmp_path / "a", "--input", *map(str, parts[:2]), *PER_FILE)
    second = run(tmp_path / "b", "--input", *map(str, parts[2:]), *PER_FILE, "--workers", "2")
    assert not first.keys() & second.keys()
    assert {**first, **second} == whole
    assert sorted(whole)[0] == "pretrain_part-00_shard_00000.hdf5"
    assert {name.split("_shard_")[0] for name in whole} == {f"pretrain_part-0{i}" for i in range(4)}
    assert run(tmp_path / "n3", "--input", str(book_files), *PER_FILE, "--workers", "3") == whole


def test_per_file_runs_share_a_folder(tmp_path, book_files):
    """Into one (shared) folder: no refusal for other files' shards, --overwrite only touches its own."""
    parts = sorted(book_files.glob("*.txt"))
    shared = tmp_path / "shared"
    first = run(shared, "--input", str(parts[0]), *PER_FILE)
    both = run(shared, "--input", str(parts[1]), *PER_FILE)
    assert first.items() <= both.items() and len(both) > len(first)
    again = run(shared, "--input", str(parts[1]), *PER_FILE, "--seed", "9", "--overwrite")
    assert {k: v for k, v in again.items() if "part-00" in k} == first
    assert again != both


def test_per_file_refuses_what_would_collide_or_mix(tmp_path, book_files, capsys):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "part-00.txt").write_text("Another file.\nWith the same name.\n")
    base = ["--vocab-file", str(VOCAB), "--output-dir", str(tmp_path / "o"), "--per-file"]
    err = cli_error(capsys, ["--input", str(book_files), str(other / "part-00.txt"), *base])
    assert "would both write 'part-00' shards" in err
    err = cli_error(capsys, ["--input", str(book_files), "--documents", "0:3", *base])
    assert "--documents" in err and "--per-file" in err


def test_a_worker_error_names_the_file(tmp_path, book_files, capsys):
    bad = tmp_path / "in" / "zz-bad.txt"
    bad.parent.mkdir()
    bad.write_bytes(b"fine line\n\xff\xfe broken\n")
    for part in sorted(book_files.glob("*.txt"))[:2]:
        (bad.parent / part.name).write_bytes(part.read_bytes())
    err = cli_error(capsys, ["--input", str(bad.parent), "--vocab-file", str(VOCAB), "--output-dir",
                             str(tmp_path / "o"), *PER_FILE, "--workers", "2"])
    assert f"{bad}: not valid utf-8-sig text at byte 10 (line 2)" in err


def test_spawned_workers_give_the_same_bytes(tmp_path, book_files, monkeypatch):
    """Where processes cannot fork (macOS, Windows) workers are spawned: the same shards."""
    from bert_tutorial.create_data import workers

    parts = [str(p) for p in sorted(book_files.glob("*.txt"))[:2]]
    forked = run(tmp_path / "fork", "--input", *parts, *PER_FILE, "--workers", "2")
    one_stream = ["--input", *parts, "--max-seq-length", "64", "--shard-size", "150"]
    forked_stream = run(tmp_path / "fork1", *one_stream, "--workers", "2")
    monkeypatch.setattr(workers, "start_method", lambda: "spawn")
    assert run(tmp_path / "spawn", "--input", *parts, *PER_FILE, "--workers", "2") == forked
    assert run(tmp_path / "spawn1", *one_stream, "--workers", "2") == forked_stream
    assert run(tmp_path / "all", *one_stream, "--workers", "0") == forked_stream  # 0: every core
