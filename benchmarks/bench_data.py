"""Can the data loader keep up with the GPU? Samples/s per worker, and memory per shard.

``python benchmarks/bench_data.py`` writes one synthetic gzip HDF5 shard (100k sequences
of T=128 by default, made by :func:`synthetic.synthetic_arrays`, written by
:func:`bert_tutorial.hdf5_format.write_shard`) to a temporary folder, and measures:

* the memory one shard takes as the numpy arrays that :class:`~bert_tutorial.core.data.PretrainingDataset`
  holds per process, against :class:`bert_tutorial.teach.original.OriginalDataset`, which reads
  every row of every shard into Python lists up front;
* samples/s of the original's dataset in a plain ``DataLoader``, and of ``PretrainingDataset``
  through :func:`~bert_tutorial.core.data.make_dataloader` for each ``--workers`` count,
  after the first batch (worker start-up and the shard read are reported apart);
* how many workers the step needs: at the issue's goal (40 % MFU for BERT-base on an
  H100 SXM) and at ``--gpu-seq-per-s`` (a rate measured with ``bench_step.py``).

Only CPU work is measured, so a machine without a GPU gives the real figures for its CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import (
    BERT_VOCAB_SIZE,
    MIB,
    TARGET_MFU,
    TARGET_PEAK_TFLOPS,
    ModelDims,
    environment,
    finish,
    flops_per_sequence,
    print_environment,
    release_memory,
    rss_bytes,
    table,
)
from synthetic import synthetic_arrays
from torch.utils.data import DataLoader

from bert_tutorial.core.data import PretrainingDataset, make_dataloader
from bert_tutorial.hdf5_format import (
    default_max_predictions,
    inspect_shard,
    read_shard,
    write_shard,
)
from bert_tutorial.teach.original import OriginalDataset


@dataclass
class LoaderResult:
    loader: str
    workers: int
    samples_per_s: float
    per_worker: float
    first_batch_s: float
    samples_timed: int


def measure_loader(name: str, workers: int, loader: DataLoader, max_samples: int) -> LoaderResult:
    """Seconds from ``iter`` to the first batch (worker start, shard read), then steady samples/s.

    A loader is consumed like a training loop consumes it, batch after batch; the time of
    the first batch is kept apart because it is paid once per epoch, not per step.
    """
    start = time.perf_counter()
    iterator: Iterator = iter(loader)  # starts the workers
    next(iterator)
    first_s = time.perf_counter() - start
    count = 0
    start = time.perf_counter()
    for batch in iterator:
        count += len(batch["input_ids"])
        if count >= max_samples:
            break
    elapsed = time.perf_counter() - start
    del iterator
    rate = count / elapsed if elapsed > 0 else math.nan
    return LoaderResult(name, workers, rate, rate / max(1, workers), first_s, count)


def shard_memory(path: Path, folder: Path, seq_len: int) -> dict[str, float]:
    """RSS growth and load time of one shard held as numpy arrays, and as the original's lists."""
    release_memory()
    base, start = rss_bytes(), time.perf_counter()
    arrays = read_shard(inspect_shard(path), BERT_VOCAB_SIZE)
    figures = {"numpy_load_s": time.perf_counter() - start, "numpy_rss_mib": (rss_bytes() - base) / MIB,
               "numpy_nbytes_mib": sum(a.nbytes for a in arrays.values()) / MIB}
    del arrays
    release_memory()
    base, start = rss_bytes(), time.perf_counter()
    original = OriginalDataset(folder, max_seq_length=seq_len)
    figures.update(lists_load_s=time.perf_counter() - start, lists_rss_mib=(rss_bytes() - base) / MIB)
    del original
    release_memory()
    return figures


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Write the shard into ``folder``, then measure memory and every loader."""
    start = time.perf_counter()
    arrays = synthetic_arrays(args.samples, args.seq_len, default_max_predictions(args.seq_len),
                              vocab_size=BERT_VOCAB_SIZE, seed=args.seed)
    path = write_shard(folder / "bench_shard.hdf5", arrays)
    write_s = time.perf_counter() - start
    del arrays
    data: dict[str, Any] = {"num_samples": args.samples, "seq_len": args.seq_len,
                            "batch_size": args.batch_size, "file_mib": path.stat().st_size / MIB,
                            "write_s": write_s, **shard_memory(path, folder, args.seq_len)}

    original = OriginalDataset(folder, max_seq_length=args.seq_len)
    loader = DataLoader(original, batch_size=args.batch_size, shuffle=True, num_workers=0)
    results = [measure_loader("OriginalDataset (lists)", 0, loader, args.timed_samples)]
    del loader, original
    release_memory()
    for workers in args.workers:
        # A fresh dataset each time: forked workers would otherwise inherit the shard the
        # previous loader left cached in this process, hiding the shard read.
        dataset = PretrainingDataset(path, vocab_size=BERT_VOCAB_SIZE)
        loader = make_dataloader(dataset, args.batch_size, shuffle=True, seed=args.seed,
                                 num_workers=workers)
        results.append(measure_loader("PretrainingDataset", workers, loader, args.timed_samples))
        del loader, dataset
        release_memory()
    data["loaders"] = [dataclasses.asdict(r) for r in results]
    return data


def verdict(data: dict[str, Any], gpu_seq_per_s: float | None) -> list[str]:
    """Workers needed to feed the step: one worker's samples/s against what the step consumes."""
    dims = ModelDims.for_size("base", data["seq_len"])
    goal = TARGET_MFU * TARGET_PEAK_TFLOPS * 1e12 / flops_per_sequence(dims)["total"]
    ours = [r for r in data["loaders"] if r["loader"] == "PretrainingDataset"]
    per_worker = max((r["per_worker"] for r in ours if r["workers"] > 0),
                     default=max((r["samples_per_s"] for r in ours), default=math.nan))
    needs = [(f"{TARGET_MFU:.0%} MFU of an H100 SXM (BERT-base, T={data['seq_len']})", goal)]
    if gpu_seq_per_s is not None:
        needs.append(("the given GPU step rate (--gpu-seq-per-s)", gpu_seq_per_s))
    lines = []
    for what, rate in needs:
        workers = math.ceil(rate / per_worker) if per_worker > 0 else math.nan
        lines.append(f"  {what}: {rate:,.0f} seq/s; one worker here gives {per_worker:,.0f} "
                     f"samples/s -> num_workers >= {workers}")
    return lines


