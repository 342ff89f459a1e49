"""How fast does ``create_data`` turn text into shards? MB/s and instances/s per core and for N workers.

``python benchmarks/bench_create.py`` builds a corpus of ``--mb`` megabytes from the
sample book (its 61 chapters as documents, one sentence per line, repeated in shuffled
orders; as ``--files`` files for ``--per-file``) in a temporary folder and runs
``python -m bert_tutorial.create_data`` on it in fresh processes, each configuration
``--repeats`` times, round-robin:

* ``1 core``: one process pinned to one CPU (``taskset``, so the tokenizer's threads
  share it too): the per-core figures;
* ``--masking google``: the same, masks drawn Google's way (how ``data_samples/`` is made);
* ``one stream, N workers``: the default random stream, ``--workers N``;
* ``per file, N workers``: ``--per-file --workers N``;
* ``baseline``, with ``--baseline DIR``: the 1-core run of another checkout of the
  package (e.g. ``git archive <commit> bert_tutorial | tar -x -C DIR``), for before/after.

For each run: wall seconds, CPU seconds (user + sys) of the main process and of its
workers, peak RSS of the main process and of the largest worker (one run also with the
default ``--docs-per-block 10000 --shard-size 100000``, where the whole corpus is one
block and one shard, for the memory those defaults take), MB of text per second
and instances per second (wall, and per CPU second). The median of the repeats is
reported. A projection for an English-Wikipedia-size corpus (``--project-gb``, 20 GB)
follows from them: CPU-hours at the per-core rate, and hours on ``N`` cores for each
mode (the one-stream mode cannot go faster than its main process, which makes every
instance, at the rate of its own CPU seconds).

Also ``--book``: the two commands of ``data_samples/README.md`` end to end (imports
included), the small run the issue measured. The machine's other load is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import MIB, cpu_model, fmt, table

from bert_tutorial.config import DATA_SAMPLES, REPO_ROOT
from bert_tutorial.create_data.corpus import gutenberg_to_documents

BOOK = DATA_SAMPLES / "corpus" / "pride-and-prejudice.txt"
VOCAB = DATA_SAMPLES / "vocab.txt"

#: Runs create_data's main in this process and prints its own and its workers' rusage as JSON.
WRAPPER = """
import json, resource, runpy, sys
sys.argv = ["create_data", *sys.argv[1:]]
try:
    runpy.run_module("bert_tutorial.create_data", run_name="__main__")
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
usage = {}
for who, what in (("main", resource.RUSAGE_SELF), ("workers", resource.RUSAGE_CHILDREN)):
    u = resource.getrusage(what)
    usage[who] = {"cpu_s": u.ru_utime + u.ru_stime, "max_rss_kib": u.ru_maxrss}
# ru_maxrss of this process also counts the benchmark's memory before exec; VmHWM does not
with open("/proc/self/status") as f:
    usage["main"]["max_rss_kib"] = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
