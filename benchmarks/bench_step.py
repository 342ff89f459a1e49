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

Honest figures (issue 29):

* every row reports **padded** TFLOP/s and MFU (each sequence charged T positions, T^2
  attention, P slots) beside **real-token** ones (each sequence's own length and real
  slots) and the padding share of the timed batches;
* ``--data PATH`` draws a new batch per step from real shards through the Trainer's loader
  (``PretrainingDataset`` + ``ShardedSampler`` + ``make_dataloader``), so loading and the
  data's real padding are in the figures; the default reuses one synthetic batch;
* ``--profile`` adds a ``torch.profiler`` table of a few steps of each project row (top
  kernels by self CUDA time on a GPU, ops by self CPU time elsewhere);
* ``--trainer-steps N`` runs the package's ``Trainer`` for N steps on ``--data`` with the
  same config and records the throughput it logs beside the benchmark's.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import statistics
import sys
import tempfile
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
    BatchWork,
    ModelDims,
    PeakMemory,
    batch_work,
    cpu_has_bf16,
    environment,
    finish,
    flops_lines,
    fmt,
    peak_tflops,
    print_environment,
    release_memory,
    table,
    tf32_matmul,
)
from synthetic import synthetic_arrays
from transformers import BertForPreTraining

from bert_tutorial.config import DATA_SAMPLES, TrainConfig
from bert_tutorial.core.data import (
    PretrainingDataset,
    ShardedSampler,
    find_shards,
    make_dataloader,
    sample_to_tensors,
)
from bert_tutorial.core.model import build_model
from bert_tutorial.core.optim import build_optimizer, build_scheduler
from bert_tutorial.core.step import train_step
from bert_tutorial.hdf5_format import default_max_predictions
from bert_tutorial.pretrain.device import (
    autocast_context,
    make_grad_scaler,
    resolve_device,
    resolve_precision,
)
from bert_tutorial.pretrain.fast_encoder import PackingCollate, pack_batch, varlen_supported
from bert_tutorial.pretrain.metrics import METRICS_FILE
from bert_tutorial.pretrain.speed import (
    compiled,
    fused_clip_and_step,
    speed_module,
)
from bert_tutorial.pretrain.trainer import Trainer
from bert_tutorial.teach import original
from bert_tutorial.teach.original import (
    to_original_batch,
)
from bert_tutorial.teach.timing import synchronize, time_steps
from bert_tutorial.tokenization import read_vocab

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
    #: The speed switches of ``TrainConfig`` (issue 29), one modifier each.
    compile_mode: str = "default"
    fused_qkv: bool = False
    half_precision_layernorm: bool = False
    fold_clipping: bool = False
    unpad: bool = False
    #: None: the model's own (``--dropout``); ``unpad`` sets 0 for flash's varlen kernel.
    attention_dropout: float | None = None


MODIFIERS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"}, "fp16": {"precision": "fp16"},
    "eager": {"attn": "eager"}, "sdpa": {"attn": "sdpa"},
    "fullhead": {"sparse_head": False}, "sparse": {"sparse_head": True},
    "fused": {"fused_adamw": True}, "nofused": {"fused_adamw": False},
    "compile": {"compile": True}, "nocompile": {"compile": False},
    "pad8": {"vocab_multiple": 8}, "pad64": {"vocab_multiple": 64},
    "graphs": {"compile": True, "compile_mode": "reduce-overhead"},
    "qkv": {"fused_qkv": True}, "halfln": {"half_precision_layernorm": True},
    "foldclip": {"fold_clipping": True}, "noattndrop": {"attention_dropout": 0.0},
    "unpad": {"unpad": True, "attention_dropout": 0.0},
}


