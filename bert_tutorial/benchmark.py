"""``python -m bert_tutorial.benchmark``: the original tutorial's step vs this project's, and the loader.

One run measures, on whatever device is present (a CUDA GPU, else the CPU):

* **Model step.** The original tutorial's optimizer step (fp32, eager attention, stock
  ``BertForPreTraining`` loss with vocabulary logits on *every* position, per-parameter
  ``torch.optim.AdamW``, batch 16) against this project's step (``Trainer._optimizer_step``
  itself, configured by a ``TrainConfig``: autocast, SDPA, masked-only MLM head, fused
  AdamW, optionally ``torch.compile``) for BERT-base at T=128 and T=512, after warm-up.
  It prints sequences/s, ms/step (median and mean), peak memory and MFU.
* **Data loading.** Samples/s per worker of :class:`~bert_tutorial.data.PretrainingDataset`
  through :func:`~bert_tutorial.data.make_dataloader`, against the original tutorial's
  load-everything-into-Python-lists dataset, and the memory each needs for one shard of
  100k sequences; then whether the loader can keep up with the GPU step.

FLOPs convention (:func:`flops_per_sequence`), counting the *useful* work of one training
sequence, identical for both steps so that MFU compares work done, not work spent:

* training = forward + backward = 3 x forward; a matmul of an ``m x k`` by a ``k x n``
  matrix is ``2mkn`` FLOPs;
* encoder: ``6 * T * N`` with ``N = L * (4 d^2 + 2 d d_ff)``, the weight matrices of the
  L transformer layers (Q, K, V, output projection and the two FFN matrices). Embedding
  look-ups, biases, LayerNorm, softmax, GELU and dropout are not counted;
* attention scores and weighted sum: ``12 * L * d * T^2`` (``QK^T`` and ``AV``, each
  ``2 T^2 d`` per layer forward, all T x T pairs since BERT attends in both directions);
* MLM head on the P masked slots only (P = 20 at T=128, 80 at T=512): ``6 * P * d * (d + V)``
  (the d x d transform plus the tied d x V decoder). The original step's decoder over the
  other T - P positions is wasted work and not counted;
* pooler + NSP classifier on [CLS]: ``6 * d * (d + 2)`` (negligible).

MFU = counted FLOPs x sequences/s / peak. The peak is the dense bf16 tensor-core figure of
the GPU (H100 SXM and H200 989 TFLOP/s, H100 PCIe 756, H100 NVL 835, A100 312), used for
the fp32 original too, as the issue does; ``--peak-tflops`` sets it for any other device.
On the CPU MFU is printed only when ``--peak-tflops`` is given.

Defaults depend on the device: on a GPU the real figures (batch 128 at T=128 and 32 at
T=512 for this project, 16 for the original, 10 warm-up and 30 timed steps); on a CPU
a run that ends in a few minutes (batch 4 at T=128, 1 at T=512, 1 warm-up and 3 timed
steps, plus a bf16-autocast variant). ``--quick`` is a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import BertConfig, BertForPreTraining

from .config import TrainConfig
from .data import IGNORE_INDEX, PretrainingDataset, make_dataloader, sample_to_tensors
from .device import resolve_device
from .hdf5_format import FIELDS, default_max_predictions, inspect_shard, read_shard, write_shard
from .model import unwrap
from .optim import build_scheduler

#: Encoder shapes; "base" is BERT-base, "small" BERT-small (Turc et al.), "tiny" the
#: repository's default CPU model.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
}
#: bert-base-uncased's WordPiece vocabulary.
BERT_VOCAB_SIZE = 30522

#: Dense bf16 tensor-core peak in TFLOP/s by (a substring of) the CUDA device name;
#: the first match wins, so specific names come before general ones.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),
    ("A100", 312.0),
)

#: The issue's 40 % MFU goal for BERT-base at T=128 on an H100 SXM, for the loader verdict.
TARGET_MFU = 0.40
TARGET_PEAK_TFLOPS = 989.0

#: What the original tutorial fed ``BertForPreTraining`` (dense labels, no sparse pair).
ORIGINAL_INPUTS = ("input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label")

MIB = 1024 * 1024
#: Length of the LR schedule of both steps (no warm-up): the LR stays at its peak while timed.
SCHEDULE_STEPS = 10**6


# --- FLOPs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDims:
    """The shapes that the FLOPs count depends on."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    intermediate_size: int
    seq_len: int
    predictions: int

    @classmethod
    def for_size(cls, size: str, seq_len: int, vocab_size: int = BERT_VOCAB_SIZE,
                 predictions: int | None = None) -> ModelDims:
        shape = MODEL_SIZES[size]
        return cls(
            vocab_size=vocab_size,
            hidden_size=shape["hidden_size"],
            num_layers=shape["num_hidden_layers"],
            intermediate_size=shape["intermediate_size"],
            seq_len=seq_len,
            predictions=default_max_predictions(seq_len) if predictions is None else predictions,
        )


