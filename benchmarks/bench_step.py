"""The original tutorial's training step against this project's, one feature at a time.

``python benchmarks/bench_step.py`` times, on a CUDA GPU if there is one (else the CPU):

* ``original``: :func:`bert_tutorial.teach.original.train_step`: fp32, eager attention,
  vocabulary logits on all T positions, per-parameter AdamW, a blocking copy per tensor;
* ``project``: :func:`bert_tutorial.core.step.train_step`, the step the ``Trainer`` runs, with a
  model, optimizer and precision built by the package's own builders from a ``TrainConfig``
  (bf16 autocast on a GPU, SDPA, masked-only MLM head, fused AdamW on CUDA);
* ``project+mod+...``: the project step with features switched one at a time.

Both start from the same weights (same seed) and get the same synthetic batch
(:func:`synthetic.synthetic_arrays`, collated as the DataLoader does). Each
row is timed by :func:`bert_tutorial.teach.timing.time_steps` after warm-up, and reports
sequences/s, ms/step (median, mean), peak memory, TFLOP/s and MFU (FLOPs convention in
``common.py``). ``--json`` records every figure and the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import (
    BERT_VOCAB_SIZE,
    MIB,
    MODEL_SIZES,
    ModelDims,
    PeakMemory,
    cpu_has_bf16,
    environment,
    finish,
    flops_lines,
    flops_per_sequence,
    fmt,
    peak_tflops,
    print_environment,
    release_memory,
    table,
    tf32_matmul,
)
from synthetic import synthetic_arrays
from transformers import BertForPreTraining

from bert_tutorial.config import TrainConfig
from bert_tutorial.core.data import sample_to_tensors
from bert_tutorial.core.model import PretrainingModel, build_model
from bert_tutorial.core.optim import build_optimizer, build_scheduler
from bert_tutorial.core.step import train_step
from bert_tutorial.hdf5_format import default_max_predictions
from bert_tutorial.pretrain.device import (
    autocast_context,
    make_grad_scaler,
    resolve_device,
    resolve_precision,
)
from bert_tutorial.pretrain.speed import fused_skip_or_step, prepared_attention_mask
from bert_tutorial.teach import original
from bert_tutorial.teach.original import (
    to_original_batch,
)
from bert_tutorial.teach.timing import time_steps

#: Length of both LR schedules: far longer than any run, so the LR barely moves while timed.
SCHEDULE_STEPS = 10**6
LEARNING_RATE = 1e-4


@dataclass(frozen=True)
class Variant:
    """One step to time. ``original`` ignores every other field."""

    name: str
    original: bool = False
    precision: str = "auto"
    attn: str = "sdpa"
    sparse_head: bool = True
    fused_adamw: bool | None = None
    compile: bool = False
    vocab_multiple: int = 1


MODIFIERS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"}, "fp16": {"precision": "fp16"},
    "eager": {"attn": "eager"}, "sdpa": {"attn": "sdpa"},
    "fullhead": {"sparse_head": False}, "sparse": {"sparse_head": True},
    "fused": {"fused_adamw": True}, "nofused": {"fused_adamw": False},
    "compile": {"compile": True}, "nocompile": {"compile": False},
    "pad8": {"vocab_multiple": 8}, "pad64": {"vocab_multiple": 64},
}


def parse_variant(spec: str, compile_default: bool = False) -> Variant:
    """``original``, ``project`` (the project's defaults) or ``project+mod+mod...``.

    Each modifier switches one feature, so a row differs from ``project`` by what its name
    says: ``fp32 bf16 fp16``, ``eager sdpa``, ``fullhead sparse``, ``fused nofused``,
    ``compile nocompile``, ``pad8 pad64`` (vocabulary padded to a multiple). ``compile_default``
    (``--compile``) compiles every project variant that does not say ``nocompile``.
    """
    base, *mods = spec.strip().split("+")
    if base == "original":
        if mods:
            raise ValueError(f"'{spec}': the original step takes no modifiers")
        return Variant(name="original", original=True)
    if base != "project":
        raise ValueError(f"'{spec}': a variant is 'original' or 'project[+modifier...]'")
    fields: dict[str, Any] = {"compile": compile_default}
    for mod in mods:
        if mod not in MODIFIERS:
            raise ValueError(f"'{spec}': unknown modifier '{mod}' (known: {', '.join(MODIFIERS)})")
        fields.update(MODIFIERS[mod])
    name = spec.strip()
    if compile_default and "compile" not in mods and "nocompile" not in mods:
        name += "+compile"
    return Variant(name=name, **fields)


def padded_vocab(vocab_size: int, multiple: int) -> int:
    """``vocab_size`` rounded up to a multiple of ``multiple`` (``+pad8``: 30,522 -> 30,528)."""
    return -(-vocab_size // multiple) * multiple


# --- the two steps ----------------------------------------------------------------------------


@dataclass
class Runner:
    """A built step: call ``step()`` for one optimizer step (it returns the loss, on the device)."""

    step: Callable[[], torch.Tensor]
    bert: BertForPreTraining
    #: What actually runs, read back from the objects built (not from the request).
    described: dict[str, str]


def step_config(variant: Variant, size: str, seq_len: int, batch_size: int, device: torch.device,
                dropout: float, seed: int) -> TrainConfig:
    """The ``TrainConfig`` of a project variant, the way a user would configure the Trainer."""
    return TrainConfig(
        **MODEL_SIZES[size], max_position_embeddings=max(512, seq_len), dropout=dropout,
        attn_implementation=variant.attn, batch_size=batch_size, learning_rate=LEARNING_RATE,
        precision=variant.precision,  # type: ignore[arg-type]
        sparse_mlm_head=variant.sparse_head, fused_adamw=variant.fused_adamw,
        compile=variant.compile, device=str(device), seed=seed,
    )


def seeded_model(cfg: TrainConfig, vocab_size: int) -> BertForPreTraining:
    """A fresh BERT as the Trainer builds it: the seed first, so every variant gets the same weights."""
    torch.manual_seed(cfg.seed)
    return build_model(cfg, vocab_size)


def original_runner(cfg: TrainConfig, vocab_size: int, batch: dict[str, torch.Tensor],
                    device: torch.device, max_grad_norm: float | None) -> Runner:
    """The original step on the project's weights, its optimizer and schedule, eager attention.

    The batch is converted once to the original dataset's tensors (all-ones mask, slots
    padded to T): converting is data loading, not part of the step.
    """
    bert = seeded_model(dataclasses.replace(cfg, attn_implementation="eager"), vocab_size)
    bert.to(device).train()
    optimizer = original.optimizer(bert, lr=cfg.lr)
    scheduler = original.scheduler(optimizer, SCHEDULE_STEPS)
    inputs = to_original_batch(batch)

    def step() -> torch.Tensor:
        return original.train_step(bert, inputs, optimizer, scheduler, device,
                                   max_grad_norm=max_grad_norm)

    described = {"precision": "fp32", "attn": bert.config._attn_implementation, "head": "full",
                 "adamw": "for-loop", "compile": "no"}
    return Runner(step, bert, described)


def adamw_kind(optimizer: torch.optim.Optimizer, device: torch.device) -> str:
    """Which AdamW implementation runs: fused, foreach (torch's CUDA default) or for-loop."""
    defaults = optimizer.defaults
    if defaults.get("fused"):
        return "fused"
    foreach = defaults.get("foreach")
    return "foreach" if foreach or (foreach is None and device.type == "cuda") else "for-loop"


def project_runner(variant: Variant, cfg: TrainConfig, vocab_size: int,
                   batch: dict[str, torch.Tensor], device: torch.device) -> Runner:
    """The project step, built by the package's builders as the Trainer builds it.

    The batch stays on the host (pinned on CUDA, as ``make_dataloader`` pins it), so each
    step includes the copy to the device, as in training.
    """
    if cfg.compile:
        torch._dynamo.reset()  # else a second compiled variant is traced with dynamic shapes
    bert = seeded_model(cfg, padded_vocab(vocab_size, variant.vocab_multiple))
    # The Trainer's module and step: the speed plug-ins on a GPU, the plain path elsewhere.
    module = PretrainingModel(bert, sparse_mlm_head=cfg.sparse_mlm_head,
                              prepare_mask=prepared_attention_mask if device.type == "cuda" else None)
    module.to(device).train()
    model = torch.compile(module) if cfg.compile else module
    optimizer = build_optimizer(module, cfg, device)
    scheduler = build_scheduler(optimizer, SCHEDULE_STEPS, warmup=0)
    precision = resolve_precision(cfg.precision, device)
    autocast, scaler = autocast_context(device, precision), make_grad_scaler(device, precision)
    host_batch = {k: v.pin_memory() for k, v in batch.items()} if device.type == "cuda" else batch

    def step() -> torch.Tensor:
        result = train_step(model, [host_batch], optimizer, scheduler, device=device,
                            autocast=autocast, scaler=scaler, max_grad_norm=cfg.max_grad_norm,
                            optimizer_step=fused_skip_or_step)
        return result.losses.sum()

    head = "masked" if cfg.sparse_mlm_head else "full"
    if bert.config.vocab_size != vocab_size:
        head += f"/V={bert.config.vocab_size}"
    described = {"precision": precision, "attn": bert.config._attn_implementation, "head": head,
                 "adamw": adamw_kind(optimizer, device), "compile": "yes" if cfg.compile else "no"}
    return Runner(step, bert, described)


def synthetic_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """A batch of Google-shaped synthetic sequences, exactly as ``make_dataloader`` collates them."""
    predictions = default_max_predictions(seq_len)
    arrays = synthetic_arrays(batch_size, seq_len, predictions, vocab_size=vocab_size, seed=seed)
    return sample_to_tensors(arrays, slice(None))


# --- one row ----------------------------------------------------------------------------------


@dataclass
class ModelResult:
    variant: str
    seq_len: int
    batch_size: int
    precision: str
    attn: str
    head: str
    adamw: str
    compile: str
    #: fp32 matmuls in TF32 on CUDA ("on"/"off"); "-" where it does not apply.
    tf32: str
    seq_per_s: float
    ms_median: float
    ms_mean: float
    peak_mem_mib: float | None
    tflops: float
    mfu: float | None
    warmup_s: float
    first_loss: float
    final_loss: float
    step_ms: list[float] = dataclasses.field(default_factory=list)


@dataclass
class Timing:
    warmup_s: float
    #: Seconds of each timed step (CUDA events on a GPU).
    per_step: list[float]
    #: Wall clock of all timed steps, between two synchronisations.
    total_s: float
    losses: list[torch.Tensor]


def time_runner(runner: Runner, device: torch.device, warmup: int, steps: int) -> Timing:
    """Warm-up, then the timed steps, both through the project's one timing loop."""
    losses: list[torch.Tensor] = []

    def step() -> None:
        losses.append(runner.step())

    start = time.perf_counter()
    time_steps(step, device, warmup, 0)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    per_step = time_steps(step, device, 0, steps)  # synchronises before and after
    return Timing(warmup_s, per_step, time.perf_counter() - start, losses)


def run_variant(variant: Variant, args: argparse.Namespace, seq_len: int, batch_size: int,
                device: torch.device, peak: float | None) -> ModelResult:
    """Build one step, warm it up, time it and measure its memory; free everything after."""
    batch = synthetic_batch(batch_size, seq_len, args.vocab_size, args.seed)
    cfg = step_config(variant, args.model_size, seq_len, batch_size, device, args.dropout, args.seed)
    warmup = args.warmup if args.warmup is not None else (30 if variant.compile else 10)
    with PeakMemory(device) as memory:
        runner: Runner | None = (
            original_runner(cfg, args.vocab_size, batch, device, args.original_max_grad_norm)
            if variant.original else project_runner(variant, cfg, args.vocab_size, batch, device))
        described = runner.described
        timing = time_runner(runner, device, warmup, args.steps)
        peak_bytes = memory.peak_bytes()
        runner = None  # free the model and optimizer before the next row
    release_memory()
    seq_per_s = batch_size * args.steps / timing.total_s
    dims = ModelDims.for_size(args.model_size, seq_len, args.vocab_size)
    tflops = flops_per_sequence(dims)["total"] * seq_per_s / 1e12
    tf32 = "-"
    if device.type == "cuda" and described["precision"] == "fp32":
        tf32 = "on" if tf32_matmul()["on"] else "off"
    return ModelResult(
        variant=variant.name, seq_len=seq_len, batch_size=batch_size, **described, tf32=tf32,
        seq_per_s=seq_per_s, ms_median=1000 * statistics.median(timing.per_step),
        ms_mean=1000 * timing.total_s / args.steps,
        peak_mem_mib=None if peak_bytes is None else peak_bytes / MIB, tflops=tflops,
        mfu=None if peak is None else tflops / peak, warmup_s=timing.warmup_s,
        first_loss=float(timing.losses[0]), final_loss=float(timing.losses[-1]),
        step_ms=[1000 * s for s in timing.per_step],
    )


COLUMNS = ("variant", "T", "batch", "precision", "attn", "head", "adamw", "compile", "seq/s",
           "ms/step median", "ms/step mean", "peak mem MiB", "TFLOP/s", "MFU", "speedup")


def format_results(results: Sequence[ModelResult]) -> str:
    """The results as a table; speedup is sequences/s over the original at the same T."""
    baseline = {r.seq_len: r.seq_per_s for r in results if r.variant == "original"}
    rows = [COLUMNS]
    for r in results:
        base = baseline.get(r.seq_len)
        precision = r.precision + ("/TF32" if r.tf32 == "on" else "")
        rows.append((
            r.variant, str(r.seq_len), str(r.batch_size), precision, r.attn, r.head, r.adamw,
            r.compile, fmt(r.seq_per_s, ",.1f" if r.seq_per_s >= 100 else ".3g"),
            fmt(r.ms_median, ",.1f"), fmt(r.ms_mean, ",.1f"), fmt(r.peak_mem_mib, ",.0f"),
            fmt(r.tflops, ".3f"), "n/a" if r.mfu is None else f"{100 * r.mfu:.2f}%",
            f"{r.seq_per_s / base:.2f}x" if base else "-",
        ))
    return table(rows)


# --- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench_step.py",
        description="Time the original tutorial's training step against this project's train_step.")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda, cuda:N or cpu")
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="base")
    parser.add_argument("--vocab-size", type=int, default=BERT_VOCAB_SIZE)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--batch-size", type=int, default=None,
                        help="project batch (default: 128 at T=128, 32 at T=512 on CUDA; 4 and 1 on CPU)")
    parser.add_argument("--original-batch-size", type=int, default=None,
                        help="original batch (default: 16 on CUDA, the project batch on CPU)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated, e.g. original,project,project+fp32+eager (default: "
                             "original,project on CUDA; original,project,project+bf16 on a CPU with bf16 "
                             "instructions, original,project on others)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every project variant")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up steps (default: 10, 30 for compiled variants; 1 on CPU)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps (default 200 on CUDA, several seconds per row; 3 on CPU)")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--original-max-grad-norm", type=float, default=1.0,
                        help="clip the original step's gradient as the project step does "
                             "(the tutorial did not clip: 0 leaves it out)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak TFLOP/s for MFU (default: the GPU's dense bf16 peak; none on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    parser.add_argument("--quick", action="store_true",
                        help="seconds-long smoke run: tiny model, V=1024, T=32, batch 4, 2 steps")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def resolve_args(args: argparse.Namespace, device: torch.device) -> argparse.Namespace:
    """Fill the device-dependent defaults (and ``--quick``'s)."""
    cuda = device.type == "cuda"
    if args.quick:
        args.model_size, args.vocab_size, args.seq_lens = "tiny", min(args.vocab_size, 1024), [32]
        args.batch_size = args.batch_size or 4
        args.warmup = 1 if args.warmup is None else args.warmup
        args.steps = args.steps or 2
    if args.warmup is None and not cuda:
        args.warmup = 1
    if args.steps is None:
        args.steps = 200 if cuda else 3
    if args.variants is None:
        # bf16 on a CPU only where it has bf16 instructions: emulated, a row takes many minutes.
        args.variants = "original,project" if cuda else (
            "original,project,project+bf16" if cpu_has_bf16() else "original,project")
    if args.original_max_grad_norm is not None and args.original_max_grad_norm <= 0:
        args.original_max_grad_norm = None
    return args