def parse_variant(spec: str, compile_default: bool = False) -> Variant:
    """``original``, ``project`` (the project's defaults) or ``project+mod+mod...``.

    Each modifier switches one feature, so a row differs from ``project`` by what its name
    says: ``fp32 bf16 fp16``, ``eager sdpa``, ``fullhead sparse``, ``fused nofused``,
    ``compile nocompile``, ``pad8 pad64`` (vocabulary padded to a multiple), and the speed
    switches: ``graphs`` (compiled with CUDA graphs), ``qkv`` (fused QKV), ``halfln`` (bf16
    LayerNorm outputs), ``foldclip`` (clipping in the fused AdamW), ``unpad`` (real tokens
    only; attention dropout 0, as ``noattndrop`` gives a padded row). ``compile_default``
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


# --- where each step's batch comes from -------------------------------------------------------


class BatchSource:
    """The batch of each step, and the padded and real work of the batches drawn so far.

    The default, :class:`FixedSource`, hands out one synthetic batch again and again (no
    loader in the timed step); :class:`LoaderSource` draws a new batch per step from real
    shards through the Trainer's loader, so real padding and loading are in the figures.
    """

    def __init__(self, dims: ModelDims) -> None:
        self.dims = dims
        self.work = BatchWork()

    def next(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def reset_work(self) -> None:
        """Forget the batches counted so far (the warm-up's)."""
        self.work = BatchWork()


class FixedSource(BatchSource):
    """One batch for every step, pinned once on CUDA when ``pin`` (as ``make_dataloader`` pins)."""

    def __init__(self, batch: dict[str, torch.Tensor], dims: ModelDims, pin: bool = False,
                 pack: bool = False) -> None:
        super().__init__(dims)
        # Packed once (``unpad``), as the loader's PackingCollate packs each batch.
        step_batch = pack_batch(batch) if pack else batch
        self.batch = {k: v.pin_memory() for k, v in step_batch.items()} if pin else step_batch
        # Counted once: recounting the same tensors would only add host work to the step.
        self._one = batch_work(dims, batch["attention_mask"], batch["masked_lm_ids"])

    def next(self) -> dict[str, torch.Tensor]:
        self.work.merge(self._one)
        return self.batch


class LoaderSource(BatchSource):
    """A new batch per step, from ``PretrainingDataset`` + ``make_dataloader`` with a
    ``ShardedSampler``, built as ``Trainer._loader`` builds the training loader (one rank,
    shuffled, pinned on CUDA, full batches); epochs follow each other as in training."""

    def __init__(self, data: PretrainingDataset, batch_size: int, device: torch.device,
                 dims: ModelDims, seed: int, num_workers: int = 0, pack: bool = False) -> None:
        super().__init__(dims)
        if len(data) < batch_size:
            raise ValueError(f"{len(data)} sequences are fewer than one batch of {batch_size}")
        sampler = ShardedSampler(data, shuffle=True, seed=seed)
        self.loader = make_dataloader(data, batch_size, sampler=sampler, num_workers=num_workers,
                                      pin_memory=device.type == "cuda", drop_last=True,
                                      collate_fn=PackingCollate() if pack else None)
        self.epoch = 0
        self.batches = iter(self.loader)

    def next(self) -> dict[str, torch.Tensor]:
        try:
            batch = next(self.batches)
        except StopIteration:  # the Trainer's next epoch: a new order of the same data
            self.epoch += 1
            self.loader.sampler.set_epoch(self.epoch)
            self.batches = iter(self.loader)
            batch = next(self.batches)
        self.work.add(self.dims, batch["attention_mask"], batch["masked_lm_ids"])
        return batch


# --- the two steps ----------------------------------------------------------------------------


@dataclass
class Runner:
    """A built step: call ``step()`` for one optimizer step (it returns the loss, on the device)."""

    step: Callable[[], torch.Tensor]
    bert: BertForPreTraining
    #: What actually runs, read back from the objects built (not from the request).
    described: dict[str, str]
    #: Where its batches come from; its ``work`` counts what the steps consumed.
    source: BatchSource


def step_config(variant: Variant, size: str, seq_len: int, batch_size: int, device: torch.device,
                dropout: float, seed: int) -> TrainConfig:
    """The ``TrainConfig`` of a project variant, the way a user would configure the Trainer."""
    return TrainConfig(
        **MODEL_SIZES[size], max_position_embeddings=max(512, seq_len), dropout=dropout,
        attn_implementation=variant.attn, batch_size=batch_size, learning_rate=LEARNING_RATE,
        precision=variant.precision,  # type: ignore[arg-type]
        sparse_mlm_head=variant.sparse_head, fused_adamw=variant.fused_adamw,
        compile=variant.compile, device=str(device), seed=seed,
        compile_mode=variant.compile_mode,  # type: ignore[arg-type]
        fused_qkv=variant.fused_qkv, half_precision_layernorm=variant.half_precision_layernorm,
        fold_clipping=variant.fold_clipping, unpad=variant.unpad,
        attention_dropout=variant.attention_dropout,
    )


def seeded_model(cfg: TrainConfig, vocab_size: int) -> BertForPreTraining:
    """A fresh BERT as the Trainer builds it: the seed first, so every variant gets the same weights."""
    torch.manual_seed(cfg.seed)
    return build_model(cfg, vocab_size)


def fixed_source(batch: dict[str, torch.Tensor], cfg: TrainConfig, vocab_size: int,
                 pin: bool) -> FixedSource:
    """``batch`` for every step, its work counted for the model of ``cfg``."""
    t = batch["input_ids"].shape[1]
    dims = ModelDims(vocab_size=vocab_size, hidden_size=cfg.hidden_size,
                     num_layers=cfg.num_hidden_layers, intermediate_size=cfg.intermediate_size,
                     seq_len=t, predictions=batch["masked_lm_ids"].shape[1])
    return FixedSource(batch, dims, pin=pin, pack=cfg.unpad)


def original_runner(cfg: TrainConfig, vocab_size: int, batch: dict[str, torch.Tensor] | None,
                    device: torch.device, max_grad_norm: float | None,
                    source: BatchSource | None = None) -> Runner:
    """The original step on the project's weights, its optimizer and schedule, eager attention.

    A fixed batch is converted once to the original dataset's tensors (all-ones mask, slots
    padded to T): converting is data loading, not part of the step. Batches from a loader
    (``source``) are converted in each step, as the original's dataset would produce them.
    """
    if source is None:
        assert batch is not None
        source = fixed_source(batch, cfg, vocab_size, pin=False)
    bert = seeded_model(dataclasses.replace(cfg, attn_implementation="eager"), vocab_size)
    bert.to(device).train()
    optimizer = original.optimizer(bert, lr=cfg.lr)
    scheduler = original.scheduler(optimizer, SCHEDULE_STEPS)
    converted = to_original_batch(source.batch) if isinstance(source, FixedSource) else None

    def step() -> torch.Tensor:
        batch = source.next()  # drawn (and counted) by every step, converted once if fixed
        inputs = converted if converted is not None else to_original_batch(batch)
        return original.train_step(bert, inputs, optimizer, scheduler, device,
                                   max_grad_norm=max_grad_norm)

    described = {"precision": "fp32", "attn": bert.config._attn_implementation, "head": "full",
                 "adamw": "for-loop", "compile": "no"}
    return Runner(step, bert, described, source)


def adamw_kind(optimizer: torch.optim.Optimizer, device: torch.device) -> str:
    """Which AdamW implementation runs: fused, foreach (torch's CUDA default) or for-loop."""
    defaults = optimizer.defaults
    if defaults.get("fused"):
        return "fused"
    foreach = defaults.get("foreach")
    return "foreach" if foreach or (foreach is None and device.type == "cuda") else "for-loop"


def project_runner(variant: Variant, cfg: TrainConfig, vocab_size: int,
                   batch: dict[str, torch.Tensor] | None, device: torch.device,
                   source: BatchSource | None = None) -> Runner:
    """The project step, built by the package's builders as the Trainer builds it.

    The batch stays on the host (pinned on CUDA, as ``make_dataloader`` pins it), so each
    step includes the copy to the device, as in training. ``source`` (default: ``batch``
    for every step) gives each step its batch.
    """
    if source is None:
        assert batch is not None
        source = fixed_source(batch, cfg, vocab_size, pin=device.type == "cuda")
    if cfg.compile:
        torch._dynamo.reset()  # else a second compiled variant is traced with dynamic shapes
    bert = seeded_model(cfg, padded_vocab(vocab_size, variant.vocab_multiple))
    # The Trainer's module and step: the speed plug-ins on a GPU, the plain path elsewhere.
    precision = resolve_precision(cfg.precision, device)
    module = speed_module(bert, cfg, device, precision)
    module.to(device).train()
    model, before_forward = compiled(module, cfg, device)
    optimizer = build_optimizer(module, cfg, device)
    scheduler = build_scheduler(optimizer, SCHEDULE_STEPS, warmup=0)
    autocast, scaler = autocast_context(device, precision), make_grad_scaler(device, precision)

    def step() -> torch.Tensor:
        result = train_step(model, [source.next()], optimizer, scheduler, device=device,
                            autocast=autocast, scaler=scaler, max_grad_norm=cfg.max_grad_norm,
                            optimizer_step=functools.partial(fused_clip_and_step,
                                                             fold_clipping=cfg.fold_clipping),
                            before_forward=before_forward, keep_grad_buffers=before_forward is not None)
        return result.losses.sum()

    head = "masked" if cfg.sparse_mlm_head else "full"
    if bert.config.vocab_size != vocab_size:
        head += f"/V={bert.config.vocab_size}"
    attn = bert.config._attn_implementation
    if cfg.unpad:  # which attention the packed tokens get (fast_encoder.FastEncoder)
        varlen = varlen_supported(device) and precision in ("bf16", "fp16") \
            and bert.config.attention_probs_dropout_prob == 0
        attn = "varlen" if varlen else "unpad+sdpa"
    described = {"precision": precision, "attn": attn, "head": head,
                 "adamw": adamw_kind(optimizer, device),
                 "compile": ("graphs" if before_forward else "yes") if cfg.compile else "no"}
    return Runner(step, bert, described, source)


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
    #: Padded count: every sequence charged T positions, T^2 attention and the P slots.
    tflops: float
    mfu: float | None
    warmup_s: float
    first_loss: float
    final_loss: float
    step_ms: list[float] = dataclasses.field(default_factory=list)
    #: "synthetic" (one batch reused) or the shards' path (a new batch per step).
    data: str = "synthetic"
    #: The same count over each sequence's real length and real prediction slots.
    real_tflops: float = math.nan
    real_token_mfu: float | None = None
    #: The share of the timed batches' positions that are padding.
    padding_share: float = math.nan
    #: Top ops by self time of a few steps (``--profile``), heaviest first.
    profile: list[dict[str, Any]] | None = None


@dataclass
class Timing:
    warmup_s: float
    #: Seconds of each timed step (CUDA events on a GPU).
    per_step: list[float]
    #: Wall clock of all timed steps, between two synchronisations.
    total_s: float
    losses: list[torch.Tensor]


def time_runner(runner: Runner, device: torch.device, warmup: int, steps: int) -> Timing:
    """Warm-up, then the timed steps, both through the project's one timing loop.

    The source's work count restarts after the warm-up, so it covers the timed batches only.
    """
    losses: list[torch.Tensor] = []

    def step() -> None:
        losses.append(runner.step())

    start = time.perf_counter()
    time_steps(step, device, warmup, 0)
    warmup_s = time.perf_counter() - start
    runner.source.reset_work()
    start = time.perf_counter()
    per_step = time_steps(step, device, 0, steps)  # synchronises before and after
    return Timing(warmup_s, per_step, time.perf_counter() - start, losses)


def make_source(variant: Variant, args: argparse.Namespace, cfg: TrainConfig, seq_len: int,
                batch_size: int, device: torch.device,
                data: PretrainingDataset | None) -> BatchSource:
    """The synthetic batch reused (pinned for the project step on CUDA), or a fresh loader
    over ``data``: every variant gets the same batches in the same order (same seed)."""
    if data is None:
        batch = synthetic_batch(batch_size, seq_len, args.vocab_size, args.seed)
        return fixed_source(batch, cfg, args.vocab_size, pin=device.type == "cuda" and not variant.original)
    dims = ModelDims.for_size(args.model_size, seq_len, args.vocab_size, data.max_predictions)
    return LoaderSource(data, batch_size, device, dims, args.seed, args.num_workers, pack=variant.unpad)


def run_variant(variant: Variant, args: argparse.Namespace, seq_len: int, batch_size: int,
                device: torch.device, peak: float | None,
                data: PretrainingDataset | None = None) -> ModelResult:
    """Build one step, warm it up, time it and measure its memory; free everything after."""
    cfg = step_config(variant, args.model_size, seq_len, batch_size, device, args.dropout, args.seed)
    warmup = args.warmup if args.warmup is not None else (30 if variant.compile else 10)
    profile = None
    with PeakMemory(device) as memory:
        source = make_source(variant, args, cfg, seq_len, batch_size, device, data)
        runner: Runner | None = (
            original_runner(cfg, args.vocab_size, None, device, args.original_max_grad_norm, source)
            if variant.original else project_runner(variant, cfg, args.vocab_size, None, device, source))
        described = runner.described
        timing = time_runner(runner, device, warmup, args.steps)
        work = dataclasses.replace(source.work)  # a copy: the profiled steps count on
        peak_bytes = memory.peak_bytes()
        if args.profile and not variant.original:  # after the peak: the profiler holds memory too
            profile = profile_runner(runner, device, args.profile_steps, args.profile_top)
        runner = source = None  # free the model, optimizer and loader before the next row
    release_memory()
    seq_per_s = batch_size * args.steps / timing.total_s
    # Counted from the batches the timed steps consumed (the same batch each step, synthetic).
    tflops = work.padded_flops / timing.total_s / 1e12
    real_tflops = work.real_flops / timing.total_s / 1e12
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
        data="synthetic" if data is None else str(args.data), real_tflops=real_tflops,
        real_token_mfu=None if peak is None else real_tflops / peak,
        padding_share=work.padding_share, profile=profile,
    )