print("RUSAGE " + json.dumps(usage))
"""


def make_corpus(folder: Path, megabytes: float, files: int, seed: int) -> list[Path]:
    """``megabytes`` of the book's chapters (one sentence per line) over ``files`` files."""
    chapters = ["\n".join(c) for c in gutenberg_to_documents(BOOK.read_text(encoding="utf-8"))]
    rng = random.Random(seed)
    documents: list[str] = []
    size = 0
    while size < megabytes * 1e6:
        order = list(chapters)
        rng.shuffle(order)
        for chapter in order:
            documents.append(chapter)
            size += len(chapter.encode()) + 2
            if size >= megabytes * 1e6:
                break
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    per_file = -(-len(documents) // files)
    for index in range(files):
        part = documents[index * per_file : (index + 1) * per_file]
        if part:
            path = folder / f"part-{index:03d}.txt"
            path.write_text("\n\n".join(part) + "\n", encoding="utf-8")
            paths.append(path)
    return paths


def run_once(package_root: Path, args: Sequence[str], cpu: int | None) -> dict[str, Any]:
    """One create_data run in a fresh process (cwd outside the repository, so ``package_root``
    decides which code runs); its wall time, rusage and instance count."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    start = time.perf_counter()
    done = subprocess.run([*pin, sys.executable, "-c", WRAPPER, *args], capture_output=True,
                          text=True, env=env, cwd=tempfile.gettempdir(), check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"create_data failed ({done.returncode}):\n{done.stderr[-2000:]}")
    usage = json.loads(done.stdout.split("RUSAGE ", 1)[1])
    found = re.search(r"-> (\d+) instances", done.stdout)
    instances = int(found.group(1)) if found else 0
    return {"wall_s": wall, "main_cpu_s": usage["main"]["cpu_s"],
            "workers_cpu_s": usage["workers"]["cpu_s"],
            "main_rss_mib": usage["main"]["max_rss_kib"] * 1024 / MIB,
            "worker_rss_mib": usage["workers"]["max_rss_kib"] * 1024 / MIB,
            "instances": instances}


def summarize(name: str, runs: list[dict[str, Any]], megabytes: float, workers: int) -> dict[str, Any]:
    """Median figures of the runs of one configuration, and the rates that follow from them."""
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    cpu_s = median["main_cpu_s"] + median["workers_cpu_s"]
    return {"name": name, "workers": workers, "mb": megabytes, **median, "cpu_s": cpu_s,
            "runs": runs, "mb_per_s": megabytes / median["wall_s"],
            "mb_per_cpu_s": megabytes / cpu_s, "inst_per_s": median["instances"] / median["wall_s"],
            "inst_per_cpu_s": median["instances"] / cpu_s,
            "main_mb_per_cpu_s": megabytes / median["main_cpu_s"]}


def measure_all(configs: list[tuple[str, Path, list[str], int | None, int]], repeats: int,
                megabytes: float) -> list[dict[str, Any]]:
    """Every configuration ``repeats`` times, round-robin (so a change in the machine's other
    load touches all of them alike); the medians per configuration."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in configs}
    for index in range(repeats):
        for name, root, args, cpu, _ in configs:
            out = Path(tempfile.mkdtemp(prefix="bench_create_"))
            runs[name].append(run_once(root, [*args, "--output-dir", str(out / "o")], cpu))
            subprocess.run(["rm", "-rf", str(out)], check=True)
            print(f"  round {index + 1}/{repeats}, {name}: {runs[name][-1]['wall_s']:.2f} s wall, "
                  f"{runs[name][-1]['main_cpu_s'] + runs[name][-1]['workers_cpu_s']:.2f} s CPU",
                  flush=True)
    return [summarize(name, runs[name], megabytes, workers) for name, *_, workers in configs]


def corpus_args(args: argparse.Namespace, inputs: Sequence[Path]) -> list[str]:
    """The create_data arguments every configuration shares."""
    return ["--input", *map(str, inputs), "--vocab-file", str(VOCAB), "--max-seq-length",
            str(args.seq_len), "--dupe-factor", str(args.dupe_factor), "--docs-per-block",
            str(args.docs_per_block), "--shard-size", str(args.shard_size)]


def configurations(args: argparse.Namespace, folder: Path) -> list[tuple[str, Path, list[str], int | None, int]]:
    """(name, package root, arguments, pinned CPU, workers) of every run."""
    one_file = make_corpus(folder / "one", args.mb, 1, args.seed)
    many = make_corpus(folder / "many", args.mb, args.files, args.seed)
    base = corpus_args(args, one_file)
    cpu = min(os.sched_getaffinity(0))
    runs = []
    if args.baseline is not None:
        runs.append(("baseline, 1 core", args.baseline, base, cpu, 1))
    runs.append(("one stream, 1 core", REPO_ROOT, base, cpu, 1))
    runs.append(("one stream, 1 core, --masking google", REPO_ROOT, [*base, "--masking", "google"],
                 cpu, 1))
    defaults = [*base, "--docs-per-block", "10000", "--shard-size", "100000"]  # later ones win
    runs.append(("one stream, 1 core, default block and shard size", REPO_ROOT, defaults, cpu, 1))
    for n in args.workers:
        runs.append((f"one stream, {n} workers", REPO_ROOT, [*base, "--workers", str(n)], None, n))
    runs.append(("per file, 1 core", REPO_ROOT, [*corpus_args(args, many), "--per-file"], cpu, 1))
    for n in args.workers:
        runs.append((f"per file, {n} workers", REPO_ROOT,
                     [*corpus_args(args, many), "--per-file", "--workers", str(n)], None, n))
    return runs


def book_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The README's two sample commands, end to end, for this checkout and the baseline."""
    text = (DATA_SAMPLES / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    commands = [line.split("create_data ", 1)[1].split() for line in text.splitlines()
                if line.startswith("python -m bert_tutorial.create_data ")]
    results = []
    # The README's commands ask for --masking google (the committed bytes); the baseline
    # predates the flag and the default masking is the vectorised one: both run without it.
    roots = [("this checkout, as in the README (--masking google)", REPO_ROOT, False),
             ("this checkout, default masking", REPO_ROOT, True)]
    roots += [("baseline", args.baseline, True)] if args.baseline else []
    for name, root, drop_masking in roots:
        walls, cpus = [], []
        for _ in range(args.repeats):
            wall = cpu = 0.0
            for command in commands:
                command = [str(REPO_ROOT / a) if a.startswith("data_samples/") else a for a in command]
                if drop_masking:
                    at = command.index("--masking")
                    del command[at : at + 2]
                out = Path(tempfile.mkdtemp(prefix="bench_book_"))
                command[command.index("--output-dir") + 1] = str(out / "o")
                one = run_once(root, command, min(os.sched_getaffinity(0)))
                wall, cpu = wall + one["wall_s"], cpu + one["main_cpu_s"] + one["workers_cpu_s"]
                subprocess.run(["rm", "-rf", str(out)], check=True)
            walls.append(wall)
            cpus.append(cpu)
        results.append({"name": name, "wall_s": statistics.median(walls),
                        "cpu_s": statistics.median(cpus), "walls": walls, "cpus": cpus})
    return results


def projection(results: list[dict[str, Any]], gigabytes: float) -> list[list[str]]:
    """Hours for ``gigabytes`` of text: per-core CPU-hours and wall hours on N cores."""
    megabytes = gigabytes * 1000
    rows = [["configuration", "CPU-hours", "hours on its N cores", "bound"]]
    for r in results:
        cpu_h = megabytes / r["mb_per_cpu_s"] / 3600
        n = r["workers"]
        wall_h = cpu_h / n
        bound = "all cores busy"
        if r["name"].startswith("one stream") and n > 1:
            main_h = megabytes / r["main_mb_per_cpu_s"] / 3600
            if main_h > wall_h:
                wall_h, bound = main_h, "the main process (makes every instance)"
        rows.append([r["name"], fmt(cpu_h, ".1f"), fmt(wall_h, ".1f"), bound])
    return rows


def report(results: list[dict[str, Any]], book: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The tables of the README."""
    rows = [["configuration", "wall s", "CPU s (main + workers)", "MB/s", "MB per CPU s",
             "instances/s", "instances per CPU s", "peak RSS main / worker MiB"]]
    for r in results:
        rows.append([r["name"], fmt(r["wall_s"], ".2f"),
                     f"{r['main_cpu_s']:.2f} + {r['workers_cpu_s']:.2f}", fmt(r["mb_per_s"], ".2f"),
                     fmt(r["mb_per_cpu_s"], ".2f"), fmt(r["inst_per_s"], ",.0f"),
                     fmt(r["inst_per_cpu_s"], ",.0f"),
                     f"{r['main_rss_mib']:.0f} / "
                     + (f"{r['worker_rss_mib']:.0f}" if r["workers"] > 1 else "-")])
    print(f"\n== {args.mb} MB corpus, T={args.seq_len}, dupe factor {args.dupe_factor}, "
          f"medians of {args.repeats} ==")
    print(table(rows))
    print(f"\n== Projection for {args.project_gb:g} GB of text ==")
    print(table(projection(results, args.project_gb)))
    if book:
        print("\n== data_samples/README.md commands end to end (train + eval), 1 core ==")
        print(table([["code", "wall s", "CPU s"]]
                    + [[b["name"], fmt(b["wall_s"], ".2f"), fmt(b["cpu_s"], ".2f")] for b in book]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=8.0, help="corpus size in MB (default 8)")
    parser.add_argument("--files", type=int, default=16, help="files of the --per-file corpus")
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--dupe-factor", type=int, default=5)
    parser.add_argument("--docs-per-block", type=int, default=100,
                        help="(default 100: an 8 MB corpus of ~11 KB chapters is then several blocks)")
    parser.add_argument("--shard-size", type=int, default=20_000)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="folder holding another version's bert_tutorial/ to compare with")
    parser.add_argument("--book", action="store_true", help="also time the README sample commands")
    parser.add_argument("--project-gb", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    parser.add_argument("--quick", action="store_true", help="0.3 MB, 1 repeat (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.mb, args.repeats, args.files, args.docs_per_block = 0.3, 1, 4, 10
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} usable cores; load average {load}")
    with tempfile.TemporaryDirectory(prefix="bench_create_corpus_") as tmp:
        results = measure_all(configurations(args, Path(tmp)), args.repeats, args.mb)
    book = book_runs(args) if args.book else []
    report(results, book, args)
    load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average at end: {load_end}")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "load_start": load, "load_end": load_end,
                                         "results": results, "book": book}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