def encoder_matmul_params(dims: ModelDims) -> int:
    """N = L * (4 d^2 + 2 d d_ff), the encoder's weight-matrix entries (84,934,656 for BERT-base)."""
    d, ff = dims.hidden_size, dims.intermediate_size
    return dims.num_layers * (4 * d * d + 2 * d * ff)


def flops_per_sequence(dims: ModelDims) -> dict[str, float]:
    """Training FLOPs (forward + backward) of one sequence, by term; see the module docstring."""
    t, d, p, v = dims.seq_len, dims.hidden_size, dims.predictions, dims.vocab_size
    terms = {
        "encoder": 6.0 * t * encoder_matmul_params(dims),
        "attention": 12.0 * dims.num_layers * d * t * t,
        "mlm_head": 6.0 * p * d * (d + v),
        "pooler_nsp": 6.0 * d * (d + 2),
    }
    terms["total"] = sum(terms.values())
    return terms


def peak_tflops_for_name(name: str) -> float | None:
    """Dense bf16 peak in TFLOP/s of a CUDA device called ``name``, None if not in the table."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops
    return None


def peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    """Dense bf16 peak of ``device`` in TFLOP/s: ``override``, a known GPU, else None."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    return peak_tflops_for_name(torch.cuda.get_device_name(device))


# --- synthetic data -------------------------------------------------------------------------


def synthetic_arrays(
    num_samples: int,
    seq_len: int,
    predictions: int,
    vocab_size: int = BERT_VOCAB_SIZE,
    seed: int = 0,
    short_seq_prob: float = 0.1,
) -> dict[str, np.ndarray]:
    """Shard contents (the dtypes of :data:`~bert_tutorial.hdf5_format.FIELDS`) shaped like real data.

    As Google's ``create_pretraining_data`` makes them: ``[CLS] A [SEP] B [SEP]``, full length
    except a fraction ``short_seq_prob`` of shorter sequences (padded), ``round(0.15 * length)``
    masked tokens (at most ``predictions``, ascending positions, slots padded with 0). Token ids
    are uniform random, so gzip compresses them about as badly as real text. Vectorised: 100k
    sequences take about a second.
    """
    if seq_len < 8:
        raise ValueError(f"seq_len must be at least 8, got {seq_len}")
    rng = np.random.default_rng(seed)
    n, t, p = num_samples, seq_len, predictions
    # bert-base-uncased's special ids when the vocabulary is large enough, else 0..4.
    big = vocab_size > 2000
    cls_id, sep_id, mask_id = (101, 102, 103) if big else (2, 3, 4)
    first_word = 1000 if big else 5
    rows = np.arange(n)
    cols = np.arange(t)
    lengths = np.full(n, t, dtype=np.int64)
    short = rng.random(n) < short_seq_prob
    lengths[short] = rng.integers(8, t + 1, size=int(short.sum()))
    real = cols[None, :] < lengths[:, None]
    split = rng.integers(2, lengths - 2)  # index of the first [SEP]
    ids = rng.integers(first_word, vocab_size, size=(n, t)).astype(np.int32)
    ids[:, 0] = cls_id
    ids[rows, split] = sep_id
    ids[rows, lengths - 1] = sep_id
    ids[~real] = 0

    maskable = real & (cols[None, :] > 0) & (cols[None, :] != split[:, None])
    maskable &= cols[None, :] != (lengths - 1)[:, None]
    n_pred = np.minimum(p, np.maximum(1, np.rint(lengths * 0.15).astype(np.int64)))
    keys = rng.random((n, t))
    keys[~maskable] = 2.0
    candidates = np.argsort(keys, axis=1)[:, :p]
    used = np.arange(p)[None, :] < n_pred[:, None]
    positions = np.sort(np.where(used, candidates, t), axis=1)  # unused slots sort last...
    used = positions < t
    positions = np.where(used, positions, 0)  # ...and are padded with 0
    masked_ids = np.where(used, np.take_along_axis(ids, positions, axis=1), 0)
    masked_rows = np.broadcast_to(rows[:, None], positions.shape)
    ids[masked_rows[used], positions[used]] = mask_id

    return {
        "input_ids": ids,
        "input_mask": real.astype(np.int8),
        "segment_ids": ((cols[None, :] > split[:, None]) & real).astype(np.int8),
        "masked_lm_positions": positions.astype(np.int32),
        "masked_lm_ids": masked_ids.astype(np.int32),
        "next_sentence_labels": rng.integers(0, 2, size=n).astype(np.int8),
    }