def print_results(data: dict[str, Any]) -> None:
    rows = [("loader", "workers", "samples/s", "samples/s per worker", "first batch s")]
    for r in data["loaders"]:
        rows.append((r["loader"], str(r["workers"]), f"{r['samples_per_s']:,.0f}",
                     f"{r['per_worker']:,.0f}", f"{r['first_batch_s']:.2f}"))
    print(f"shard: {data['file_mib']:.1f} MiB gzip HDF5, made and written in {data['write_s']:.1f} s")
    print(table(rows))
    print(f"memory for the shard: numpy arrays (PretrainingDataset, per process) "
          f"+{data['numpy_rss_mib']:,.0f} MiB RSS ({data['numpy_nbytes_mib']:,.0f} MiB of arrays, "
          f"read in {data['numpy_load_s']:.1f} s); OriginalDataset's lists +{data['lists_rss_mib']:,.0f} "
          f"MiB RSS (built in {data['lists_load_s']:.1f} s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench_data.py",
        description="Data-loading speed and memory: PretrainingDataset vs the original's lists.")
    parser.add_argument("--samples", type=int, default=100_000, help="sequences in the test shard")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timed-samples", type=int, default=25_600,
                        help="samples timed per loader after its first batch")
    parser.add_argument("--gpu-seq-per-s", type=float, default=None,
                        help="a measured GPU step rate (bench_step.py) to check the loader against")
    parser.add_argument("--tmp-dir", type=Path, default=None,
                        help="where to write the shard (default: the system's temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    parser.add_argument("--quick", action="store_true",
                        help="seconds-long smoke run: 2,000 sequences, workers 0 and 1, 512 timed samples")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.samples, args.workers = min(args.samples, 2_000), [0, 1]
        args.batch_size, args.timed_samples = min(args.batch_size, 64), min(args.timed_samples, 512)
    env = environment(torch.device("cpu"))
    report: dict[str, Any] = {"environment": env, "args": {k: str(v) for k, v in vars(args).items()}}
    print_environment(env)
    print(f"\n== Data loading: {args.samples:,} sequences, T={args.seq_len}, "
          f"batch {args.batch_size} ==", flush=True)
    with tempfile.TemporaryDirectory(prefix="bert-bench-data-", dir=args.tmp_dir) as tmp:
        data = run(args, Path(tmp))
    print_results(data)
    print("Loader vs GPU step (samples/s per worker measured on this machine's CPU):")
    for line in verdict(data, args.gpu_seq_per_s):
        print(line)
    report["data"] = data
    finish(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