def batch_sizes(args: argparse.Namespace, seq_len: int, device: torch.device) -> tuple[int, int]:
    """(project batch, original batch): 128 x 128 tokens on CUDA, 512 tokens on a CPU."""
    tokens = 128 * 128 if device.type == "cuda" else 512
    project = args.batch_size or max(1, tokens // seq_len)
    return project, args.original_batch_size or (16 if device.type == "cuda" else project)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args = resolve_args(args, device)
    variants = [parse_variant(s, args.compile) for s in args.variants.split(",") if s.strip()]
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    env = environment(device)
    report: dict[str, Any] = {"environment": env, "args": {k: str(v) for k, v in vars(args).items()},
                              "peak_tflops": peak, "peak_source": peak_source}
    print_environment(env)
    if device.type != "cuda":
        print("  NOTE: no CUDA device: these are CPU figures, not GPU ones.")

    print(f"\n== Training step: BERT-{args.model_size}, V={args.vocab_size}, on {device} ==")
    print("FLOPs counted per training sequence (forward + backward = 3 x forward; useful work only):")
    for line in flops_lines(args.model_size, args.vocab_size, args.seq_lens):
        print(line)
    print(f"Peak for MFU: {f'{peak:g} TFLOP/s' if peak else 'none'} ({peak_source}); warm-up "
          f"{args.warmup if args.warmup is not None else '10 (30 compiled)'} + {args.steps} timed steps per row.")
    if device.type == "cuda":
        tf32 = tf32_matmul()
        print(f"fp32 rows: TF32 matmul {'ON' if tf32['on'] else 'off'} (allow_tf32={tf32['allow_tf32']}, "
              f"float32_matmul_precision={tf32['float32_matmul_precision']!r})")
    clip = args.original_max_grad_norm
    print(f"original step: gradient clipped to {clip:g}" if clip else "original step: no clipping")
    results: list[ModelResult] = []
    for t in args.seq_lens:
        for variant in variants:
            project_batch, original_batch = batch_sizes(args, t, device)
            batch = original_batch if variant.original else project_batch
            print(f"  timing {variant.name} T={t} batch={batch} ...", flush=True)
            try:
                results.append(run_variant(variant, args, t, batch, device, peak))
                continue
            except torch.cuda.OutOfMemoryError:  # e.g. the original at T=512 on a 16 GB card
                pass
            release_memory()  # here, not in the except block, whose traceback holds the tensors
            flag = "--original-batch-size" if variant.original else "--batch-size"
            print(f"  {variant.name} T={t} batch={batch}: out of GPU memory, row skipped "
                  f"(try a smaller {flag})", flush=True)
            report.setdefault("skipped", []).append(
                {"variant": variant.name, "seq_len": t, "batch_size": batch, "why": "out of memory"})
    print()
    print(format_results(results))
    mem = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
           else "peak RSS increase over the RSS before the model was built (VmHWM)")
    print(f"peak mem = {mem}; speedup = seq/s over the original at the same T.")
    report["model"] = [dataclasses.asdict(r) for r in results]
    finish(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