def arrays_to_batch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Shard arrays as one batch, exactly as ``make_dataloader`` collates ``PretrainingDataset`` samples."""
    return sample_to_tensors(arrays, slice(None))


# --- memory ---------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc``; elsewhere the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _peak_rss_bytes() -> int | None:
    """Peak RSS since the last :func:`_reset_peak_rss` (``VmHWM``), None where unsupported."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Free what can be freed so the next measurement starts from a clean baseline."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory of a block: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the
    peak RSS *increase* over the RSS when the block started (model, optimizer state,
    activations, workspace), from ``VmHWM``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0
        self.supported = True

    def __enter__(self) -> PeakMemory:
        release_memory()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.base = rss_bytes()
            self.supported = _reset_peak_rss()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def peak_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        peak = _peak_rss_bytes() if self.supported else None
        return None if peak is None else max(0, peak - self.base)


# --- the two steps --------------------------------------------------------------------------


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


_MODIFIERS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"}, "fp16": {"precision": "fp16"},
    "eager": {"attn": "eager"}, "sdpa": {"attn": "sdpa"},
    "fullhead": {"sparse_head": False}, "sparse": {"sparse_head": True},
    "fused": {"fused_adamw": True}, "nofused": {"fused_adamw": False},
    "compile": {"compile": True}, "nocompile": {"compile": False},
    "pad8": {"vocab_multiple": 8}, "pad64": {"vocab_multiple": 64},
}


def parse_variant(spec: str, compile_default: bool = False) -> Variant:
    """``original``, ``project`` (this project's defaults) or ``project+mod+mod...``.

    Modifiers switch one feature each: ``fp32 bf16 fp16``, ``eager sdpa``, ``fullhead sparse``,
    ``fused nofused``, ``compile nocompile``, ``pad8 pad64`` (vocabulary padded to a multiple).
    ``compile_default`` (``--compile``) turns compilation on for every project variant.
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
        if mod not in _MODIFIERS:
            raise ValueError(f"'{spec}': unknown modifier '{mod}' (known: {', '.join(_MODIFIERS)})")
        fields.update(_MODIFIERS[mod])
    name = spec.strip()
    if compile_default and "compile" not in mods and "nocompile" not in mods:
        name += "+compile"
    return Variant(name=name, **fields)


def padded_vocab(vocab_size: int, multiple: int) -> int:
    return -(-vocab_size // multiple) * multiple


def _bert_config(size: str, vocab_size: int, seq_len: int, dropout: float) -> BertConfig:
    """The same ``BertConfig`` as :func:`bert_tutorial.model.build_model` makes for a fresh model."""
    return BertConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max(512, seq_len),
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **MODEL_SIZES[size],
    )


class OriginalStep:
    """The original tutorial's step: fp32, eager attention, stock loss (logits on all T positions).

    The optimizer is ``torch.optim.AdamW`` over all parameters with the per-parameter loop
    (``foreach=False``), as the tutorial's ``transformers.AdamW`` was; the batch is copied
    to the device with a blocking ``.to(device)`` every step. The gradient is clipped and
    the schedule stepped, as in this project's step, so both do the same bookkeeping.
    """

    def __init__(self, size: str, vocab_size: int, batch: dict[str, torch.Tensor],
                 device: torch.device, dropout: float = 0.1, seed: int = 0,
                 learning_rate: float = 1e-4) -> None:
        self.device = device
        config = _bert_config(size, vocab_size, batch["input_ids"].shape[1], dropout)
        config._attn_implementation = "eager"
        torch.manual_seed(seed)
        self.model = BertForPreTraining(config).to(device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=learning_rate,
                                           weight_decay=0.01, eps=1e-6, foreach=False)
        self.scheduler = build_scheduler(self.optimizer, total_steps=SCHEDULE_STEPS, warmup=0)
        self.batch = {k: batch[k] for k in ORIGINAL_INPUTS}
        self.losses: list[torch.Tensor] = []

    def describe(self) -> dict[str, str]:
        return {"precision": "fp32", "attn": "eager", "head": "full", "adamw": "for-loop",
                "compile": "no"}

    def step(self) -> None:
        batch = {k: v.to(self.device) for k, v in self.batch.items()}
        loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.losses.append(loss.detach())

    def close(self) -> None:
        pass


class _LossWindow:
    """Stands in for the Trainer's log window: keeps each step's (MLM, NSP) loss on the device."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def add(self, step_losses: torch.Tensor) -> None:
        self.steps.append(step_losses.detach().sum())