# --- profile ----------------------------------------------------------------------------------


def profile_runner(runner: Runner, device: torch.device, steps: int, top: int) -> list[dict[str, Any]]:
    """The heaviest ops of ``steps`` steps by self time: CUDA kernels' device time on a GPU
    (what the GPU is busy with), aten ops' CPU time elsewhere."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            runner.step()
        synchronize(device)  # inside: the kernels of the last step are recorded too
    return top_ops(prof.key_averages(), steps, on_gpu, top)


def top_ops(events: Sequence[Any], steps: int, on_gpu: bool, top: int) -> list[dict[str, Any]]:
    """``top`` profiler averages by self time, per step, with their share of the total.

    On a GPU only device events (kernels, copies) count: an aten op's self device time is
    its kernels' time, so counting ops and kernels both would count every kernel twice.
    """
    from torch.autograd import DeviceType

    timed: list[tuple[Any, float]] = []
    for event in events:
        if on_gpu:
            # Kernels and copies only; a GPU-side user annotation spans kernels counted already.
            if event.device_type != DeviceType.CUDA or getattr(event, "is_user_annotation", False):
                continue
            # torch >= 2.4 calls it device time; older releases cuda time
            us = getattr(event, "self_device_time_total", None)
            us = getattr(event, "self_cuda_time_total", 0.0) if us is None else us
        else:
            us = event.self_cpu_time_total
        if us > 0:
            timed.append((event, float(us)))
    total = sum(us for _, us in timed)
    timed.sort(key=lambda pair: pair[1], reverse=True)
    return [{"name": event.key[:160], "self_ms_per_step": us / 1000 / steps,
             "share": us / total, "calls_per_step": event.count / steps}
            for event, us in timed[:top]]


def format_profile(ops: Sequence[dict[str, Any]]) -> str:
    """A profile as a table; long kernel names are cut in the middle (the JSON keeps 160 characters)."""
    rows = [("op / kernel", "self ms/step", "share", "calls/step")]
    for op in ops:
        name = op["name"] if len(op["name"]) <= 70 else op["name"][:40] + "..." + op["name"][-27:]
        rows.append((name, f"{op['self_ms_per_step']:.3f}", f"{100 * op['share']:.1f}%",
                     f"{op['calls_per_step']:g}"))
    return table(rows)


COLUMNS = ("variant", "T", "batch", "precision", "attn", "head", "adamw", "compile", "seq/s",
           "ms/step median", "ms/step mean", "peak mem MiB", "TFLOP/s", "real TFLOP/s", "MFU",
           "real-token MFU", "padding", "speedup")


def percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


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
            fmt(r.tflops, ".3f"), fmt(r.real_tflops, ".3f"), percent(r.mfu),
            percent(r.real_token_mfu), percent(r.padding_share),
            f"{r.seq_per_s / base:.2f}x" if base else "-",
        ))
    return table(rows)


# --- the data and the Trainer -----------------------------------------------------------------


def data_summary(data: PretrainingDataset, max_shards: int = 8) -> dict[str, Any]:
    """What the shards are, and their padding share over every sequence of the first
    ``max_shards`` shards (all of a sample; reading a whole corpus would take minutes)."""
    real = positions = 0
    read = min(max_shards, len(data.shards))
    for shard in range(read):
        mask = data.load_shard(shard)["input_mask"]
        real += int(mask.sum())
        positions += mask.size
    return {"path": str(data.paths[0].parent if len(data.paths) > 1 else data.paths[0]),
            "shards": len(data.shards), "sequences": len(data), "seq_len": data.max_seq_length,
            "predictions": data.max_predictions, "padding_share": 1.0 - real / positions,
            "padding_share_over_shards": read}


def trainer_throughput(variant: Variant, args: argparse.Namespace, seq_len: int, batch_size: int,
                       device: torch.device, data: PretrainingDataset) -> dict[str, Any]:
    """Run the package's ``Trainer`` for ``--trainer-steps`` on ``--data`` with the variant's
    config, and read back the throughput it logs (``seq_per_s`` of metrics.jsonl).

    The Trainer's first log window includes its start (first shard read, compilation), so the
    steady figure is over the later windows: their sequences over their time. Checkpoints
    (saved at each epoch's end) and evaluation (none here) fall outside the windows.
    """
    if variant.original or variant.vocab_multiple != 1:
        raise SystemExit(f"--trainer-variant {variant.name}: the Trainer runs the project step "
                         "on the real vocabulary")
    steps = args.trainer_steps
    vocab = len(read_vocab(args.vocab_file))
    if vocab != args.vocab_size:
        raise SystemExit(f"--vocab-file {args.vocab_file} has {vocab} tokens, --vocab-size is {args.vocab_size}")
    cfg = step_config(variant, args.model_size, seq_len, batch_size, device, args.dropout, args.seed)
    per_epoch = max(1, len(data) // batch_size)  # under one batch: the Trainer says so itself
    every = max(1, min(10, steps // 4))  # at least a few windows besides the first
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        cfg = dataclasses.replace(
            cfg, train_data=str(args.data), eval_data=None, vocab_file=str(args.vocab_file),
            output_dir=str(Path(tmp) / "run"), max_steps=steps, epochs=-(-steps // per_epoch),
            log_every_steps=every, plots=False, num_workers=args.num_workers, keep_last_checkpoints=1)
        start = time.perf_counter()
        Trainer(cfg).fit()
        wall_s = time.perf_counter() - start
        lines = (Path(cfg.output_dir) / METRICS_FILE).read_text().splitlines()
    logged = [r for r in map(json.loads, lines) if r.get("kind") == "train"]
    windows, previous = [], 0
    for record in logged:
        n = record["step"] - previous
        windows.append({"step": record["step"], "steps": n, "seq_per_s": record["seq_per_s"]})
        previous = record["step"]
    later = windows[1:]
    sequences = sum(w["steps"] for w in later) * batch_size
    seconds = sum(w["steps"] * batch_size / w["seq_per_s"] for w in later)
    return {"variant": variant.name, "steps": steps, "batch_size": batch_size, "seq_len": seq_len,
            "num_workers": args.num_workers, "log_every_steps": every, "wall_s": wall_s,
            "windows": windows, "seq_per_s_steady": sequences / seconds if seconds else None}


def trainer_variant(args: argparse.Namespace, variants: Sequence[Variant]) -> Variant:
    """``--trainer-variant``, else the first project variant timed, else ``project``."""
    if args.trainer_variant:
        return parse_variant(args.trainer_variant, args.compile)
    return next((v for v in variants if not v.original), parse_variant("project", args.compile))


# --- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench_step.py",
        description="Time the original tutorial's training step against this project's train_step.")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda, cuda:N or cpu")
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="base")
    parser.add_argument("--vocab-size", type=int, default=BERT_VOCAB_SIZE)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=None,
                        help="default 128 512 (with --data: the shards' T, the only one allowed)")
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
    real = parser.add_argument_group("real data, profile, Trainer")
    real.add_argument("--data", type=Path, default=None,
                      help="shards (a folder, file or glob, e.g. data_samples/train): each step draws a "
                           "new batch through the Trainer's loader instead of reusing one synthetic batch")
    real.add_argument("--num-workers", type=int, default=0,
                      help="loader workers with --data (default 0, the Trainer's default)")
    real.add_argument("--profile", action="store_true",
                      help="torch.profiler summary of a few steps of every project row (top ops by "
                           "self time: CUDA kernels on a GPU, CPU ops elsewhere)")
    real.add_argument("--profile-steps", type=int, default=5)
    real.add_argument("--profile-top", type=int, default=15)
    real.add_argument("--trainer-steps", type=int, default=0,
                      help="also run the package's Trainer for N steps on --data with the same "
                           "config, and record its logged seq/s beside the benchmark's")
    real.add_argument("--trainer-variant", default=None,
                      help="the variant the Trainer runs (default: the first project variant)")
    real.add_argument("--vocab-file", type=Path, default=DATA_SAMPLES / "vocab.txt",
                      help="the Trainer's vocabulary (its size must be --vocab-size)")
    return parser


def resolve_args(args: argparse.Namespace, device: torch.device,
                 data: PretrainingDataset | None = None) -> argparse.Namespace:
    """Fill the device-dependent defaults (and ``--quick``'s); with ``data``, its T."""
    cuda = device.type == "cuda"
    if data is not None:
        if args.seq_lens not in (None, [data.max_seq_length]):
            raise SystemExit(f"--seq-lens {args.seq_lens}: the shards of --data {args.data} have "
                             f"T={data.max_seq_length}; leave --seq-lens out")
        args.seq_lens = [data.max_seq_length]
    if args.quick:
        args.model_size = "tiny"
        if data is None:  # real shards keep their T and vocabulary (their ids must fit it)
            args.vocab_size, args.seq_lens = min(args.vocab_size, 1024), [32]
        args.batch_size = args.batch_size or 4
        args.warmup = 1 if args.warmup is None else args.warmup
        args.steps = args.steps or 2
    if args.seq_lens is None:
        args.seq_lens = [128, 512]
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
    if args.trainer_steps and args.data is None:
        raise SystemExit("--trainer-steps needs --data: the Trainer reads shards")
    data = PretrainingDataset(find_shards(args.data), vocab_size=args.vocab_size) if args.data else None
    args = resolve_args(args, device, data)
    variants = [parse_variant(s, args.compile) for s in args.variants.split(",") if s.strip()]
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    env = environment(device)
    report: dict[str, Any] = {"environment": env, "args": {k: str(v) for k, v in vars(args).items()},
                              "peak_tflops": peak, "peak_source": peak_source}
    print_environment(env)
    if device.type != "cuda":
        print("  NOTE: no CUDA device: these are CPU figures, not GPU ones.")
    if data is not None:
        report["data"] = data_summary(data)
        d = report["data"]
        print(f"\n== Data: {d['path']}: {d['sequences']:,} sequences in {d['shards']} shard(s), "
              f"T={d['seq_len']}, P={d['predictions']}, {100 * d['padding_share']:.2f} % padding "
              f"(over {d['padding_share_over_shards']} shard(s)); a new batch per step through "
              f"the Trainer's loader, {args.num_workers} worker(s) ==")
    else:
        print("\n== Data: one synthetic batch, reused by every step (--data PATH for real shards) ==")

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
                results.append(run_variant(variant, args, t, batch, device, peak, data))
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
    print("TFLOP/s and MFU count every position, T^2 attention and P slots (padding as work); "
          "real TFLOP/s and real-token MFU count each sequence's real length and slots; "
          "padding = share of the timed batches' positions.")
    report["model"] = [dataclasses.asdict(r) for r in results]
    for t in args.seq_lens:  # the fastest profiled row at each T; every profile is in the JSON
        profiled = [r for r in results if r.seq_len == t and r.profile]
        if profiled:
            best = max(profiled, key=lambda r: r.seq_per_s)
            clock = "self CUDA time (kernels)" if device.type == "cuda" else "self CPU time (ops)"
            print(f"\n== Profile of {best.variant} T={t} (the fastest profiled row): top "
                  f"{len(best.profile or [])} by {clock}, over {args.profile_steps} steps ==")
            print(format_profile(best.profile or []))
    if args.trainer_steps:
        assert data is not None
        variant = trainer_variant(args, variants)
        t = args.seq_lens[0]
        batch = batch_sizes(args, t, device)[0]
        print(f"\n== Trainer: {variant.name}, {args.trainer_steps} steps on {args.data}, "
              f"batch {batch} ==", flush=True)
        trainer = trainer_throughput(variant, args, t, batch, device, data)
        bench = next((r.seq_per_s for r in results if r.variant == variant.name and r.seq_len == t), None)
        trainer["bench_seq_per_s"] = bench
        steady = trainer["seq_per_s_steady"]
        trainer["trainer_over_bench"] = steady / bench if bench and steady else None
        report["trainer"] = trainer
        windows = ", ".join(f"{w['seq_per_s']:.4g}" for w in trainer["windows"])
        ratio = trainer["trainer_over_bench"]
        print(f"Trainer seq/s per log window: {windows}; steady (after the first window): "
              f"{fmt(steady, ',.1f')}; benchmark {fmt(bench, ',.1f')}"
              + (f"; Trainer / benchmark = {ratio:.2f}" if ratio else ""))
    finish(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