class ProjectStep:
    """This project's step: ``Trainer._optimizer_step`` of a ``Trainer`` built from a ``TrainConfig``.

    The Trainer needs a vocabulary file and a shard, so both are written to a temporary
    folder (the shard holds the benchmark batch; one epoch is one step, and the schedule
    has no warm-up, so the learning rate is the same as the original step's). The batch is a CPU tensor dict, pinned on
    CUDA as ``make_dataloader`` pins it, so each step includes the host-to-device copy.
    """

    def __init__(self, variant: Variant, size: str, vocab_size: int, batch: dict[str, torch.Tensor],
                 arrays: dict[str, np.ndarray], device: torch.device, dropout: float = 0.1,
                 seed: int = 0, learning_rate: float = 1e-4) -> None:
        from .training import Trainer  # heavy (tqdm, checkpointing): only when timing

        self._tmp = tempfile.TemporaryDirectory(prefix="bert-benchmark-")
        root = Path(self._tmp.name)
        self.data_vocab_size = vocab_size
        model_vocab = padded_vocab(vocab_size, variant.vocab_multiple)
        vocab_file = root / "vocab.txt"
        vocab_file.write_text("".join(f"tok{i}\n" for i in range(model_vocab)))
        (root / "train").mkdir()
        write_shard(root / "train" / "shard.hdf5", arrays, compression=None)
        seq_len = batch["input_ids"].shape[1]
        cfg = TrainConfig(
            train_data=str(root / "train"), eval_data=None, vocab_file=str(vocab_file),
            max_position_embeddings=max(512, seq_len), dropout=dropout,
            attn_implementation=variant.attn, batch_size=batch["input_ids"].shape[0],
            learning_rate=learning_rate, warmup_fraction=0.0, epochs=SCHEDULE_STEPS,
            precision=variant.precision,  # type: ignore[arg-type]
            sparse_mlm_head=variant.sparse_head, fused_adamw=variant.fused_adamw,
            compile=variant.compile, output_dir=str(root / "run"), device=str(device),
            seed=seed, resume=False, **MODEL_SIZES[size],
        )
        self.trainer = Trainer(cfg)
        self.window = _LossWindow()
        self.batch = {k: v.pin_memory() if device.type == "cuda" else v for k, v in batch.items()}

    @property
    def module(self) -> BertForPreTraining:
        return unwrap(self.trainer.model)

    def describe(self) -> dict[str, str]:
        """What actually runs, read back from the Trainer (not from the variant's request)."""
        trainer, bert = self.trainer, self.module
        defaults = trainer.optimizer.defaults
        if defaults.get("fused"):
            adamw = "fused"
        elif defaults.get("foreach") or (defaults.get("foreach") is None and trainer.device.type == "cuda"):
            adamw = "foreach"  # torch's default on CUDA
        else:
            adamw = "for-loop"  # torch's default on the CPU
        head = "masked" if trainer.module.sparse_mlm_head else "full"
        if bert.config.vocab_size != self.data_vocab_size:  # padded (+pad8, +pad64)
            head += f"/V={bert.config.vocab_size}"
        return {"precision": trainer.precision, "attn": bert.config._attn_implementation,
                "head": head, "adamw": adamw, "compile": "yes" if trainer.cfg.compile else "no"}

    @property
    def losses(self) -> list[torch.Tensor]:
        return self.window.steps

    def step(self) -> None:
        self.trainer._optimizer_step([self.batch], self.window)  # type: ignore[arg-type]

    def close(self) -> None:
        self._tmp.cleanup()


def build_step(variant: Variant, size: str, vocab_size: int, batch: dict[str, torch.Tensor],
               arrays: dict[str, np.ndarray], device: torch.device, dropout: float = 0.1,
               seed: int = 0) -> OriginalStep | ProjectStep:
    if variant.original:
        return OriginalStep(size, vocab_size, batch, device, dropout=dropout, seed=seed)
    return ProjectStep(variant, size, vocab_size, batch, arrays, device, dropout=dropout, seed=seed)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], device: torch.device, warmup: int,
               steps: int) -> tuple[float, list[float], float]:
    """(warm-up seconds, per-step seconds, total seconds of the timed steps).

    On CUDA, per-step times come from CUDA events (no synchronisation between steps, so
    the host can run ahead as in training) and the total from the wall clock between two
    ``torch.cuda.synchronize`` calls.
    """
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    per_step: list[float] = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(steps)]
        start = time.perf_counter()
        for begin, end in events:
            begin.record()
            step()
            end.record()
        torch.cuda.synchronize(device)
        total = time.perf_counter() - start
        per_step = [begin.elapsed_time(end) / 1000.0 for begin, end in events]
    else:
        start = time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            per_step.append(time.perf_counter() - t0)
        total = time.perf_counter() - start
    return warmup_s, per_step, total


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
    seq_per_s: float
    ms_median: float
    ms_mean: float
    peak_mem_mib: float | None
    tflops: float
    mfu: float | None
    warmup_s: float
    final_loss: float
    step_ms: list[float] = dataclasses.field(default_factory=list)


def run_model_variant(variant: Variant, size: str, vocab_size: int, seq_len: int, batch_size: int,
                      device: torch.device, warmup: int, steps: int, peak: float | None,
                      dropout: float = 0.1, seed: int = 0) -> ModelResult:
    """Build one step, time it and measure its memory; everything is freed afterwards."""
    dims = ModelDims.for_size(size, seq_len, vocab_size)
    arrays = synthetic_arrays(batch_size, seq_len, dims.predictions, vocab_size, seed=seed)
    batch = arrays_to_batch(arrays)
    with PeakMemory(device) as memory:
        runner = build_step(variant, size, vocab_size, batch, arrays, device, dropout, seed)
        try:
            described = runner.describe()
            warmup_s, per_step, total = time_steps(runner.step, device, warmup, steps)
            peak_bytes = memory.peak_bytes()
            final_loss = float(runner.losses[-1]) if runner.losses else math.nan
        finally:
            runner.close()
            del runner
    release_memory()
    seq_per_s = batch_size * steps / total
    tflops = flops_per_sequence(dims)["total"] * seq_per_s / 1e12
    return ModelResult(
        variant=variant.name, seq_len=seq_len, batch_size=batch_size, **described,
        seq_per_s=seq_per_s, ms_median=1000 * statistics.median(per_step), ms_mean=1000 * total / steps,
        peak_mem_mib=None if peak_bytes is None else peak_bytes / MIB, tflops=tflops,
        mfu=None if peak is None else tflops / peak, warmup_s=warmup_s, final_loss=final_loss,
        step_ms=[1000 * s for s in per_step],
    )


# --- data loading ---------------------------------------------------------------------------


class ListsDataset(Dataset[dict[str, torch.Tensor]]):
    """The original tutorial's approach: every field of the shard read into Python lists up front.

    Each sample is then built from those lists with ``torch.tensor``. Only the inputs of
    the stock ``BertForPreTraining`` loss are produced (dense labels, no sparse pair).
    """

    def __init__(self, path: str | Path) -> None:
        with h5py.File(path, "r") as f:
            self.data: dict[str, list] = {name: f[name][()].tolist() for name in FIELDS}

    def __len__(self) -> int:
        return len(self.data["next_sentence_labels"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        d = self.data
        labels = [IGNORE_INDEX] * len(d["input_ids"][index])
        for position, token in zip(d["masked_lm_positions"][index], d["masked_lm_ids"][index],
                                   strict=True):
            if position != 0:
                labels[position] = token
        return {
            "input_ids": torch.tensor(d["input_ids"][index]),
            "token_type_ids": torch.tensor(d["segment_ids"][index]),
            "attention_mask": torch.tensor(d["input_mask"][index]),
            "labels": torch.tensor(labels),
            "next_sentence_label": torch.tensor(d["next_sentence_labels"][index]),
        }


@dataclass
class LoaderResult:
    loader: str
    workers: int
    samples_per_s: float
    per_worker: float
    first_batch_s: float
    samples_timed: int


def measure_loader(loader: DataLoader, max_samples: int) -> tuple[float, float, int]:
    """(seconds from ``iter`` to the first batch: worker start and shard read; steady-state
    samples/s after it; samples timed)."""
    start = time.perf_counter()
    iterator: Iterator = iter(loader)  # starts the workers
    first = next(iterator)
    first_s = time.perf_counter() - start
    count = 0
    start = time.perf_counter()
    for batch in iterator:
        count += len(batch["input_ids"])
        if count >= max_samples:
            break
    elapsed = time.perf_counter() - start
    del first, iterator
    return first_s, count / elapsed if elapsed > 0 else math.nan, count


def _loader_result(name: str, workers: int, loader: DataLoader, max_samples: int) -> LoaderResult:
    first_s, rate, count = measure_loader(loader, max_samples)
    return LoaderResult(name, workers, rate, rate / max(1, workers), first_s, count)


def run_data_benchmark(num_samples: int, seq_len: int, batch_size: int, workers: Sequence[int],
                       max_timed_samples: int, workdir: Path, seed: int = 0) -> dict[str, Any]:
    """Loader throughput and shard memory of the HDF5 dataset vs the original lists."""
    predictions = default_max_predictions(seq_len)
    start = time.perf_counter()
    arrays = synthetic_arrays(num_samples, seq_len, predictions, seed=seed)
    path = write_shard(workdir / "bench_shard.hdf5", arrays)
    write_s = time.perf_counter() - start
    del arrays
    release_memory()

    info = inspect_shard(path)
    base = rss_bytes()
    start = time.perf_counter()
    shard = read_shard(info, BERT_VOCAB_SIZE)
    numpy_load_s = time.perf_counter() - start
    numpy_rss = rss_bytes() - base
    numpy_nbytes = sum(a.nbytes for a in shard.values())
    del shard
    release_memory()

    base = rss_bytes()
    start = time.perf_counter()
    lists = ListsDataset(path)
    lists_load_s = time.perf_counter() - start
    lists_rss = rss_bytes() - base
    results = [_loader_result(
        "original: Python lists", 0,
        DataLoader(lists, batch_size=batch_size, shuffle=True, num_workers=0), max_timed_samples)]
    del lists
    release_memory()

    for w in workers:
        # A fresh dataset each time: forked workers would otherwise inherit the shard that
        # the previous loader left cached in this process, hiding the shard read.
        dataset = PretrainingDataset(path, vocab_size=BERT_VOCAB_SIZE)
        loader = make_dataloader(dataset, batch_size, shuffle=True, seed=seed, num_workers=w)
        results.append(_loader_result("PretrainingDataset", w, loader, max_timed_samples))
        del loader, dataset
        release_memory()
    return {
        "num_samples": num_samples, "seq_len": seq_len, "predictions": predictions,
        "batch_size": batch_size, "file_mib": path.stat().st_size / MIB, "write_s": write_s,
        "numpy_load_s": numpy_load_s, "numpy_rss_mib": numpy_rss / MIB,
        "numpy_nbytes_mib": numpy_nbytes / MIB, "lists_load_s": lists_load_s,
        "lists_rss_mib": lists_rss / MIB, "loaders": [dataclasses.asdict(r) for r in results],
    }


def loader_verdict(data: dict[str, Any], measured_gpu_seq_per_s: float | None) -> list[str]:
    """Lines comparing one worker's samples/s with what the GPU step consumes."""
    dims = ModelDims.for_size("base", data["seq_len"])
    goal = TARGET_MFU * TARGET_PEAK_TFLOPS * 1e12 / flops_per_sequence(dims)["total"]
    ours = [r for r in data["loaders"] if r["loader"] == "PretrainingDataset"]
    per_worker = max((r["per_worker"] for r in ours if r["workers"] > 0),
                     default=max((r["samples_per_s"] for r in ours), default=math.nan))
    lines = []
    needs = [(f"{TARGET_MFU:.0%} MFU of an H100 SXM (BERT-base, T={data['seq_len']})", goal)]
    if measured_gpu_seq_per_s is not None:
        needs.append(("the project step measured in this run", measured_gpu_seq_per_s))
    for what, rate in needs:
        workers = math.ceil(rate / per_worker) if per_worker > 0 else math.nan
        lines.append(f"  {what}: {rate:,.0f} seq/s; one worker here gives {per_worker:,.0f} "
                     f"samples/s -> num_workers >= {workers}")
    return lines


# --- output ---------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    env = {
        "date": datetime.date.today().isoformat(),
        "device": str(device),
        "cpu": f"{_cpu_model()} ({os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
    }
    if hasattr(os, "getloadavg"):
        # Other processes on the machine skew CPU figures; the load average shows them.
        env["load average (1/5/15 min) at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


MODEL_COLUMNS = ("variant", "T", "batch", "precision", "attn", "head", "adamw", "compile",
                 "seq/s", "ms/step median", "ms/step mean", "peak mem MiB", "TFLOP/s", "MFU",
                 "speedup")


def format_model_table(results: Sequence[ModelResult]) -> str:
    baseline = {r.seq_len: r.seq_per_s for r in results if r.variant == "original"}
    rows = [MODEL_COLUMNS]
    for r in results:
        base = baseline.get(r.seq_len)
        rows.append((
            r.variant, str(r.seq_len), str(r.batch_size), r.precision, r.attn, r.head, r.adamw,
            r.compile, _fmt(r.seq_per_s, ",.1f" if r.seq_per_s >= 100 else ".3g"), _fmt(r.ms_median, ",.1f"), _fmt(r.ms_mean, ",.1f"),
            _fmt(r.peak_mem_mib, ",.0f"), _fmt(r.tflops, ".3f"),
            _fmt(None if r.mfu is None else 100 * r.mfu, ".2f") + ("%" if r.mfu is not None else ""),
            f"{r.seq_per_s / base:.2f}x" if base else "-",
        ))
    return _table(rows)


def format_loader_table(data: dict[str, Any]) -> str:
    rows = [("loader", "workers", "samples/s", "samples/s per worker", "first batch s")]
    for r in data["loaders"]:
        rows.append((r["loader"], str(r["workers"]), f"{r['samples_per_s']:,.0f}",
                     f"{r['per_worker']:,.0f}", f"{r['first_batch_s']:.2f}"))
    return _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def flops_lines(size: str, vocab_size: int, seq_lens: Sequence[int]) -> list[str]:
    lines = []
    for t in seq_lens:
        dims = ModelDims.for_size(size, t, vocab_size)
        f = flops_per_sequence(dims)
        lines.append(
            f"  T={t} P={dims.predictions}: {f['total'] / 1e9:.2f} GFLOP/sequence = encoder "
            f"{f['encoder'] / 1e9:.2f} + attention {f['attention'] / 1e9:.2f} + MLM head "
            f"{f['mlm_head'] / 1e9:.2f} + pooler/NSP {f['pooler_nsp'] / 1e9:.4f} "
            f"(N = {encoder_matmul_params(dims):,} encoder matmul weights)"
        )
    return lines


# --- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bert_tutorial.benchmark",
        description="Time the original tutorial's training step against this project's, and the data loader.",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda, cuda:N or cpu")
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="base")
    parser.add_argument("--vocab-size", type=int, default=BERT_VOCAB_SIZE)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--batch-size", type=int, default=None,
                        help="project batch (default: 128 at T=128 and 32 at T=512 on CUDA; 4 and 1 on CPU)")
    parser.add_argument("--original-batch-size", type=int, default=None,
                        help="original batch (default: 16 on CUDA, the project batch on CPU)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated, e.g. original,project,project+pad8 (default: "
                             "original,project on CUDA; original,project,project+bf16 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every project variant")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 10 CUDA, 1 CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 30 CUDA, 3 CPU)")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak TFLOP/s for MFU (default: known GPUs' dense bf16 peak; none on CPU)")
    parser.add_argument("--skip-model", action="store_true", help="no model-step benchmark")
    parser.add_argument("--skip-data", action="store_true", help="no data-loading benchmark")
    parser.add_argument("--data-samples", type=int, default=100_000, help="sequences in the test shard")
    parser.add_argument("--data-seq-len", type=int, default=128)
    parser.add_argument("--data-batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-timed-samples", type=int, default=25_600,
                        help="samples timed per loader after its first batch")
    parser.add_argument("--json", type=Path, default=None, help="also write all figures to this file")
    parser.add_argument("--quick", action="store_true",
                        help="seconds-long smoke run: tiny model, V=1024, T=32, 2 steps, 2,000-sequence shard")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice, one per core)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _resolve_args(args: argparse.Namespace, device: torch.device) -> argparse.Namespace:
    cuda = device.type == "cuda"
    if args.quick:
        args.model_size = "tiny"
        args.vocab_size = min(args.vocab_size, 1024)
        args.seq_lens = [32]
        args.batch_size = args.batch_size or 4
        args.warmup = 1 if args.warmup is None else args.warmup
        args.steps = args.steps or 2
        args.data_samples = min(args.data_samples, 2_000)
        args.workers = [0, 1]
        args.data_batch_size = min(args.data_batch_size, 64)
        args.data_timed_samples = min(args.data_timed_samples, 512)
    if args.warmup is None:
        args.warmup = 10 if cuda else 1
    if args.steps is None:
        args.steps = 30 if cuda else 3
    if args.variants is None:
        args.variants = "original,project" if cuda else "original,project,project+bf16"
    return args


def default_batch_size(seq_len: int, device: torch.device) -> int:
    """This project's batch: 128 x 128 tokens on CUDA (128 at T=128, 32 at T=512), 512 tokens on CPU."""
    tokens = 128 * 128 if device.type == "cuda" else 512
    return max(1, tokens // seq_len)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args = _resolve_args(args, device)
    variants = [parse_variant(s, args.compile) for s in args.variants.split(",") if s.strip()]
    peak = peak_tflops(device, args.peak_tflops)
    env = environment(device)
    report: dict[str, Any] = {"environment": env, "args": {k: str(v) for k, v in vars(args).items()}}

    print("== Environment ==")
    for key, value in env.items():
        print(f"  {key}: {value}")
    if device.type != "cuda":
        print("  NOTE: no CUDA device: these are CPU figures, not GPU ones.")

    gpu_seq_per_s: float | None = None
    if not args.skip_model:
        print(f"\n== Model step: BERT-{args.model_size}, V={args.vocab_size}, on {device} ==")
        print("FLOPs counted per training sequence (forward + backward = 3 x forward; useful work only):")
        for line in flops_lines(args.model_size, args.vocab_size, args.seq_lens):
            print(line)
        print(f"Peak for MFU: {f'{peak:g} TFLOP/s' if peak else 'unknown (pass --peak-tflops)'}; "
              f"{args.warmup} warm-up + {args.steps} timed steps per row.")
        results: list[ModelResult] = []
        for t in args.seq_lens:
            for variant in variants:
                project_batch = args.batch_size or default_batch_size(t, device)
                batch = project_batch
                if variant.original:
                    batch = args.original_batch_size or (16 if device.type == "cuda" else project_batch)
                print(f"  timing {variant.name} T={t} batch={batch} ...", flush=True)
                results.append(run_model_variant(
                    variant, args.model_size, args.vocab_size, t, batch, device,
                    args.warmup, args.steps, peak, args.dropout, args.seed))
        print()
        print(format_model_table(results))
        mem = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
               else "peak RSS increase over the RSS before the model was built (VmHWM)")
        print(f"peak mem = {mem}; speedup = seq/s over the original at the same T.")
        report["model"] = [dataclasses.asdict(r) for r in results]
        if device.type == "cuda":
            ours = [r.seq_per_s for r in results if r.seq_len == args.data_seq_len and r.variant != "original"]
            gpu_seq_per_s = max(ours, default=None)

    if not args.skip_data:
        print(f"\n== Data loading: {args.data_samples:,} sequences, T={args.data_seq_len}, "
              f"batch {args.data_batch_size} ==", flush=True)
        with tempfile.TemporaryDirectory(prefix="bert-benchmark-data-") as tmp:
            data = run_data_benchmark(args.data_samples, args.data_seq_len, args.data_batch_size,
                                      args.workers, args.data_timed_samples, Path(tmp), args.seed)
        print(f"shard: {data['file_mib']:.1f} MiB gzip HDF5, written in {data['write_s']:.1f} s")
        print(format_loader_table(data))
        print(f"memory for the shard: numpy arrays (PretrainingDataset) +{data['numpy_rss_mib']:,.0f} MiB RSS "
              f"({data['numpy_nbytes_mib']:,.0f} MiB of arrays, read in {data['numpy_load_s']:.1f} s); "
              f"Python lists (original) +{data['lists_rss_mib']:,.0f} MiB RSS "
              f"(built in {data['lists_load_s']:.1f} s)")
        print("Loader vs GPU step (samples/s per worker measured on this machine's CPU):")
        for line in loader_verdict(data, gpu_seq_per_s):
            print(line)
        report["data"] = data

    if hasattr(os, "getloadavg"):
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        env["load average (1/5/15 min) at end"] = load
        print(f"\nload average (1/5/15 min) at end: {load}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
